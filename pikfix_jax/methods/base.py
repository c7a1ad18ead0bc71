"""The interface every method implements, and the state they share (optimisers:
`pikfix_jax.optim`).

A method (Pik-Fix, Pix2pix, the CMS4CV U-Nets, ...) is looked up by `config.method`
(`pikfix_jax.methods.get`). It owns its networks, losses, optimisers and discriminator
updates; the training loop (`pikfix_jax.train`), `evaluate`, `restore` and `export` only call
this interface:

  init_state(seed) -> TrainState            random state (pretrained backbones loaded), built
                                            from init_generator / init_discriminator /
                                            load_pretrained / init_optimizer
  init_frozen(seed) -> pytree               frozen variables the step reads (`vgg`: VGG-19)
  train_step(state, batch, frozen) -> (state, scalars)   pure; jitted and sharded by train.py
  generator                                 a Flax module: apply(variables, input_l,
                                            reference_rgb) -> {'rgb', ['restored_l', 'ab']}
  make_restorer(variables, **options)       an `inference.PhotoRestorer` for photos of any size
  label(config), paper_rows, config_modules what the tables print: the variant's display name,
                                            the papers' numbers, the configs it ships

Every method checkpoints the same `TrainState` layout (generator params split into trainable
and frozen, its batch statistics, a discriminator and both optimiser states: empty trees where
a method has none), so checkpoints, export and the loaders need no per-method code.
"""

import abc
from typing import Any, Callable, Optional

import dm_pix
import flax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from pikfix_jax import artifacts
from pikfix_jax import inference
from pikfix_jax import models
from pikfix_jax import optim
from pikfix_jax import weights
from pikfix_jax.ops import color


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training (and is checkpointed)."""
  step: jnp.ndarray
  g_params: Any  # Trainable generator parameters.
  g_frozen: Any  # Frozen generator parameters (Method.split_frozen).
  g_batch_stats: Any  # BatchNorm statistics of the generator ({} when it has none).
  d_params: Any  # Discriminator parameters ({} for methods without one).
  g_opt_state: Any
  d_opt_state: Any
  rng: jnp.ndarray


def seed_keys(seed: int) -> tuple[jnp.ndarray, ...]:
  """(generator init, discriminator init, frozen-network init, dropout) keys of a seed."""
  return tuple(jax.random.split(jax.random.PRNGKey(seed), 4))


def example_inputs(size: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(input L, reference RGB) of one size x size example: what networks are initialised on."""
  return (jnp.zeros((1, size, size, 1), jnp.float32), jnp.zeros((1, size, size, 3), jnp.float32))


def image_scalars(rgb: jnp.ndarray, target_lab: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Batch-mean PSNR and SSIM (dm_pix) of an RGB output against a normalised-Lab target: the
  training scalars every method logs."""
  target_rgb = color.lab_normalized_to_rgb(target_lab[..., :1], target_lab[..., 1:])
  return {'psnr': jnp.mean(dm_pix.psnr(rgb, target_rgb)),
          'ssim': jnp.mean(dm_pix.ssim(rgb, target_rgb))}


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
  # The method's rows in the papers' tables, {(dataset, degraded): (source, (PSNR, SSIM,
  # LPIPS))} (evaluate prints the one of its dataset beside ours), and the configs it ships
  # (module names; `model_summary --all_methods` has a row for each).
  paper_rows: dict[tuple[str, bool], tuple[str, tuple[float, float, float]]] = {}
  config_modules: tuple[str, ...] = ()
  # config.model fields that change what inference computes but no variable (a sampler's steps
  # and seed): `evaluate` takes them from its --config over the checkpoint's.
  inference_options: tuple[str, ...] = ()

  @classmethod
  @abc.abstractmethod
  def label(cls, config: ml_collections.ConfigDict) -> str:
    """The display name of the variant `config` trains (tables, the app)."""

  def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
    self.config = config
    self.steps_per_epoch = steps_per_epoch
    # The generator's and the discriminator's optimisers (the same settings, apart states).
    self.g_tx = optim.make_optimizer(config, steps_per_epoch)
    self.d_tx = optim.make_optimizer(config, steps_per_epoch)

  # ------------------------------------------------------------------------ state
  # The frozen VGG-19 of a perceptual loss (config.backbones.vgg19), None without one.
  vgg: Optional[flax.linen.Module] = None

  def init_generator(self, key: jax.Array, size: int) -> dict:
    """The generator's random variables (traced inside `init_state`'s jit)."""
    return self.generator.init(key, *example_inputs(size))

  def init_discriminator(self, key: jax.Array, size: int) -> dict:
    """The discriminator's random params ({} without one; traced inside `init_state`'s jit)."""
    del key, size
    return {}

  def load_pretrained(self, g_vars: dict) -> dict:
    """Pretrained parts of the generator's initial variables (none by default)."""
    return g_vars

  def init_optimizer(self, params: dict, discriminator: bool) -> Any:
    """The optimiser state of the generator's trainable params or of the discriminator's."""
    return (self.d_tx if discriminator else self.g_tx).init(params)

  def init_state(self, seed: int) -> TrainState:
    """The random initial state (on the default device; train.py replicates it)."""
    size = self.config.data.image_size
    g_key, d_key, _, rng = seed_keys(seed)
    g_vars, d_params = models.jit_init(
        lambda g, d: (self.init_generator(g, size), self.init_discriminator(d, size)))(
            g_key, d_key)
    g_vars = self.load_pretrained(flax.core.unfreeze(g_vars))
    g_params, g_frozen = self.split_frozen(g_vars['params'])
    return TrainState(
        step=jnp.zeros((), jnp.int32), g_params=g_params, g_frozen=g_frozen,
        g_batch_stats=g_vars.get('batch_stats', {}), d_params=d_params,
        g_opt_state=models.jit_init(lambda p: self.init_optimizer(p, False))(g_params),
        d_opt_state=models.jit_init(lambda p: self.init_optimizer(p, True))(d_params), rng=rng)

  def init_frozen(self, seed: int) -> Any:
    """Frozen variables passed to every `train_step` (not checkpointed): the VGG-19 of `vgg`
    from config.backbones.vgg19, or a random init from `seed` when no weights are given (the
    same for the same seed); {} without one."""
    if self.vgg is None:
      return {}
    _, _, key, _ = seed_keys(seed)
    size = self.config.data.image_size
    init = models.jit_init(self.vgg.init)(key, jnp.zeros((1, size, size, 3), jnp.float32))
    return weights.maybe_load_backbone(self.config.backbones.vgg19, 'vgg19', init)

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
    return flax.core.unfreeze(jax.eval_shape(
        lambda k: self.init_generator(k, image_size), jax.random.PRNGKey(0)))

  def networks(self) -> dict:
    """{name: fn(generator module, input_l) -> output}: the generator's networks one by one,
    for per-network FLOPs (model_summary); {} when the generator is one network."""
    return {}

  def abstract_discriminator(self, image_size: int = 64) -> dict:
    """Shapes of the discriminator's params ({} without one; no compute)."""
    return flax.core.unfreeze(jax.eval_shape(
        lambda k: self.init_discriminator(k, image_size), jax.random.PRNGKey(0)))

  def face_net(self, variables: dict) -> tuple[Callable[[jnp.ndarray], jnp.ndarray], int]:
    """A face method's network as `restore --faces` runs it on an aligned crop: (jitted
    fn(face (S, S, 3) in [0, 1]) -> restored face, S); other methods have none."""
    del variables
    raise artifacts.RestoreError(f'{type(self).__module__} is not a face method: --faces takes '
                                 'a workdir of configs/baselines/gfpgan.py or wan2020_face.py')

  def make_restorer(self, variables: dict, **options):
    """The inference engine for photos of any size: the whole generator at once."""
    kept = {k: v for k, v in options.items() if k == 'reference_size' and v}
    return inference.WholeImageRestorer(self.generator, variables, self.uses_reference, **kept)
