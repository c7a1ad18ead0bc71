"""Losses of Wan et al.'s face enhancement network (TPAMI sec. 3.4, eqs. 17-18), as the release's
face training code computes them (microsoft/Bringing-Old-Photos-Back-to-Life,
Face_Enhancement/models/pix2pix_model.py: SPADE's Pix2PixModel, `--gan_mode ls`); the networks
are models/wan_face.py.

G_f minimises lsgan_generator_loss(D_f(G_f)) + FEATURE_MATCHING_WEIGHT * feature_matching_loss
+ PERCEPTUAL_WEIGHT * perceptual_loss; D_f minimises lsgan_discriminator_loss. Every term is
one of Wan et al.'s translation losses (losses/wan.py) with SPADE's weighting: the LSGAN and
feature-matching terms are averaged over D_f's scales (pix2pixHD sums), and each D layer's
feature-matching weight is 1 (pix2pixHD's 4 / (layers + 1)).
"""

from typing import Callable, Mapping, Sequence

import jax.numpy as jnp

from pikfix_jax.losses import wan

PERCEPTUAL_WEIGHT = 10.0  # the release's lambda_vgg (SPADE's default)
FEATURE_MATCHING_WEIGHT = 10.0  # the release's lambda_feat (SPADE's default)


def lsgan_discriminator_loss(real_outputs: Sequence, fake_outputs: Sequence) -> jnp.ndarray:
  """Eq. 18, D_f's side: E[(1 - D_f(r_c))^2] + E[D_f(G_f(z, r_f))^2], each the mean over D_f's
  scales (SPADE's GANLoss). Arguments: FaceDiscriminator outputs, [(logits, features), ...]."""
  return wan.lsgan_discriminator_loss(real_outputs, fake_outputs) / len(real_outputs)


def lsgan_generator_loss(fake_outputs: Sequence) -> jnp.ndarray:
  """Eq. 18, G_f's side: E[(1 - D_f(G_f(z, r_f)))^2], the mean over D_f's scales."""
  return wan.lsgan_generator_loss(fake_outputs) / len(fake_outputs)


def feature_matching_loss(fake_outputs: Sequence, real_outputs: Sequence) -> jnp.ndarray:
  """The release's D_f feature matching (`GAN_Feat`): sum over scales and intermediate layers of
  mean |phi(fake) - phi(real)| / num_D; the real features are constants."""
  return wan.feature_matching_loss(fake_outputs, real_outputs, layer_weight=1.0)


def perceptual_loss(vgg_features: Callable[[jnp.ndarray], Mapping[str, jnp.ndarray]],
                    output_rgb: jnp.ndarray, target_rgb: jnp.ndarray) -> jnp.ndarray:
  """Eq. 17: sum_i 1/n_i |phi_i(G_f(z, r_f)) - phi_i(r_c)|_1 on VGG-19 relu1_1 .. relu5_1 with
  the release's layer weights 1/32 .. 1 (`wan.vgg_loss`), faces in sRGB [0, 1]."""
  return wan.vgg_loss(vgg_features, output_rgb, target_rgb)
