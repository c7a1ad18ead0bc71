"""Start-up shared by the command-line tools (main, restore, evaluate, export)."""

import logging as std_logging
import os

from absl import logging
import jax


# XLA:CPU hands convolutions to YNNPACK by default; for this model Eigen's convolutions (what
# XLA:CPU uses without that library fusion) make the paper-config training step ~20 % faster on
# an AVX-512 CPU (docs/BENCHMARKS.md, "Training step"). Matrix multiplies stay on YNNPACK.
# Ignored by GPU/TPU compilations.
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=individual_dot',)


def xla_flag_is_set(option: str) -> bool:
  """Whether $XLA_FLAGS sets `option` ('--xla_...', or a whole '--xla_...=value' flag)."""
  return option.split('=')[0] in os.environ.get('XLA_FLAGS', '')


def add_xla_flags(*flags: str) -> None:
  """Appends `--option=value` flags to $XLA_FLAGS, except options already set there (a user's
  own setting wins). XLA reads $XLA_FLAGS when it first compiles: call before any jitted work."""
  for flag in flags:
    if not xla_flag_is_set(flag):
      os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


def set_cpu_xla_flags() -> None:
  """Adds CPU_XLA_FLAGS (add_xla_flags)."""
  add_xla_flags(*CPU_XLA_FLAGS)


def setup(compilation_cache: bool = True) -> None:
  """Sets the CPU XLA flags (set_cpu_xla_flags), filters orbax's INFO chatter out of the logs
  (warnings still show) and turns on the persistent XLA compilation cache
  ($JAX_COMPILATION_CACHE_DIR, else ~/.cache/pikfix_jax/xla), so a resumed or repeated run
  skips most compile time; `compilation_cache=False` turns it off, $JAX_COMPILATION_CACHE_DIR
  or not. Call first: JAX settles both at the first compilation, which importing
  pikfix_jax.ops already triggers."""
  set_cpu_xla_flags()
  def keep(record) -> bool:
    # Python's levels: absl.logging.WARNING is absl's -1, which every record passes.
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname
  logging.get_absl_handler().addFilter(keep)
  if not compilation_cache:
    jax.config.update('jax_enable_compilation_cache', False)
  elif not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir',
                      os.path.join(os.path.expanduser('~'), '.cache', 'pikfix_jax', 'xla'))
