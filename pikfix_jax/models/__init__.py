"""Flax modules of Pik-Fix, and `jit_init` to initialise them."""

import functools
from typing import Any, Callable

import jax

# LLVM optimisation level of functions run once (parameter initialisation) on CPU. Their XLA
# program is thousands of small random-number fusions (one threefry hash per parameter) and
# LLVM's full optimisation (level 3, the default) is most of its compile time. Level 1 runs them
# as fast (measured at level 3/1/0: paper-config generator init compile 70.4 / 49.6 / 47.8 s,
# run 0.65 / 0.75 / 4.4 s; tests' tiny model 24.6 / 10.5 / 9.6 s, 0.17 / 0.20 / 1.4 s).
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


def jit_init(fun: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
  """`jax.jit(fun, **jit_kwargs)` for functions called once per argument shape, such as a
  module's `init`: on CPU compiled with INIT_COMPILER_OPTIONS (same values, faster compile);
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
      compiled[key] = jitted.lower(*args).compile(compiler_options=INIT_COMPILER_OPTIONS)
    return compiled[key](*args)
  return call
