"""The ArcFace of GFP-GAN's identity loss (pikfix_jax/models/arcface.py, `--arch=arcface` in
weights.py): parity with a torch transcription of the release (tests/arcface_reference.py) on
random weights saved in the release's layout, strict conversion, and the loss term."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from pikfix_jax import weights
from pikfix_jax.losses import gfpgan as gfpgan_losses
from pikfix_jax.models import arcface
import arcface_reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4


@pytest.fixture(scope='module')
def release(tmp_path_factory):
  """(path of a random arcface_resnet18.pth saved through DataParallel, the torch network)."""
  path = str(tmp_path_factory.mktemp('arcface') / 'arcface_resnet18.pth')
  return path, ref.write_release_file(path, seed=0, data_parallel=True)


@pytest.mark.parametrize('size', [512, 32])
def test_identity_input_matches_the_releases_gray_resize(size):
  """Grey weights and bilinear resampling without anti-aliasing, down (512) and up (32)."""
  x = np.random.default_rng(size).uniform(-1.2, 1.2, (2, size, size, 3)).astype(np.float32)
  want = ref.gray_resize_for_identity(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  got = np.asarray(arcface.identity_input(jnp.asarray(x)))
  np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, atol=1e-6, rtol=0)


def test_converted_release_matches_the_torch_network(release, tmp_path):
  """The 'module.'-prefixed random file converted, saved and loaded as config.backbones does:
  embeddings of 512 px faces equal the transcription's (eval mode) within 1e-4."""
  path, torch_model = release
  out = str(tmp_path / 'arcface.msgpack')
  weights.save_variables(out, weights.convert_files('arcface', path))
  variables = weights.maybe_load_backbone(out, 'arcface', weights.variable_shapes('arcface'))
  x = np.random.default_rng(1).uniform(-1, 1, (2, 512, 512, 3)).astype(np.float32)
  with torch.no_grad():
    want = torch_model(ref.gray_resize_for_identity(
        torch.from_numpy(x.transpose(0, 3, 1, 2)))).numpy()
  got = np.asarray(jax.jit(arcface.embed)(variables, jnp.asarray(x)))
  assert got.shape == (2, 512) and np.abs(want).max() > 0.5
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_conversion_is_strict_and_names_the_file_and_key(release, tmp_path):
  path, torch_model = release
  state = {k: v for k, v in torch_model.state_dict().items()}
  bad = str(tmp_path / 'bad.pth')
  torch.save({k: v for k, v in state.items() if k != 'layer3.1.prelu.weight'}, bad)
  with pytest.raises(ValueError, match=r"bad\.pth: missing key 'layer3\.1\.prelu\.weight'"):
    weights.convert_files('arcface', bad)
  torch.save(dict(state, **{'fc.weight': torch.zeros(2)}), bad)
  with pytest.raises(ValueError, match=r"bad\.pth: unexpected key 'fc\.weight'"):
    weights.convert_files('arcface', bad)
  torch.save(dict(state, **{'module.bn5.bias': state['bn5.bias']}), bad)
  with pytest.raises(ValueError, match=r"bad\.pth: key 'module\.bn5\.bias' appears with and"):
    weights.convert_files('arcface', bad)
  torch.save(dict(state, **{'fc5.weight': torch.zeros(512, 4096)}), bad)
  with pytest.raises(ValueError, match=r"bad\.pth: key 'fc5\.weight' has shape \(512, 4096\)"):
    weights.convert_files('arcface', bad)
  with pytest.raises(ValueError, match=r'\(B, 128, 128, 1\) grey faces'):
    arcface.ResNetArcFace().init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)))


def test_identity_term_is_the_releases_weighted_l1():
  """loss.identity_weight x mean |e_out - e_target| joins 'total'; without embeddings the
  terms are the ones of before (no 'identity')."""
  rng = np.random.default_rng(0)
  out, target = rng.normal(size=(2, 512)), rng.normal(size=(2, 512))
  image = jnp.zeros((2, 8, 8, 3))
  feats = {'relu1_2': jnp.ones((2, 8, 8, 4))}
  config = ml_collections.ConfigDict(dict(
      pixel_weight=0.0, perceptual_weight=0.0, style_weight=0.0, adversarial_weight=0.0,
      identity_weight=10.0, perceptual_layers=('relu1_2',), perceptual_layer_weights=(1.0,)))
  args = (image, [image], image, jnp.zeros((2, 1)), feats, feats, 0.0, config)
  terms = gfpgan_losses.generator_loss(*args, (jnp.asarray(out), jnp.asarray(target)))
  want = np.mean(np.abs(out - target))
  np.testing.assert_allclose(terms['identity'], want, rtol=1e-6)
  np.testing.assert_allclose(terms['total'], 10.0 * want, rtol=1e-6)
  assert 'identity' not in gfpgan_losses.generator_loss(*args)
  # Its gradient reaches the output's embedding only (the target's is held constant).
  grads = jax.grad(gfpgan_losses.identity_loss, argnums=(0, 1))(jnp.asarray(out),
                                                                 jnp.asarray(target))
  np.testing.assert_allclose(grads[0], np.sign(out - target) / out.size, rtol=1e-6)
  assert not np.any(np.asarray(grads[1]))


def test_identity_distance_is_one_minus_the_cosine(release):
  """evaluate's identity distance against numpy on the network's own embeddings."""
  variables = weights.convert_files('arcface', release[0])
  faces = np.random.default_rng(2).uniform(-1, 1, (2, 2, 64, 64, 3)).astype(np.float32)
  a, b = (np.asarray(arcface.embed(variables, jnp.asarray(f)), np.float64) for f in faces)
  want = 1 - np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
  got = arcface.identity_distance(variables, jnp.asarray(faces[0]), jnp.asarray(faces[1]))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(want > 1e-3)
  np.testing.assert_allclose(arcface.identity_distance(variables, faces[0], faces[0]), 0,
                             atol=1e-6)


@pytest.mark.slow
def test_convert_weights_command_writes_the_backbone(release, tmp_path):
  """`convert_weights --arch=arcface` on the release file; load_variables checks the result,
  which equals the in-process conversion."""
  path, _ = release
  out = str(tmp_path / 'weights' / 'arcface.msgpack')
  subprocess.run([sys.executable, '-m', 'data_prep.convert_weights', '--arch=arcface',
                  f'--input={path}', f'--output={out}'], cwd=ROOT, check=True,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  tree = weights.load_variables(out, 'arcface')
  assert weights.fingerprint(tree) == weights.fingerprint(weights.convert_files('arcface', path))
