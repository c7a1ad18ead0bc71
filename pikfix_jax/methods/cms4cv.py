"""The CMS4CV baselines (Carboniero, Mancinelli, Sacerdote 2024, sec. 3, appendix 8.3) as one
method: the U-Net (MAE + (1 - SSIM)), the Fusion U-Net (grey + a DeepLabV3-MobileNetV3
segmentation of it) and the U-Net-GAN (adversarial + 150 MAE against a 4-block CNN).

Their task is 2x super-resolution + colour: with config.model.sr_factor = 2 the network sees
the batch's input L shrunk 2x (area) and must return the full-size RGB; 1 makes it a same-size
baseline for the paper's tables. The input is the CIE lightness L / 100 (the report's grey
image up to a monotone per-pixel map). It takes no reference (models/cms4cv.py; docs/MODEL.md).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from pikfix_jax import weights
from pikfix_jax.losses import cms4cv as cms4cv_losses
from pikfix_jax.methods import supervised
from pikfix_jax.models import cms4cv
from pikfix_jax.models import deeplab
from pikfix_jax.models import layers
from pikfix_jax.ops import color

SEGMENTATION_ARCH = 'deeplabv3_mobilenet_v3_large'


class CMS4CVGenerator(nn.Module):
  """(input_l, reference_rgb (ignored), train) -> {'raw': RGB, 'rgb', 'restored_l', 'ab'}."""
  num_down: int = 5
  base_features: Optional[int] = None
  sr_factor: int = 2
  upsampling: str = 'nearest'
  segmentation: bool = False

  @nn.compact
  def __call__(self, input_l: jnp.ndarray, reference_rgb: Optional[jnp.ndarray] = None,
               train: bool = False) -> dict:
    del reference_rgb
    x, hw = layers.pad_to_multiple(input_l, self.sr_factor)
    x = layers.downsample(x, self.sr_factor)
    if self.segmentation:  # Fusion: the frozen segmentation's class probabilities.
      grey_rgb = color.gray_to_rgb(x)
      logits = deeplab.DeepLabV3MobileNetV3Large(name='segmentation')(grey_rgb)
      x = jnp.concatenate([x, jax.nn.softmax(jax.lax.stop_gradient(logits), axis=-1)], -1)
    rgb = cms4cv.UNet(self.num_down, self.base_features, self.sr_factor, self.upsampling,
                      name='unet')(x, train)
    rgb = layers.crop_to(rgb, hw)
    l, ab = color.rgb_to_lab_normalized(rgb)
    return {'raw': rgb, 'rgb': rgb, 'restored_l': l, 'ab': ab}


class Method(supervised.SupervisedMethod):
  """config.model.{num_down, base_features, sr_factor, upsampling, segmentation, gan,
  d_features}; config.loss.{ssim_weight, mae_weight}."""

  config_modules = ('configs.baselines.cms4cv_unet', 'configs.baselines.cms4cv_fusion',
                    'configs.baselines.cms4cv_gan')

  @classmethod
  def label(cls, config) -> str:
    m = config.model
    name = 'Fusion' if m.segmentation else ('U-Net-GAN' if m.gan else 'U-Net')
    return f'CMS4CV {name}' + (f' ({m.sr_factor}x SR)' if m.sr_factor > 1 else '')

  def __init__(self, config, steps_per_epoch: int = 1):
    m = config.model
    self.generator = CMS4CVGenerator(m.num_down, m.base_features or None, m.sr_factor,
                                     m.upsampling, m.segmentation)
    self.discriminator = cms4cv.Discriminator(m.d_features) if m.gan else None
    self.generator_terms = (('total', 'adversarial', 'mae') if m.gan
                            else ('total', 'mae', 'ssim_term'))
    super().__init__(config, steps_per_epoch)

  def split_frozen(self, params: dict) -> tuple[dict, dict]:
    frozen = {k: v for k, v in params.items() if k == 'segmentation'}
    return {k: v for k, v in params.items() if k != 'segmentation'}, frozen

  def init_state(self, seed: int):
    if self.config.model.segmentation and not self.config.backbones.deeplabv3:
      raise ValueError('The CMS4CV Fusion model needs the segmentation network\'s weights: '
                       'pass --config.backbones.deeplabv3=FILE (docs/WEIGHTS.md: '
                       'data_prep.convert_weights --arch=deeplabv3_mobilenet_v3_large); a '
                       'random segmentation is no segmentation.')
    return super().init_state(seed)

  def load_pretrained(self, g_vars: dict) -> dict:
    if 'segmentation' in g_vars['params']:
      seg = weights.maybe_load_backbone(
          self.config.backbones.deeplabv3, SEGMENTATION_ARCH,
          {'params': g_vars['params']['segmentation'],
           'batch_stats': g_vars['batch_stats']['segmentation']})
      g_vars['params']['segmentation'] = seg['params']
      g_vars['batch_stats']['segmentation'] = seg['batch_stats']
    return g_vars

  def target(self, batch: dict) -> jnp.ndarray:
    return color.lab_normalized_to_rgb(batch['target_lab'][..., :1], batch['target_lab'][..., 1:])

  def generator_losses(self, raw, target, fake_logits) -> dict:
    if fake_logits is not None:
      return cms4cv_losses.generator_loss(fake_logits, raw, target, self.config.loss.mae_weight)
    terms = cms4cv_losses.unet_loss(raw, target, self.config.loss.ssim_weight)
    return {'total': terms['total'], 'mae': terms['mae'], 'ssim_term': terms['ssim']}

  discriminator_loss = staticmethod(cms4cv_losses.discriminator_loss)  # D sees the RGB alone
