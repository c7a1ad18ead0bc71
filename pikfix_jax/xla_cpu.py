"""Everything this project sets on XLA:CPU: $XLA_FLAGS and per-compile options.

XLA reads $XLA_FLAGS once, at a process's first compilation, so the flags are set by
`cli.setup()` (the command-line tools) and tests/conftest.py before anything compiles.
GPU/TPU compilations ignore XLA:CPU's flags, and `init_compiler_options` is used on CPU only
(`models.jit_init`). A user's own $XLA_FLAGS setting of an option always wins.
The measurements behind each choice are in the history of docs/BENCHMARKS.md.
"""

import os

# The tools' flags. XLA:CPU hands convolutions to YNNPACK by default; for this model Eigen's
# convolutions (what XLA:CPU uses without that library fusion) make the paper-config training
# step faster ("Eigen instead of YNNPACK convolutions"). Matrix multiplies stay on YNNPACK.
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=individual_dot',)

# Test-only flags (tests/conftest.py): the suite's time is XLA compiling tiny programs, and both
# shorten that without changing the HLO. Not for the tools: on the paper config the elemental
# emitters compile the training step several times slower, and level 0 runs it slower.
# XLA:CPU's older elemental emitters for loop fusions instead of its MLIR fusion emitters.
TEST_ELEMENTAL_EMITTERS_FLAG = '--xla_cpu_use_fusion_emitters=false'
# Without LLVM's optimisation passes (left out when PIKFIX_TEST_OPTIMIZED=1).
TEST_NO_LLVM_OPTIMIZATION_FLAG = '--xla_backend_optimization_level=0'

# Compile options of functions run once (parameter initialisation), on CPU: their program is
# thousands of small random-number fusions (one threefry hash per parameter), and LLVM's full
# optimisation (level 3, the default) is most of its compile time; level 1 runs them as fast
# ("Start-up: parameter initialisation").
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


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


def init_compiler_options() -> dict:
  """INIT_COMPILER_OPTIONS less the options $XLA_FLAGS sets."""
  return {k: v for k, v in INIT_COMPILER_OPTIONS.items() if not xla_flag_is_set(f'--{k}')}
