"""Restoration sub-net (Pik-Fix sec. 3.1): a multi-level Residual Dense Network.

Level j sees the degraded luminance downsampled by `levels[j]` (1, 4, 8 in the paper). Each
level is an RDN trunk (shallow conv, `num_blocks` residual dense blocks, global feature
fusion, global residual). Lower levels are upsampled bilinearly, concatenated with the top
level and fused by a conv into a residual that is added to the input: I'_L = I_L + r.
`levels=(1,)` is the single-level RDN of Table 6.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from pikfix_jax.models import layers


class RDNLevel(nn.Module):
  """One RDN trunk at a single resolution."""
  features: int
  num_blocks: int
  num_units: int
  growth: int
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    shallow = layers.Conv(self.features, (3, 3), dtype=self.dtype, name='shallow')(x)
    y = shallow
    block_outputs = []
    for i in range(self.num_blocks):
      y = layers.ResidualDenseBlock(self.num_units, self.growth, remat=self.remat,
                                    dtype=self.dtype, name=f'rdb{i}')(y)
      block_outputs.append(y)
    y = jnp.concatenate(block_outputs, axis=-1)
    y = layers.Conv(self.features, (1, 1), dtype=self.dtype, name='global_fusion_1x1')(y)
    y = layers.Conv(self.features, (3, 3), dtype=self.dtype, name='global_fusion_3x3')(y)
    return y + shallow


class RestorationNet(nn.Module):
  """Multi-level RDN: degraded L (B, H, W, 1) in [0, 1] -> restored L (B, H, W, 1)."""
  levels: Sequence[int] = (1, 4, 8)
  features: int = 64
  num_blocks: int = 3
  num_units: int = 4
  growth: int = 32
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_l: jnp.ndarray) -> jnp.ndarray:
    h, w = input_l.shape[1:3]
    x = input_l.astype(self.dtype)
    level_features = []
    for factor in self.levels:
      y = RDNLevel(self.features, self.num_blocks, self.num_units, self.growth,
                   remat=self.remat, dtype=self.dtype,
                   name=f'level_x{factor}')(layers.downsample(x, factor))
      level_features.append(layers.resize(y, h, w))
    y = jnp.concatenate(level_features, axis=-1)
    # Linear, as RDN's global feature fusion: behind a ReLU every fusion unit can die (a residual
    # pushed to zero on clean inputs), leaving a sub-net that returns its input and never
    # learns again (docs/MODEL.md, "Restoration in the demo").
    y = layers.Conv(self.features, (3, 3), dtype=self.dtype, name='fusion')(y)
    residual = layers.Conv(1, (3, 3), dtype=self.dtype, name='output',
                           kernel_init=nn.initializers.variance_scaling(
                               0.01, 'fan_in', 'truncated_normal'))(y)
    return input_l + residual.astype(jnp.float32)


def from_config(r: ml_collections.ConfigDict, remat: bool = False,
                dtype: Any = jnp.float32) -> RestorationNet:
  """The sub-net of `config.model.restoration`."""
  return RestorationNet(levels=tuple(r.levels), features=r.features, num_blocks=r.num_blocks,
                        num_units=r.num_units, growth=r.growth, remat=remat, dtype=dtype)
