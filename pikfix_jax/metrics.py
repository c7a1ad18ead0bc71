"""Image-quality metrics of the paper's tables: PSNR, SSIM and LPIPS on 8-bit sRGB images.

Conventions (docs/RESTORE.md, "Metrics"):

* Images are sRGB, quantised to 8 bits: floats in [0, 1] are mapped with `quantize`
  (x * 255, rounded half up, clipped), and every metric sees uint8 values in [0, 255]. The
  network's output and the ground truth (Lab -> sRGB) are both quantised, as when the images
  are saved to PNG and scored with scikit-image.
* PSNR = 10 log10(255^2 / MSE), MSE over all pixels and the three channels of one image;
  equal to `skimage.metrics.peak_signal_noise_ratio(gt, out, data_range=255)`. Identical
  images give +inf. Dataset PSNR is the mean of the per-image values.
* SSIM (Wang et al. 2004) with scikit-image's defaults, i.e.
  `skimage.metrics.structural_similarity(gt, out, channel_axis=-1, data_range=255)`:
  a 7x7 uniform window, sample covariance (N / (N - 1)), K1 = 0.01, K2 = 0.03, computed per
  channel on the positions where the window fits entirely (skimage's crop of 3 px) and averaged
  over positions and channels. `gaussian=True` gives skimage's `gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False` variant (11x11 Gaussian window, Wang et al.'s own
  setting). Computed in float64 with NumPy, so it matches skimage to ~1e-12.
* Two named conventions for SSIM and LPIPS (`CONVENTIONS`, config.metrics.convention):
  'authors', the authors' released code (the default for paper tables): SSIM as their
  utils/ssim.py, images / 255 in [0, 1], an 11x11 Gaussian window (sigma 1.5) with zero padding
  at the borders ('same' size), population variances, C1 = 0.01^2, C2 = 0.03^2, the mean over
  all positions and channels, and LPIPS with AlexNet (their utils/loss.py,
  lipis_eval(net_type='alex')); and 'skimage', the scikit-image SSIM defaults above with LPIPS
  VGG. PSNR is the same in both.
* LPIPS (Zhang et al. 2018) v0.1 (`pikfix_jax.models.lpips`) with the convention's network
  (`LPIPS_ARCHS`: AlexNet for 'authors', VGG-16 for 'skimage'), inputs x / 127.5 - 1 of the
  same 8-bit images, spatially averaged (the lpips package's default). Needs that network's
  converted weights (`config.backbones.lpips`, docs/WEIGHTS.md); without them, or with the
  other network's file, there is no LPIPS (`LPIPSMetric.load` raises), never a number from
  random features.
"""

import functools
import math
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from pikfix_jax import weights
from pikfix_jax.models import lpips as lpips_model

DATA_RANGE = 255.0
SSIM_WIN_SIZE = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
GAUSSIAN_SIGMA = 1.5
GAUSSIAN_TRUNCATE = 3.5  # skimage / scipy.ndimage.gaussian_filter: radius int(3.5 * 1.5 + 0.5) = 5.


class LPIPSUnavailableError(ValueError):
  """No LPIPS weights: the metric is refused rather than computed with random features."""


def quantize(rgb: np.ndarray) -> np.ndarray:
  """Float sRGB in [0, 1] -> uint8 [0, 255] (rounded, clipped); uint8 passes through."""
  rgb = np.asarray(rgb)
  if rgb.dtype == np.uint8:
    return rgb
  return (np.clip(rgb.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _batched(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
  a, b = np.asarray(a), np.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f'images differ in shape: {a.shape} vs {b.shape}')
  single = a.ndim == 3
  if a.ndim == 2:
    a, b, single = a[..., None], b[..., None], True
  if single:
    a, b = a[None], b[None]
  if a.ndim != 4:
    raise ValueError(f'expected (H, W, C) or (B, H, W, C) images, got {a.shape}')
  return a.astype(np.float64), b.astype(np.float64), single


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE):
  """PSNR in dB of 8-bit images (H, W, C) -> float, or (B, H, W, C) -> (B,)."""
  a, b, single = _batched(reference, test)
  mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
  with np.errstate(divide='ignore'):
    out = 10.0 * np.log10(data_range ** 2 / mse)
  return float(out[0]) if single else out


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  return k / k.sum()


def _valid_filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Separable correlation of (B, H, W, C) with a 1-D kernel along H and W, 'valid' region."""
  w = len(kernel)
  h_out, w_out = x.shape[1] - w + 1, x.shape[2] - w + 1
  y = sum(kernel[i] * x[:, i:i + h_out] for i in range(w))
  return sum(kernel[i] * y[:, :, i:i + w_out] for i in range(w))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE,
         gaussian: bool = False):
  """Mean SSIM of 8-bit images (H, W, C) -> float, or (B, H, W, C) -> (B,) (module docstring).

  gaussian=False: skimage's defaults (7x7 uniform window, sample covariance);
  gaussian=True: skimage's gaussian_weights=True, sigma=1.5, use_sample_covariance=False.
  """
  a, b, single = _batched(reference, test)
  if gaussian:
    kernel = _gaussian_kernel(GAUSSIAN_SIGMA, GAUSSIAN_TRUNCATE)
    cov_norm = 1.0
  else:
    kernel = np.full(SSIM_WIN_SIZE, 1.0 / SSIM_WIN_SIZE)
    n = SSIM_WIN_SIZE ** 2
    cov_norm = n / (n - 1.0)
  if min(a.shape[1:3]) < len(kernel):
    raise ValueError(f'SSIM needs images of at least {len(kernel)}x{len(kernel)} px, got '
                     f'{a.shape[1]}x{a.shape[2]}')
  ux, uy = _valid_filter(a, kernel), _valid_filter(b, kernel)
  uxx, uyy, uxy = (_valid_filter(a * a, kernel), _valid_filter(b * b, kernel),
                   _valid_filter(a * b, kernel))
  vx = cov_norm * (uxx - ux * ux)
  vy = cov_norm * (uyy - uy * uy)
  vxy = cov_norm * (uxy - ux * uy)
  c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
  out = s.mean(axis=(1, 2, 3))
  return float(out[0]) if single else out


AUTHORS_WINDOW = 11  # the authors' utils/ssim.py: window_size 11, sigma 1.5
CONVENTIONS = ('authors', 'skimage')
# The LPIPS network of each convention (a weights.ARCHS name): the authors score with AlexNet.
LPIPS_ARCHS = {'authors': 'lpips_alex', 'skimage': 'lpips_vgg'}


def _same_filter_zero_padded(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Separable correlation of (B, H, W, C) with a 1-D kernel along H and W, zero padding,
  output the input's size (torch's conv2d with padding = window // 2)."""
  r = len(kernel) // 2
  p = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
  return _valid_filter(p, kernel)


def ssim_authors(reference: np.ndarray, test: np.ndarray):
  """Mean SSIM as the authors' released code computes it (module docstring, 'authors') of
  8-bit images (H, W, C) -> float, or (B, H, W, C) -> (B,)."""
  a, b, single = _batched(reference, test)
  a, b = a / DATA_RANGE, b / DATA_RANGE
  kernel = _gaussian_kernel(GAUSSIAN_SIGMA, GAUSSIAN_TRUNCATE)  # the same 11 taps
  assert len(kernel) == AUTHORS_WINDOW
  ux, uy = _same_filter_zero_padded(a, kernel), _same_filter_zero_padded(b, kernel)
  vx = _same_filter_zero_padded(a * a, kernel) - ux * ux
  vy = _same_filter_zero_padded(b * b, kernel) - uy * uy
  vxy = _same_filter_zero_padded(a * b, kernel) - ux * uy
  c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
  out = s.mean(axis=(1, 2, 3))
  return float(out[0]) if single else out


def ssim_by_convention(reference: np.ndarray, test: np.ndarray, convention: str):
  """SSIM of 8-bit images under a named convention (`CONVENTIONS`)."""
  check_convention(convention)
  return ssim_authors(reference, test) if convention == 'authors' else ssim(reference, test)


def check_convention(convention: str) -> None:
  """ValueError unless `convention` is one of `CONVENTIONS`."""
  if convention not in CONVENTIONS:
    raise ValueError(f'metrics.convention={convention!r}: use one of {CONVENTIONS} '
                     '(--config.metrics.convention=authors for paper tables)')


# ----------------------------------------------------------------------------------- LPIPS

@functools.lru_cache(maxsize=None)
def _lpips_apply(net: str):
  return jax.jit(lpips_model.LPIPS(net=net).apply)


def _fits(tree: dict, arch: str) -> bool:
  try:
    weights.check_tree(tree, weights.variable_shapes(arch), arch)
  except ValueError:
    return False
  return True


def _convert_command(arch: str) -> str:
  _, backbone_file, heads_file = weights.LPIPS_FILES[arch]
  return (f'python -m data_prep.convert_weights --arch={arch} --input={backbone_file} '
          f'--lpips_heads={heads_file} --output=weights/{arch}.msgpack')


class LPIPSMetric:
  """LPIPS distance of 8-bit sRGB images with converted weights (docs/WEIGHTS.md)."""

  def __init__(self, variables: dict, source: str = '', arch: str = 'lpips_vgg'):
    self.variables = jax.device_put(variables)
    self.source = source
    self.arch = arch

  @classmethod
  def load(cls, path: str, convention: str) -> 'LPIPSMetric':
    """From `config.backbones.lpips`, a msgpack of `data_prep.convert_weights` with the
    convention's arch (`LPIPS_ARCHS`: lpips_alex for 'authors', lpips_vgg for 'skimage').

    Raises LPIPSUnavailableError when `path` is '' or missing, or holds the other network:
    LPIPS with random features, or another network than the convention's, is not the
    metric the tables name, so it is refused instead of reported.
    """
    check_convention(convention)
    arch = LPIPS_ARCHS[convention]
    backbone = weights.LPIPS_FILES[arch][0]
    if not path:
      raise LPIPSUnavailableError(
          f'LPIPS (metrics.convention={convention}) needs the converted {backbone} + LPIPS '
          f'heads (config.backbones.lpips; docs/WEIGHTS.md: {_convert_command(arch)}).')
    if not os.path.exists(path):
      raise LPIPSUnavailableError(f'LPIPS weights {path!r} (config.backbones.lpips) not found.')
    tree = weights.load_variables(path)
    if not _fits(tree, arch):
      for other_convention, other in LPIPS_ARCHS.items():
        if other != arch and _fits(tree, other):
          # One line, with both ways out: the convention's file, or the file's convention.
          raise LPIPSUnavailableError(
              f'config.backbones.lpips={path!r} holds LPIPS-{weights.LPIPS_FILES[other][0]} '
              f'({other}), but metrics.convention={convention} scores LPIPS with {backbone}: '
              f"convert {backbone}'s ({_convert_command(arch)}; docs/WEIGHTS.md) or pass "
              f'--config.metrics.convention={other_convention}.')
      weights.check_tree(tree, weights.variable_shapes(arch), f'{path} ({arch})')  # raises
    return cls(tree, path, arch)

  def __call__(self, reference: np.ndarray, test: np.ndarray):
    """uint8 (H, W, 3) -> float, or (B, H, W, 3) -> (B,)."""
    a, b = quantize(reference), quantize(test)
    single = a.ndim == 3
    if single:
      a, b = a[None], b[None]
    to_input = lambda x: jnp.asarray(x, jnp.float32) / 127.5 - 1.0
    apply = _lpips_apply(weights.LPIPS_NETS[self.arch])
    out = np.asarray(apply(self.variables, to_input(a), to_input(b)), np.float64)
    return float(out[0]) if single else out


def maybe_lpips(path: str, convention: str) -> tuple[Optional[LPIPSMetric], str]:
  """(metric, '') when the convention's LPIPS weights are available, else (None, the reason)."""
  try:
    return LPIPSMetric.load(path, convention), ''
  except LPIPSUnavailableError as e:
    return None, str(e)


def mean(values) -> float:
  """Mean of finite values (PSNR of identical images is +inf and is kept as such)."""
  values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
  return float(np.mean(values)) if values else float('nan')
