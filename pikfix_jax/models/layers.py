"""Building blocks shared by the sub-nets: dense units/blocks, residual dense blocks, resizing."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def resize(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """Bilinear resize of an NHWC tensor (anti-aliased when shrinking); keeps the dtype."""
  if x.shape[1:3] == (height, width):
    return x
  out = jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), 'bilinear')
  return out.astype(x.dtype)


def downsample(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Average-pools an NHWC tensor by an integer factor (exact box filter)."""
  if factor == 1:
    return x
  b, h, w, c = x.shape
  if h % factor or w % factor:
    return nn.avg_pool(x, (factor, factor), strides=(factor, factor))
  # A reshape-mean, not avg_pool: same values, but its gradient is a broadcast, where
  # avg_pool's is a strided reduce_window that costs seconds on the 64-channel full-resolution
  # SPHist on CPU (docs/BENCHMARKS.md, "Training step").
  return jnp.mean(x.reshape(b, h // factor, factor, w // factor, factor, c), axis=(2, 4))


class DenseUnit(nn.Module):
  """DenseNet unit (Huang et al.): [LN-ReLU-1x1 conv] - LN-ReLU-3x3 conv, returns `growth` maps.

  With `bottleneck=0` it is the RDN unit (Zhang et al.): 3x3 conv + ReLU.
  """
  growth: int
  bottleneck: int = 4
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if not self.bottleneck:
      return nn.relu(nn.Conv(self.growth, (3, 3), dtype=self.dtype)(x))
    y = nn.relu(nn.LayerNorm(dtype=self.dtype)(x))
    y = nn.Conv(self.bottleneck * self.growth, (1, 1), use_bias=False, dtype=self.dtype)(y)
    y = nn.relu(nn.LayerNorm(dtype=self.dtype)(y))
    y = nn.Conv(self.growth, (3, 3), use_bias=False, dtype=self.dtype)(y)
    if self.dropout:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return y


class DenseBlock(nn.Module):
  """`num_units` dense units, each seeing the concatenation of all earlier outputs."""
  num_units: int
  growth: int
  bottleneck: int = 4
  dropout: float = 0.0
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    unit_cls = nn.remat(DenseUnit, static_argnums=(2,)) if self.remat else DenseUnit
    features = [x]
    for i in range(self.num_units):
      inputs = jnp.concatenate(features, axis=-1)
      features.append(unit_cls(self.growth, self.bottleneck, self.dropout, self.dtype,
                               name=f'unit{i}')(inputs, train))
    return jnp.concatenate(features, axis=-1)


class ResidualDenseBlock(nn.Module):
  """RDB (Zhang et al. 2018): dense units, 1x1 local feature fusion, local residual."""
  num_units: int
  growth: int
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    y = DenseBlock(self.num_units, self.growth, bottleneck=0, remat=self.remat,
                   dtype=self.dtype, name='dense')(x)
    return x + nn.Conv(x.shape[-1], (1, 1), dtype=self.dtype, name='local_fusion')(y)

