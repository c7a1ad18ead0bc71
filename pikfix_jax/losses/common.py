"""Loss terms more than one method uses: L1, the perceptual distance, the adversarial losses."""

from typing import Mapping

import jax
import jax.numpy as jnp

ADVERSARIAL_LOSSES = ('nonsaturating', 'lsgan', 'hinge')


def l1(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def perceptual_loss(features_a: Mapping[str, jnp.ndarray],
                    features_b: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
  """sum_j 1/(C_j H_j W_j) ||phi_j(a) - phi_j(b)||_2^2, averaged over the batch."""
  total = 0.0
  for name in features_a:
    diff = features_a[name].astype(jnp.float32) - features_b[name].astype(jnp.float32)
    total = total + jnp.mean(jnp.square(diff))
  return total


def discriminator_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray,
                       kind: str = 'nonsaturating') -> jnp.ndarray:
  """Loss that D minimises: real patches -> 1, fake patches -> 0 (eq. 9 for 'nonsaturating')."""
  real_logits = real_logits.astype(jnp.float32)
  fake_logits = fake_logits.astype(jnp.float32)
  if kind == 'nonsaturating':
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
  if kind == 'lsgan':
    return 0.5 * (jnp.mean(jnp.square(real_logits - 1.0)) + jnp.mean(jnp.square(fake_logits)))
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
  raise ValueError(f'loss.adversarial={kind!r}: use one of {ADVERSARIAL_LOSSES}')


def generator_adversarial_loss(fake_logits: jnp.ndarray, kind: str = 'nonsaturating'
                               ) -> jnp.ndarray:
  """Loss that G minimises to make D call its patches real."""
  fake_logits = fake_logits.astype(jnp.float32)
  if kind == 'nonsaturating':
    return jnp.mean(jax.nn.softplus(-fake_logits))
  if kind == 'lsgan':
    return 0.5 * jnp.mean(jnp.square(fake_logits - 1.0))
  if kind == 'hinge':
    return -jnp.mean(fake_logits)
  raise ValueError(f'loss.adversarial={kind!r}: use one of {ADVERSARIAL_LOSSES}')
