"""The paper model lowered for CUDA on a CPU-only machine (`jax.export`: nothing is compiled or
run): the training step and the restore forward pass carry no CPU-only code, and their
convolutions are plain StableHLO convolutions (ops.conv's CPU rewrites stay on CPU)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from pikfix_jax import export
from pikfix_jax import train
from pikfix_jax.models import pikfix

# Custom calls a CUDA lowering may legitimately hold: sharding annotations (the Trainer's
# NamedShardings), jax.export's checks of symbolic sizes (`shape_assertion`, resolved before
# compiling) and JAX's GPU threefry kernel (with jax_threefry_gpu_kernel_lowering).
CUDA_CUSTOM_CALLS = ('Sharding', 'SPMDFullToShardShape', 'SPMDShardToFullShape',
                     'shape_assertion', 'cu_threefry2x32')
# Targets of host-only kernels: XLA:CPU's, LAPACK, DUCC FFTs, oneDNN, YNNPACK/XNNPACK, Eigen.
CPU_ONLY = re.compile(r'cpu|lapack|ducc|onednn|mkl|[xy]nn|eigen', re.IGNORECASE)


def _paper_config(size: int = 64):
  """configs/default.py (the paper) in bfloat16, small crops."""
  config = default.get_config()
  config.model.dtype = 'bfloat16'
  config.data.image_size = size
  config.train.batch_size = 2
  return config


def _check_cuda_module(text: str) -> list[str]:
  """Asserts no CPU-only custom call; returns the module's convolutions."""
  targets = re.findall(r'stablehlo\.custom_call @([\w.$-]+)', text)
  targets += re.findall(r'call_target_name = "([^"]+)"', text)
  assert [t for t in targets if CPU_ONLY.search(t)] == []
  assert set(targets) <= set(CUDA_CUSTOM_CALLS), sorted(set(targets))
  convolutions = [line for line in text.splitlines() if 'stablehlo.convolution' in line]
  assert convolutions
  assert any('bf16' in line for line in convolutions)  # the compute dtype reaches them
  return convolutions


@pytest.mark.slow
def test_training_step_lowers_for_cuda_without_cpu_code():
  config = _paper_config()
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  trainer = train.Trainer(config, steps_per_epoch=100, mesh=mesh)
  state, vgg_variables = jax.eval_shape(  # shapes only
      lambda: (trainer.init_state(config.seed), trainer.init_frozen(config.seed)))
  size = config.data.image_size
  batch = {name: jax.ShapeDtypeStruct((config.train.batch_size, size, size, channels),
                                      jnp.float32, sharding=trainer.data_sharding)
           for name, channels in (('input_l', 1), ('target_lab', 3), ('reference_rgb', 3))}
  exported = jax.export.export(trainer.train_step, platforms=['cuda'])(
      state, batch, vgg_variables)
  assert exported.platforms == ('cuda',)
  convolutions = _check_cuda_module(exported.mlir_module())
  # lax's gradient rules, not ops.conv's CPU ones: a strided conv's input gradient is an
  # lhs-dilated convolution (the CPU rewrite never makes one, tests/test_conv.py).
  assert any('lhs_dilate = [2, 2]' in line for line in convolutions)


def test_restore_forward_lowers_for_cuda_without_cpu_code():
  config = _paper_config()
  model = pikfix.build_generator(config.model)
  size = config.data.image_size
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                             jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32),
                             jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  # What `export --format=stablehlo` exports, the variables an argument instead of constants.
  exported = jax.export.export(jax.jit(export.restore_forward(model)), platforms=['cuda'])(
      variables, *export.forward_specs())
  assert [str(a.shape) for a in exported.out_avals] == ['(1, 32*h, 32*w, 3)']
  _check_cuda_module(exported.mlir_module())
