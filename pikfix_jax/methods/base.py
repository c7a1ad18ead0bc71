"""The interface every method implements, and the state they share (optimisers:
`pikfix_jax.optim`).

A method (Pik-Fix, Pix2pix, the CMS4CV U-Nets, ...) is looked up by `config.method`
(`pikfix_jax.methods.get`). It owns its networks, losses, optimisers and discriminator
updates; the training loop (`pikfix_jax.train`), `evaluate`, `restore` and `export` only call
this interface:

  init_state(seed) -> TrainState            random state (pretrained backbones loaded)
  init_frozen(seed) -> pytree               frozen variables the step reads (Pik-Fix: VGG-19)
  train_step(state, batch, frozen) -> (state, scalars)   pure; jitted and sharded by train.py
  generator                                 a Flax module: apply(variables, input_l,
                                            reference_rgb) -> {'rgb', ['restored_l', 'ab']}
  make_restorer(variables, **options)       an `inference.PhotoRestorer` for photos of any size

Every method checkpoints the same `TrainState` layout (generator params split into trainable
and frozen, its batch statistics, a discriminator and both optimiser states: empty trees where
a method has none), so checkpoints, export and the loaders need no per-method code.
"""

import abc
from typing import Any, Optional

import flax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training (and is checkpointed)."""
  step: jnp.ndarray
  g_params: Any  # Trainable generator parameters.
  g_frozen: Any  # Frozen generator parameters (checkpoints.split_frozen).
  g_batch_stats: Any  # BatchNorm statistics of the generator ({} when it has none).
  d_params: Any  # Discriminator parameters ({} for methods without one).
  g_opt_state: Any
  d_opt_state: Any
  rng: jnp.ndarray


def seed_keys(seed: int) -> tuple[jnp.ndarray, ...]:
  """(generator init, discriminator init, frozen-network init, dropout) keys of a seed."""
  return tuple(jax.random.split(jax.random.PRNGKey(seed), 4))


class Method(abc.ABC):
  """One method of the comparison tables (module docstring)."""

  # Does the generator read its reference? (restore asks for one only if so.)
  uses_reference: bool = True
  # Can `export --format=stablehlo` serialise the generator for symbolic (32k) input sizes?
  exports_stablehlo: bool = False
  # Loss scalars checked for NaN/Inf after each step, and every scalar the step returns.
  loss_terms: tuple[str, ...] = ()
  scalars: tuple[str, ...] = ()
  generator: flax.linen.Module

  def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
    self.config = config
    self.steps_per_epoch = steps_per_epoch

  @abc.abstractmethod
  def init_state(self, seed: int) -> TrainState:
    """The random initial state (on the default device; train.py replicates it)."""

  def init_frozen(self, seed: int) -> Any:
    """Frozen variables passed to every `train_step` (not checkpointed)."""
    del seed
    return {}

  @abc.abstractmethod
  def train_step(self, state: TrainState, batch: dict, frozen: Any
                 ) -> tuple[TrainState, dict]:
    """One optimisation step on a (global) batch: input_l, target_lab, reference_rgb."""

  # ---------------------------------------------------------------------- stages
  # A method trained in stages (Wan et al.: VAEs, then the mapping, then the scratch detector)
  # names them with their lengths in steps; the loop runs `train_step(..., stage=NAME)` for the
  # steps of each stage in order and checkpoints at every stage's end. () = one stage.
  def stages(self) -> tuple[tuple[str, int], ...]:
    return ()

  def stage_of(self, step: int) -> Optional[str]:
    """The stage that step `step` (0-based) trains, None for single-stage methods."""
    end = 0
    for name, length in self.stages():
      end += length
      if step < end:
        return name
    return self.stages()[-1][0] if self.stages() else None

  def step_range(self, total_steps: int) -> tuple[int, int]:
    """[first, last) steps this run trains: all, or with config.train.stage = NAME only that
    stage's steps (a one-line error for an unknown stage)."""
    stages = self.stages()
    if not stages:
      return 0, total_steps
    wanted = self.config.train.get('stage', '')
    start = 0
    for name, length in stages:
      if not wanted or name == wanted:
        first = start if wanted else 0
        return first, (start + length if wanted else sum(n for _, n in stages))
      start += length
    raise ValueError(f'Unknown config.train.stage {wanted!r}; stages of {type(self).__module__}: '
                     f'{", ".join(n for n, _ in stages)} (or \'\' for all in order).')

  def scalars_of(self, stage: Optional[str]) -> tuple[str, ...]:
    """The scalars `train_step` returns in `stage`."""
    del stage
    return self.scalars

  def loss_terms_of(self, stage: Optional[str]) -> tuple[str, ...]:
    """The scalars checked for NaN/Inf in `stage`."""
    del stage
    return self.loss_terms

  def split_frozen(self, params: dict) -> tuple[dict, dict]:
    """Generator params -> (trainable, frozen)."""
    return params, {}

  def abstract_variables(self, image_size: int = 64) -> dict:
    """Shapes of the generator's variables (no compute)."""
    l = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
    rgb = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return flax.core.unfreeze(jax.eval_shape(self.generator.init, jax.random.PRNGKey(0), l, rgb))

  def networks(self) -> dict:
    """{name: fn(generator module, input_l) -> output}: the generator's networks one by one,
    for per-network FLOPs (model_summary); {} when the generator is one network."""
    return {}

  def abstract_discriminator(self, image_size: int = 64) -> dict:
    """Shapes of the discriminator's params ({} without one; no compute)."""
    return {}

  def make_restorer(self, variables: dict, **options):
    """The inference engine for photos of any size: the whole generator at once."""
    from pikfix_jax import inference  # pylint: disable=g-import-not-at-top  (a cycle otherwise)
    kept = {k: v for k, v in options.items() if k == 'reference_size' and v}
    return inference.WholeImageRestorer(self.generator, variables, self.uses_reference, **kept)
