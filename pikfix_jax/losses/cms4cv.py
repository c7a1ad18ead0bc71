"""The CMS4CV report's objectives (appendix 8.3): MAE + (1 - SSIM) for the U-Net and Fusion
models; BCE, and adversarial + GAN_MAE_WEIGHT MAE, for the U-Net-GAN."""

import dm_pix
import jax.numpy as jnp

from pikfix_jax.losses import common

SSIM_WEIGHT = 1.0  # MAE + 1 * (1 - SSIM): the report's "linear combination", weights unstated
GAN_MAE_WEIGHT = 150.0  # lambda, sec. 4: 100, 150 and 200 tried, 150 best


def ssim(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Differentiable SSIM of RGB (B, H, W, C) in [0, 1] -> (B,): tf.image.ssim's convention
  (11x11 Gaussian window, sigma 1.5, 'valid' positions, K1 0.01, K2 0.03, max_val 1), the
  Keras SSIM loss a Keras model such as the report's is trained with (dm_pix.ssim)."""
  return dm_pix.ssim(a.astype(jnp.float32), b.astype(jnp.float32), max_val=1.0)


def unet_loss(output: jnp.ndarray, target: jnp.ndarray, ssim_weight: float = SSIM_WEIGHT
              ) -> dict[str, jnp.ndarray]:
  """MAE + ssim_weight * (1 - SSIM) on RGB in [0, 1], the loss of the report's best U-Net and
  Fusion model (appendix 8.3); returns {'mae', 'ssim', 'total'} ('ssim': the batch mean)."""
  terms = {'mae': common.l1(output, target), 'ssim': jnp.mean(ssim(output, target))}
  terms['total'] = terms['mae'] + ssim_weight * (1.0 - terms['ssim'])
  return terms


def discriminator_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """L_D = L_real + L_fake (appendix 8.3.3): BCE(D(y), 1) + BCE(D(G(x)), 0), from logits."""
  return common.discriminator_loss(real_logits, fake_logits, 'nonsaturating')


def generator_loss(fake_logits: jnp.ndarray, output: jnp.ndarray, target: jnp.ndarray,
                   mae_weight: float = GAN_MAE_WEIGHT) -> dict[str, jnp.ndarray]:
  """BCE(D(G(x)), 1) + mae_weight * MAE(G(x), y) (appendix 8.3.3; the non-saturating form,
  as Keras GANs train G with "real" labels); returns {'adversarial', 'mae', 'total'}."""
  terms = {'adversarial': common.generator_adversarial_loss(fake_logits, 'nonsaturating'),
           'mae': common.l1(output, target)}
  terms['total'] = terms['adversarial'] + mae_weight * terms['mae']
  return terms
