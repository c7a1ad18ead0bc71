"""pikfix_jax/xla_cpu.py and cli.py: the XLA:CPU options every command line tool sets, and its
compilation cache (and models.jit_init's options, which leave those $XLA_FLAGS sets)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pikfix_jax import models
from pikfix_jax import xla_cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_xla_flags_are_appended_once_and_a_user_setting_wins(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  xla_cpu.set_cpu_xla_flags()
  xla_cpu.set_cpu_xla_flags()
  assert os.environ['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=2 '
                                     '--xla_cpu_experimental_ynn_fusion_type=individual_dot')
  mine = '--xla_cpu_experimental_ynn_fusion_type=individual_convolution'
  monkeypatch.setenv('XLA_FLAGS', mine)
  xla_cpu.set_cpu_xla_flags()
  assert os.environ['XLA_FLAGS'] == mine
  monkeypatch.delenv('XLA_FLAGS')
  xla_cpu.set_cpu_xla_flags()
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_experimental_ynn_fusion_type=individual_dot'


def test_init_compiler_options_leave_what_xla_flags_sets(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  assert xla_cpu.init_compiler_options() == {'xla_backend_optimization_level': 1}
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  assert xla_cpu.init_compiler_options() == {}
  monkeypatch.undo()  # before compiling: XLA reads $XLA_FLAGS at this process's first compile
  # The same values as plain jit.
  init = lambda key: jax.random.normal(key, (3, 4))  # noqa: E731
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(models.jit_init(init)(key), jax.jit(init)(key))


def test_convolutions_do_not_go_to_ynnpack():
  # conftest.py set the flags before the first compilation of this process.
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  x, w = jnp.ones((2, 64, 64, 64)), jnp.ones((3, 3, 64, 64))
  hlo = conv.lower(x, w).compile().as_text()
  assert 'ynn_fusion' not in hlo
  assert float(conv(x, w)[0, 5, 5, 0]) == 9 * 64  # and still a correct convolution


@pytest.mark.parametrize('cache', [True, False])
def test_setup_turns_the_compilation_cache_off_even_with_the_variable_set(tmp_path, cache):
  """On, it caches every program, also one compiled in well under JAX's default threshold
  of a second; off, nothing, $JAX_COMPILATION_CACHE_DIR or not."""
  # A fresh process: JAX settles the cache at its first compilation, which this one is past.
  cache_dir = tmp_path / 'xla'
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PLATFORMS='cpu')
  env.pop('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', None)
  code = ('from pikfix_jax import cli\n'
          f'cli.setup(compilation_cache={cache})\n'
          'import jax, jax.numpy as jnp\n'
          'jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)))\n')
  subprocess.run([sys.executable, '-c', code], env=env, check=True, cwd=REPO)
  assert (cache_dir.exists() and any(cache_dir.iterdir())) == cache
