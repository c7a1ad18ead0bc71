"""RoIAlign (He et al., "Mask R-CNN", ICCV 2017, sec. 3): fixed-size crops of boxes by bilinear
sampling, as torchvision.ops.roi_align computes it with aligned=False and sampling_ratio=-1
(the call GFP-GAN's release crops its eyes and mouths with).

Each output bin (of an output_size x output_size grid over the box) is the mean of a
g_h x g_w grid of bilinear samples, g = ceil(box side / output_size) chosen per box (the
"adaptive" sampling ratio). A box's g depends on its data, so the sampling grid is drawn at a
static upper bound (`max_samples`, by default what the largest box the image can hold needs)
and the samples beyond a box's own g are masked out of its mean.
"""

import math
from typing import Optional

import jax.numpy as jnp


def _bilinear(images: jnp.ndarray, index: jnp.ndarray, y: jnp.ndarray, x: jnp.ndarray
              ) -> jnp.ndarray:
  """torchvision's bilinear_interpolate: samples of images (B, H, W, C) at (y, x) (any shape,
  `index` the image of each), zero beyond one pixel outside the image, clamped inside it."""
  _, h, w, _ = images.shape
  outside = (y < -1.0) | (y > h) | (x < -1.0) | (x > w)
  y, x = jnp.maximum(y, 0.0), jnp.maximum(x, 0.0)
  y0, x0 = jnp.floor(y).astype(jnp.int32), jnp.floor(x).astype(jnp.int32)
  y_last, x_last = y0 >= h - 1, x0 >= w - 1
  y0, x0 = jnp.minimum(y0, h - 1), jnp.minimum(x0, w - 1)
  y1, x1 = jnp.where(y_last, y0, y0 + 1), jnp.where(x_last, x0, x0 + 1)
  y, x = jnp.where(y_last, y0.astype(y.dtype), y), jnp.where(x_last, x0.astype(x.dtype), x)
  ly, lx = y - y0, x - x0
  hy, hx = 1.0 - ly, 1.0 - lx
  at = lambda yy, xx: images[index, yy, xx]  # (..., C)
  value = (hy * hx)[..., None] * at(y0, x0) + (hy * lx)[..., None] * at(y0, x1) + \
      (ly * hx)[..., None] * at(y1, x0) + (ly * lx)[..., None] * at(y1, x1)
  return jnp.where(outside[..., None], 0.0, value)


def roi_align(images: jnp.ndarray, boxes: jnp.ndarray, index: jnp.ndarray, output_size: int,
              max_samples: Optional[int] = None) -> jnp.ndarray:
  """images (B, H, W, C), boxes (N, 4) as (x0, y0, x1, y1) in pixels (pixel centres at
  integers + 0.5 ... as torchvision's aligned=False: no half-pixel shift), index (N,) the
  image of each box -> (N, output_size, output_size, C)."""
  _, h, w, _ = images.shape
  p = output_size
  g = max_samples or math.ceil(max(h, w) / p)
  boxes = boxes.astype(jnp.float32)
  x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
  box_w, box_h = jnp.maximum(x1 - x0, 1.0), jnp.maximum(y1 - y0, 1.0)
  bin_w, bin_h = box_w / p, box_h / p
  g_w, g_h = jnp.ceil(box_w / p), jnp.ceil(box_h / p)  # (N,): the adaptive sampling ratio
  bins = jnp.arange(p, dtype=jnp.float32)
  k = jnp.arange(g, dtype=jnp.float32)
  # Sample positions (N, P, G) along each axis; samples k >= g of a box are masked.
  ys = y0[:, None, None] + bins[None, :, None] * bin_h[:, None, None] + \
      (k[None, None, :] + 0.5) * (bin_h / g_h)[:, None, None]
  xs = x0[:, None, None] + bins[None, :, None] * bin_w[:, None, None] + \
      (k[None, None, :] + 0.5) * (bin_w / g_w)[:, None, None]
  y_used = (k[None, :] < g_h[:, None]).astype(images.dtype)  # (N, G)
  x_used = (k[None, :] < g_w[:, None]).astype(images.dtype)
  # (N, P, G, P, G): rows (bin, sample) x columns (bin, sample).
  y = jnp.broadcast_to(ys[:, :, :, None, None], ys.shape + (p, g))
  x = jnp.broadcast_to(xs[:, None, None, :, :], (xs.shape[0], p, g, p, g))
  samples = _bilinear(images, index.astype(jnp.int32)[:, None, None, None, None], y, x)
  weight = y_used[:, None, :, None, None] * x_used[:, None, None, None, :]
  total = jnp.sum(samples * weight[..., None], axis=(2, 4))
  return total / jnp.maximum(g_h * g_w, 1.0)[:, None, None, None].astype(images.dtype)
