"""A palette of colours turned into a colour reference (the app's colour control, docs/RESTORE.md
"A palette as the reference").

Pik-Fix reads colours from a reference *image* through the similarity warp (ops/warp.py): each
input position takes the colours of the reference positions whose features match it. A bare
swatch of flat colours has no structure to match, so `palette_reference` gives the palette the
input's own lightness structure: the input's CIE L, with its pixels split into as many
lightness bands as there are colours (equal-count quantiles) and band j given the chroma (a, b)
of the j-th colour in order of lightness; the darkest colour goes to the darkest parts. The
reference is then an aligned "recoloured" copy of the input, the kind of reference the demo
model learnt to follow (docs/MODEL.md, "Why the reference steers").
"""

import re
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from pikfix_jax import image_io
from pikfix_jax.ops import color

Colour = Union[str, Sequence[float]]
MAX_SIDE = 512  # The reference is resized to at most this anyway (inference.reference_shape).
_HEX = re.compile(r'^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$')


def parse_colour(colour: Colour) -> np.ndarray:
  """'#rrggbb', 'rrggbb', '#rgb' or an (r, g, b) in [0, 1] -> float32 sRGB (3,); ValueError with
  a one-line message otherwise."""
  if isinstance(colour, str):
    m = _HEX.match(colour.strip())
    if not m:
      raise ValueError(f'{colour!r} is not a hex colour (#rrggbb or #rgb)')
    h = m.group(1)
    if len(h) == 3:
      h = ''.join(c * 2 for c in h)
    return np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], np.float32) / 255.0
  rgb = np.asarray(colour, np.float32)
  if rgb.shape != (3,) or rgb.min() < 0 or rgb.max() > 1:
    raise ValueError(f'{colour!r} is not an sRGB colour in [0, 1]')
  return rgb


def to_hex(rgb: Sequence[float]) -> str:
  """float sRGB (3,) in [0, 1] -> '#rrggbb'."""
  return '#' + ''.join(f'{int(round(float(np.clip(c, 0, 1)) * 255)):02x}' for c in rgb)


@jax.jit
def _lab(rgb: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  return color.rgb_to_lab_normalized(rgb)


@jax.jit
def _rgb(l: jnp.ndarray, ab: jnp.ndarray) -> jnp.ndarray:
  return color.lab_normalized_to_rgb(l, ab)


def palette_reference(image: np.ndarray, colours: Sequence[Colour],
                      blur: float = 1.0) -> np.ndarray:
  """The photo's lightness coloured by `colours` in lightness bands (module docstring).

  Args:
    image: the photo, sRGB (H, W, 3) in [0, 1] (a colour scan's colours are ignored).
    colours: 1 or more colours (`parse_colour`); one colour is a uniform tint.
    blur: Gaussian sigma (px at the reference's size) softening band edges, so the warp (at
      1/4 resolution and coarser) sees no aliased staircase.
  Returns:
    sRGB (h, w, 3) float32, the photo's aspect, longer side at most MAX_SIDE.
  """
  if not len(colours):
    raise ValueError('the palette is empty: add at least one colour')
  rgb = np.stack([parse_colour(c) for c in colours])
  image = np.asarray(image, np.float32)[..., :3]
  h, w = image.shape[:2]
  scale = min(1.0, MAX_SIDE / max(h, w))
  if scale < 1.0:
    image = image_io.resize_float(image, max(1, round(h * scale)), max(1, round(w * scale)))
  l = np.asarray(_lab(jnp.asarray(image))[0])  # (h, w, 1) in [0, 1]
  palette_l, palette_ab = (np.asarray(x) for x in _lab(jnp.asarray(rgb[None])))
  order = np.argsort(palette_l[0, :, 0], kind='stable')  # darkest colour first
  k = len(order)
  edges = np.quantile(l, np.arange(1, k) / k) if k > 1 else np.zeros((0,))
  band = np.searchsorted(edges, l[..., 0], side='right')  # (h, w) in [0, k)
  ab = palette_ab[0, order][band]  # (h, w, 2)
  if blur > 0 and k > 1:
    ab = np.stack([ndimage.gaussian_filter(ab[..., c], blur) for c in range(2)], axis=-1)
  return np.asarray(_rgb(jnp.asarray(l), jnp.asarray(ab, jnp.float32)), np.float32)
