"""Pix2pix's objective (Isola et al. 2017, eq. 4): vanilla GAN + L1_WEIGHT L1, on the generator's
output space (`models.pix2pix.to_target`)."""

import jax.numpy as jnp

from pikfix_jax.losses import common

L1_WEIGHT = 100.0  # lambda of eq. 4


def discriminator_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """(BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)) / 2, BCE with logits averaged over patches: the
  halved objective of sec. 3.3 (gan_mode='vanilla')."""
  return 0.5 * common.discriminator_loss(real_logits, fake_logits, 'nonsaturating')


def generator_loss(fake_logits: jnp.ndarray, output: jnp.ndarray, target: jnp.ndarray,
                   l1_weight: float = L1_WEIGHT) -> dict[str, jnp.ndarray]:
  """BCE(D(x, G(x)), 1) + l1_weight * |G(x) - y|_1 (eq. 4, non-saturating form), on G's
  output space; returns {'adversarial', 'l1', 'total'}."""
  terms = {'adversarial': common.generator_adversarial_loss(fake_logits, 'nonsaturating'),
           'l1': common.l1(output, target)}
  terms['total'] = terms['adversarial'] + l1_weight * terms['l1']
  return terms
