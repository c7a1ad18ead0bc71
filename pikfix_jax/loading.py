"""A trained generator from a training workdir or an exported model, for any method.

Above `methods` (which names the generator a config builds) and `checkpoints` (which reads the
variables); the programs (`restore`, `evaluate`, `export`, ...) import this.
"""

import json
import os
from typing import Optional

import flax.linen as nn
import ml_collections

from pikfix_jax import artifacts
from pikfix_jax import checkpoints
from pikfix_jax import methods


def load_generator(workdir: Optional[str] = None, checkpoint: Optional[str] = None,
                   use_best: bool = False, step: Optional[int] = None
                   ) -> tuple[nn.Module, dict, ml_collections.ConfigDict]:
  """(model, variables, config) from a training workdir or an exported checkpoint.

  See `load_generator_info`, which also says where the variables came from.
  """
  return load_generator_info(workdir, checkpoint, use_best, step)[:3]


def load_generator_info(workdir: Optional[str] = None, checkpoint: Optional[str] = None,
                        use_best: bool = False, step: Optional[int] = None
                        ) -> tuple[nn.Module, dict, ml_collections.ConfigDict, dict]:
  """(model, variables, config, info) from a training workdir or an exported checkpoint.

  workdir: a training directory (config.json + checkpoints/ + best/): its latest checkpoint,
    or with `use_best` the best one by validation PSNR (or `step`). Only the generator's
    variables are read (no optimiser state, no discriminator).
  checkpoint: a directory written by `python -m pikfix_jax.export` (config.json +
    variables/). A training workdir is accepted here too.
  Returns the generator module of the config's method, {'params': ..., 'batch_stats': ...},
  the config it was trained with (config.json) and info {'source': path, 'step': training step
  or None}.
  """
  if bool(workdir) == bool(checkpoint):
    raise artifacts.RestoreError('give exactly one of --workdir (a training directory) or '
                                 '--checkpoint (an exported model)')
  path = os.path.abspath(workdir or checkpoint)
  if not os.path.isdir(path):
    raise artifacts.RestoreError(f'{path}: no such directory')
  if checkpoint and not artifacts.is_export(path):
    if artifacts.is_workdir(path):
      workdir = path
    elif artifacts.is_stablehlo_export(path):
      raise artifacts.RestoreError(
          f'{path}: a --format=stablehlo export holds no variables; only `restore '
          '--checkpoint` runs it (export --format=orbax for the rest)')
    else:
      raise artifacts.RestoreError(
          f'{path}: not an exported checkpoint (expected {artifacts.CONFIG_FILE} and '
          f'{artifacts.EXPORT_VARIABLES}/ written by python -m pikfix_jax.export)')
  config_path = os.path.join(path, artifacts.CONFIG_FILE)
  if not os.path.exists(config_path):
    raise artifacts.RestoreError(f'{path}: no {artifacts.CONFIG_FILE} (the training run '
                                 'writes it; it names the model architecture)')
  config = artifacts.read_config(config_path)
  method = methods.get(config)
  shapes = method.abstract_variables()
  if not workdir:  # exported
    variables = checkpoints.read_export_variables(path, shapes)
    info = {'source': path, 'step': None}
    meta_path = os.path.join(path, artifacts.EXPORT_META)
    if os.path.exists(meta_path):
      with open(meta_path) as f:
        info['step'] = json.load(f).get('step')
    return method.generator, variables, config, info
  variables, directory, step = checkpoints.restore_generator_variables(
      path, shapes, method.split_frozen, use_best, step)
  return method.generator, variables, config, {'source': directory, 'step': step}
