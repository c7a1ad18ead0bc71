"""Pix2pix (Isola et al. 2017) as a method, the first row of Pik-Fix's Tables 1-2: degraded L
in, normalised Lab out (L restored too, since the input L is degraded), U-Net-256 against the
70x70 PatchGAN that sees [L, output], vanilla GAN + 100 L1 (models/pix2pix.py; docs/MODEL.md,
"Baselines: Pix2pix and CMS4CV"). It takes no reference."""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax.losses import pix2pix as pix2pix_losses
from pikfix_jax.methods import supervised
from pikfix_jax.models import pix2pix
from pikfix_jax.ops import color


class Pix2pixGenerator(nn.Module):
  """(input_l, reference_rgb (ignored), train) -> {'raw', 'rgb', 'restored_l', 'ab'}."""
  num_downs: int = 8
  ngf: int = 64

  @nn.compact
  def __call__(self, input_l: jnp.ndarray, reference_rgb: Optional[jnp.ndarray] = None,
               train: bool = False) -> dict:
    del reference_rgb
    raw = pix2pix.UnetGenerator(self.num_downs, self.ngf, name='unet')(input_l, train)
    l, ab = pix2pix.to_lab(raw)
    return {'raw': raw, 'restored_l': l, 'ab': ab,
            'rgb': color.lab_normalized_to_rgb(jnp.clip(l, 0.0, 1.0), ab)}


class Method(supervised.SupervisedMethod):
  """Pix2pix: config.model.{num_downs, ngf, d_features, d_layers}, config.loss.l1_weight."""

  generator_terms = ('total', 'adversarial', 'l1')
  # The first row of Pik-Fix's Tables 1-2.
  paper_rows = {
      ('div2k', False): ('Pik-Fix Table 1, DIV2K (w/o degradation)', (21.12, 0.872, 0.138)),
      ('voc', False): ('Pik-Fix Table 1, Pascal VOC (w/o degradation)', (20.89, 0.782, 0.200)),
      ('voc', True): ('Pik-Fix Table 1, Pascal VOC (w/ degradation)', (20.37, 0.732, 0.231)),
      ('realold', False): ('Pik-Fix Table 2, RealOld', (16.80, 0.684, 0.320)),
  }
  config_modules = ('configs.baselines.pix2pix',)

  @classmethod
  def label(cls, config) -> str:
    return 'Pix2pix'

  def __init__(self, config, steps_per_epoch: int = 1):
    m = config.model
    self.generator = Pix2pixGenerator(m.num_downs, m.ngf)
    self.discriminator = pix2pix.make_discriminator(m.d_features, m.d_layers)
    super().__init__(config, steps_per_epoch)

  def target(self, batch: dict) -> jnp.ndarray:
    return pix2pix.to_target(batch['target_lab'][..., :1], batch['target_lab'][..., 1:])

  def generator_losses(self, raw, target, fake_logits) -> dict:
    return pix2pix_losses.generator_loss(fake_logits, raw, target, self.config.loss.l1_weight)

  discriminator_loss = staticmethod(pix2pix_losses.discriminator_loss)

  def d_condition(self, batch: dict) -> tuple:
    return (batch['input_l'],)  # pix2pix's D sees [input, output]
