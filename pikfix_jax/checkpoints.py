"""What a run leaves behind: reading and writing training workdirs and exported models.

A training workdir (`python -m pikfix_jax.main`):
  config.json   the resolved config (`write_config`; its `model` section is the architecture)
  checkpoints/  orbax checkpoints of `train.TrainState` (step, g_params, g_frozen,
                g_batch_stats, d_params, g_opt_state, d_opt_state, rng): the latest
                config.train.keep_checkpoints steps
  best/         the same, one step: the highest validation PSNR so far
An exported model (`python -m pikfix_jax.export`): config.json and variables/ (the generator's
{'params', 'batch_stats'}, `write_export`), or with --format=stablehlo restore_forward.jax_export;
export.json either way.

`load_generator` reads a generator from either (its variables only: an orbax partial restore);
the training loop saves and resumes through `checkpoint_managers`, `save_state`,
`finish_writes` and `restore_state`.
"""

import contextlib
import json
import os
from typing import Any, Iterator, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from pikfix_jax.models import pikfix

CONFIG_FILE = 'config.json'
LATEST_DIR = 'checkpoints'  # Of a workdir: the latest checkpoints.
BEST_DIR = 'best'  # Of a workdir: the best checkpoint by validation PSNR.
EXPORT_VARIABLES = 'variables'  # Of an exported model: the generator's variables (orbax).
EXPORT_META = 'export.json'  # Of an exported model: where it came from (informational).
EXPORT_ARTIFACT = 'restore_forward.jax_export'  # Serialized jax.export (--format=stablehlo).
FROZEN_BACKBONE = 'resnet34'  # Generator subtree kept frozen unless similarity.train_backbone.


class RestoreError(ValueError):
  """A problem the user can fix (no such checkpoint, an unusable option); the message is one
  line."""


# ----------------------------------------------------------------------------- config

def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def config_from_json(text: str) -> ml_collections.ConfigDict:
  """A config written with `to_json_best_effort` -> ConfigDict (JSON lists back to tuples)."""
  return ml_collections.ConfigDict(_tuples(json.loads(text)))


def read_config(path: str) -> ml_collections.ConfigDict:
  """A config.json written by `write_config`."""
  with open(path) as f:
    return config_from_json(f.read())


def write_config(path: str, config: ml_collections.ConfigDict) -> None:
  """Writes `config` as JSON (`read_config` reads it back)."""
  with open(path, 'w') as f:
    f.write(config.to_json_best_effort(indent=2))


# ------------------------------------------------------------------------ directories

def is_workdir(path: str) -> bool:
  """Whether `path` is a training workdir (config.json and checkpoints/ or best/)."""
  return (os.path.exists(os.path.join(path, CONFIG_FILE)) and
          (os.path.isdir(os.path.join(path, LATEST_DIR)) or
           os.path.isdir(os.path.join(path, BEST_DIR))))


def is_export(path: str) -> bool:
  """Whether `path` holds a `python -m pikfix_jax.export --format=orbax` model."""
  return (os.path.isdir(os.path.join(path, EXPORT_VARIABLES)) and
          os.path.exists(os.path.join(path, CONFIG_FILE)))


def is_stablehlo_export(path: str) -> bool:
  """Whether `path` holds a `python -m pikfix_jax.export --format=stablehlo` artifact."""
  return os.path.isfile(os.path.join(path, EXPORT_ARTIFACT))


def checkpoint_dir(workdir: str, best: bool = False) -> str:
  """WORKDIR/checkpoints, or WORKDIR/best."""
  return os.path.join(os.path.abspath(workdir), BEST_DIR if best else LATEST_DIR)


def find_checkpoint(workdir: str, use_best: bool = False, step: Optional[int] = None
                    ) -> tuple[ocp.CheckpointManager, int]:
  """(read-only manager, step) of a workdir's checkpoint to read: `step`, else the latest of
  checkpoints/, or with `use_best` the one of best/ (the best by validation PSNR)."""
  directory = checkpoint_dir(workdir, use_best)
  if not os.path.isdir(directory):
    raise RestoreError(f'{os.path.abspath(workdir)}: no {os.path.basename(directory)}/ '
                       'directory (has training written a checkpoint?)')
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
  if step is None:
    step = manager.latest_step()
  if step is None:
    raise RestoreError(f'{directory}: no checkpoint yet')
  return manager, int(step)


# ------------------------------------------------------------------------- parameters

def split_frozen(params: dict, train_backbone: bool) -> tuple[dict, dict]:
  """Splits generator params into (trainable, frozen); frozen holds the ResNet-34 subtree."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  is_frozen = lambda path: (not train_backbone) and FROZEN_BACKBONE in path
  trainable = {k: v for k, v in flat.items() if not is_frozen(k)}
  frozen = {k: v for k, v in flat.items() if is_frozen(k)}
  return (flax.traverse_util.unflatten_dict(trainable),
          flax.traverse_util.unflatten_dict(frozen))


def merge_params(trainable: dict, frozen: dict) -> dict:
  """The inverse of `split_frozen`."""
  flat = flax.traverse_util.flatten_dict(trainable)
  flat.update(flax.traverse_util.flatten_dict(frozen))
  return flax.traverse_util.unflatten_dict(flat)


def generator_variables(state: Any) -> dict:
  """The generator's full variable dict of a `train.TrainState` (what `export` writes and
  `restore` applies)."""
  return {'params': merge_params(state.g_params, state.g_frozen),
          'batch_stats': state.g_batch_stats}


def abstract_variables(model: pikfix.PikFix, image_size: int = 64) -> dict:
  """Shapes of the generator's variables (no compute; the same for every input size)."""
  l = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  rgb = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return flax.core.unfreeze(jax.eval_shape(model.init, jax.random.PRNGKey(0), l, rgb))


# ---------------------------------------------------------------------------- loading

def _restore_args(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding), tree)


def load_generator(workdir: Optional[str] = None, checkpoint: Optional[str] = None,
                   use_best: bool = False, step: Optional[int] = None
                   ) -> tuple[pikfix.PikFix, dict, ml_collections.ConfigDict]:
  """(model, variables, config) from a training workdir or an exported checkpoint.

  See `load_generator_info`, which also says where the variables came from.
  """
  return load_generator_info(workdir, checkpoint, use_best, step)[:3]


def load_generator_info(workdir: Optional[str] = None, checkpoint: Optional[str] = None,
                        use_best: bool = False, step: Optional[int] = None
                        ) -> tuple[pikfix.PikFix, dict, ml_collections.ConfigDict, dict]:
  """(model, variables, config, info) from a training workdir or an exported checkpoint.

  workdir: a training directory (config.json + checkpoints/ + best/): its latest checkpoint,
    or with `use_best` the best one by validation PSNR (or `step`). Only the generator's
    variables are read (no optimiser state, no discriminator).
  checkpoint: a directory written by `python -m pikfix_jax.export` (config.json +
    variables/). A training workdir is accepted here too.
  Returns the generator module, {'params': ..., 'batch_stats': ...}, the config it was
  trained with (config.json) and info {'source': path, 'step': training step or None}.
  """
  if bool(workdir) == bool(checkpoint):
    raise RestoreError('give exactly one of --workdir (a training directory) or --checkpoint '
                       '(an exported model)')
  path = os.path.abspath(workdir or checkpoint)
  if not os.path.isdir(path):
    raise RestoreError(f'{path}: no such directory')
  if checkpoint and not is_export(path):
    if is_workdir(path):
      workdir = path
    elif is_stablehlo_export(path):
      raise RestoreError(f'{path}: a --format=stablehlo export holds no variables; only '
                         '`restore --checkpoint` runs it (export --format=orbax for the rest)')
    else:
      raise RestoreError(f'{path}: not an exported checkpoint (expected {CONFIG_FILE} and '
                         f'{EXPORT_VARIABLES}/ written by python -m pikfix_jax.export)')
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(config_path):
    raise RestoreError(f'{path}: no {CONFIG_FILE} (the training run writes it; it names the '
                       'model architecture)')
  config = read_config(config_path)
  from pikfix_jax import methods  # pylint: disable=g-import-not-at-top  (methods import us)
  method = methods.get(config)
  model = method.generator
  shapes = method.abstract_variables()
  if not workdir:  # exported
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                       sharding=jax.sharding.SingleDeviceSharding(
                                           jax.local_devices()[0])), shapes)
    variables = ocp.StandardCheckpointer().restore(os.path.join(path, EXPORT_VARIABLES), target)
    info = {'source': path, 'step': None}
    meta_path = os.path.join(path, EXPORT_META)
    if os.path.exists(meta_path):
      with open(meta_path) as f:
        info['step'] = json.load(f).get('step')
    return model, flax.core.unfreeze(variables), config, info

  manager, step = find_checkpoint(path, use_best, step)
  g_params, g_frozen = method.split_frozen(shapes['params'])
  item = {'g_params': g_params, 'g_frozen': g_frozen,
          'g_batch_stats': shapes.get('batch_stats', {})}
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item=item, restore_args=_restore_args(item), partial_restore=True))
  variables = {'params': merge_params(restored['g_params'], restored['g_frozen'])}
  if restored.get('g_batch_stats'):
    variables['batch_stats'] = restored['g_batch_stats']
  directory = checkpoint_dir(path, use_best)
  logging.info('Loaded the generator of %s step %d.', directory, step)
  return model, flax.core.unfreeze(variables), config, {'source': directory, 'step': step}


def write_export(output: str, variables: dict, config: ml_collections.ConfigDict) -> None:
  """variables/ and config.json of an exported model (`load_generator` reads them)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(output, EXPORT_VARIABLES), variables)
  checkpointer.wait_until_finished()
  write_config(os.path.join(output, CONFIG_FILE), config)


# --------------------------------------------------------------------------- training

def checkpoint_managers(workdir: str, config: ml_collections.ConfigDict
                        ) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager]:
  """(latest k checkpoints, best checkpoint by validation PSNR) of a training workdir."""
  # Both managers may save the same step; multi-host barrier names must not collide.
  latest = ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.train.keep_checkpoints, create=True,
          enable_async_checkpointing=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix='latest')))
  best = ocp.CheckpointManager(
      checkpoint_dir(workdir, best=True),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=1, best_fn=lambda m: m['val_psnr'], best_mode='max', create=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix='best')))
  return latest, best


def save_state(manager: ocp.CheckpointManager, step: int, state: Any,
               metrics: Optional[dict] = None) -> None:
  """Writes a whole `train.TrainState` as `step` (`metrics`: what best/ ranks by)."""
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)


@contextlib.contextmanager
def finish_writes(*managers: ocp.CheckpointManager) -> Iterator[None]:
  """Waits for the managers' asynchronous saves however the block ends, so a checkpoint that
  an error names as kept is complete on disk when the error propagates."""
  try:
    yield
  finally:
    for manager in managers:
      manager.wait_until_finished()


def restore_state(manager: ocp.CheckpointManager, like: Any, step: Optional[int] = None) -> Any:
  """The `train.TrainState` saved at `step` (default: the latest), with the structure, dtypes
  and shardings of `like` (a state, or its jax.ShapeDtypeStructs)."""
  step = manager.latest_step() if step is None else step
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))
