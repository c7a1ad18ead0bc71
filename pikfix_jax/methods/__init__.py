"""Methods of the comparison tables, looked up by `config.method` (big_vision style: the name is
the module `pikfix_jax.methods.<name>`, which defines `Method`, a `base.Method`). Adding a
method is adding its module; see `base.py` for the interface."""

import functools
import importlib
import pkgutil

import ml_collections

from pikfix_jax.methods import base

DEFAULT = 'pikfix'  # The method of configs without a `method` field.


def _method_of_module(name: str):
  module = importlib.import_module(f'{__name__}.{name}')
  found = getattr(module, 'Method', None)
  is_method = (isinstance(found, type) and issubclass(found, base.Method) and
               found is not base.Method)
  return found if is_method else None


@functools.cache
def names() -> tuple[str, ...]:
  """Every method of this package: its modules that define a `Method`."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if _method_of_module(m.name) is not None))


def name_of(config: ml_collections.ConfigDict) -> str:
  """The method `config` trains (DEFAULT for configs without the field)."""
  return config.get('method', DEFAULT)


def method_class(config: ml_collections.ConfigDict) -> type[base.Method]:
  """The `base.Method` subclass `config.method` names (a one-line error for an unknown one)."""
  name = name_of(config)
  if name not in names():
    raise ValueError(f'Unknown config.method {name!r}; known methods: {", ".join(names())}.')
  return _method_of_module(name)


def get(config: ml_collections.ConfigDict, steps_per_epoch: int = 1) -> base.Method:
  """The method `config.method` names, built for `config`."""
  return method_class(config)(config, steps_per_epoch)


def shipped_configs() -> list[ml_collections.ConfigDict]:
  """The config of every variant every method ships (`Method.config_modules`), method by
  method: what `model_summary --all_methods` tabulates."""
  return [importlib.import_module(module).get_config()
          for name in names()
          for module in _method_of_module(name).config_modules]
