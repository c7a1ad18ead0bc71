"""Flax modules of Pik-Fix, and `jit_init` to initialise them."""

import functools
from typing import Any, Callable

import jax

from pikfix_jax import cli

# LLVM optimisation level of functions run once (parameter initialisation) on CPU. Their XLA
# program is thousands of small random-number fusions (one threefry hash per parameter) and
# LLVM's full optimisation (level 3, the default) is most of its compile time. Level 1 runs them
# as fast (measured at level 3/1/0: paper-config generator init compile 70.4 / 49.6 / 47.8 s,
# run 0.65 / 0.75 / 4.4 s; tests' tiny model 24.6 / 10.5 / 9.6 s, 0.17 / 0.20 / 1.4 s).
# An option that $XLA_FLAGS sets is left to it (a user's own setting wins: cli.xla_flag_is_set).
# tests/conftest.py's level 0 with XLA:CPU's elemental emitters compiles the tiny generator's
# init in 9.2 s against 18.7 s at level 1 (2026-12-02).
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


def init_compiler_options() -> dict:
  """INIT_COMPILER_OPTIONS less the options $XLA_FLAGS sets."""
  return {k: v for k, v in INIT_COMPILER_OPTIONS.items() if not cli.xla_flag_is_set(f'--{k}')}


def jit_init(fun: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
  """`jax.jit(fun, **jit_kwargs)` for functions called once per argument shape, such as a
  module's `init`: on CPU compiled with init_compiler_options() (same values, faster compile);
  elsewhere plain `jax.jit`."""
  jitted = jax.jit(fun, **jit_kwargs)
  if jax.default_backend() != 'cpu':
    return jitted
  compiled = {}

  @functools.wraps(fun)
  def call(*args):
    key = str(jax.tree_util.tree_map(
        lambda x: (jax.numpy.shape(x), jax.numpy.result_type(x), getattr(x, 'sharding', None)),
        args))
    if key not in compiled:
      compiled[key] = jitted.lower(*args).compile(
          compiler_options=init_compiler_options())
    return compiled[key](*args)
  return call
