"""Space-preserving colour histogram (SPHist, Pik-Fix eq. 3-4) and the EMD loss (eq. 7)."""

import jax
import jax.numpy as jnp


def init_bin_centers(num_bins: int, vmin: float = -1.0, vmax: float = 1.0) -> jnp.ndarray:
  """Eq. (4): u_k = vmin + (vmax - vmin) / K * k, for k = 0 .. K-1."""
  k = jnp.arange(num_bins, dtype=jnp.float32)
  return vmin + (vmax - vmin) / num_bins * k


def sphist(values: jnp.ndarray, centers: jnp.ndarray, sigma: float = 0.1) -> jnp.ndarray:
  """Eq. (3): soft assignment of every value to K Gaussian bins.

  Args:
    values: (..., C) channel values (e.g. normalised ab, C = 2).
    centers: (K,) shared bin centres, or (C, K) one set per channel.
    sigma: Gaussian spread.

  Returns:
    (..., C * K): per-pixel histograms, channel-major (all bins of channel 0 first); each
    group of K sums to 1.
  """
  values = values.astype(jnp.float32)
  centers = jnp.broadcast_to(centers, (values.shape[-1], centers.shape[-1]))
  logits = -jnp.square(values[..., None] - centers) / (2.0 * sigma ** 2)  # (..., C, K)
  h = jax.nn.softmax(logits, axis=-1)
  return h.reshape(values.shape[:-1] + (-1,))


def global_histogram(h: jnp.ndarray, num_channels: int = 2) -> jnp.ndarray:
  """Global average pooling of a (B, H, W, C*K) SPHist into 1-D histograms (B, C, K)."""
  b = h.shape[0]
  pooled = jnp.mean(h.reshape(b, -1, h.shape[-1]), axis=1)
  return pooled.reshape(b, num_channels, -1)


def emd_loss(p: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
  """Eq. (7): sum_k (CDF_p(k) - CDF_q(k))^2 over bins, averaged over batch and channels.

  p, q: (..., K) probability mass functions.
  """
  cdf_p = jnp.cumsum(p.astype(jnp.float32), axis=-1)
  cdf_q = jnp.cumsum(q.astype(jnp.float32), axis=-1)
  return jnp.mean(jnp.sum(jnp.square(cdf_p - cdf_q), axis=-1))
