"""Metrics: PSNR/SSIM equal scikit-image's; LPIPS equals the lpips package's network.

The `lpips` pip package is not installed here (it needs torchvision), so LPIPS parity is
checked against tests/torch_reference.py's plain-torch copy of the package's LPIPS(net='vgg' |
'alex', version='0.1'), with the same random VGG-16 / AlexNet and random non-negative heads
converted to Flax.
"""

import jax

import numpy as np
import pytest
import skimage.data
import skimage.metrics
import torch

from pikfix_jax import metrics
from pikfix_jax import weights
import torch_reference as ref


def _pairs():
  """(ground truth, test) uint8 pairs: photos with realistic errors, noise, odd sizes."""
  rng = np.random.default_rng(0)
  photo = skimage.data.astronaut()[100:165, 200:283]  # 65 x 83
  noisy = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
  shifted = np.clip(photo.astype(int) + 9, 0, 255).astype(np.uint8)
  coffee = skimage.data.coffee()[:40, :57]
  tinted = np.clip(coffee * np.array([1.1, 0.9, 0.8]), 0, 255).astype(np.uint8)
  a = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
  b = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
  flat = np.full((16, 16, 3), 128, np.uint8)
  return [(photo, noisy), (photo, shifted), (coffee, tinted), (a, b), (flat, flat.copy() + 1)]


@pytest.mark.parametrize('case', range(5))
def test_psnr_and_ssim_match_skimage(case):
  gt, out = _pairs()[case]
  want_psnr = skimage.metrics.peak_signal_noise_ratio(gt, out, data_range=255)
  assert abs(metrics.psnr(gt, out) - want_psnr) < 1e-3
  want = skimage.metrics.structural_similarity(gt, out, channel_axis=-1, data_range=255)
  assert abs(metrics.ssim(gt, out) - want) < 1e-4
  if min(gt.shape[:2]) >= 11:
    want_g = skimage.metrics.structural_similarity(
        gt, out, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False)
    assert abs(metrics.ssim(gt, out, gaussian=True) - want_g) < 1e-4
    if case == 0:
      assert abs(want_g - want) > 1e-3  # the two conventions really differ


def test_batched_metrics_and_quantisation():
  gt, out = _pairs()[0]
  batch_gt, batch_out = np.stack([gt, gt]), np.stack([out, gt])
  np.testing.assert_allclose(metrics.psnr(batch_gt, batch_out)[0], metrics.psnr(gt, out))
  assert np.isinf(metrics.psnr(batch_gt, batch_out)[1])
  np.testing.assert_allclose(metrics.ssim(batch_gt, batch_out), [metrics.ssim(gt, out), 1.0])
  # Floats are quantised exactly like image_io writes 8-bit files (round half up).
  np.testing.assert_array_equal(metrics.quantize(np.array([0.0, 0.5 / 255, 0.998, 1.2, -1])),
                                [0, 1, 254, 255, 0])
  with pytest.raises(ValueError, match='at least 7x7'):
    metrics.ssim(gt[:5, :5], out[:5, :5])


def test_lpips_matches_torch_reference(tmp_path):
  vgg16 = ref.randomize(ref.VGG(16), seed=3)
  torch_lpips = ref.LPIPS(vgg16).eval()
  with torch.no_grad():
    for l in range(5):  # trained heads are non-negative
      getattr(torch_lpips, f'lin{l}').model[1].weight.uniform_(0.0, 1.0)
  vgg_path, _ = ref.save_both(vgg16.state_dict(), tmp_path, 'vgg16')
  heads_path = str(tmp_path / 'vgg.pth')
  torch.save(torch_lpips.heads_state_dict(), heads_path)
  converted = str(tmp_path / 'lpips_vgg.msgpack')
  weights.save_variables(converted, weights.convert_files('lpips_vgg', vgg_path, heads_path))

  metric = metrics.LPIPSMetric.load(converted, 'skimage')  # LPIPS-VGG: the skimage convention
  gt = np.stack([p[0][:32, :40] for p in _pairs()[:3]])
  out = np.stack([p[1][:32, :40] for p in _pairs()[:3]])
  got = metric(gt, out)
  with torch.no_grad():
    to_input = lambda x: ref.to_nchw(x.astype(np.float32) / 127.5 - 1.0)
    want = torch_lpips(to_input(gt), to_input(out)).numpy()
  assert got.shape == (3,) and np.all(got > 0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert abs(metric(gt[0], out[0]) - want[0]) < 1e-4
  assert metric(gt[:1], gt[:1])[0] == pytest.approx(0.0, abs=1e-6)


def test_lpips_alex_matches_torch_reference(tmp_path):
  """The authors' convention scores LPIPS with AlexNet (their lipis_eval(net_type='alex'))."""
  torch_lpips = ref.random_lpips(ref.randomize(ref.AlexNet(), seed=4), seed=5)
  alexnet_path, heads_path = str(tmp_path / 'alexnet.pth'), str(tmp_path / 'alex.pth')
  torch.save(torch_lpips.net.state_dict(), alexnet_path)
  torch.save(torch_lpips.heads_state_dict(), heads_path)
  converted = str(tmp_path / 'lpips_alex.msgpack')
  weights.save_variables(converted, weights.convert_files('lpips_alex', alexnet_path, heads_path))

  metric = metrics.LPIPSMetric.load(converted, 'authors')
  gt = np.stack([p[0][:40, :56] for p in _pairs()[:3]])
  out = np.stack([p[1][:40, :56] for p in _pairs()[:3]])
  got = metric(gt, out)
  with torch.no_grad():
    to_input = lambda x: ref.to_nchw(x.astype(np.float32) / 127.5 - 1.0)
    want = torch_lpips(to_input(gt), to_input(out)).numpy()
  assert got.shape == (3,) and np.all(got > 0)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  assert abs(metric(gt[0], out[0]) - want[0]) < 1e-5


def _zeros_file(tmp_path, arch: str) -> str:
  """A converted file of `arch` (zeros: only its layout matters here)."""
  path = str(tmp_path / f'{arch}.msgpack')
  weights.save_variables(path, jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32),
                                                      weights.variable_shapes(arch)))
  return path


@pytest.mark.slow
@pytest.mark.parametrize('convention,other,arch,other_arch', [
    ('authors', 'skimage', 'lpips_alex', 'lpips_vgg'),
    ('skimage', 'authors', 'lpips_vgg', 'lpips_alex'),
])
def test_lpips_network_follows_the_convention(tmp_path, convention, other, arch, other_arch):
  assert metrics.LPIPS_ARCHS[convention] == arch
  assert metrics.LPIPSMetric.load(_zeros_file(tmp_path, arch), convention).arch == arch
  # The other network's file is refused in one line naming the field, the convention, the
  # command that converts the convention's file, and the convention that fits the file.
  path = _zeros_file(tmp_path, other_arch)
  with pytest.raises(metrics.LPIPSUnavailableError) as info:
    metrics.LPIPSMetric.load(path, convention)
  message = str(info.value)
  assert '\n' not in message
  for part in (f'config.backbones.lpips={path!r}', f'({other_arch})',
               f'metrics.convention={convention}', f'--arch={arch}',
               f'--config.metrics.convention={other}'):
    assert part in message
  metric, note = metrics.maybe_lpips(path, convention)
  assert metric is None and note == message
  # A file of neither network stays weights.check_tree's error (a hard error, not a refusal).
  broken = weights.load_variables(path)
  broken['params']['lin0']['model_1']['kernel'] = np.zeros((1, 1, 3, 1), np.float32)
  weights.save_variables(path, broken)
  with pytest.raises(ValueError, match=rf'\({arch}\): .* variable') as info:
    metrics.LPIPSMetric.load(path, convention)
  assert not isinstance(info.value, metrics.LPIPSUnavailableError)


def test_lpips_refused_without_weights(tmp_path):
  with pytest.raises(metrics.LPIPSUnavailableError,
                     match='config.backbones.lpips.*--arch=lpips_alex'):
    metrics.LPIPSMetric.load('', 'authors')
  with pytest.raises(metrics.LPIPSUnavailableError, match='VGG-16.*--arch=lpips_vgg'):
    metrics.LPIPSMetric.load('', 'skimage')
  with pytest.raises(metrics.LPIPSUnavailableError, match='not found'):
    metrics.LPIPSMetric.load(str(tmp_path / 'missing.msgpack'), 'authors')
  metric, note = metrics.maybe_lpips('', 'authors')
  assert metric is None and 'LPIPS' in note
  with pytest.raises(ValueError, match="metrics.convention='paper'"):
    metrics.maybe_lpips('', 'paper')


def _authors_ssim_torch(a8: np.ndarray, b8: np.ndarray) -> np.ndarray:
  """The authors' SSIM formula (Pik-Fix utils/ssim.py) written in torch: images / 255 as
  (N, C, H, W), an 11x11 Gaussian (sigma 1.5) window per channel, zero padding 5, C1 0.01^2,
  C2 0.03^2, the map's mean per image."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  x = torch.tensor(a8, dtype=torch.float64).permute(0, 3, 1, 2) / 255.0
  y = torch.tensor(b8, dtype=torch.float64).permute(0, 3, 1, 2) / 255.0
  c = x.shape[1]
  g = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
  g = g / g.sum()
  window = (g[:, None] @ g[None, :]).expand(c, 1, 11, 11).contiguous()
  conv = lambda t: F.conv2d(t, window, padding=5, groups=c)
  mx, my = conv(x), conv(y)
  vx, vy, vxy = conv(x * x) - mx ** 2, conv(y * y) - my ** 2, conv(x * y) - mx * my
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  m = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
  return m.mean(dim=(1, 2, 3)).numpy()


def test_authors_ssim_matches_a_torch_transcription_of_their_formula():
  rng = np.random.default_rng(3)
  a = rng.integers(0, 256, (2, 23, 30, 3), dtype=np.uint8)
  b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
  np.testing.assert_allclose(metrics.ssim_authors(a, b), _authors_ssim_torch(a, b), atol=1e-6)
  real = skimage.data.astronaut()[:96, :128][None]
  noisy = np.clip(real + rng.normal(0, 12, real.shape), 0, 255).astype(np.uint8)
  np.testing.assert_allclose(metrics.ssim_authors(real, noisy), _authors_ssim_torch(real, noisy),
                             atol=1e-6)
  # A different number from scikit-image's convention on the same images.
  assert abs(metrics.ssim_authors(real, noisy)[0] - metrics.ssim(real, noisy)[0]) > 1e-3
  assert metrics.ssim_by_convention(real, noisy, 'skimage') == metrics.ssim(real, noisy)


def test_unknown_convention_is_a_named_error():
  with pytest.raises(ValueError, match="metrics.convention='paper': use one of"):
    metrics.ssim_by_convention(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8),
                               'paper')
