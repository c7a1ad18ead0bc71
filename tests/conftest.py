"""Shared test fixtures: tiny model configs that exercise the real code paths."""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests compile the same tiny programs many times: share compiled executables across tests.
jax.config.update('jax_compilation_cache_dir',
                  os.environ.get('PIKFIX_TEST_CACHE', '/tmp/pikfix_jax_test_xla_cache'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

from configs import default  # noqa: E402
from configs import tiny as tiny_settings  # noqa: E402
from pikfix_jax import xla_cpu  # noqa: E402

# Tests compile what `python -m pikfix_jax.main` compiles, with the test-only flags that shorten
# compiling tiny programs (xla_cpu.py says why); PIKFIX_TEST_OPTIMIZED=1 keeps LLVM's
# optimisation (level 3, as the command-line tools compile). An option $XLA_FLAGS sets wins over
# xla_cpu.init_compiler_options, so models.jit_init compiles parameter inits at level 0 too.
xla_cpu.set_cpu_xla_flags()
xla_cpu.add_xla_flags(xla_cpu.TEST_ELEMENTAL_EMITTERS_FLAG)
if os.environ.get('PIKFIX_TEST_OPTIMIZED') != '1':
  xla_cpu.add_xla_flags(xla_cpu.TEST_NO_LLVM_OPTIMIZATION_FLAG)


def with_overrides(config, overrides: dict):
  """`config` with dotted-key overrides ({'model.x': 1}, as --config.model.x=1) set in place."""
  for key, value in overrides.items():
    *path, field = key.split('.')
    node = config
    for p in path:
      node = node[p]
    node[field] = value
  return config


def train_stopped_and_resumed(command, workdir, env: dict, stop_after: int,
                              timeout: float = 400) -> int:
  """Runs the training `command` (argv) stopped by SIGTERM once `workdir` holds checkpoint
  `stop_after`, then again to resume; returns the last step saved before the stop."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + timeout
  while not os.path.exists(os.path.join(workdir, 'checkpoints', str(stop_after))):
    assert process.poll() is None and time.time() < deadline, process.stderr.read()[-3000:]
    time.sleep(0.1)
  process.send_signal(signal.SIGTERM)
  log = process.communicate(timeout=300)[1]
  assert process.returncode == 0, log[-3000:]
  stopped = max(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
  return stopped


def tiny_config(**model_overrides):
  """The paper config with tiny widths (configs/tiny.py), 32 px crops, batch 2;
  `model_overrides` as {'section.field': value}."""
  c = tiny_settings.tiny_model(default.get_config())
  for key, value in model_overrides.items():
    section, field = key.split('.')
    c.model[section][field] = value
  c.data.image_size = 32
  c.train.batch_size = 2
  return c


@pytest.fixture
def tiny():
  return tiny_config()


def tiny_train_config():
  """configs/tiny.py: the tiny model on the bundled demo photos, 32 px crops, a few steps."""
  return tiny_settings.get_config()


# Tests that train the tiny model run on one xdist worker (`--dist loadgroup`, pyproject.toml)
# so that worker compiles the training programs once (the persistent cache) and trains the
# shared workdir below once. Tests that only read a workdir take `initial_workdir`, which
# compiles no training step, and run on any worker.
TINY_TRAINING = pytest.mark.xdist_group('tiny_training')


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory) -> str:
  """A tiny workdir trained for 2 steps, with config.json as main.py writes it (read-only)."""
  from pikfix_jax import artifacts  # pylint: disable=g-import-not-at-top
  from pikfix_jax import train  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('trained_workdir'))
  config = tiny_train_config()
  config.train.num_train_steps = 2
  artifacts.write_config(os.path.join(path, artifacts.CONFIG_FILE), config)
  train.train_and_evaluate(config, path)
  return path


@pytest.fixture(scope='session')
def initial_workdir(tmp_path_factory) -> str:
  """A tiny workdir laid out as main.py writes one (config.json, checkpoints/0, best/0) that
  holds the seed's random initial state: what restore, export, evaluate and the app read, made
  without compiling a training step (read-only; `trained_workdir` is one that trained)."""
  from pikfix_jax import artifacts  # pylint: disable=g-import-not-at-top
  from pikfix_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from pikfix_jax import methods  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('initial_workdir'))
  config = tiny_train_config()
  artifacts.write_config(os.path.join(path, artifacts.CONFIG_FILE), config)
  state = methods.get(config).init_state(config.seed)
  latest, best = checkpoints.checkpoint_managers(path, config)
  with checkpoints.finish_writes(latest, best):
    checkpoints.save_state(latest, 0, state)
    checkpoints.save_state(best, 0, state, metrics={'val_psnr': 0.0})  # as after a validation
  return path


def state_params(state) -> dict:
  """{'g/...': array, 'd/...': array}: the generator's and the discriminator's parameters, as
  numpy (this process's copy of a state replicated over several processes)."""
  import flax  # pylint: disable=g-import-not-at-top
  from pikfix_jax import train  # pylint: disable=g-import-not-at-top
  return flax.traverse_util.flatten_dict(train.host_local(
      {'g': state.g_params, 'd': state.d_params}), sep='/')


def restore_latest(workdir: str, config) -> tuple:
  """(step, state) of the latest checkpoint of a training workdir, restored in this process."""
  # Imported here (also in state_params, trained_workdir): every test run imports this file,
  # most test files need neither train nor orbax, and both import TensorFlow or are heavy.
  from pikfix_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from pikfix_jax import train  # pylint: disable=g-import-not-at-top
  trainer = train.Trainer(config, train.steps_per_epoch(config))
  latest, _ = checkpoints.checkpoint_managers(workdir, config)
  state = checkpoints.restore_state(latest, trainer.init_state(config.seed))
  return latest.latest_step(), state


# The longest tests (subprocesses, many steps) first: with `pytest -n 2` the short ones then
# fill in around them instead of one long test running alone at the end (~18 -> ~16 min here).
# (The TINY_TRAINING tests, test_train.py among them, are one loadgroup unit, its largest,
# which xdist hands out before all of these.)
_LONG_FIRST = ('test_multiprocess.py', 'test_launch.py', 'test_mixed_precision.py',
               'test_benchmark.py')


def pytest_collection_modifyitems(config, items):
  del config

  def rank(item) -> int:
    name = os.path.basename(str(item.fspath))
    return _LONG_FIRST.index(name) if name in _LONG_FIRST else len(_LONG_FIRST)
  items.sort(key=rank)  # stable: the usual order within each group
