"""GFP-GAN as a trainable method (pikfix_jax/methods/gfpgan.py, losses/gfpgan.py): its
StyleGAN2 discriminator against a torch transcription of the release's (tests/gfpgan_reference.py),
the loss pieces, one training step's gradients, and the config trained on a folder of face crops
in a subprocess, stopped, resumed bitwise, then used by `restore --faces=gfpgan` and evaluated."""

import io
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from conftest import train_stopped_and_resumed, with_overrides
from configs.baselines import gfpgan as gfpgan_config
from pikfix_jax import evaluate
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import restore
from pikfix_jax import restoring
from pikfix_jax import scoring
from pikfix_jax import weights
from pikfix_jax.losses import gfpgan as gfpgan_losses
from pikfix_jax.models import gfpgan
import gfpgan_reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4

# A 32 px, narrow GFP-GAN (and discriminator) that trains in seconds per step on a CPU.
TINY_FLAGS = {
    'data.image_size': 32, 'data.eval_image_size': 32, 'model.out_size': 32,
    'model.narrow': 0.03125, 'model.num_style_feat': 16, 'model.num_mlp': 2,
    'model.d_narrow': 0.03125, 'loss.perceptual_layers': ('relu1_2', 'relu2_2'),
    'loss.perceptual_layer_weights': (0.1, 1.0), 'loss.r1_every': 2,
    'data.degradation.num_textures': 2, 'data.degradation.texture_size': 64,
    'train.batch_size': 2, 'train.eval_batch_size': 2, 'train.num_eval_batches': 1,
    'train.num_train_steps': 4, 'train.eval_every': 1000, 'train.checkpoint_every': 1000,
    'train.log_every': 1, 'train.image_every': 1000,
}


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  c = gfpgan_config.get_config()
  return with_overrides(c, dict(TINY_FLAGS, **overrides))


def _discriminator_variables(module, torch_model, size):
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  expected = {weights.gfpgan_torch_key(tuple(path)): ((c, *path), leaf.shape)
              for (c, *path), leaf in flax.traverse_util.flatten_dict(
                  flax.core.unfreeze(shapes)).items()}
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  return weights.take_state(state, expected, 'discriminator',
                            lambda p, s: weights._gfpgan_perm(p[-1], len(s)))


@pytest.mark.parametrize('size,batch,multiplier', [(32, 8, 1), (16, 2, 2)])
def test_discriminator_matches_the_releases(size, batch, multiplier):
  """Random weights in the release's layout (every key mapped one to one by the generator's
  key rule): the logits equal the torch transcription's within 1e-4 (8 images: two
  minibatch-stddev groups of 4; 2 images: one group of 2)."""
  torch_model = ref.randomize_discriminator(
      ref.StyleGAN2Discriminator(size, channel_multiplier=multiplier, narrow=1 / 16), 0)
  module = gfpgan.StyleGAN2Discriminator(size, multiplier, 1 / 16)
  variables = _discriminator_variables(module, torch_model, size)
  x = np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    want = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  got = np.asarray(jax.jit(module.apply)(variables, jnp.asarray(x)))
  assert got.shape == (batch, 1) and np.abs(want).max() > 0.01
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_discriminator_at_512_has_the_releases_keys_and_shapes():
  """The release's options (out_size 512, channel_multiplier 1): the same state-dict keys and
  shapes (no compute: meta tensors and eval_shape)."""
  with torch.device('meta'):
    torch_model = ref.StyleGAN2Discriminator(512, channel_multiplier=1)
  want = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
  module = gfpgan.StyleGAN2Discriminator(512, 1)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((4, 512, 512, 3)))
  assert weights.gfpgan_torch_shapes(shapes) == want
  with pytest.raises(ValueError, match='not a multiple of the group size 4'):
    gfpgan.minibatch_stddev(jnp.zeros((6, 4, 4, 2)))


def test_loss_pieces():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
  pyramid = gfpgan_losses.image_pyramid(x, 3)
  assert [p.shape[1] for p in pyramid] == [2, 4, 8]
  np.testing.assert_allclose(pyramid[1][:, 0, 0], x[:, :2, :2].mean(axis=(1, 2)), atol=1e-6)
  g = gfpgan_losses.gram(x)
  flat = np.asarray(x).reshape(2, 64, 3)
  np.testing.assert_allclose(g, np.einsum('bpi,bpj->bij', flat, flat) / 192, atol=1e-6)
  # D(x) = sum(a * x) per image: grad a, R1 = sum(a^2)
  a = jnp.asarray(np.random.default_rng(1).normal(size=(8, 8, 3)), jnp.float32)
  r1 = gfpgan_losses.r1_penalty(lambda v: jnp.sum(v * a, axis=(1, 2, 3))[:, None], x)
  np.testing.assert_allclose(r1, jnp.sum(a * a), rtol=1e-5)


def test_config_checks_and_labels():
  c = tiny_config()
  method = methods.get(c)
  assert 'clean crop' in method.label(c) and 'gfpgan' in methods.names()
  assert 'configs.baselines.gfpgan' in method.config_modules
  c.model.gray_input = True
  assert 'zero chroma' in method.label(c)
  with pytest.raises(ValueError, match='batch_size=6'):
    methods.get(tiny_config(**{'train.batch_size': 6}))
  with pytest.raises(ValueError, match='power of two'):
    methods.get(tiny_config(**{'model.out_size': 48}))
  with pytest.raises(ValueError, match='image_size=64 must be config.model.out_size=32'):
    methods.get(tiny_config(**{'data.image_size': 64})).init_state(0)
  # D's Adam: the lazy-R1 correction of the release (r = 2 / 3 here).
  d = methods.get(tiny_config()).d_optim_config.optim
  assert d.learning_rate == pytest.approx(2e-3 * 2 / 3) and d.b1 == 0.0
  assert d.b2 == pytest.approx(0.99 ** (2 / 3))


def _batch(size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  target = np.concatenate([rng.uniform(0.2, 0.8, (2, size, size, 1)),
                           rng.uniform(-0.2, 0.2, (2, size, size, 2))], -1)
  return {'input_l': jnp.asarray(rng.uniform(0, 1, (2, size, size, 1)), jnp.float32),
          'target_lab': jnp.asarray(target, jnp.float32),
          'reference_rgb': jnp.zeros((2, size, size, 3), jnp.float32)}


@pytest.mark.slow
def test_a_step_trains_both_networks_with_lazy_r1():
  """Finite terms; the generator's and the discriminator's parameters both move; R1 only on
  every r1_every-th step; the colour-preserving input carries the target's chroma, the gray
  one none; fix_decoder leaves the StyleGAN2 decoder out of the trained parameters."""
  method = methods.get(tiny_config())
  state, frozen = method.init_state(0), method.init_frozen(0)
  step = jax.jit(method.train_step)
  batch = _batch(32)
  r1 = []
  for _ in range(2):
    new, scalars = step(state, batch, frozen)
    for name in method.loss_terms:
      assert np.isfinite(float(scalars[name])), name
    assert float(scalars['g_grad_norm']) > 0 and float(scalars['d_grad_norm']) > 0
    for before, after in ((state.g_params, new.g_params), (state.d_params, new.d_params)):
      moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after))
      assert sum(moved) > len(moved) // 2
    r1.append(float(scalars['r1']))
    state = new
  assert r1[0] == 0.0 and r1[1] > 0.0  # steps 1 and 2 of r1_every = 2
  face = lambda c: methods.get(c).generator.apply(
      {'params': state.g_params}, batch['input_l'], batch['target_lab'][..., 1:],
      method=type(method.generator).face_input)
  colour, gray = face(tiny_config()), face(tiny_config(**{'model.gray_input': True}))
  assert float(jnp.std(colour[..., 0] - colour[..., 2])) > 0.05
  np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-4)
  fixed = methods.get(tiny_config(**{'model.fix_decoder': True})).init_state(0)
  assert 'stylegan_decoder' not in fixed.g_params['gfpgan']
  assert set(fixed.g_frozen['gfpgan']) == {'stylegan_decoder'}


# ------------------------------------------------------------------- the command, end to end


def _face_folder(path) -> str:
  """Ten 40 px crops around the astronaut's face (shifted, scaled): face-like training data."""
  path.mkdir()
  photo = Image.fromarray(skimage.data.astronaut())
  for i in range(10):
    dx, dy, grow = (i % 3 - 1) * 6, (i // 3 % 3 - 1) * 6, (i % 4) * 8
    box = (160 + dx - grow, 60 + dy - grow, 290 + dx + grow, 190 + dy + grow)
    photo.crop(box).resize((40, 40), Image.BICUBIC).save(path / f'face{i}.png')
  return str(path)


def _main(workdir, faces, **overrides) -> list[str]:
  flags = dict(TINY_FLAGS, **{'data.image_folder': faces}, **overrides)
  return ([sys.executable, '-m', 'pikfix_jax.main', '--config=configs/baselines/gfpgan.py',
           f'--workdir={workdir}'] +
          [f'--config.{k}={v}' for k, v in flags.items()])  # tuples as Python literals


@pytest.mark.slow
def test_trains_resumes_bitwise_then_restores_faces_and_evaluates(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'xla_cache'))
  faces = _face_folder(tmp_path / 'faces')
  full, split = tmp_path / 'full', tmp_path / 'split'
  subprocess.run(_main(full, faces), cwd=ROOT, env=env, check=True, capture_output=True,
                 timeout=600)

  # The same command with a checkpoint every step, stopped by SIGTERM, then run again.
  stopped = train_stopped_and_resumed(_main(split, faces, **{'train.checkpoint_every': 1}),
                                      str(split), env, stop_after=1)
  assert stopped < 4, stopped
  _, expected, config = loading.load_generator(workdir=str(full))
  _, resumed, _ = loading.load_generator(workdir=str(split))
  flat = lambda v: jax.tree_util.tree_flatten_with_path(v)[0]
  assert len(flat(expected)) == len(flat(resumed)) > 0
  for (path, a), (_, b) in zip(flat(expected), flat(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))

  # restore --faces=gfpgan with the workdir as --face_checkpoint: one face restored and pasted.
  photo = tmp_path / 'astronaut.png'
  Image.fromarray(skimage.data.astronaut()).save(photo)

  class Identity:
    uses_reference = False
    last_info = {}

    def __call__(self, image, reference):
      return image

  messages = io.StringIO()
  code, _ = restore.run(restoring.Options(input=str(photo), output=str(tmp_path / 'out.png'),
                                        faces='gfpgan', face_checkpoint=str(full),
                                        save_faces=True),
                        restorer=Identity(), out=messages)
  assert code == 0, messages.getvalue()
  assert '1 face(s) restored (--faces=gfpgan)' in messages.getvalue()
  got = np.asarray(Image.open(tmp_path / 'out.png'))
  assert got.shape == (512, 512, 3) and np.any(got != skimage.data.astronaut())
  assert np.asarray(Image.open(tmp_path / 'out_face01_after.png')).shape == (32, 32, 3)
  # Another method's workdir is not a GFP-GAN: one line.
  code, _ = restore.run(restoring.Options(input=str(photo), output=str(tmp_path / 'x.png'),
                                        faces='gfpgan', face_checkpoint=str(tmp_path / 'nope')),
                        restorer=Identity(), out=messages)
  assert code != 0 and 'nope' in messages.getvalue().splitlines()[-1]

  # evaluate on the face folder: PSNR / SSIM of the aligned crops beside the trivial baselines.
  config.train.eval_batch_size = 2
  summary = evaluate.evaluate(config, methods.get(config).generator, expected,
                              str(tmp_path / 'eval'), max_batches=1, trained=config)
  table = open(tmp_path / 'eval' / 'table.md').read()
  assert "GFP-GAN (degraded L + the clean crop's chroma in)" in table
  assert 'input L, zero chroma' in table
  assert np.isfinite(summary['psnr']) and np.isfinite(summary['ssim'])


@pytest.mark.slow
def test_identity_loss_trains_the_generator_through_a_converted_arcface(tmp_path):
  """With config.backbones.arcface (a random arcface_resnet18.pth converted), one step reports
  a finite positive identity loss, weighted into 'total', and with every other weight at 0
  the identity term alone moves the generator."""
  import arcface_reference  # pylint: disable=g-import-not-at-top
  release = str(tmp_path / 'arcface_resnet18.pth')
  arcface_reference.write_release_file(release, seed=0)
  converted = str(tmp_path / 'arcface.msgpack')
  weights.save_variables(converted, weights.convert_files('arcface', release))
  only_identity = {f'loss.{n}_weight': 0.0
                   for n in ('pixel', 'pyramid', 'perceptual', 'style', 'adversarial')}
  method = methods.get(tiny_config(**{'backbones.arcface': converted}, **only_identity))
  assert 'identity' in method.loss_terms and 'identity' not in methods.get(tiny_config()).scalars
  state, frozen = method.init_state(0), method.init_frozen(0)
  assert set(frozen) == {'vgg', 'arcface'}
  new, scalars = jax.jit(method.train_step)(state, _batch(32), frozen)
  identity = float(scalars['identity'])
  assert np.isfinite(identity) and identity > 0
  np.testing.assert_allclose(float(scalars['total']), 10.0 * identity, rtol=1e-5)
  assert float(scalars['g_grad_norm']) > 0
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.g_params,
                                       new.g_params))
  assert sum(moved) > len(moved) // 2


@pytest.mark.slow
def test_evaluate_reports_the_identity_distance_with_an_arcface(tmp_path):
  """evaluate on a face folder with config.backbones.arcface: table.md gets the identity
  distance, the mean of 1 - cos of the embeddings of the 8-bit output and ground truth."""
  import arcface_reference  # pylint: disable=g-import-not-at-top
  release = str(tmp_path / 'arcface_resnet18.pth')
  arcface_reference.write_release_file(release, seed=0)
  converted = str(tmp_path / 'arcface.msgpack')
  weights.save_variables(converted, weights.convert_files('arcface', release))
  config = tiny_config(**{'backbones.arcface': converted,
                          'data.image_folder': _face_folder(tmp_path / 'faces')})
  method = methods.get(config)
  state = method.init_state(0)
  summary = evaluate.evaluate(config, method.generator, {'params': state.g_params},
                              str(tmp_path / 'eval'), max_batches=1)
  distance = summary['identity_distance']
  assert set(distance) == {scoring.MODEL, scoring.ZERO_CHROMA}  # the input as the baseline
  assert all(0.0 < d < 2.0 for d in distance.values())
  assert distance[scoring.MODEL] != distance[scoring.ZERO_CHROMA]
  table = open(tmp_path / 'eval' / 'table.md').read()
  assert ('config.backbones.arcface): GFP-GAN' in table and
          f'{distance[scoring.MODEL]:.4f}; input L, zero chroma (baseline) '
          f'{distance[scoring.ZERO_CHROMA]:.4f}.' in table)
