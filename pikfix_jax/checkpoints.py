"""Orbax reads and writes of training workdirs and exported models (names: `artifacts`).

A training workdir (`python -m pikfix_jax.main`):
  config.json   the resolved config (`artifacts.write_config`; its `model` section is the
                architecture)
  checkpoints/  orbax checkpoints of `train.TrainState` (step, g_params, g_frozen,
                g_batch_stats, d_params, g_opt_state, d_opt_state, rng): the latest
                config.train.keep_checkpoints steps
  best/         the same, one step: the highest validation PSNR so far
An exported model (`python -m pikfix_jax.export`): config.json and variables/ (the generator's
{'params', 'batch_stats'}, `write_export`), or with --format=stablehlo restore_forward.jax_export;
export.json either way.

`loading.load_generator` reads a generator from either (its variables only: an orbax partial
restore, `restore_generator_variables` / `read_export_variables`); the training loop saves and
resumes through `checkpoint_managers`, `save_state`, `finish_writes` and `restore_state`.
"""

import contextlib
import os
from typing import Any, Iterator, Optional

from absl import logging
import flax
import jax
import ml_collections
import orbax.checkpoint as ocp

from pikfix_jax import artifacts


# ------------------------------------------------------------------------ directories

def find_checkpoint(workdir: str, use_best: bool = False, step: Optional[int] = None
                    ) -> tuple[ocp.CheckpointManager, int]:
  """(read-only manager, step) of a workdir's checkpoint to read: `step`, else the latest of
  checkpoints/, or with `use_best` the one of best/ (the best by validation PSNR)."""
  directory = artifacts.checkpoint_dir(workdir, use_best)
  if not os.path.isdir(directory):
    raise artifacts.RestoreError(f'{os.path.abspath(workdir)}: no {os.path.basename(directory)}/ '
                       'directory (has training written a checkpoint?)')
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
  if step is None:
    step = manager.latest_step()
  if step is None:
    raise artifacts.RestoreError(f'{directory}: no checkpoint yet')
  return manager, int(step)


# ------------------------------------------------------------------------- parameters

def merge_params(trainable: dict, frozen: dict) -> dict:
  """Trainable and frozen generator params (a method's `split_frozen`) back in one tree."""
  flat = flax.traverse_util.flatten_dict(trainable)
  flat.update(flax.traverse_util.flatten_dict(frozen))
  return flax.traverse_util.unflatten_dict(flat)


def generator_variables(state: Any) -> dict:
  """The generator's full variable dict of a `train.TrainState` (what `export` writes and
  `restore` applies)."""
  return {'params': merge_params(state.g_params, state.g_frozen),
          'batch_stats': state.g_batch_stats}


# ---------------------------------------------------------------------------- exports

def _restore_args(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding), tree)


def restore_generator_variables(workdir: str, shapes: dict, split_frozen, use_best: bool = False,
                                step: Optional[int] = None) -> tuple[dict, str, int]:
  """(generator variables, checkpoint directory, step) of a training workdir: an orbax partial
  restore of g_params, g_frozen and g_batch_stats (no optimiser state, no discriminator).
  `shapes`: the generator's abstract variables; `split_frozen`: the method's split of them."""
  manager, step = find_checkpoint(workdir, use_best, step)
  g_params, g_frozen = split_frozen(shapes['params'])
  item = {'g_params': g_params, 'g_frozen': g_frozen,
          'g_batch_stats': shapes.get('batch_stats', {})}
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item=item, restore_args=_restore_args(item), partial_restore=True))
  variables = {'params': merge_params(restored['g_params'], restored['g_frozen'])}
  if restored.get('g_batch_stats'):
    variables['batch_stats'] = restored['g_batch_stats']
  directory = artifacts.checkpoint_dir(workdir, use_best)
  logging.info('Loaded the generator of %s step %d.', directory, step)
  return flax.core.unfreeze(variables), directory, step


def read_export_variables(path: str, shapes: dict) -> dict:
  """The generator variables of an exported model (`write_export`), shaped as `shapes`."""
  target = jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=jax.sharding.SingleDeviceSharding(
          jax.local_devices()[0])), shapes)
  variables = ocp.StandardCheckpointer().restore(
      os.path.join(path, artifacts.EXPORT_VARIABLES), target)
  return flax.core.unfreeze(variables)


def write_export(output: str, variables: dict, config: ml_collections.ConfigDict) -> None:
  """variables/ and config.json of an exported model (`read_export_variables` reads them)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(output, artifacts.EXPORT_VARIABLES), variables)
  checkpointer.wait_until_finished()
  artifacts.write_config(os.path.join(output, artifacts.CONFIG_FILE), config)


# --------------------------------------------------------------------------- training

def checkpoint_managers(workdir: str, config: ml_collections.ConfigDict
                        ) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager]:
  """(latest k checkpoints, best checkpoint by validation PSNR) of a training workdir."""
  # Both managers may save the same step; multi-host barrier names must not collide.
  latest = ocp.CheckpointManager(
      artifacts.checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.train.keep_checkpoints, create=True,
          enable_async_checkpointing=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix='latest')))
  best = ocp.CheckpointManager(
      artifacts.checkpoint_dir(workdir, best=True),
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
