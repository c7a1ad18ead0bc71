"""DISTS-style texture + structure similarity on pooled feature statistics (Ding et al. 2020).

For every channel c of every layer, with x, y two images' feature maps:
  texture   t_c = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)          (global means)
  structure s_c = (2 cov_xy + C2) / (var_x + var_y + C2)                (spatial (co)variances)
  similarity = sum_c alpha_c t_c + beta_c s_c,  with sum alpha + sum beta = 1 (1: identical).
Two different photos are not aligned pixel for pixel, so each map is first average-pooled to a
`grid` x `grid` layout: var/cov then measure how the coarse layout of each channel agrees.
An image is summarised by `Stats`: its channel means and its centred pooled grid.
"""

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

C1 = 1e-6  # DISTS constants.
C2 = 1e-6


class Stats(NamedTuple):
  """Statistics of N images over C channels and P = grid^2 cells (float32)."""
  mean: jnp.ndarray  # (N, C) global channel means.
  centered: jnp.ndarray  # (P, N, C) pooled cells minus the mean (P first: fast to score).
  var: jnp.ndarray  # (N, C) variance over the cells.


def grid_pool(features: jnp.ndarray, grid: int) -> jnp.ndarray:
  """(B, H, W, C) -> (grid * grid, B, C) cell averages; H and W must be multiples of grid."""
  b, h, w, c = features.shape
  if h % grid or w % grid:
    raise ValueError(f'feature map {h}x{w} is not divisible into a {grid}x{grid} grid')
  cells = features.astype(jnp.float32).reshape(b, grid, h // grid, grid, w // grid, c)
  return jnp.moveaxis(cells.mean(axis=(2, 4)).reshape(b, grid * grid, c), 1, 0)


def summarize(pooled: jnp.ndarray) -> Stats:
  """Pooled cells (P, N, C) -> Stats (the mean over equal cells is the global mean)."""
  mean = pooled.mean(axis=0)
  return with_variance(mean, pooled - mean)


def with_variance(mean: jnp.ndarray, centered: jnp.ndarray) -> Stats:
  """Stats from stored means and centred cells (any float dtype; computed in float32)."""
  centered = jnp.asarray(centered, jnp.float32)
  return Stats(jnp.asarray(mean, jnp.float32), centered, jnp.mean(centered ** 2, axis=0))


def channel_weights(channels: Sequence[int],
                    texture_weight: float) -> tuple[np.ndarray, np.ndarray]:
  """(alpha, beta), each (sum(channels),): layers weigh equally, channels equally within one."""
  per_channel = np.concatenate([np.full(c, 1.0 / (len(channels) * c)) for c in channels])
  return ((texture_weight * per_channel).astype(np.float32),
          ((1.0 - texture_weight) * per_channel).astype(np.float32))


def similarity(query: Stats, db: Stats, alpha: jnp.ndarray, beta: jnp.ndarray) -> jnp.ndarray:
  """Similarity of each of Q query images to each of N images: (Q, N), in (-1, 1].

  Written as one elementwise expression reduced over channels (the cell sum unrolled), which
  XLA fuses without materialising (Q, N, C); callers chunk Q to bound the work per call.
  """
  p = db.centered.shape[0]
  cov = sum(query.centered[i][:, None] * db.centered[i][None] for i in range(p)) / p
  qm, m = query.mean[:, None], db.mean[None]
  texture = (2 * qm * m + C1) / (qm ** 2 + m ** 2 + C1)
  structure = (2 * cov + C2) / (query.var[:, None] + db.var[None] + C2)
  return jnp.sum(texture * alpha + structure * beta, axis=-1)
