import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from skimage import data as skdata
from skimage import transform as sktransform
import torch

from conftest import tiny_config
from pikfix_jax import models
from pikfix_jax.models import layers
from pikfix_jax.models import pikfix
from pikfix_jax.ops import color
from pikfix_jax.ops import histogram
import torch_reference as ref

ABLATIONS = {
    # Table 4
    'input_ab_fusion': {'histogram.fusion': 'ab', 'histogram.scales': 'input'},
    'multiscale_ab_fusion': {'histogram.fusion': 'ab', 'histogram.scales': 'multi'},
    'single_scale_histogram': {'histogram.scales': 'single'},
    'multiscale_histogram': {},
    # Table 5
    'no_similarity': {'similarity.mode': 'none'},
    'single_similarity': {'similarity.mode': 'single'},
    # Table 6
    'single_level_rdn': {'restoration.levels': (1,)},
}


def _init(model, l, reference):
  """The model's variables, initialised from one 32x32 crop whatever the batch's shape (the
  parameters do not depend on it), so the tests of one config share one init program (through
  the persistent compilation cache)."""
  return models.jit_init(model.init)(jax.random.PRNGKey(0), l[:1, :32, :32],
                                     reference[:1, :32, :32])


def _init_apply(config, input_shape, reference_shape):
  model = pikfix.build_generator(config.model)
  x = jax.random.uniform(jax.random.PRNGKey(1), input_shape)
  r = jax.random.uniform(jax.random.PRNGKey(2), reference_shape)
  variables = _init(model, x, r)
  return model, variables, jax.jit(model.apply)(variables, x, r)


@pytest.mark.parametrize('shape,size', [
    ((2, 5, 7, 3), (10, 28)),   # x2 and x4 (the U-Net decoder, the RDN's x4 level)
    ((1, 4, 3, 2), (32, 24)),   # x8 (the RDN's x8 level)
    ((1, 3, 4, 2), (9, 4)),     # x3 and x1
])
def test_integer_upsampling_matches_torch_and_jax_image_resize(shape, size):
  """layers.resize upsamples by integer factors as a stencil: the values of torch's bilinear
  interpolate (half-pixel centres) and of jax.image.resize, and the same gradient."""
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ours = layers.resize(x, *size)
  want = torch.nn.functional.interpolate(ref.to_nchw(x), size=size, mode='bilinear',
                                         align_corners=False)
  np.testing.assert_allclose(ours, ref.to_nhwc(want), rtol=1e-6, atol=1e-6)
  def jax_resize(x):
    return jax.image.resize(x, (shape[0],) + size + (shape[3],), 'bilinear')
  np.testing.assert_allclose(ours, jax_resize(x), rtol=1e-6, atol=1e-6)
  dy = jax.random.normal(jax.random.PRNGKey(1), ours.shape)
  np.testing.assert_allclose(jax.vjp(lambda x: layers.resize(x, *size), x)[1](dy)[0],
                             jax.vjp(jax_resize, x)[1](dy)[0], rtol=1e-5, atol=1e-5)
  assert layers.resize(x.astype(jnp.bfloat16), *size).dtype == jnp.bfloat16


@pytest.mark.parametrize('shape,factor', [((2, 8, 12, 3), 2), ((1, 9, 10, 2), 4)])
def test_downsample_equals_avg_pool(shape, factor):
  """layers.downsample, a reshape-mean: nn.avg_pool's values (a partial last tile dropped) and
  gradient."""
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  pool = lambda x: nn.avg_pool(x, (factor, factor), strides=(factor, factor))  # noqa: E731
  ours = layers.downsample(x, factor)
  np.testing.assert_allclose(ours, pool(x), rtol=1e-6, atol=1e-6)
  dy = jax.random.normal(jax.random.PRNGKey(1), ours.shape)
  np.testing.assert_allclose(jax.vjp(lambda x: layers.downsample(x, factor), x)[1](dy)[0],
                             jax.vjp(pool, x)[1](dy)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('remat', [False, True])
def test_residual_dense_block_matches_torch_concatenating_rdb(remat):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 10, 8))
  block = layers.ResidualDenseBlock(num_units=3, growth=5, remat=remat)
  params = block.init(jax.random.PRNGKey(1), x)['params']
  leaves, tree = jax.tree_util.tree_flatten(params)  # non-zero biases too
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree_util.tree_unflatten(tree, [0.3 * jax.random.normal(k, l.shape)
                                               for k, l in zip(keys, leaves)])
  upstream = jax.random.normal(jax.random.PRNGKey(3), x.shape)
  out, vjp = jax.vjp(lambda p, x: block.apply({'params': p}, x), params, x)
  grad_params, grad_x = vjp(upstream)

  torch_block = ref.ResidualDenseBlock(8, 5, 3)
  torch_block.load_flax(params)
  tx = ref.to_nchw(x).requires_grad_(True)
  want = torch_block(tx)
  (want * ref.to_nchw(upstream)).sum().backward()
  np.testing.assert_allclose(out, ref.to_nhwc(want.detach()), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(grad_x, ref.to_nhwc(tx.grad), rtol=1e-4, atol=1e-4)
  for k, unit in enumerate(torch_block.units):  # the kernel slices of every unit get gradients
    np.testing.assert_allclose(np.asarray(grad_params[f'unit{k}']['kernel']).transpose(3, 2, 0, 1),
                               unit.weight.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(grad_params[f'unit{k}']['bias'], unit.bias.grad.numpy(),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('name', sorted(ABLATIONS))
@pytest.mark.slow
def test_ablation_builds_and_runs(name):
  config = tiny_config(**ABLATIONS[name])
  _, variables, out = _init_apply(config, (2, 64, 32, 1), (2, 32, 64, 3))
  assert out['restored_l'].shape == (2, 64, 32, 1)
  assert out['ab'].shape == (2, 64, 32, 2)
  assert out['rgb'].shape == (2, 64, 32, 3)
  assert float(jnp.abs(out['ab']).max()) <= 1.0
  assert np.all(np.isfinite(out['rgb']))
  k = config.model.histogram.num_bins
  v = 2 * k if config.model.histogram.fusion == 'histogram' else 2
  assert out['warped'][1].shape == (2, 16, 8, v)
  expected_scales = [1, 2, 3, 4] if config.model.histogram.scales == 'multi' else [1]
  assert sorted(out['warped']) == expected_scales
  assert out['output_hist'].shape == (2, 2, k)
  has_similarity = 'similarity_net' in variables['params']
  assert has_similarity == (config.model.similarity.mode != 'none')
  if config.model.restoration.levels == (1,):
    assert sorted(variables['params']['restoration_net']) == [
        'fusion', 'level_x1', 'output']


@pytest.mark.parametrize('shape', [(1, 32, 32), (2, 96, 64)])
@pytest.mark.slow
def test_input_sizes_and_different_reference_size(shape):
  b, h, w = shape
  _, _, out = _init_apply(tiny_config(), (b, h, w, 1), (b, 64, 96, 3))
  assert out['lab'].shape == (b, h, w, 3)


def test_unaligned_size_raises_and_pad_helper_round_trips():
  model = pikfix.build_generator(tiny_config().model)
  with pytest.raises(ValueError, match='multiple of 32'):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 40, 32, 1)), jnp.zeros((1, 32, 32, 3)))
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 37, 50, 1))
  padded, hw = layers.pad_to_multiple(x, pikfix.MULTIPLE)
  assert padded.shape == (1, 64, 64, 1)
  np.testing.assert_array_equal(layers.crop_to(padded, hw), x)


def _photo_batch(size=32):
  photos = [skdata.astronaut(), skdata.coffee()]
  rgb = np.stack([sktransform.resize(p, (size, size), anti_aliasing=True) for p in photos])
  return jnp.asarray(rgb, jnp.float32)


@pytest.mark.slow
def test_overfit_two_images_and_every_subnet_gets_gradients():
  config = tiny_config()
  model = pikfix.build_generator(config.model)
  rgb = _photo_batch()
  l, ab = color.rgb_to_lab_normalized(rgb)
  reference = rgb[::-1]  # each image is colourised from the other one
  variables = _init(model, l, reference)
  params = variables['params']
  frozen = params['similarity_net'].pop('resnet34')
  consts = {'batch_stats': variables['batch_stats']}

  def loss_fn(p):
    full = dict(p, similarity_net=dict(p['similarity_net'], resnet34=frozen))
    out = model.apply({'params': full, **consts}, l, reference)
    ab_l1 = jnp.mean(jnp.abs(out['ab'] - ab))
    total = (ab_l1 + jnp.mean(jnp.abs(out['restored_l'] - l))
             + 0.5 * histogram.emd_loss(out['output_hist'], out['reference_hist']))
    return total, ab_l1

  opt = optax.adam(3e-3)

  def step(p, s):
    (_, ab_l1), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
    updates, s = opt.update(g, s, p)
    return optax.apply_updates(p, updates), s, ab_l1, g

  state = opt.init(params)
  step = jax.jit(step)
  history = []
  for i in range(30):  # ab L1: 0.42 at step 1, 0.17 by step 3, 0.13 at step 30 (0.064 at 100)
    params, state, ab_l1, grads = step(params, state)
    history.append(float(ab_l1))
    if i == 0:
      for path in [('restoration_net',), ('colorization_net',), ('bin_centers',),
                   ('similarity_net', 'scale_coefficients'), ('similarity_net', 'shared_conv'),
                   ('similarity_net', 'project1'), ('similarity_net', 'project4')]:
        sub = functools.reduce(lambda t, k: t[k], path, grads)
        norm = sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(sub))
        assert norm > 0 and np.isfinite(norm), (path, norm)
  assert history[-1] <= 0.5 * history[0], (history[0], history[-1])


def test_restoration_net_keeps_learning_when_its_fusion_is_pushed_below_zero():
  """Training towards the identity on clean inputs drove the demo's fusion units below zero
  (99.9 % inactive behind a ReLU): the residual path then carried no gradient and the sub-net
  returned its input for good. With a linear fusion every parameter still gets gradient."""
  from pikfix_jax.models.restoration_net import RestorationNet
  net = RestorationNet(levels=(1, 4), features=8, num_blocks=1, num_units=2, growth=4)
  rng = np.random.default_rng(0)
  clean = jnp.asarray(rng.random((2, 32, 32, 1)), jnp.float32)
  noisy = clean + 0.1 * jnp.asarray(rng.standard_normal(clean.shape), jnp.float32)
  params = net.init(jax.random.PRNGKey(0), noisy)['params']
  params['fusion']['bias'] = jnp.full_like(params['fusion']['bias'], -10.0)
  grads = jax.grad(lambda p: jnp.mean(jnp.abs(net.apply({'params': p}, noisy) - clean)))(params)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    if path[-1].key == 'kernel':
      assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)
