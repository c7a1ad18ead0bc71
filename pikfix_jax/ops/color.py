"""Differentiable sRGB <-> CIE Lab (D65) in JAX, and the Pik-Fix normalisation.

Conventions (docs/CONTRACTS.md, "Colour conventions"): RGB in [0, 1] (sRGB gamma); Lab in CIE
units (L in [0, 100], a/b roughly [-110, 110]); the network sees L/100 in [0, 1] and ab/110
clipped to [-1, 1]. Matches `skimage.color.rgb2lab` / `lab2rgb` (illuminant D65, 2 deg).
"""

import jax.numpy as jnp
import numpy as np

# NumPy constants (data/color_tf.py uses the same): importing this module runs no JAX.
# sRGB (linear) -> XYZ, D65; the same matrix scikit-image uses.
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]], dtype=np.float32)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
_EPS = 6.0 / 29.0  # CIE f(t) knee: t > eps**3 uses the cube root.
L_SCALE = 100.0
AB_SCALE = 110.0


def srgb_to_linear(rgb: jnp.ndarray) -> jnp.ndarray:
  """sRGB gamma expansion; differentiable everywhere (the branch is selected, not mixed)."""
  rgb = jnp.clip(rgb, 0.0, 1.0)
  low = rgb / 12.92
  high = ((jnp.maximum(rgb, 0.04045) + 0.055) / 1.055) ** 2.4
  return jnp.where(rgb > 0.04045, high, low)


def linear_to_srgb(lin: jnp.ndarray) -> jnp.ndarray:
  lin = jnp.clip(lin, 0.0, 1.0)
  low = lin * 12.92
  high = 1.055 * jnp.maximum(lin, 0.0031308) ** (1.0 / 2.4) - 0.055
  return jnp.where(lin > 0.0031308, high, low)


def _f(t: jnp.ndarray) -> jnp.ndarray:
  cube = jnp.cbrt(jnp.maximum(t, _EPS ** 3))
  return jnp.where(t > _EPS ** 3, cube, t / (3 * _EPS ** 2) + 4.0 / 29.0)


def _f_inv(t: jnp.ndarray) -> jnp.ndarray:
  return jnp.where(t > _EPS, t ** 3, 3 * _EPS ** 2 * (t - 4.0 / 29.0))


def rgb_to_lab(rgb: jnp.ndarray) -> jnp.ndarray:
  """sRGB in [0, 1], shape (..., 3) -> CIE Lab (L in [0, 100])."""
  rgb = rgb.astype(jnp.float32)
  xyz = srgb_to_linear(rgb) @ _RGB_TO_XYZ.T
  fx, fy, fz = jnp.moveaxis(_f(xyz / _D65_WHITE), -1, 0)
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: jnp.ndarray) -> jnp.ndarray:
  """CIE Lab, shape (..., 3) -> sRGB in [0, 1] (out-of-gamut values clipped)."""
  lab = lab.astype(jnp.float32)
  l, a, b = jnp.moveaxis(lab, -1, 0)
  fy = (l + 16.0) / 116.0
  f = jnp.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1)
  xyz = _f_inv(f) * _D65_WHITE
  return linear_to_srgb(xyz @ _XYZ_TO_RGB.T)


def normalize_lab(lab: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """CIE Lab -> (L/100 in [0,1] with shape (...,1), ab/110 clipped to [-1,1] with shape (...,2))."""
  return lab[..., :1] / L_SCALE, jnp.clip(lab[..., 1:] / AB_SCALE, -1.0, 1.0)


def denormalize_lab(l: jnp.ndarray, ab: jnp.ndarray) -> jnp.ndarray:
  """Inverse of `normalize_lab`: network-range L, ab -> CIE Lab."""
  return jnp.concatenate([l * L_SCALE, ab * AB_SCALE], axis=-1)


def rgb_to_lab_normalized(rgb: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """sRGB [0,1] -> (L in [0,1], ab in [-1,1])."""
  return normalize_lab(rgb_to_lab(rgb))


def lab_normalized_to_rgb(l: jnp.ndarray, ab: jnp.ndarray) -> jnp.ndarray:
  """(L in [0,1], ab in [-1,1]) -> sRGB [0,1]."""
  return lab_to_rgb(denormalize_lab(l, ab))


def rotate_ab(ab: jnp.ndarray, degrees) -> jnp.ndarray:
  """Rotates chroma (..., 2) (a, b) by `degrees` (scalar or broadcastable to (...)) about the
  grey axis of the CIE ab plane: hue angle + degrees, chroma and L unchanged."""
  theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))[..., None]
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  a, b = ab[..., :1], ab[..., 1:]
  return jnp.concatenate([cos * a - sin * b, sin * a + cos * b], axis=-1)


def rotate_hue(rgb: jnp.ndarray, degrees) -> jnp.ndarray:
  """The sRGB image whose CIE Lab hue angle is rotated by `degrees` (`rotate_ab`), L kept;
  colours the rotation takes out of the sRGB gamut are clipped by `lab_to_rgb`."""
  lab = rgb_to_lab(rgb)
  return lab_to_rgb(jnp.concatenate([lab[..., :1], rotate_ab(lab[..., 1:], degrees)], axis=-1))


def gray_to_rgb(l: jnp.ndarray) -> jnp.ndarray:
  """Normalised luminance (...,1) -> the sRGB grey image of that lightness (a = b = 0)."""
  return lab_normalized_to_rgb(l, jnp.zeros(l.shape[:-1] + (2,), l.dtype))
