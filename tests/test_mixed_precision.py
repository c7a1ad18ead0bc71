"""Mixed precision (config.model.dtype='bfloat16') and rematerialisation (config.model.remat).

bfloat16: convolutions and matmuls of every sub-net, the backbones and the discriminator run in
bf16; parameters, optimizer state, losses, the similarity softmax / warp and the SPHist stay
float32. Remat recomputes dense units in the backward pass and must not change gradients.
"""

import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data as skdata
from skimage import transform as sktransform

from conftest import tiny_config
from pikfix_jax import checkpoints
from pikfix_jax import train
from pikfix_jax.models import pikfix
from pikfix_jax.ops import color
from pikfix_jax.ops import histogram


def _photos(size=32) -> np.ndarray:
  photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
  return np.stack([sktransform.resize(p, (size, size), anti_aliasing=True)
                   for p in photos]).astype(np.float32)


def _batch(rgb: np.ndarray) -> dict:
  l, ab = color.rgb_to_lab_normalized(jnp.asarray(rgb))
  return {'input_l': np.asarray(l), 'target_lab': np.asarray(jnp.concatenate([l, ab], -1)),
          'reference_rgb': rgb[::-1].copy()}  # each photo coloured from another one


def _leaves(tree):
  return jax.tree_util.tree_leaves(tree)


@pytest.mark.slow
def test_bfloat16_training_overfits_and_keeps_float32_state():
  config = tiny_config()
  config.model.dtype = 'bfloat16'
  config.optim.learning_rate = 3e-3  # as the float32 overfit test in test_models_pikfix.py
  config.optim.b1 = 0.9
  # No adversarial weight: with it a 60-step run of this tiny GAN oscillates (l1_chroma fell
  # to 0.12 by step 15, rose to 0.25 by step 60, fell again), so where it ends says more about
  # the game than about bf16. D is still updated and the adversarial term still computed and
  # differentiated in bf16, with weight 0.
  config.loss.eta = 0.0
  batch = _batch(_photos())
  config.train.batch_size = len(batch['input_l'])
  trainer = train.Trainer(config, steps_per_epoch=1000)
  state = trainer.init_state(0)
  vgg_variables = trainer.init_frozen(0)

  # Structure of the compiled step: convolutions in bf16 (all but the SSIM metric's filters),
  # every exp (softmaxes of the warp and SPHist, sigmoids) in f32, all outputs f32.
  sharded = trainer.shard(batch)
  lowered = trainer.train_step.lower(state, sharded, vgg_variables)
  hlo = lowered.as_text()
  convs = re.findall(r'stablehlo\.convolution.*', hlo)
  bf16 = [c for c in convs if re.search(r'->\s*tensor<[^>]*bf16>', c)]
  assert len(convs) > 100 and len(convs) - len(bf16) <= 2, (len(convs), len(bf16))
  exps = re.findall(r'stablehlo\.exponential.*', hlo)
  assert exps and not [e for e in exps if 'bf16' in e]

  step = lowered.compile()
  history = []
  for _ in range(15):  # l1_chroma: 0.339 at step 1, 0.13 at step 6, 0.115 at step 15
    state, scalars = step(state, sharded, vgg_variables)
    h = {k: float(scalars[k]) for k in ('total', 'l1_chroma', 'adversarial')}
    # The objective without the adversarial term (which need not fall in a GAN game).
    h['reconstruction'] = h['total'] - config.loss.eta * h['adversarial']
    history.append(h)
  assert all(np.isfinite(h['total']) for h in history)
  print('bf16 overfit, first -> last 5:', {k: (round(history[0][k], 4), round(float(np.mean(
      [h[k] for h in history[-5:]])), 4)) for k in history[0]})

  def late(key):
    return np.mean([h[key] for h in history[-5:]])
  assert late('l1_chroma') <= 0.5 * history[0]['l1_chroma'], (history[0], history[-5:])
  assert late('reconstruction') <= 0.5 * history[0]['reconstruction'], (history[0], history[-5:])

  for tree in (state.g_params, state.g_frozen, state.d_params, state.g_opt_state,
               state.d_opt_state, state.g_batch_stats):
    assert all(x.dtype in (jnp.float32, jnp.int32) for x in _leaves(tree))
  assert any(x.dtype == jnp.float32 for x in _leaves(state.g_opt_state))
  for k, v in scalars.items():
    assert v.dtype == jnp.float32, k

  outputs = jax.jit(trainer.method.generator.apply)(checkpoints.generator_variables(state),
                                             batch['input_l'], batch['reference_rgb'])
  for key in ('restored_l', 'ab', 'rgb', 'output_hist', 'reference_hist'):
    assert outputs[key].dtype == jnp.float32, key
  for scale in outputs['warped']:
    assert outputs['warped'][scale].dtype == jnp.float32


def _generator_grads(remat: bool, b: dict, variables) -> dict:
  config = tiny_config()
  config.model.remat = remat
  model = pikfix.build_generator(config.model)
  target_ab = b['target_lab'][..., 1:]

  def loss_fn(params):
    out = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                      b['input_l'], b['reference_rgb'], train=True)
    return (jnp.mean(jnp.abs(out['ab'] - target_ab))
            + jnp.mean(jnp.abs(out['restored_l'] - b['input_l']))
            + 0.5 * histogram.emd_loss(out['output_hist'], out['reference_hist']))

  grads = jax.jit(jax.grad(loss_fn))(variables['params'])
  return flax.traverse_util.flatten_dict(jax.device_get(grads), sep='/')


@pytest.mark.slow
def test_remat_gives_the_same_gradients():
  b = _batch(_photos()[:2])
  model = pikfix.build_generator(tiny_config().model)  # remat leaves the parameters as they are
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), b['input_l'], b['reference_rgb'])
  plain = _generator_grads(False, b, variables)
  remat = _generator_grads(True, b, variables)
  assert plain.keys() == remat.keys()
  assert any('/unit0/' in k for k in plain)  # the rematerialised dense units have params
  for k in plain:
    np.testing.assert_allclose(remat[k], plain[k], rtol=1e-6, atol=1e-6, err_msg=k)
