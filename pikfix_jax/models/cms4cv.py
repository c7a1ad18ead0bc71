"""The CMS4CV baselines (Carboniero, Mancinelli, Sacerdote 2024, "CMS4CV - Historical Image
Recoloring and Restoration", sec. 3 and appendix 8.3): a U-Net from grey to RGB with an extra
up-sampling block for 2x super-resolution, the Fusion model (the same U-Net, 4 levels, fed grey
+ segmentation channels) and the U-Net-GAN (that U-Net against a 4-block CNN discriminator).

The report gives the blocks, not their arguments; where it names a Keras layer without
arguments this port takes Keras' defaults (nearest UpSampling2D, LeakyReLU slope 0.3,
BatchNormalization momentum 0.99 / eps 1e-3, Glorot-uniform kernels). docs/MODEL.md,
"Baselines: Pix2pix and CMS4CV", lists every choice and why.

Objectives: losses/cms4cv.py; optimiser settings: configs/baselines/cms4cv_*.py.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax.models import layers

BOTTLENECK_FEATURES = 1024  # "Bottleneck with 1024 channels"
SR_FACTORS = (1, 2)
UPSAMPLINGS = ('nearest', 'bilinear')
LEAKY_SLOPE = 0.3  # Keras LeakyReLU()

_glorot = nn.initializers.glorot_uniform()  # Keras Conv2D / Dense kernel default


def _batch_norm(train: bool, dtype: Any, name: Optional[str] = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, dtype=dtype,
                      name=name)


class ConvBNLeakyReLU(nn.Module):
  """Conv2D(3x3, same) - BatchNormalization - LeakyReLU, the report's block. The conv has no
  bias: before BatchNorm its gradient is identically zero (BN subtracts the batch mean) and
  BN's offset plays its part."""
  features: int
  leaky_slope: float = LEAKY_SLOPE
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = layers.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=_glorot, dtype=self.dtype, name='conv')(x)
    return nn.leaky_relu(_batch_norm(train, self.dtype, 'bn')(x), self.leaky_slope)


def _upsample2(x: jnp.ndarray, mode: str) -> jnp.ndarray:
  """Keras UpSampling2D(2, interpolation=mode)."""
  if mode == 'bilinear':
    return layers.resize(x, 2 * x.shape[1], 2 * x.shape[2])
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UNet(nn.Module):
  """The CMS4CV U-Net: grey (+ segmentation) (B, H, W, C) in [0, 1] -> RGB in [0, 1]
  (B, sr_factor H, sr_factor W, 3) through a sigmoid (appendix 8.3).

  `num_down` encoder blocks ([Conv3x3-BN-LeakyReLU] x 2, then 2x2 max-pool; widths
  base_features * 2^i), a bottleneck of the same two convs with base_features * 2^num_down
  channels, `num_down` decoder blocks (UpSampling2D x2, concatenate the encoder block's output,
  Conv3x3-BN-LeakyReLU at that block's width), with `sr_factor=2` one more UpSampling2D +
  Conv3x3-BN-LeakyReLU (base_features wide) for the report's 2x super-resolution, then a 1x1
  conv to 3 channels and the sigmoid. `base_features` None: 1024 / 2^num_down, so the
  bottleneck has the report's 1024 channels (32 for the U-Net, 64 for Fusion's num_down=4).
  Input channels are the input's (Fusion: grey + segmentation).

  Any H, W: padded to a multiple of 2^num_down (`layers.pad_to_multiple`: reflect, or edge
  where the pad is not shorter than the side), the output cropped to sr_factor (H, W).
  `train`: BatchNorm on batch statistics, updating 'batch_stats'.
  """
  num_down: int = 5
  base_features: Optional[int] = None
  sr_factor: int = 2
  upsampling: str = 'nearest'
  leaky_slope: float = LEAKY_SLOPE
  output_channels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if self.sr_factor not in SR_FACTORS:
      raise ValueError(f'sr_factor={self.sr_factor}: use one of {SR_FACTORS}')
    if self.upsampling not in UPSAMPLINGS:
      raise ValueError(f'upsampling={self.upsampling!r}: use one of {UPSAMPLINGS}')
    base = self.base_features or BOTTLENECK_FEATURES // 2 ** self.num_down
    x, (h, w) = layers.pad_to_multiple(x, 2 ** self.num_down)
    x = x.astype(self.dtype)

    def block(features: int, name: str) -> ConvBNLeakyReLU:
      return ConvBNLeakyReLU(features, self.leaky_slope, self.dtype, name=name)

    skips = []
    for i in range(self.num_down):
      x = block(base * 2 ** i, f'down{i}_conv0')(x, train)
      x = block(base * 2 ** i, f'down{i}_conv1')(x, train)
      skips.append(x)
      x = layers.max_pool_tiles(x, 2)
    x = block(base * 2 ** self.num_down, 'bottleneck_conv0')(x, train)
    x = block(base * 2 ** self.num_down, 'bottleneck_conv1')(x, train)
    for i in reversed(range(self.num_down)):
      x = jnp.concatenate([_upsample2(x, self.upsampling), skips[i]], axis=-1)
      x = block(base * 2 ** i, f'up{i}')(x, train)
    if self.sr_factor == 2:
      x = block(base, 'sr_up')(_upsample2(x, self.upsampling), train)
    x = layers.Conv(self.output_channels, (1, 1), kernel_init=_glorot, dtype=self.dtype,
                    name='output')(x)
    return layers.crop_to(nn.sigmoid(x.astype(jnp.float32)), (self.sr_factor * h, self.sr_factor * w))


class Discriminator(nn.Module):
  """The U-Net-GAN's D (sec. 3): 4 conv blocks and one dense layer. RGB (B, H, W, C) in
  [0, 1] -> one logit per image (B, 1).

  Block i: Conv2D(features * 2^i, 4x4, stride 2, same) - BatchNorm (not on the first, whose
  conv keeps its bias instead) - LeakyReLU; then Flatten and Dense(1): a sigmoid and BCE on it
  are `discriminator_loss`. D sees the RGB image alone (the report's L_GAN has D(y) and
  D(G(x))); its channels are the input's, so a caller can concatenate a condition. The dense
  layer ties the parameters to the training image size.
  """
  features: int = 64
  num_blocks: int = 4
  leaky_slope: float = LEAKY_SLOPE
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, rgb: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = rgb.astype(self.dtype)
    for i in range(self.num_blocks):
      x = layers.Conv(self.features * 2 ** i, (4, 4), strides=(2, 2), padding='SAME',
                      use_bias=i == 0, kernel_init=_glorot, dtype=self.dtype,
                      name=f'conv{i}')(x)
      if i:
        x = _batch_norm(train, self.dtype, f'bn{i}')(x)
      x = nn.leaky_relu(x, self.leaky_slope)
    x = x.reshape(x.shape[0], -1)  # channels-last, as Keras' Flatten
    x = nn.Dense(1, kernel_init=_glorot, dtype=self.dtype, name='dense')(x)
    return x.astype(jnp.float32)
