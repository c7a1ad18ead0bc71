"""Colorization sub-net (Pik-Fix sec. 3.3): a dense U-Net fed with warped SPHist.

Encoder: a DenseNet stem (7x7/2 conv, 3x3/2 max-pool) and four dense blocks of 6, 12, 24, 16
units (growth 32, bottleneck 1x1 -> 3x3), with transitions halving width and resolution, so
block i's output sits at the resolution of ResNet layer i (1/4 .. 1/32). After each encoder
block, the reference colour features at that scale (warped SPHist + similarity confidence)
are concatenated and passed through a fusion module: a dense block of 6 units + a 3x3 conv.
Decoder: bilinear upsampling, skip connections, and dense blocks mirroring the encoder;
output ab in [-1, 1] (tanh).
"""

from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax.models import layers


class FusionModule(nn.Module):
  """Dense block of `num_units` units + a 3x3 conv back to the encoder width."""
  num_units: int
  growth: int
  bottleneck: int
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, reference: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = jnp.concatenate([x, reference.astype(x.dtype)], axis=-1)
    y = layers.DenseBlock(self.num_units, self.growth, self.bottleneck, remat=self.remat,
                          dtype=self.dtype, name='dense')(y, train)
    return layers.Conv(x.shape[-1], (3, 3), dtype=self.dtype, name='conv')(y)


def _norm_relu_conv(x: jnp.ndarray, features: int, kernel: int, dtype: Any, name: str):
  x = nn.relu(nn.LayerNorm(dtype=dtype, name=f'{name}_norm')(x))
  return layers.Conv(features, (kernel, kernel), dtype=dtype, name=name)(x)


class ColorizationNet(nn.Module):
  """(I'_L, reference features per scale) -> ab (B, H, W, 2) in [-1, 1]."""
  block_units: Sequence[int] = (6, 12, 24, 16)
  growth: int = 32
  bottleneck: int = 4
  stem_features: int = 64
  fusion_units: int = 6
  dropout: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, l: jnp.ndarray, scale_features: Mapping[int, jnp.ndarray],
               input_features: Optional[jnp.ndarray] = None, train: bool = False) -> jnp.ndarray:
    """Args:
      l: restored luminance (B, H, W, 1), H and W multiples of 32.
      scale_features: {scale i (1..4): (B, H/2^(i+1), W/2^(i+1), V)} reference colour
        features fused after encoder block i.
      input_features: optional (B, H, W, V) features concatenated with L at the input
        (the "input ab fusion" ablation of Table 4).
    """
    dense = dict(growth=self.growth, bottleneck=self.bottleneck, dropout=self.dropout,
                 remat=self.remat, dtype=self.dtype)
    x = l.astype(self.dtype)
    if input_features is not None:
      x = jnp.concatenate([x, input_features.astype(self.dtype)], axis=-1)
    stem = layers.Conv(self.stem_features, (7, 7), strides=(2, 2), dtype=self.dtype,
                       name='stem')(x)
    x = nn.max_pool(nn.relu(stem), (3, 3), strides=(2, 2), padding='SAME')

    skips = []
    for i, units in enumerate(self.block_units):
      scale = i + 1
      x = layers.DenseBlock(units, name=f'encoder_block{scale}', **dense)(x, train)
      if scale in scale_features:
        x = FusionModule(self.fusion_units, self.growth, self.bottleneck, remat=self.remat,
                         dtype=self.dtype, name=f'fusion{scale}')(x, scale_features[scale], train)
      skips.append(x)
      if scale < len(self.block_units):
        x = _norm_relu_conv(x, x.shape[-1] // 2, 1, self.dtype, f'transition{scale}')
        x = layers.downsample(x, 2)

    for i in reversed(range(len(self.block_units) - 1)):
      skip = skips[i]
      x = layers.resize(x, *skip.shape[1:3])
      x = jnp.concatenate([x, skip], axis=-1)
      x = _norm_relu_conv(x, skip.shape[-1] // 2, 1, self.dtype, f'decoder_reduce{i + 1}')
      x = layers.DenseBlock(self.block_units[i], name=f'decoder_block{i + 1}', **dense)(x, train)

    x = layers.resize(x, *stem.shape[1:3])
    x = jnp.concatenate([x, stem], axis=-1)
    x = _norm_relu_conv(x, self.stem_features, 3, self.dtype, 'decoder_half')
    x = layers.resize(x, *l.shape[1:3])
    x = jnp.concatenate([x, l.astype(self.dtype)], axis=-1)
    x = _norm_relu_conv(x, self.stem_features // 2, 3, self.dtype, 'decoder_full')
    x = nn.relu(x)
    ab = layers.Conv(2, (3, 3), dtype=self.dtype, name='output')(x)
    return jnp.tanh(ab.astype(jnp.float32))
