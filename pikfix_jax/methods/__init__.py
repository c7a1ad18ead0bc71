"""Methods of the comparison tables, looked up by `config.method` (big_vision style: the name is
the module `pikfix_jax.methods.<name>`, which defines `Method`). See `base.py` for the
interface."""

import importlib

import ml_collections

from pikfix_jax.methods import base

NAMES = ('pikfix', 'pix2pix', 'cms4cv', 'wan2020')


def method_class(config: ml_collections.ConfigDict) -> type:
  """The `base.Method` subclass `config.method` names (configs without the field: Pik-Fix)."""
  name = config.get('method', 'pikfix')
  if name not in NAMES:
    raise ValueError(f'Unknown config.method {name!r}; known methods: {", ".join(NAMES)}.')
  return importlib.import_module(f'pikfix_jax.methods.{name}').Method


def get(config: ml_collections.ConfigDict, steps_per_epoch: int = 1) -> base.Method:
  """The method `config.method` names, built for `config`."""
  return method_class(config)(config, steps_per_epoch)
