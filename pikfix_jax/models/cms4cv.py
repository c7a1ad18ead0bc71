"""The CMS4CV baselines (Carboniero, Mancinelli, Sacerdote 2024, "CMS4CV - Historical Image
Recoloring and Restoration", sec. 3 and appendix 8.3): a U-Net from grey to RGB with an extra
up-sampling block for 2x super-resolution, the Fusion model (the same U-Net, 4 levels, fed grey
+ segmentation channels) and the U-Net-GAN (that U-Net against a 4-block CNN discriminator).

The report gives the blocks, not their arguments; where it names a Keras layer without
arguments this port takes Keras' defaults (nearest UpSampling2D, LeakyReLU slope 0.3,
BatchNormalization momentum 0.99 / eps 1e-3, Glorot-uniform kernels). docs/MODEL.md,
"Baselines: Pix2pix and CMS4CV", lists every choice and why.

Objectives: `unet_loss` (MAE + (1 - SSIM), U-Net and Fusion) and `discriminator_loss` /
`generator_loss` (BCE; adversarial + 150 MAE, U-Net-GAN). The optimisers are the caller's:
Adam (the report names none; Keras' defaults ADAM_B1, ADAM_B2, ADAM_EPS), lr UNET_LEARNING_RATE
for the U-Net and Fusion (unstated: Keras' default) and GAN_LEARNING_RATE for both GAN nets.
"""

from typing import Any, Optional

import dm_pix
import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax import losses
from pikfix_jax.models import layers
from pikfix_jax.models.pikfix import crop_to, pad_to_multiple

BOTTLENECK_FEATURES = 1024  # "Bottleneck with 1024 channels"
SR_FACTORS = (1, 2)
UPSAMPLINGS = ('nearest', 'bilinear')
LEAKY_SLOPE = 0.3  # Keras LeakyReLU()
UNET_LEARNING_RATE = 1e-3  # not in the report: Keras Adam's default
GAN_LEARNING_RATE = 1e-5  # sec. 4: "a very small 1e-5"
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-7  # Keras Adam's defaults
SSIM_WEIGHT = 1.0  # MAE + 1 * (1 - SSIM): the report's "linear combination", weights unstated
GAN_MAE_WEIGHT = 150.0  # lambda, sec. 4: 100, 150 and 200 tried, 150 best

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

  Any H, W: padded to a multiple of 2^num_down (`pikfix.pad_to_multiple`: reflect, or edge
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
    x, (h, w) = pad_to_multiple(x, 2 ** self.num_down)
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
    return crop_to(nn.sigmoid(x.astype(jnp.float32)), (self.sr_factor * h, self.sr_factor * w))


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


def ssim(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Differentiable SSIM of RGB (B, H, W, C) in [0, 1] -> (B,): tf.image.ssim's convention
  (11x11 Gaussian window, sigma 1.5, 'valid' positions, K1 0.01, K2 0.03, max_val 1), the
  Keras SSIM loss a Keras model such as the report's is trained with (dm_pix.ssim)."""
  return dm_pix.ssim(a.astype(jnp.float32), b.astype(jnp.float32), max_val=1.0)


def unet_loss(output: jnp.ndarray, target: jnp.ndarray, ssim_weight: float = SSIM_WEIGHT
              ) -> dict[str, jnp.ndarray]:
  """MAE + ssim_weight * (1 - SSIM) on RGB in [0, 1], the loss of the report's best U-Net and
  Fusion model (appendix 8.3); returns {'mae', 'ssim', 'total'} ('ssim': the batch mean)."""
  terms = {'mae': losses.l1(output, target), 'ssim': jnp.mean(ssim(output, target))}
  terms['total'] = terms['mae'] + ssim_weight * (1.0 - terms['ssim'])
  return terms


def discriminator_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """L_D = L_real + L_fake (appendix 8.3.3): BCE(D(y), 1) + BCE(D(G(x)), 0), from logits."""
  return losses.discriminator_loss(real_logits, fake_logits, 'nonsaturating')


def generator_loss(fake_logits: jnp.ndarray, output: jnp.ndarray, target: jnp.ndarray,
                   mae_weight: float = GAN_MAE_WEIGHT) -> dict[str, jnp.ndarray]:
  """BCE(D(G(x)), 1) + mae_weight * MAE(G(x), y) (appendix 8.3.3; the non-saturating form,
  as Keras GANs train G with "real" labels); returns {'adversarial', 'mae', 'total'}."""
  terms = {'adversarial': losses.generator_adversarial_loss(fake_logits, 'nonsaturating'),
           'mae': losses.l1(output, target)}
  terms['total'] = terms['adversarial'] + mae_weight * terms['mae']
  return terms
