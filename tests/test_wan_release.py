"""The released checkpoints of Wan et al. (pikfix_jax/wan_release.py): every release step and
network against a PyTorch transcription of the release (tests/bopbtl_reference.py), the
converter's strictness, and stage 1 (quality, scratch, HR) end to end on odd-sized photos.

Fast tier: the release's resizes, masks, attention arithmetic, patch composition and image
steps, and the converter's errors, on small arrays. Slow tier: a fake release folder with
random weights at the release's sizes, converted once per session (`release` fixture)."""

import copy
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage
import torch
from torch.nn import functional as F

import bopbtl_reference as ref
from pikfix_jax import wan_release
from pikfix_jax import weights
from pikfix_jax.models import wan

TOL = 1e-4  # max |diff| allowed between torch and the converted Flax networks (float32)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().permute(0, 2, 3, 1).numpy()


def _nchw(a) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32))).permute(0, 3, 1, 2)


def _photo(seed: int, h: int, w: int) -> np.ndarray:
  """A smooth photo with texture (not noise: resizes and the networks see structure)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
  return np.clip(127.5 + 90 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


# torch's resizes, the release's latent masks and attention


@pytest.mark.parametrize('src, dst', [((9, 7), (4, 3)), ((5, 6), (11, 13)),
                                      ((67, 53), (16, 13)), ((6, 5), (12, 10))])
def test_torch_interpolate_matches_torch(src, dst):
  x = np.random.default_rng(0).normal(size=(2, 3) + src).astype(np.float32)
  for mode in ('bilinear', 'nearest'):
    want = F.interpolate(torch.from_numpy(x), dst, mode=mode).numpy()
    got = wan.torch_interpolate(jnp.asarray(x.transpose(0, 2, 3, 1)), dst, mode)
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize('image, latent', [((44, 36), (11, 9)), ((67, 53), (16, 13))])
def test_release_latent_masks_match_the_release(image, latent):
  mask = (np.random.default_rng(1).uniform(size=(2, 1) + image) > 0.93).astype(np.float32)
  x = torch.zeros((2, 8) + latent)
  _, keep = ref.NonLocalBlock2D_with_mask_Res(8).attention(x, torch.from_numpy(mask))
  got = wan.release_latent_mask(jnp.asarray(mask.transpose(0, 2, 3, 1)), latent,
                                'partial_nonlocal')
  np.testing.assert_array_equal(np.asarray(got)[..., 0], 1.0 - keep[:, 0].numpy())
  dilated = F.interpolate(torch.from_numpy(mask), latent, mode='bilinear')
  dilated[dilated > 0] = 1.0
  got = wan.release_latent_mask(jnp.asarray(mask.transpose(0, 2, 3, 1)), latent,
                                'patch_attention')
  np.testing.assert_array_equal(np.asarray(got)[..., 0], dilated[:, 0].numpy())
  assert 0 < dilated.sum() < dilated.numel()


def test_renormalised_masked_softmax_matches_the_release():
  """Softmax over all keys, masked, L1-renormalised with F.normalize's 1e-12 floor, including
  rows where the kept keys hold < 1e-12 of the mass (sum < 1: the release's, not eq. 7's)
  and an all-masked row (all 0)."""
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 4, 6)).astype(np.float32) * 3.0
  keep = rng.uniform(size=(3, 1, 6)) > 0.4
  keep[0, 0, :] = [True, False, False, True, False, True]
  logits[0, 1, :] = [0.0, 40.0, 0.0, -3.0, 35.0, 1.0]  # kept mass ~1e-17: below the floor
  keep[2, 0, :] = False
  t = F.softmax(torch.from_numpy(logits), dim=2) * torch.from_numpy(keep.astype(np.float32))
  want = F.normalize(t, p=1, dim=2).numpy()
  got = np.asarray(wan.renormalised_masked_softmax(jnp.asarray(logits), jnp.asarray(keep)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-30)
  assert got[0, 1].sum() < 1e-3  # the degenerate row really is degenerate
  np.testing.assert_array_equal(got[2], 0.0)
  # elsewhere the same function as eq. 7's masked softmax
  ordinary = np.asarray(wan.masked_softmax(jnp.asarray(logits), jnp.asarray(keep)))
  np.testing.assert_allclose(np.delete(got[0], 1, 0), np.delete(ordinary[0], 1, 0), rtol=1e-5)


def _patch_attention_pair(channels: int, patch: int, seed: int):
  torch.manual_seed(seed)
  net = ref.Patch_Attention_4(patch, channels=channels).eval()
  net.apply(ref.release_weights_init)
  for p in net.parameters():  # livelier than N(0, 0.02): the composition must matter
    p.data.mul_(10.0)
  conv = lambda c: {'kernel': c.weight.detach().numpy().transpose(2, 3, 1, 0),
                    'bias': c.bias.detach().numpy()}
  block = net.res_block[0].conv_block
  params = {'res0': {'conv0': conv(block[1]), 'conv1': conv(block[5])},
            'combine': conv(net.F_Combine)}
  return net, wan.PatchAttention(patch, chunk=4), {'params': params}


@pytest.mark.parametrize('patch, hw, case', [
    (2, (9, 11), 'some'),  # remainder row and column: zeros after the fold
    pytest.param(4, (8, 12), 'some', marks=pytest.mark.slow),
    pytest.param(4, (9, 13), 'none', marks=pytest.mark.slow),  # no masked tile: x kept whole
    # every tile masked: the release crashes (an argmax over no keys), x is kept
    pytest.param(2, (6, 8), 'all', marks=pytest.mark.slow),
    # smaller than a tile: the release's F.unfold fails, x is kept
    pytest.param(8, (5, 7), 'small', marks=pytest.mark.slow),
])
def test_patch_attention_matches_the_release(patch, hw, case):
  channels = 4
  net, module, variables = _patch_attention_pair(channels, patch, seed=patch)
  rng = np.random.default_rng(patch + hw[0])
  z = rng.normal(size=(1, channels) + hw).astype(np.float32)
  mask = np.zeros((1, 1) + hw, np.float32)
  if case in ('some', 'small'):
    mask[..., :patch + 1, :2 * patch] = 1.0
  elif case == 'all':
    mask[:] = 1.0
  m = jnp.asarray(mask.transpose(0, 2, 3, 1))
  got = np.asarray(module.apply(variables, jnp.asarray(z.transpose(0, 2, 3, 1)), m))
  if case in ('all', 'small'):
    x = net.res_block(torch.from_numpy(z))
    with torch.no_grad():
      want = net.F_Combine(torch.cat([torch.from_numpy(z), x, torch.from_numpy(mask)], 1))
  else:
    with torch.no_grad():
      want = net(torch.from_numpy(z), torch.from_numpy(mask))
  np.testing.assert_allclose(got, _nhwc(want), rtol=0, atol=1e-4)


def test_patch_compose_copies_the_most_similar_intact_tile():
  x = np.zeros((1, 4, 6, 1), np.float32)
  x[0, :2, :2] = 1.0  # tile 0: masked query
  x[0, :2, 4:] = 2.0  # tile 2: the same direction -> chosen (cosine 1)
  x[0, 2:, 2:4, 0] = [[1.0, -1.0], [1.0, -1.0]]  # tile 4: orthogonal
  m = np.zeros_like(x)
  m[0, :2, :2] = 1.0
  got = np.asarray(wan.patch_compose(jnp.asarray(x), jnp.asarray(m), 2, chunk=2))
  want = x.copy()
  want[0, :2, :2] = 2.0
  np.testing.assert_array_equal(got, want)


# The release's image steps


@pytest.mark.parametrize('hw', [(67, 53), (53, 67), (66, 50), (6, 10), (256, 200), (31, 33)])
def test_quality_resize_matches_the_release(hw):
  photo = _photo(0, *hw)
  for mode in ('Full', 'Scale'):
    want = ref.release_quality_resize(Image.fromarray(photo), scale=mode == 'Scale')
    got = wan_release.quality_resize(photo, mode)
    np.testing.assert_array_equal(got, np.asarray(want))
  # Python's round: 6 / 4 = 1.5 -> 2, 10 / 4 = 2.5 -> 2 (halves to even)
  assert wan_release.quality_resize(_photo(0, 6, 10), 'Full').shape == (8, 8, 3)


@pytest.mark.parametrize('hw', [(67, 53), (40, 24), (64, 48), (300, 180)])
def test_detection_steps_match_the_release(hw):
  photo = _photo(1, *hw)
  want = np.asarray(ref.release_detection_resize(Image.fromarray(photo)))
  got = wan_release.detection_resize(photo)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(wan_release.grey(got), np.asarray(Image.fromarray(got).convert('L')))
  t = torch.from_numpy(np.asarray(Image.fromarray(got).convert('L'), np.float32) / 255.0)
  t = ((t - 0.5) / 0.5)[None, None]
  np.testing.assert_array_equal(wan_release.to_signed(wan_release.grey(got)), t[0, 0].numpy())
  for short in (256, 64):
    assert wan_release.detector_size(*got.shape[:2], short) == tuple(
        ref.release_scale_tensor(t, short).shape[2:])


def test_to_signed_matches_totensor_normalize():
  photo = _photo(2, 5, 7)
  t = torch.from_numpy(photo).permute(2, 0, 1).float().div(255)
  t = (t - 0.5) / 0.5
  np.testing.assert_array_equal(wan_release.to_signed(photo), t.permute(1, 2, 0).numpy())


def test_stretch_to_uint8_matches_save_image():
  rng = np.random.default_rng(3)
  g = np.tanh(rng.normal(size=(1, 3, 9, 7)).astype(np.float32) * 0.3)
  want = ref.release_save_image((torch.from_numpy(g) + 1.0) / 2.0)
  got = wan_release.stretch_to_uint8((g[0].transpose(1, 2, 0) + 1.0) / 2.0)
  np.testing.assert_array_equal(got, want)
  assert got.min() == 0 and got.max() == 255  # each image stretched to its own range
  flat = np.full((3, 4, 3), 0.3, np.float32)  # a constant image: (x - min) / 1e-5 = 0
  np.testing.assert_array_equal(wan_release.stretch_to_uint8(flat), 0)
  np.testing.assert_array_equal(ref.release_save_image(torch.full((1, 3, 3, 4), 0.3)), 0)


def test_dilation_and_white_fill_match_the_release():
  rng = np.random.default_rng(4)
  mask = (rng.uniform(size=(23, 17)) > 0.97).astype(np.uint8) * 255
  mask[0, 0] = mask[22, 16] = 255  # at the borders
  png = np.repeat(mask[..., None], 3, -1)
  want = ref.release_dilate(png, 3)
  got = wan_release.dilate(mask)
  np.testing.assert_array_equal(got, want[..., 0])
  photo = _photo(5, 23, 17)
  m = want.astype(np.float64) / 255
  hole = (photo.astype(np.float64) * (1 - m) + m * 255).astype(np.uint8)
  np.testing.assert_array_equal(wan_release.fill_scratches(photo, got > 0), hole)


def test_tiny_photos_raise_one_line_errors():
  with pytest.raises(ValueError, match='too small'):
    wan_release.detection_resize(_photo(0, 7, 40))
  with pytest.raises(ValueError, match='too small'):
    wan_release.quality_resize(_photo(0, 1, 40), 'Full')
  with pytest.raises(ValueError, match='test_mode'):
    wan_release.quality_resize(_photo(0, 8, 8), 'Crop')


# The converter's strictness (small files)


def _vae_state() -> dict:
  torch.manual_seed(0)
  return {k: v.numpy() for k, v in ref.GlobalGenerator_DCDCv2().state_dict().items()}


def _convert_vae(state: dict, source: str = 'VAE.pth') -> dict:
  module = wan_release.build_network('VAE_A_quality')
  return weights.convert_bopbtl_state(state, module, wan_release.variable_shapes(module),
                                      source)


def test_converter_rejects_unexpected_missing_and_misshapen_keys():
  state = _vae_state()
  variables = _convert_vae(state)
  kernel = variables['params']['decoder']['up0']['kernel']
  np.testing.assert_array_equal(kernel, state['decoder.4.weight'].transpose(2, 3, 0, 1))
  with pytest.raises(ValueError, match=r"^VAE.pth: unexpected key 'encoder.99.weight'$"):
    _convert_vae(dict(state, **{'encoder.99.weight': np.zeros(3)}))
  with pytest.raises(ValueError, match=r"^VAE.pth: missing key 'decoder.11.bias'$"):
    _convert_vae({k: v for k, v in state.items() if k != 'decoder.11.bias'})
  bad = dict(state, **{'encoder.1.weight': np.zeros((64, 1, 7, 7), np.float32)})
  with pytest.raises(ValueError, match=r"^VAE.pth: key 'encoder.1.weight' has shape"):
    _convert_vae(bad)


def test_converter_files_and_detector_filters(tmp_path):
  with pytest.raises(ValueError, match='no restoration/ folder'):
    wan_release.convert(str(tmp_path))
  folder = tmp_path / 'Global' / 'checkpoints' / 'restoration' / 'VAE_A_quality'
  folder.mkdir(parents=True)
  torch.save(ref.GlobalGenerator_DCDCv2().state_dict(), folder / 'latest_net_G.pth')
  with pytest.raises(ValueError, match=r'VAE_B_quality/latest_net_G.pth: missing checkpoint'):
    wan_release.convert(str(tmp_path))
  torch.save({'a': 1}, tmp_path / 'x.pt')
  with pytest.raises(ValueError, match="key 'a' holds a int"):
    weights.read_bopbtl_checkpoint(str(tmp_path / 'x.pt'))
  with pytest.raises(ValueError, match="missing key 'model_state'"):
    weights.read_bopbtl_checkpoint(str(tmp_path / 'x.pt'), detection=True)
  # a small detector: the filters are checked; BatchNorm counters may be absent
  unet = ref.randomize_batchnorm(ref.UNet(depth=2, wf=2), 0)
  state = {k: v.numpy() for k, v in unet.state_dict().items()
           if not k.endswith('num_batches_tracked')}
  module = wan.ScratchDetector(base_features=4, depth=2)
  shapes = wan_release.variable_shapes(module)
  variables = weights.convert_bopbtl_state(state, module, shapes, 'det.pt')
  np.testing.assert_array_equal(variables['batch_stats']['up0_block1_norm']['var'],
                                state['up_path.1.conv_block.block.6.running_var'])
  bad = dict(state, **{'down_sample.1.4.filt': state['down_sample.1.4.filt'] * 2})
  with pytest.raises(ValueError, match=r"^det.pt: key 'down_sample.1.4.filt' is not the"):
    weights.convert_bopbtl_state(bad, module, shapes, 'det.pt')


# Whole networks and stage 1 (slow: the release's sizes)


@pytest.fixture(scope='session')
def converted_release(tmp_path_factory):
  """(torch networks, converted folder): a fake release (random weights, the release's layout,
  decoys, the detector without BatchNorm counters) converted with the command line."""
  root = str(tmp_path_factory.mktemp('bopbtl_release'))
  nets = ref.write_fake_release(root, seed=0)
  out = os.path.join(root, 'converted')
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  subprocess.run([sys.executable, '-m', 'data_prep.convert_weights', '--arch=bopbtl',
                  f'--input={root}', f'--output={out}'], check=True, cwd=REPO, env=env,
                 capture_output=True)
  return nets, out


@pytest.fixture(scope='session')
def release(converted_release):
  """(torch networks, the converted release loaded with wan_release.load): on CPU, the
  mapping networks' wide 3x3 convs by Winograd's F(2x2, 3x3)."""
  nets, out = converted_release
  return nets, wan_release.load(out)


@pytest.fixture(scope='session')
def release_direct(converted_release):
  """The same, every conv XLA's convolution (`winograd=False`, as lowered for a GPU)."""
  nets, out = converted_release
  return nets, wan_release.load(out, winograd=False)


@pytest.mark.slow
def test_converted_files_and_config(release):
  _, loaded = release
  assert set(loaded.modules) == set(wan_release.NETWORKS)
  assert loaded.config['networks']['mapping_scratch']['kwargs']['block'] == 'partial_nonlocal'
  for name, module in loaded.modules.items():
    built = wan_release.build_network(name)
    mapping = isinstance(built, wan.MappingNetwork)  # Winograd's convs on CPU, for inference
    assert module == (built.clone(winograd=True) if mapping else built)


@pytest.mark.slow
def test_a_mode_loads_only_its_networks(converted_release):
  """photo_restorer holds the networks its mode runs (what the memory benchmark measures);
  a network the folder lacks is a one-line error."""
  _, directory = converted_release
  for (with_scratch, hr), mapping in (((False, False), 'mapping_quality'),
                                      ((True, False), 'mapping_scratch'),
                                      ((True, True), 'mapping_Patch_Attention')):
    held = set(wan_release.photo_restorer(directory, with_scratch, hr).stage1.release.modules)
    assert held == set(wan_release.networks_for(with_scratch, hr)) and mapping in held
    assert len(held) == (4 if with_scratch else 3)
  with pytest.raises(ValueError, match='no mapping_nothing network'):
    wan_release.load(directory, ('VAE_A_quality', 'mapping_nothing'))


def _run(loaded, name: str, *args, method=None):
  module, variables = loaded.modules[name], loaded.variables[name]
  return np.asarray(jax.jit(lambda v, *a: module.apply(v, *a, method=method))(variables, *args))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['VAE_A_quality', 'VAE_B_scratch'])
def test_vae_parity(release, name):
  nets, loaded = release
  x = np.tanh(np.random.default_rng(6).normal(size=(1, 3, 67, 53))).astype(np.float32)
  with torch.no_grad():
    code = nets[name](torch.from_numpy(x), flow='enc')
    image = nets[name](code, flow='dec')
  got_code = _run(loaded, name, jnp.asarray(x.transpose(0, 2, 3, 1)),
                  method=lambda m, x: m.encode(x)[0])
  assert got_code.shape == (1, 16, 13, 64)  # torch's floor arithmetic, no padding
  diff_code = np.abs(got_code - _nhwc(code)).max()
  got_image = _run(loaded, name, jnp.asarray(_nhwc(code)), method='decode')
  diff_image = np.abs(got_image - _nhwc(image)).max()
  print(f'{name}: max |diff| code {diff_code:.2e}, image {diff_image:.2e}')
  assert diff_code <= TOL and diff_image <= TOL


def _mask(hw, seed):
  m = np.zeros((1, 1) + hw, np.float32)
  rng = np.random.default_rng(seed)
  r, c = rng.integers(hw[0] // 2, hw[0]), rng.integers(hw[1] // 2, hw[1])
  m[0, 0, r:r + 2, :] = 1.0  # scratch-like strokes
  m[0, 0, :, c] = 1.0
  m[0, 0, :hw[0] // 3, :hw[1] // 3] = 1.0  # one large hole: whole tiles at every scale
  return m


@pytest.mark.slow
@pytest.mark.parametrize('name, latent, image', [
    ('mapping_quality', (16, 13), None),
    ('mapping_scratch', (16, 13), (67, 53)),
    ('mapping_scratch', (11, 9), (44, 36)),
    ('mapping_Patch_Attention', (20, 18), (80, 72)),
])
@pytest.mark.parametrize('winograd', [True, False])
def test_mapping_parity(release, release_direct, name, latent, image, winograd):
  nets, loaded = release if winograd else release_direct
  z = np.random.default_rng(7).normal(size=(1, 64) + latent).astype(np.float32)
  mask = _mask(image, 8) if image else None
  with torch.no_grad():
    want = nets[name](torch.from_numpy(z), torch.from_numpy(mask) if image else None)
  mask_in = None if image is None else jnp.asarray(mask.transpose(0, 2, 3, 1))
  got = _run(loaded, name, jnp.asarray(z.transpose(0, 2, 3, 1)), mask_in)
  diff = np.abs(got - _nhwc(want)).max()
  print(f'{name} {latent}: max |diff| {diff:.2e} (output max |x| {np.abs(got).max():.2f})')
  assert diff <= TOL


@pytest.mark.slow
def test_detector_parity(release):
  nets, loaded = release
  x = np.random.default_rng(9).uniform(size=(1, 1, 48, 64)).astype(np.float32)
  with torch.no_grad():
    want = nets['detection'](torch.from_numpy(2.0 * x - 1.0))
  got = _run(loaded, 'detection', jnp.asarray(x.transpose(0, 2, 3, 1)))
  diff = np.abs(got - _nhwc(want)).max()
  print(f'detection: max |diff| {diff:.2e} (logits max |x| {np.abs(got).max():.2f})')
  assert diff <= TOL


def _compare_stage1(release, photo, short_side=64, mask_png=None, **kw):
  """Stage 1 against the release's steps in torch: the network input and mask exactly, the
  tanh output to 1e-4 of torch in float64 (the value without rounding) and 2e-4 of torch in
  float32 (itself ~4e-5 from float64 after ~50 layers with instance norms), the saved uint8
  image within 1 level."""
  nets, loaded = release
  want = ref.release_stage1(nets, Image.fromarray(photo), mask_png=mask_png,
                            short_side=short_side, **kw)
  nets64 = {k: copy.deepcopy(v).double() for k, v in nets.items()}
  want64 = ref.release_stage1(nets64, Image.fromarray(photo), mask_png=want['mask_png'],
                              short_side=short_side, dtype=torch.float64, **kw)
  mask = None if mask_png is None else mask_png[..., 0] > 0
  restorer = wan_release.Restorer(loaded, detection_short_side=short_side)
  got = restorer.restore_details(photo, kw.get('with_scratch', False), kw.get('hr', False),
                                 kw.get('test_mode', 'Full'), mask=mask)
  np.testing.assert_array_equal(got['input'], _nhwc(want['input']))
  if want['mask_png'] is not None:
    np.testing.assert_array_equal(got['mask'], want['mask_png'][..., 0] > 0)
    assert 0 < got['mask'].mean() < 1
  diff = np.abs(got['generated'] - _nhwc(want['generated'])).max()
  diff64 = np.abs(got['generated'] - _nhwc(want64['generated'])).max()
  torch_diff64 = np.abs(_nhwc(want['generated']) - _nhwc(want64['generated'])).max()
  levels = np.abs(got['restored'].astype(int) - want['restored'].astype(int)).max()
  print(f'stage 1 {kw}: max |diff| vs torch float32 {diff:.2e}, vs float64 {diff64:.2e} '
        f'(torch float32 vs float64 {torch_diff64:.2e}), uint8 levels {levels}')
  assert diff64 <= TOL and diff <= 2 * TOL and levels <= 1
  return got


@pytest.mark.slow
def test_stage1_quality_parity(release):
  got = _compare_stage1(release, _photo(10, 67, 53), with_scratch=False, test_mode='Full')
  assert got['restored'].shape == (68, 52, 3)


@pytest.mark.slow
def test_stage1_scratch_parity_with_the_detector(release):
  got = _compare_stage1(release, _photo(11, 67, 53), with_scratch=True)
  assert got['mask'].shape == (64, 48) and got['restored'].shape == (64, 48, 3)


@pytest.mark.slow
def test_stage1_hr_parity_with_a_given_mask(release):
  photo = _photo(12, 83, 75)  # -> 80 x 80: latent 20 x 20, remainders at patch 8
  png = (np.repeat(_mask((80, 80), 13)[0, 0, :, :, None], 3, -1) * 255).astype(np.uint8)
  png[40:, 60:] = 0
  got = _compare_stage1(release, photo, mask_png=png, with_scratch=True, hr=True)
  assert got['net_mask'].sum() > got['mask'].sum()  # dilated by 3


@pytest.mark.slow
def test_stage1_hr_restores_where_the_release_crashes(release):
  """Every tile masked (the release: an argmax over no keys, and test.py skips the photo):
  the features are kept and the photo is restored."""
  _, loaded = release
  restorer = wan_release.Restorer(loaded)
  restored, mask = restorer.restore(_photo(12, 83, 75), with_scratch=True, hr=True,
                                    mask=np.ones((80, 80), bool))
  assert restored.shape == (80, 80, 3) and mask.all()
  assert restored.min() == 0 and restored.max() == 255


# The release as users run it: restore, evaluate


@pytest.mark.slow
def test_benchmark_times_ours_with_an_empty_then_a_warm_compilation_cache(converted_release):
  """`benchmark --what=wan_release`: ours in two processes sharing a fresh compilation cache;
  the second (a repeat of restore at this size) compiles nothing, so its first call is
  faster; both report the same kind of record."""
  import json  # pylint: disable=g-import-not-at-top
  _, directory = converted_release
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  result = subprocess.run([sys.executable, '-m', 'pikfix_jax.benchmark', '--what=wan_release',
                           f'--checkpoint={directory}', '--sizes=64', '--nowith_scratch'],
                          cwd=REPO, env=env,
                          check=True, capture_output=True, text=True, timeout=600)
  records = [json.loads(l) for l in result.stdout.splitlines() if l.startswith('{')]
  assert [(r['engine'], r['compilation_cache'], r['image_size']) for r in records] == [
      ('ours', 'empty', 64), ('ours', 'warm', 64)], result.stdout
  empty, warm = records
  assert 'error' not in empty and 'error' not in warm
  assert warm['first_call_s'] < empty['first_call_s'], records


def _scanned_photo(path: str) -> np.ndarray:
  """scikit-image's astronaut (a real photo) at 96 x 72, grey and scratched: white lines."""
  photo = Image.fromarray(skimage.data.astronaut()).convert('L').resize((72, 96), Image.BICUBIC)
  photo = np.repeat(np.asarray(photo)[..., None], 3, -1).copy()
  photo[20:22, 5:60] = 255
  photo[30:80, 40] = 255
  Image.fromarray(photo).save(path)
  return photo


@pytest.mark.slow
def test_restore_runs_the_release_with_and_without_scratches(converted_release, tmp_path,
                                                             initial_workdir):
  """restore --checkpoint=DIR: quality, --with_scratch, --with_scratch --hr and a given mask
  each write a photo of the input's size; --colorize_with colours it with a Pik-Fix workdir;
  --hr alone and a non-release with --with_scratch are one-line errors."""
  from pikfix_jax import restore  # pylint: disable=g-import-not-at-top
  from pikfix_jax import restoring  # pylint: disable=g-import-not-at-top
  _, directory = converted_release
  photo = _scanned_photo(str(tmp_path / 'scan.png'))
  mask = np.zeros(photo.shape[:2], np.uint8)
  mask[19:23, 4:61] = 255
  Image.fromarray(mask).save(tmp_path / 'mask.png')
  outputs = {}
  for name, kw in (('quality', {}), ('scratch', {'with_scratch': True}),
                   ('hr', {'with_scratch': True, 'hr': True}),
                   ('mask', {'with_scratch': True, 'scratch_mask': str(tmp_path / 'mask.png')}),
                   ('colour', {'with_scratch': True, 'colorize_with': initial_workdir,
                               'reference': str(tmp_path / 'scan.png')})):
    out = str(tmp_path / f'{name}.png')
    code, results = restore.run(restoring.Options(input=str(tmp_path / 'scan.png'), output=out,
                                                checkpoint=directory, **kw))
    assert code == 0 and not results[0].error, results
    outputs[name] = np.asarray(Image.open(out))
    assert outputs[name].shape == photo.shape
  assert not np.array_equal(outputs['quality'], photo)
  assert not np.array_equal(outputs['scratch'], outputs['quality'])
  assert not np.array_equal(outputs['hr'], outputs['scratch'])
  assert not np.array_equal(outputs['colour'], outputs['scratch'])
  for kw in ({'hr': True}, ):
    code, _ = restore.run(restoring.Options(input=str(tmp_path / 'scan.png'),
                                          output=str(tmp_path / 'x.png'), checkpoint=directory,
                                          **kw))
    assert code == 2
  code, _ = restore.run(restoring.Options(input=str(tmp_path / 'scan.png'),
                                        output=str(tmp_path / 'x.png'),
                                        workdir=initial_workdir, with_scratch=True))
  assert code == 2


@pytest.mark.slow
def test_the_app_runs_the_release_with_its_scratch_mask(converted_release, tmp_path):
  """The web app with --checkpoint=RELEASE --with_scratch (app_server, no browser): listed as
  the released model, restores a scanned photo at its size, returns the detector's mask (what
  the page shows and lets the user paint), and a painted mask changes the result."""
  import base64  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from pikfix_jax import app_server  # pylint: disable=g-import-not-at-top
  _, directory = converted_release
  photo = _scanned_photo(str(tmp_path / 'scan.png'))
  app = app_server.App(app_server.AppOptions(checkpoints=(directory,), with_scratch=True))
  try:
    [info] = app.info()['methods']
    assert not info['error'] and info['accepts_mask'] and not info['uses_reference']
    assert info['label'].startswith('Wan et al. 2020, released model, scratches detected')
    with open(tmp_path / 'scan.png', 'rb') as f:
      upload = app.add_upload(f.read(), 'scan.png', 'photo')

    def run(**request):
      job_id = app.submit(dict(photo=upload['id'], methods=['m0'], **request))
      deadline = time.time() + 300
      while app.job(job_id)['state'] in ('queued', 'running') and time.time() < deadline:
        time.sleep(0.1)
      job = app.job(job_id)
      assert job['state'] == 'done' and not job['results'][0]['error'], job
      return job['results'][0]

    detected = run()
    out = np.asarray(Image.open(app.path_of(detected['url'])).convert('RGB'))
    assert out.shape == photo.shape and not np.array_equal(out, photo)
    mask = np.asarray(Image.open(app.path_of(detected['mask_url'])))
    assert mask.shape == photo.shape[:2] and set(np.unique(mask)) <= {0, 255}
    painted = np.zeros(photo.shape[:2], np.uint8)
    painted[19:23, 4:61] = 255
    buf = io.BytesIO()
    Image.fromarray(painted).save(buf, format='PNG')
    edited = run(mask='data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode())
    used = np.asarray(Image.open(app.path_of(edited['mask_url'])))
    assert np.mean(used == painted) > 0.98  # the painted one (resized to 16-multiples and back)
    assert not np.array_equal(np.asarray(Image.open(app.path_of(edited['url'])).convert('RGB')),
                              out)
  finally:
    app.close()


@pytest.mark.slow
def test_evaluate_scores_the_release_as_a_method_row(converted_release, tmp_path):
  _, directory = converted_release
  out = str(tmp_path / 'eval')
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  result = subprocess.run(
      [sys.executable, '-m', 'pikfix_jax.evaluate', '--config=configs/baselines/wan2020.py',
       f'--checkpoint={directory}', '--config.dataset=demo', '--config.data.eval_image_size=48',
       '--config.data.degradation.num_textures=2', '--config.data.degradation.texture_size=64',
       f'--output_dir={out}', '--batch_size=2'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  table = open(os.path.join(out, 'table.md')).read()
  assert '| Wan et al. 2020, released weights (quality restoration), pikfix_jax (this run) |' in (
      table)
  assert '| input L, zero chroma (baseline) |' in table
  assert '| restored L, zero chroma (baseline) |' in table


def test_release_mappings_pass_their_options_to_their_blocks():
  """The scratch mapping's partial nonlocal block gets the release's renormalisation and the
  default attention chunk (a positional mix-up once gave it chunks of one position)."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, wan.PartialNonLocalBlock):
      seen['block'] = (context.module.release_renorm, context.module.attention_chunk,
                       context.module.global_res)
    return next_fun(*args, **kwargs)

  module = wan_release.build_network('mapping_scratch')
  z, mask = jnp.zeros((1, 5, 6, 64)), jnp.zeros((1, 20, 24, 1))
  with nn.intercept_methods(record):
    jax.eval_shape(module.init, jax.random.PRNGKey(0), z, mask)
  assert seen['block'] == (True, wan.PartialNonLocalBlock.attention_chunk, module.global_res)

