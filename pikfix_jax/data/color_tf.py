"""sRGB <-> CIE Lab (D65) in TensorFlow, for the tf.data graph.

Same formulas, constants and normalisation as the JAX version in `pikfix_jax/ops/color.py`
(docs/CONTRACTS.md): L/100 in [0, 1], ab/110 clipped to [-1, 1]. Tested against
`skimage.color.rgb2lab` and the JAX functions.
"""

import math

import tensorflow as tf

from pikfix_jax.ops import color as jax_color

L_SCALE = jax_color.L_SCALE
AB_SCALE = jax_color.AB_SCALE
_RGB_TO_XYZ = jax_color._RGB_TO_XYZ  # pylint: disable=protected-access
_XYZ_TO_RGB = jax_color._XYZ_TO_RGB  # pylint: disable=protected-access
_WHITE = jax_color._D65_WHITE  # pylint: disable=protected-access
_EPS = 6.0 / 29.0


def _pow(x: tf.Tensor, p: float) -> tf.Tensor:
  """x ** p for x > 0 via exp/log: several times faster than tf.pow on CPU, same accuracy."""
  return tf.exp(p * tf.math.log(x))


def srgb_to_linear(rgb: tf.Tensor) -> tf.Tensor:
  rgb = tf.clip_by_value(rgb, 0.0, 1.0)
  high = _pow((tf.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4)
  return tf.where(rgb > 0.04045, high, rgb / 12.92)


def linear_to_srgb(lin: tf.Tensor) -> tf.Tensor:
  lin = tf.clip_by_value(lin, 0.0, 1.0)
  high = 1.055 * _pow(tf.maximum(lin, 0.0031308), 1.0 / 2.4) - 0.055
  return tf.where(lin > 0.0031308, high, lin * 12.92)


def _f(t: tf.Tensor) -> tf.Tensor:
  cube = _pow(tf.maximum(t, _EPS ** 3), 1.0 / 3.0)
  return tf.where(t > _EPS ** 3, cube, t / (3 * _EPS ** 2) + 4.0 / 29.0)


def _f_inv(t: tf.Tensor) -> tf.Tensor:
  return tf.where(t > _EPS, t * t * t, 3 * _EPS ** 2 * (t - 4.0 / 29.0))


def rgb_to_lab(rgb: tf.Tensor) -> tf.Tensor:
  """sRGB in [0, 1], shape (..., 3) -> CIE Lab (L in [0, 100])."""
  xyz = tf.tensordot(srgb_to_linear(tf.cast(rgb, tf.float32)), _RGB_TO_XYZ.T, axes=1)
  f = _f(xyz / _WHITE)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return tf.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: tf.Tensor) -> tf.Tensor:
  """CIE Lab, shape (..., 3) -> sRGB in [0, 1] (out-of-gamut values clipped)."""
  lab = tf.cast(lab, tf.float32)
  fy = (lab[..., 0] + 16.0) / 116.0
  f = tf.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
  return linear_to_srgb(tf.tensordot(_f_inv(f) * _WHITE, _XYZ_TO_RGB.T, axes=1))


def rgb_to_lab_normalized(rgb: tf.Tensor) -> tf.Tensor:
  """sRGB [0, 1] (..., 3) -> normalised Lab (..., 3): (L/100, a/110, b/110), ab clipped."""
  lab = rgb_to_lab(rgb)
  return tf.concat([lab[..., :1] / L_SCALE,
                    tf.clip_by_value(lab[..., 1:] / AB_SCALE, -1.0, 1.0)], axis=-1)


def rotate_hue(rgb: tf.Tensor, degrees) -> tf.Tensor:
  """sRGB (..., 3) with its CIE Lab hue rotated by `degrees` (a scalar), L kept, clipped to
  the sRGB gamut (as `pikfix_jax.ops.color.rotate_hue`)."""
  lab = rgb_to_lab(rgb)
  theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(theta), tf.sin(theta)
  a, b = lab[..., 1], lab[..., 2]
  return lab_to_rgb(tf.stack([lab[..., 0], cos * a - sin * b, sin * a + cos * b], axis=-1))


def luminance_to_gray(l: tf.Tensor) -> tf.Tensor:
  """Normalised L (..., 1) -> sRGB value of the neutral grey of that lightness (..., 1)."""
  y = _f_inv((l * L_SCALE + 16.0) / 116.0)  # Relative luminance Y (white Y = 1).
  return linear_to_srgb(y)


def gray_to_luminance(gray: tf.Tensor) -> tf.Tensor:
  """sRGB grey (..., 1) in [0, 1] -> normalised L (..., 1). Inverse of `luminance_to_gray`."""
  return (116.0 * _f(srgb_to_linear(gray)) - 16.0) / L_SCALE
