"""Optimisers and learning-rate schedules of every method (`config.optim`).

  make_optimizer(config, steps_per_epoch)   Adam (config.optim), optionally gradient-clipped
  learning_rate(config, count, steps_per_epoch)   the rate at optimiser step `count`

`config.optim.lr_schedule` picks the schedule; the learning rate of an epoch is fixed (every
schedule changes it only at epoch boundaries, as the papers' code steps its scheduler once per
epoch):

  'exponential'   lr * decay_rate^e (Pik-Fix: x0.99 per epoch, paper sec. 4.1). The default.
  'linear_decay'  lr * (1 - max(0, e + 1 - C) / (D + 1)), floored at 0, C =
                  optim.constant_epochs, D = optim.decay_epochs: constant for C epochs, then
                  linear towards 0 over D epochs. This is junyanz/pytorch-CycleGAN-and-pix2pix's
                  `lambda_rule` (`--n_epochs C --n_epochs_decay D`; Isola et al. 2017). pix2pixHD
                  (Wan et al.'s release: `--niter N --niter_decay M`, lr lowered by lr / M after
                  every epoch past N) is the same rule with C = N + 1, D = M - 1.

e = count // steps_per_epoch counts the epochs of *this optimiser's* updates: a method trained in
stages (Wan et al.) keeps one optimiser state per network, so each network's schedule starts at
its own stage's first step.
"""

from typing import Callable

import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ('exponential', 'linear_decay')
# optax.adam's epsilon: configs written before `optim.eps` existed train as they did.
DEFAULT_EPS = 1e-8


def schedule(config: ml_collections.ConfigDict, steps_per_epoch: int
             ) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """The learning rate as a function of the optimiser's update count (module docstring)."""
  o = config.optim
  # .get: config.json of runs from before these fields (loaded by restore/evaluate/export).
  kind = o.get('lr_schedule', 'exponential')
  if kind == 'exponential':
    # Exactly the optax schedule Pik-Fix has always used (bit-identical training).
    return optax.exponential_decay(o.learning_rate, transition_steps=steps_per_epoch,
                                   decay_rate=o.decay_rate, staircase=True)
  if kind == 'linear_decay':
    constant, decay = float(o.constant_epochs), float(o.decay_epochs)
    if constant < 0 or decay < 0:
      raise ValueError(f'config.optim.constant_epochs={constant:g} and decay_epochs={decay:g} '
                       'must be >= 0')

    def linear(count):
      epoch = jnp.asarray(count) // steps_per_epoch
      factor = 1.0 - jnp.maximum(0.0, epoch + 1 - constant) / (decay + 1.0)
      return o.learning_rate * jnp.maximum(factor, 0.0)
    return linear
  raise ValueError(f'Unknown config.optim.lr_schedule {kind!r}; use one of '
                   f'{", ".join(SCHEDULES)}.')


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
  """Adam (config.optim: betas, eps) on `schedule`, after global-norm clipping when
  config.optim.grad_clip > 0."""
  o = config.optim
  adam = optax.adam(schedule(config, steps_per_epoch), b1=o.b1, b2=o.b2,
                    eps=o.get('eps', DEFAULT_EPS))
  return optax.chain(optax.clip_by_global_norm(o.grad_clip), adam) if o.grad_clip else adam


def learning_rate(config: ml_collections.ConfigDict, count, steps_per_epoch: int):
  """The learning rate the optimiser applies at update `count` (a logged scalar)."""
  o = config.optim
  if o.get('lr_schedule', 'exponential') == 'exponential':
    # The formula logged before this module existed (same values as the optax schedule).
    return o.learning_rate * o.decay_rate ** (count // steps_per_epoch)
  return schedule(config, steps_per_epoch)(count)
