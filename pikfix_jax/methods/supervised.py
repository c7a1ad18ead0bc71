"""The training step shared by the image-to-image baselines (Pix2pix, the CMS4CV U-Nets): a
generator trained on a pixel loss, optionally against a discriminator (updated first, on the
generator's stop-gradient output, as Isola et al.'s code does).

A subclass builds `generator` (a Flax module: (input_l, reference_rgb, train) -> {'raw',
'rgb', 'restored_l', 'ab'}, 'raw' in the space its losses use), optionally `discriminator`,
and implements `target`, `generator_losses` and, with a discriminator, `d_logits` and
`discriminator_loss`.
"""

import abc
import functools
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pikfix_jax import checkpoints
from pikfix_jax import optim
from pikfix_jax.methods import base


class SupervisedMethod(base.Method):
  """Generator + optional discriminator, one update of each per step (module docstring)."""

  uses_reference = False
  discriminator: Optional[nn.Module] = None
  generator_terms: tuple[str, ...] = ('total',)

  def __init__(self, config, steps_per_epoch: int = 1):
    super().__init__(config, steps_per_epoch)
    gan = ('d_loss', 'd_real', 'd_fake', 'd_grad_norm') if self.has_discriminator else ()
    self.loss_terms = self.generator_terms + (('d_loss',) if self.has_discriminator else ())
    self.scalars = self.generator_terms + gan + ('psnr', 'ssim', 'g_grad_norm', 'learning_rate')

  @property
  def has_discriminator(self) -> bool:
    return self.discriminator is not None

  # ------------------------------------------------------------------- subclass hooks
  @abc.abstractmethod
  def target(self, batch: dict) -> jnp.ndarray:
    """The ground truth in the space of the generator's 'raw' output."""

  @abc.abstractmethod
  def generator_losses(self, raw: jnp.ndarray, target: jnp.ndarray,
                       fake_logits: Optional[jnp.ndarray]) -> dict:
    """{'total', ...} of the generator (fake_logits None without a discriminator)."""

  # With a discriminator: its loss (real logits, fake logits) -> scalar, set by the subclass.
  discriminator_loss: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]

  def d_condition(self, batch: dict) -> tuple:
    """What D sees before the image it judges (pix2pix: the input L); () by default."""
    del batch
    return ()

  def d_logits(self, d_variables: dict, batch: dict, raw: jnp.ndarray) -> jnp.ndarray:
    """D's logits (training mode) for `raw`, the target or the generator's output."""
    out, _ = self.discriminator.apply(d_variables, *self.d_condition(batch), raw, train=True,
                                      mutable=['batch_stats'])
    return out

  def d_example_input(self, size: int) -> tuple:
    """Positional arrays of discriminator.init for a (1, size, size) batch (3-channel 'raw')."""
    example = {'input_l': jnp.zeros((1, size, size, 1), jnp.float32)}
    return (*self.d_condition(example), jnp.zeros((1, size, size, 3), jnp.float32))

  # ---------------------------------------------------------------------------- state
  def init_discriminator(self, key, size: int) -> dict:
    if not self.has_discriminator:
      return {}
    return self.discriminator.init(key, *self.d_example_input(size), train=True)['params']

  def _d_apply(self, d_params: dict, batch: dict, raw: jnp.ndarray) -> jnp.ndarray:
    """D in training mode. Its BatchNorm statistics only matter in inference mode, which D
    never runs in, so they are not kept (zeros in, the update dropped)."""
    shapes = jax.eval_shape(functools.partial(self.discriminator.init, train=True),
                            jax.random.PRNGKey(0),
                            *self.d_example_input(self.config.data.image_size))
    stats = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                   flax.core.unfreeze(shapes).get('batch_stats', {}))
    return self.d_logits({'params': d_params, 'batch_stats': stats}, batch, raw)

  # ----------------------------------------------------------------------------- step
  def train_step(self, state: base.TrainState, batch: dict, frozen: Any
                 ) -> tuple[base.TrainState, dict]:
    del frozen
    c = self.config
    step_rng = jax.random.fold_in(state.rng, state.step)
    target = self.target(batch)

    def forward(g_params):
      variables = {'params': checkpoints.merge_params(g_params, state.g_frozen),
                   'batch_stats': state.g_batch_stats}
      out, updates = self.generator.apply(variables, batch['input_l'], batch['reference_rgb'],
                                          train=True, rngs={'dropout': step_rng},
                                          mutable=['batch_stats'])
      return out['raw'], (out['rgb'], updates.get('batch_stats', {}))

    raw, pullback, (rgb, batch_stats) = jax.vjp(forward, state.g_params, has_aux=True)
    scalars = {}
    d_params, d_opt_state = state.d_params, state.d_opt_state
    if self.has_discriminator:
      fake_raw = jax.lax.stop_gradient(raw)

      def d_loss_fn(d_params):
        real = self._d_apply(d_params, batch, target)
        fake = self._d_apply(d_params, batch, fake_raw)
        return self.discriminator_loss(real, fake), (real, fake)

      (d_loss, (real, fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
      updates, d_opt_state = self.d_tx.update(d_grads, d_opt_state, d_params)
      d_params = optax.apply_updates(d_params, updates)
      scalars.update(d_loss=d_loss, d_real=jnp.mean(jax.nn.sigmoid(real)),
                     d_fake=jnp.mean(jax.nn.sigmoid(fake)),
                     d_grad_norm=optax.global_norm(d_grads))

    def g_loss_fn(raw):
      fake_logits = self._d_apply(d_params, batch, raw) if self.has_discriminator else None
      terms = self.generator_losses(raw, target, fake_logits)
      return terms['total'], terms

    (_, terms), cotangent = jax.value_and_grad(g_loss_fn, has_aux=True)(raw)
    (g_grads,) = pullback(cotangent)
    g_updates, g_opt_state = self.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    scalars.update(terms)
    scalars.update(base.image_scalars(rgb, batch['target_lab']))
    scalars['g_grad_norm'] = optax.global_norm(g_grads)
    scalars['learning_rate'] = optim.learning_rate(c, state.step, self.steps_per_epoch)
    new_state = state.replace(step=state.step + 1, g_params=g_params,
                              g_batch_stats=batch_stats or state.g_batch_stats,
                              d_params=d_params, g_opt_state=g_opt_state,
                              d_opt_state=d_opt_state)
    return new_state, scalars
