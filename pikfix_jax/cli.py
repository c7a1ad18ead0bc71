"""Start-up shared by the command-line tools (main, restore, evaluate, export)."""

import logging as std_logging
import os

from absl import logging
import jax

from pikfix_jax import xla_cpu


def setup(compilation_cache: bool = True) -> None:
  """Sets the CPU XLA flags (xla_cpu.set_cpu_xla_flags), filters orbax's INFO chatter out of the logs
  (warnings still show) and turns on the persistent XLA compilation cache
  ($JAX_COMPILATION_CACHE_DIR, else ~/.cache/pikfix_jax/xla), so a resumed or repeated run
  skips most compile time; `compilation_cache=False` turns it off, $JAX_COMPILATION_CACHE_DIR
  or not. Call first: JAX settles both at the first compilation, which importing
  pikfix_jax.ops already triggers."""
  xla_cpu.set_cpu_xla_flags()
  def keep(record) -> bool:
    # Python's levels: absl.logging.WARNING is absl's -1, which every record passes.
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname
  logging.get_absl_handler().addFilter(keep)
  if not compilation_cache:
    jax.config.update('jax_enable_compilation_cache', False)
  elif not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir',
                      os.path.join(os.path.expanduser('~'), '.cache', 'pikfix_jax', 'xla'))
