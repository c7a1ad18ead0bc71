"""The denoising loss of the latent diffusion method (methods/wan_ldm.py; the schedule and the
network are models/ldm.py).

  L_simple = E_{t, z_0, eps} || target - net(z_t, t, c) ||^2          (Ho et al. 2020, eq. 14)

target = eps (the epsilon-parameterisation) or v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0
(Salimans & Ho 2022, sec. 4), z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps (eq. 4), t uniform
over {0, ..., T - 1}, z_0 = E_Y(y) (VAE2's latent of the clean photo) and c the condition. The
VAE stage's losses are Wan et al.'s own (losses/wan.py).
"""

import jax
import jax.numpy as jnp

from pikfix_jax.models import ldm


def diffusion_target(z0: jnp.ndarray, noise: jnp.ndarray, abar: jnp.ndarray,
                     parameterization: str) -> jnp.ndarray:
  """What the network regresses: eps, or v (module docstring)."""
  if parameterization == 'eps':
    return noise
  if parameterization == 'v':
    return ldm.v_target(z0, noise, abar)
  raise ValueError(f'parameterization={parameterization!r}; use one of {ldm.PARAMETERIZATIONS}')


def denoising_loss(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Mean squared error over every latent element (eq. 14's norm up to the constant factor of
  the latent's size), in float32."""
  return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32)))


def noised_example(z0: jnp.ndarray, key: jax.Array, alphas_cumprod: jnp.ndarray,
                   parameterization: str) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """One draw of eq. 14's expectation per example: (z_t, t (B,), target)."""
  t_key, noise_key = jax.random.split(key)
  t = jax.random.randint(t_key, (z0.shape[0],), 0, alphas_cumprod.shape[0])
  noise = jax.random.normal(noise_key, z0.shape, jnp.float32)
  abar = jnp.asarray(alphas_cumprod, jnp.float32)[t]
  z0 = z0.astype(jnp.float32)
  return ldm.q_sample(z0, noise, abar), t, diffusion_target(z0, noise, abar, parameterization)
