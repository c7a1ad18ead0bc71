"""Flax modules of Pik-Fix, and `jit_init` to initialise them."""

import functools
from typing import Any, Callable

import jax

from pikfix_jax import xla_cpu


def jit_init(fun: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
  """`jax.jit(fun, **jit_kwargs)` for functions called once per argument shape, such as a
  module's `init`: where it runs on CPU, compiled with xla_cpu.init_compiler_options() (same
  values, faster compile); elsewhere, and inside a trace, plain `jax.jit`."""
  jitted = jax.jit(fun, **jit_kwargs)
  if jax.default_backend() != 'cpu':
    return jitted
  compiled = {}

  @functools.wraps(fun)
  def call(*args):
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(args)):
      return jitted(*args)  # inside a trace (e.g. jax.eval_shape): nothing to compile here
    key = str(jax.tree_util.tree_map(
        lambda x: (jax.numpy.shape(x), jax.numpy.result_type(x), getattr(x, 'sharding', None)),
        args))
    if key not in compiled:
      compiled[key] = jitted.lower(*args).compile(
          compiler_options=xla_cpu.init_compiler_options())
    return compiled[key](*args)
  return call
