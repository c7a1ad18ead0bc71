"""Start-up shared by the command-line tools (main, restore, evaluate, export, benchmark,
model_summary): each calls `setup()` first in its main()."""

import logging as std_logging
import os

from absl import logging
import jax

from pikfix_jax import xla_cpu


def setup(compilation_cache: bool = True, tensorflow: bool = True) -> None:
  """Sets the XLA:CPU flags (xla_cpu.set_cpu_xla_flags), hides accelerators from TensorFlow,
  filters orbax's INFO chatter out of the logs (warnings still show) and turns on the
  persistent XLA compilation cache ($JAX_COMPILATION_CACHE_DIR, else ~/.cache/pikfix_jax/xla)
  for every program, so a resumed or repeated run skips its compile time;
  `compilation_cache=False` turns it off, $JAX_COMPILATION_CACHE_DIR or not. Call before any
  JAX or TensorFlow work (importing pikfix_jax does none): JAX settles the flags and the cache
  at its first compilation, and TensorFlow its devices at its first operation.
  `tensorflow=False` leaves TensorFlow unimported, for a process that never runs it (a
  benchmark child whose peak memory is measured)."""
  xla_cpu.set_cpu_xla_flags()
  if tensorflow:
    # TensorFlow (tf.data, 16-bit PNG decoding) runs on the host: it must not take accelerator
    # memory. (Its C++ log level is JAX's: importing jax sets $TF_CPP_MIN_LOG_LEVEL to 1.)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')

  def keep(record) -> bool:
    # Python's levels: absl.logging.WARNING is absl's -1, which every record passes.
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname
  logging.get_absl_handler().addFilter(keep)
  if not compilation_cache:
    jax.config.update('jax_enable_compilation_cache', False)
  else:
    if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
      jax.config.update('jax_compilation_cache_dir',
                        os.path.join(os.path.expanduser('~'), '.cache', 'pikfix_jax', 'xla'))
    if not os.environ.get('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'):
      # Every program: JAX's default leaves out those compiled in under a second, and a
      # restore's networks are several such programs, compiled again at every run.
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
