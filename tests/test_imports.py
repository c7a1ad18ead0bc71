"""Importing the project does no work: no JAX backend, no tracing or compiling, no TensorFlow
device, so a tool's main() can still set XLA's flags, start jax.distributed and hide
accelerators from TensorFlow (cli.setup) after its module-level imports."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh interpreter (this one has compiled already).
_CODE = '''
import importlib, json, pkgutil
from absl import flags
import jax
from jax._src import xla_bridge
events = []
jax.monitoring.register_event_listener(lambda event, **_: events.append(event))
jax.monitoring.register_event_duration_secs_listener(lambda event, _, **__: events.append(event))
modules = []
for package in ('pikfix_jax', 'data_prep', 'configs'):
  path = importlib.import_module(package).__path__
  modules += [package] + [m.name for m in pkgutil.walk_packages(path, package + '.')]
for name in modules:
  defined = set(flags.FLAGS)
  importlib.import_module(name)
  # The tools that define their flags at import (main, benchmark, ...) share names (--config).
  for flag in set(flags.FLAGS) - defined:
    delattr(flags.FLAGS, flag)
backends_after_import = xla_bridge.backends_are_initialized()
from pikfix_jax import cli
cli.setup(compilation_cache=False)  # raises if TensorFlow has initialised its devices
print(json.dumps({'modules': modules, 'events': events,
                  'backends_after_import': backends_after_import,
                  'backends_after_setup': xla_bridge.backends_are_initialized()}))
'''


def test_importing_every_module_starts_no_backend_and_compiles_nothing():
  result = subprocess.run([sys.executable, '-c', _CODE], cwd=REPO, capture_output=True,
                          text=True, check=True)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert {'pikfix_jax.train', 'pikfix_jax.ops.color', 'pikfix_jax.xla_cpu', 'pikfix_jax.main',
          'pikfix_jax.benchmark', 'data_prep.convert_weights',
          'configs.default'} <= set(report['modules'])
  assert not report['backends_after_import']
  assert not report['backends_after_setup']
  # JAX reports tracing, lowering and compiling as '/jax/core/compile/...' events (and cache
  # use as '/jax/compilation_cache/...'); orbax's handler registration is no computation.
  assert [e for e in report['events'] if e.startswith(('/jax/core', '/jax/compilation'))] == []
