"""The names of what a run leaves behind, its config file, and the error a user can fix.

The ground floor of loading: `checkpoints` (orbax reads and writes), `inference`, `loading`
and the methods import it; it imports nothing of the package.

A training workdir (`python -m pikfix_jax.main`): config.json (the resolved config),
checkpoints/ (the latest steps) and best/ (the best validation step). An exported model
(`python -m pikfix_jax.export`): config.json and variables/, or with --format=stablehlo
restore_forward.jax_export; export.json either way.
"""

import json
import os

import ml_collections

CONFIG_FILE = 'config.json'
LATEST_DIR = 'checkpoints'  # Of a workdir: the latest checkpoints.
BEST_DIR = 'best'  # Of a workdir: the best checkpoint by validation PSNR.
EXPORT_VARIABLES = 'variables'  # Of an exported model: the generator's variables (orbax).
EXPORT_META = 'export.json'  # Of an exported model: where it came from (informational).
EXPORT_ARTIFACT = 'restore_forward.jax_export'  # Serialized jax.export (--format=stablehlo).


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
