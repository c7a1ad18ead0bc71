"""Synthetic old-photo degradation in TensorFlow ops (runs inside the tf.data graph).

Wan et al. 2020, sec. 4.2: unstructured defects (Gaussian noise, Gaussian blur, JPEG, colour
jitter, box blur) applied in random order, each dropped with probability 0.3; structured defects:
scratch and paper textures blended with screen / lighten / addition at random opacity, feathered
holes of random shape, film grain. Pik-Fix (ROMNet sec. 4.1) adds random white polygons.
We also fade the print towards a paper tone (Wan et al. list colour fading among the
unstructured defects but give no recipe; docs/DATA.md).

Every function takes one image (H, W, C) float32 in [0, 1] (C = 1 or 3, H and W may be dynamic)
and a stateless seed (shape [2] int); results depend only on the inputs and the seed.

`degrade_with_mask` also returns the structured-defect mask that Wan et al.'s scratch detector
is trained on (sec. 3.3): the pixels that the scratch texture or the holes changed by more than
DEFECT_MASK_THRESHOLD (docs/DATA.md, "Defect mask").
"""

import math
from typing import Optional, Sequence

import ml_collections
import tensorflow as tf

_FADE_TINT = (1.0, 0.93, 0.8)  # Sepia paper tone for colour images (grey images use 1.0).
_POLYGON_VERTICES = 12  # Vertices of every hole / polygon (star-shaped around its centre).
# A structured defect marks a pixel in the defect mask when it moved some channel by more than
# this many 8-bit units: the faint blurred fringe of a scratch below it is invisible under the
# noise/JPEG the unstructured steps add, so a detector should not be asked to find it.
DEFECT_MASK_THRESHOLD = 8.0


def _uniform(seed, minval=0.0, maxval=1.0, shape=()):
  return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def _choice(seed, options: Sequence[float]) -> tf.Tensor:
  options = tf.constant(list(options), tf.float32)
  idx = tf.random.stateless_uniform([], seed, 0, tf.shape(options)[0], dtype=tf.int32)
  return options[idx]


def _separable(image: tf.Tensor, taps: tf.Tensor) -> tf.Tensor:
  """Convolves (H, W, C) with a 1-D kernel along both axes, symmetric padding."""
  channels = image.shape[-1]
  k = taps.shape[0]
  pad = k // 2
  x = tf.pad(image[None], [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='SYMMETRIC')
  taps = tf.tile(tf.reshape(taps, [k, 1, 1, 1]), [1, 1, channels, 1])
  x = tf.nn.depthwise_conv2d(x, taps, [1, 1, 1, 1], 'VALID')
  x = tf.nn.depthwise_conv2d(x, tf.transpose(taps, [1, 0, 2, 3]), [1, 1, 1, 1], 'VALID')
  return x[0]


def _gaussian_taps(sigma: tf.Tensor, size: tf.Tensor, max_size: int) -> tf.Tensor:
  """A normalised Gaussian of `size` taps (odd) centred in a `max_size` kernel."""
  x = tf.range(max_size, dtype=tf.float32) - (max_size // 2)
  half = tf.cast(size // 2, tf.float32)
  taps = tf.exp(-0.5 * (x / sigma) ** 2) * tf.cast(tf.abs(x) <= half, tf.float32)
  return taps / tf.reduce_sum(taps)


def gaussian_noise(image: tf.Tensor, seed, sigma: Sequence[float]) -> tf.Tensor:
  """Additive white Gaussian noise, std drawn from `sigma` (8-bit units)."""
  s = tf.random.experimental.stateless_split(seed, 2)
  std = _uniform(s[0], sigma[0], sigma[1]) / 255.0
  noise = tf.random.stateless_normal(tf.shape(image), s[1])
  return tf.clip_by_value(image + std * noise, 0.0, 1.0)


def gaussian_blur(image: tf.Tensor, seed, kernel_sizes: Sequence[int],
                  sigma: Sequence[float]) -> tf.Tensor:
  """Gaussian blur, kernel size drawn from `kernel_sizes`, std from `sigma` (pixels)."""
  s = tf.random.experimental.stateless_split(seed, 2)
  size = tf.cast(_choice(s[0], kernel_sizes), tf.int32)
  taps = _gaussian_taps(_uniform(s[1], sigma[0], sigma[1]), size, max(kernel_sizes) | 1)
  return _separable(image, taps)


def box_blur(image: tf.Tensor, seed, kernel_sizes: Sequence[int]) -> tf.Tensor:
  """Box (defocus-like) blur, kernel size drawn from `kernel_sizes`."""
  size = tf.cast(_choice(seed, kernel_sizes), tf.int32)
  max_size = max(kernel_sizes) | 1
  x = tf.range(max_size) - max_size // 2
  taps = tf.cast(tf.abs(x) <= size // 2, tf.float32)
  return _separable(image, taps / tf.reduce_sum(taps))


def jpeg(image: tf.Tensor, seed, quality: Sequence[int]) -> tf.Tensor:
  """JPEG compression at a quality drawn from [quality[0], quality[1]]."""
  q = tf.random.stateless_uniform([], seed, quality[0], quality[1] + 1, dtype=tf.int32)
  out = tf.image.adjust_jpeg_quality(image, q)
  return tf.ensure_shape(out, image.shape)


def color_jitter(image: tf.Tensor, seed, max_shift: float) -> tf.Tensor:
  """Shifts every channel by its own value in (-max_shift, max_shift) (8-bit units)."""
  shift = _uniform(seed, -max_shift, max_shift, [image.shape[-1]]) / 255.0
  return tf.clip_by_value(image + shift, 0.0, 1.0)


def fade(image: tf.Tensor, seed, strength: Sequence[float]) -> tf.Tensor:
  """Fades the print: blends towards a light paper tone by a fraction drawn from `strength`."""
  s = tf.random.experimental.stateless_split(seed, 2)
  amount = _uniform(s[0], strength[0], strength[1])
  tint = tf.constant(_FADE_TINT if image.shape[-1] == 3 else (1.0,), tf.float32)
  tone = _uniform(s[1], 0.6, 0.9) * tint
  return image * (1.0 - amount) + amount * tone


def blend(image: tf.Tensor, layer: tf.Tensor, opacity: tf.Tensor, mode: tf.Tensor) -> tf.Tensor:
  """Photoshop-style blend of a bright-on-black `layer` (H, W, 1) at `opacity`.

  mode: 0 = screen, 1 = lighten, 2 = addition (Wan et al. 2020).
  """
  screen = 1.0 - (1.0 - image) * (1.0 - layer)
  lighten = tf.maximum(image, layer)
  add = tf.minimum(image + layer, 1.0)
  blended = tf.gather(tf.stack([screen, lighten, add]), mode)
  return image + opacity * (blended - image)


def sample_texture(bank: tf.Tensor, seed, height, width) -> tf.Tensor:
  """A random texture from `bank` (N, T, T) uint8: random crop (50-100 %), flips and 90 degree
  turns, resized to (height, width, 1) float [0, 1]."""
  s = tf.random.experimental.stateless_split(seed, 5)
  index = tf.random.stateless_uniform([], s[0], 0, tf.shape(bank)[0], dtype=tf.int32)
  texture = tf.gather(bank, index)[..., None]
  texture = tf.image.rot90(texture, tf.random.stateless_uniform([], s[1], 0, 4, dtype=tf.int32))
  aspect = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
  frac = _uniform(s[2], 0.5, 1.0)
  box_h, box_w = frac, frac * aspect
  scale = tf.maximum(box_w, 1.0)  # Keep the box inside the texture, aspect preserved.
  box_h, box_w = box_h / scale, box_w / scale
  corner = _uniform(s[3], 0.0, 1.0, [2]) * tf.stack([1.0 - box_h, 1.0 - box_w])
  box = tf.stack([corner[0], corner[1], corner[0] + box_h, corner[1] + box_w])
  flips = tf.cast(_uniform(s[4], 0.0, 1.0, [2]) < 0.5, tf.float32)
  box = tf.stack([box[0] + flips[0] * box_h, box[1] + flips[1] * box_w,
                  box[2] - flips[0] * box_h, box[3] - flips[1] * box_w])  # y1 > y2 flips.
  out = tf.image.crop_and_resize(texture[None], box[None], [0], tf.stack([height, width]))
  return out[0] / 255.0


def blend_texture(image: tf.Tensor, seed, bank: tf.Tensor, opacity: Sequence[float]) -> tf.Tensor:
  """Blends a random texture from `bank` with a random mode (screen/lighten/add) and opacity."""
  s = tf.random.experimental.stateless_split(seed, 3)
  shape = tf.shape(image)
  layer = sample_texture(bank, s[0], shape[0], shape[1])
  mode = tf.random.stateless_uniform([], s[1], 0, 3, dtype=tf.int32)
  return tf.clip_by_value(blend(image, layer, _uniform(s[2], opacity[0], opacity[1]), mode),
                          0.0, 1.0)


def polygon_field(grid_y: tf.Tensor, grid_x: tf.Tensor, center: tf.Tensor, angles: tf.Tensor,
                  radii: tf.Tensor) -> tf.Tensor:
  """Signed radial distance (px, > 0 inside) to the star-shaped polygon with vertices at
  `angles` (sorted, radians in [-pi, pi)) and `radii` (px) around `center` (y, x).

  grid_y (h, 1) and grid_x (1, w) are pixel coordinates; the result has shape (h, w).
  """
  yy, xx = grid_y - center[0], grid_x - center[1]
  phi = tf.atan2(yy, xx)
  phi = tf.where(phi < angles[0], phi + 2 * math.pi, phi)
  theta = tf.concat([angles, angles[:1] + 2 * math.pi], axis=0)
  r = tf.concat([radii, radii[:1]], axis=0)
  i = tf.searchsorted(theta, tf.reshape(phi, [-1]), side='right') - 1
  i = tf.reshape(tf.clip_by_value(i, 0, tf.shape(angles)[0] - 1), tf.shape(phi))
  t0, t1, r0, r1 = (tf.gather(theta, i), tf.gather(theta, i + 1), tf.gather(r, i),
                    tf.gather(r, i + 1))
  # Distance from the centre to the straight edge (v_i, v_{i+1}) along the ray at phi.
  edge = r0 * r1 * tf.sin(t1 - t0) / (r0 * tf.sin(phi - t0) + r1 * tf.sin(t1 - phi) + 1e-6)
  return edge - tf.sqrt(yy * yy + xx * xx)


def hole_mask(height, width, seed, max_holes: int, radius: Sequence[float],
              feather: Sequence[float]) -> tf.Tensor:
  """(H, W, 1) mask in [0, 1] of 1..max_holes shapes: feathered irregular holes (Wan et al.) or
  sharp random polygons (Pik-Fix), half each. Shapes are fully 1 inside; feathered ones fade
  out over a width drawn from `feather` (px). `radius` is relative to the short side.

  The signed distance field is evaluated on a 4x coarser grid and upsampled bilinearly (it is
  piecewise smooth), which keeps the cost negligible even for sharp edges.
  """
  s = tf.random.experimental.stateless_split(seed, 2 + max_holes)
  short = tf.cast(tf.minimum(height, width), tf.float32)
  step = 4
  grid_h, grid_w = (height + step - 1) // step + 1, (width + step - 1) // step + 1
  grid_y = (tf.cast(tf.range(grid_h), tf.float32) * step)[:, None]
  grid_x = (tf.cast(tf.range(grid_w), tf.float32) * step)[None, :]
  count = tf.random.stateless_uniform([], s[0], 1, max_holes + 1, dtype=tf.int32)
  field = tf.fill([grid_h, grid_w], -1e4)
  for k in range(max_holes):
    h = tf.random.experimental.stateless_split(s[2 + k], 6)
    center = _uniform(h[0], 0.0, 1.0, [2]) * tf.cast(tf.stack([height, width]), tf.float32)
    angles = tf.sort(_uniform(h[1], -math.pi, math.pi, [_POLYGON_VERTICES]))
    r = _uniform(h[2], radius[0], radius[1]) * short
    radii = r * _uniform(h[3], 0.45, 1.0, [_POLYGON_VERTICES])
    width_k = tf.where(_uniform(h[4]) < 0.5, 1.0, _uniform(h[5], feather[0], feather[1]))
    shape_field = polygon_field(grid_y, grid_x, center, angles, radii) / width_k
    field = tf.where(k < count, tf.maximum(field, shape_field), field)
  # Upsample: grid node j sits at pixel j * step, so scale by step and crop (align corners).
  up = tf.raw_ops.ResizeBilinear(
      images=field[None, ..., None], size=tf.stack([(grid_h - 1) * step + 1,
                                                    (grid_w - 1) * step + 1]),
      align_corners=True, half_pixel_centers=False)[0]
  return tf.clip_by_value(1.0 + up[:height, :width], 0.0, 1.0)


def holes(image: tf.Tensor, seed, max_holes: int, radius: Sequence[float],
          feather: Sequence[float]) -> tf.Tensor:
  """Sets `hole_mask` regions to white (damage revealing the paper; Wan et al., Pik-Fix)."""
  shape = tf.shape(image)
  mask = hole_mask(shape[0], shape[1], seed, max_holes, radius, feather)
  return image * (1.0 - mask) + mask


def film_grain(image: tf.Tensor, seed, sigma: Sequence[float]) -> tf.Tensor:
  """Monochrome film grain: slightly blurred Gaussian noise, strongest in the mid-tones."""
  s = tf.random.experimental.stateless_split(seed, 2)
  shape = tf.shape(image)
  noise = tf.random.stateless_normal([shape[0], shape[1], 1], s[0])
  noise = _separable(noise, tf.constant([0.25, 0.5, 0.25])) / 0.61  # Grain ~2 px, unit std.
  std = _uniform(s[1], sigma[0], sigma[1]) / 255.0
  weight = 0.5 + 2.0 * image * (1.0 - image)
  return tf.clip_by_value(image + std * weight * noise, 0.0, 1.0)


def changed_mask(before: tf.Tensor, after: tf.Tensor) -> tf.Tensor:
  """(H, W, 1) float32: 1 where some channel of `after` differs from `before` by more than
  DEFECT_MASK_THRESHOLD / 255, else 0."""
  diff = tf.reduce_max(tf.abs(after - before), axis=-1, keepdims=True)
  return tf.cast(diff > DEFECT_MASK_THRESHOLD / 255.0, tf.float32)


# The unstructured degradations, in the order of their stateless seeds (config names).
UNSTRUCTURED = ('noise', 'blur', 'jpeg', 'color_jitter', 'box_blur')


def unstructured_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`config.unstructured` checked: a ValueError naming the option for an unknown name."""
  names = tuple(config.unstructured)
  unknown = sorted(set(names) - set(UNSTRUCTURED))
  if unknown:
    raise ValueError(f'config.data.degradation.unstructured: unknown {unknown}; use names of '
                     f'{UNSTRUCTURED}')
  return names


def degrade(image: tf.Tensor, seed, config: ml_collections.ConfigDict,
            textures: Optional[tuple[tf.Tensor, tf.Tensor]] = None) -> tf.Tensor:
  """The full synthetic old-photo model (module docstring), ranges from config.data.degradation.

  Args:
    image: (H, W, C) float32 in [0, 1], C = 1 or 3.
    seed: stateless seed, shape [2].
    config: `config.data.degradation`.
    textures: (scratch bank, paper bank), each (N, T, T) uint8; None skips texture blending.
  Returns:
    The degraded image, same shape, float32 in [0, 1].
  """
  return _degrade(image, seed, config, textures, with_mask=False)[0]


def degrade_with_mask(image: tf.Tensor, seed, config: ml_collections.ConfigDict,
                      textures: Optional[tuple[tf.Tensor, tf.Tensor]] = None
                      ) -> tuple[tf.Tensor, tf.Tensor]:
  """`degrade` (the same image, bit for bit) and its structured-defect mask (H, W, 1) float32 in
  {0, 1}: 1 where the scratch texture or the holes changed the pixel (`changed_mask` of the
  image just before and just after that step). The paper texture, fading, grain and the
  unstructured steps never mark a pixel."""
  return _degrade(image, seed, config, textures, with_mask=True)


def _degrade(image: tf.Tensor, seed, config: ml_collections.ConfigDict,
             textures: Optional[tuple[tf.Tensor, tf.Tensor]], with_mask: bool
             ) -> tuple[tf.Tensor, Optional[tf.Tensor]]:
  """`degrade`, plus the defect mask when `with_mask` (None otherwise: no extra ops)."""
  d = config
  s = tf.random.experimental.stateless_split(seed, 17)
  unstructured = [
      lambda x, k: gaussian_noise(x, k, d.noise_sigma),
      lambda x, k: gaussian_blur(x, k, d.blur_kernel_sizes, d.blur_sigma),
      lambda x, k: jpeg(x, k, d.jpeg_quality),
      lambda x, k: color_jitter(x, k, d.color_jitter),
      lambda x, k: box_blur(x, k, d.box_blur_sizes),
  ]
  enabled = tf.constant([name in unstructured_names(d) for name in UNSTRUCTURED])
  n = len(unstructured)
  # Order and drops are drawn over all five, so leaving one out keeps every other draw.
  order = tf.argsort(_uniform(s[0], shape=[n]))
  keep = (_uniform(s[1], shape=[n]) >= d.drop_prob) & enabled
  image = tf.convert_to_tensor(image, tf.float32)

  def step(t, x):  # A loop, so that each operation is traced once, not once per position.
    op = order[t]
    branches = [(lambda f, k: lambda: f(x, k))(f, s[2 + i]) for i, f in enumerate(unstructured)]
    branches.append(lambda: x)
    return t + 1, tf.ensure_shape(tf.switch_case(tf.where(keep[op], op, n), branches), image.shape)

  _, x = tf.while_loop(lambda t, x: t < n, step, [tf.constant(0), image])

  def maybe(prob, fn, key, x):
    return tf.cond(_uniform(s[key]) < prob, lambda: fn(x), lambda: x)

  mask = None
  if with_mask:
    shape = tf.shape(image)
    mask = tf.zeros(tf.stack([shape[0], shape[1], 1]), tf.float32)

  def structured(before, after, mask):
    """Adds the pixels a structured step changed to the mask (measured at that step, so later
    steps such as grain neither add to it nor remove from it)."""
    return None if mask is None else tf.maximum(mask, changed_mask(before, after))

  x = maybe(d.fade_prob, lambda y: fade(y, s[8], d.fade_strength), 9, x)
  if textures is not None:
    scratch, paper = textures
    # Paper stains and wear cover the whole print softly: not a defect to inpaint, so unmasked.
    x = maybe(d.paper_prob, lambda y: blend_texture(y, s[10], paper, d.texture_opacity), 11, x)
    before = x
    x = maybe(d.texture_prob, lambda y: blend_texture(y, s[12], scratch, d.texture_opacity), 13, x)
    mask = structured(before, x, mask)
  x = maybe(d.grain_prob, lambda y: film_grain(y, s[14], d.grain_sigma), 15, x)
  # Holes come last so that they stay pure white, like damage to the print itself.
  before = x
  x = maybe(d.hole_prob, lambda y: holes(y, s[16], d.max_holes, d.hole_radius, d.hole_feather),
            7, x)
  mask = structured(before, x, mask)
  return tf.clip_by_value(x, 0.0, 1.0), mask
