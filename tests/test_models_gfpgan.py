"""GFP-GAN (models/gfpgan.py; Wang et al. 2021) and its converter (weights.py, arch 'gfpgan')
against a torch transcription of the released clean network (tests/gfpgan_reference.py), whose
state-dict keys are the released files' `params_ema` keys (docs/MODEL.md, "GFP-GAN")."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pikfix_jax import weights
from pikfix_jax.models import gfpgan
import gfpgan_reference as ref
from tree_checks import count

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4  # float32, whole network
# Small configs: the release's defaults narrowed, and every option flipped.
SMALL = dict(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.25)
SMALL_OTHER = dict(out_size=32, num_style_feat=16, num_mlp=2, input_is_latent=False,
                   different_w=False, narrow=0.125, sft_half=False)


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


def test_release_keys_and_shapes_map_one_to_one_at_512():
  """The v1.3 / v1.4 network (GFPGANer's settings), never run: the torch transcription's state
  dict (meta device) is exactly the Flax tree under the mechanical key mapping, the config read
  off its shapes is GFPGANer's, and the counts agree (86,444,252 parameters + 699,024 noise
  values = 348.57 MB of float32, the released 348,632,874-byte file less pickle overhead)."""
  with torch.device('meta'):
    state = {k: tuple(v.shape) for k, v in ref.GFPGANv1Clean().state_dict().items()}
  config = weights.gfpgan_config(state)
  assert config == dict(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8,
                        input_is_latent=True, different_w=True, narrow=1, sft_half=True)
  shapes = weights.gfpgan_variable_shapes(gfpgan.GFPGANv1Clean(**config))
  assert weights.gfpgan_torch_shapes(shapes) == state
  assert state['stylegan_decoder.style_convs.13.modulated_conv.weight'] == (1, 64, 64, 3, 3)
  assert shapes['params']['stylegan_decoder']['style_convs_13']['modulated_conv'][
      'kernel'].shape == (1, 3, 3, 64, 64)
  built = weights.build_model('gfpgan')  # what --arch=gfpgan names without a file: the release
  assert {f: getattr(built, f) for f in config} == config
  params, buffers = ref.count_state(ref.GFPGANv1Clean)
  assert count(shapes['params']) == params == 86_444_252
  assert count(shapes['buffers']) == buffers == 699_024


def test_torch_key_mapping_examples():
  key = weights.gfpgan_torch_key
  assert key(('condition_scale_3_2', 'kernel')) == 'condition_scale.3.2.weight'
  assert key(('toRGB_0', 'bias')) == 'toRGB.0.bias'
  assert key(('conv_body_down_6', 'skip', 'kernel')) == 'conv_body_down.6.skip.weight'
  assert key(('stylegan_decoder', 'style_conv1', 'weight')) == 'stylegan_decoder.style_conv1.weight'
  assert (key(('stylegan_decoder', 'style_mlp_15', 'bias'))
          == 'stylegan_decoder.style_mlp.15.bias')
  assert key(('stylegan_decoder', 'noises', 'noise0')) == 'stylegan_decoder.noises.noise0'


def _tiny_state(**kw) -> dict:
  return {k: v.numpy() for k, v in
          ref.GFPGANv1Clean(**{**dict(out_size=16, num_style_feat=8, narrow=1 / 64), **kw})
          .state_dict().items()}


@pytest.mark.parametrize('edit, message', [
    (lambda s: s.pop('stylegan_decoder.to_rgbs.1.bias'),
     "missing key 'stylegan_decoder.to_rgbs.1.bias'"),
    (lambda s: s.pop('stylegan_decoder.noises.noise4'),
     "missing key 'stylegan_decoder.noises.noise4'"),
    (lambda s: s.update({'stylegan_decoder.extra.weight': np.zeros(3)}),
     "unexpected key 'stylegan_decoder.extra.weight'"),
    (lambda s: s.update({'toRGB.1.weight': np.zeros((3, 4, 3, 3))}),
     r"key 'toRGB.1.weight' has shape \(3, 4, 3, 3\), expected \(3, 4, 1, 1\)"),
    (lambda s: s.update({'stylegan_decoder.style_conv1.bias': np.zeros(8)}),
     r"key 'stylegan_decoder.style_conv1.bias' has shape \(8,\), expected \(1, 8, 1, 1\)"),
    (lambda s: s.pop('stylegan_decoder.constant_input.weight'),
     "missing key 'stylegan_decoder.constant_input.weight'"),
])
def test_bad_files_fail_naming_key_and_file(tmp_path, edit, message):
  state = _tiny_state()
  edit(state)
  path = str(tmp_path / 'GFPGANv1.4.pth')
  torch.save({'params_ema': {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}}, path)
  with pytest.raises(ValueError, match=message) as info:
    weights.convert_files('gfpgan', path)
  assert str(info.value).startswith(f'{path}: ') and '\n' not in str(info.value)


def test_release_layouts_are_read(tmp_path):
  """{'params_ema': sd} (the released files), {'params': sd} (GFPGANer's fallback) and a bare
  state dict convert alike; anything else is refused naming the file."""
  state = {k: torch.from_numpy(v) for k, v in _tiny_state(sft_half=False).items()}
  converted = []
  for name, content in [('ema', {'params_ema': state}), ('params', {'params': state}),
                        ('bare', state)]:
    path = str(tmp_path / f'{name}.pth')
    torch.save(content, path)
    converted.append(weights.convert_files('gfpgan', path))
  for other in converted[1:]:
    jax.tree.map(np.testing.assert_array_equal, converted[0], other)
  assert weights.gfpgan_config(weights.gfpgan_torch_shapes(converted[0]))['sft_half'] is False
  path = str(tmp_path / 'nested.pth')
  torch.save({'params_ema': {'a': {'b': torch.zeros(1)}}}, path)
  with pytest.raises(ValueError, match=f"{path}: key 'a' holds a dict"):
    weights.convert_files('gfpgan', path)


def _run_both(torch_model, model, variables, x, noise):
  with torch.no_grad():
    image_t, rgbs_t = torch_model(_nchw(x), noise=[torch.from_numpy(n) for n in noise])
  image, rgbs = jax.jit(model.apply)(variables, jnp.asarray(x),
                                     [jnp.asarray(n.transpose(0, 2, 3, 1)) for n in noise])
  return (image, rgbs), (_nhwc(image_t), [_nhwc(r) for r in rgbs_t])


@pytest.mark.slow
@pytest.mark.parametrize('config', [SMALL, SMALL_OTHER], ids=['release_options', 'other_options'])
def test_converted_network_matches_torch(tmp_path, config):
  """A fake release file (random weights, {'params_ema': ...}) converted with the CLI and loaded
  with load_gfpgan: the restored face and the intermediate RGB images equal the torch
  transcription's within 1e-4 (float32) with the same noise maps, and with the file's own noise
  buffers (randomize_noise=False)."""
  torch_model = ref.randomize(ref.GFPGANv1Clean(**config), 0)
  path, out = str(tmp_path / 'GFPGANv1.4.pth'), str(tmp_path / 'gfpgan.msgpack')
  ref.write_release_file(path, torch_model)
  subprocess.run([sys.executable, '-m', 'data_prep.convert_weights', '--arch=gfpgan',
                  f'--input={path}', f'--output={out}'], cwd=_ROOT, check=True,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  model, variables = weights.load_gfpgan(out)
  # input_is_latent is not in the weights (True for every released model)
  model = model.clone(input_is_latent=config.get('input_is_latent', True))
  for field, value in config.items():  # the 32 px config has no 64 px level: multiplier 1
    assert getattr(model, field) == value, field
  size = config['out_size']
  x = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  (image, rgbs), (image_t, rgbs_t) = _run_both(torch_model, model, variables, x,
                                               ref.noise_maps(size, 2, 2))
  assert image.shape == (2, size, size, 3) and len(rgbs) == len(rgbs_t) == int(np.log2(size)) - 2
  assert 1.0 < float(np.abs(image_t).max()) < 50.0  # non-trivial, float32-sized values
  np.testing.assert_allclose(image, image_t, atol=TOL, rtol=0)
  for rgb, rgb_t in zip(rgbs, rgbs_t):
    np.testing.assert_allclose(rgb, rgb_t, atol=TOL, rtol=0)
  with torch.no_grad():
    fixed_t, _ = torch_model(_nchw(x), randomize_noise=False)
  fixed, _ = jax.jit(lambda v, x: model.apply(v, x, randomize_noise=False, return_rgb=False))(
      variables, jnp.asarray(x))
  np.testing.assert_allclose(fixed, _nhwc(fixed_t), atol=TOL, rtol=0)


@pytest.mark.slow
def test_random_noise_comes_from_the_noise_rng():
  """randomize_noise (the release's default): N(0, 1) maps from rng 'noise', one per image;
  the same key gives the same face, another key another; with zero noise strengths (the
  init) the noise does not matter."""
  model = gfpgan.GFPGANv1Clean(out_size=16, num_style_feat=8, narrow=1 / 64)
  x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x)
  assert set(variables) == {'params', 'buffers'}
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 0.3 if p[-1].key == 'weight' and v.shape == (1,) else v,
      variables['params'])
  run = jax.jit(lambda v, x, key: model.apply(v, x, return_rgb=False, rngs={'noise': key})[0])
  noisy = {'params': params, 'buffers': variables['buffers']}
  a, b = run(noisy, x, jax.random.PRNGKey(1)), run(noisy, x, jax.random.PRNGKey(2))
  np.testing.assert_array_equal(a, run(noisy, x, jax.random.PRNGKey(1)))
  assert not np.allclose(a, b)
  np.testing.assert_allclose(run(variables, x, jax.random.PRNGKey(1)),
                             run(variables, x, jax.random.PRNGKey(2)), atol=1e-6)
  with pytest.raises(ValueError, match='expected \\(B, 16, 16, 3\\)'):
    model.apply(variables, x[:, :8])
