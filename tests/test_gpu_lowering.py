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


def test_partial_nonlocal_block_lowers_for_cuda_without_quadratic_tensors():
  """Wan et al.'s partial nonlocal block (eqs. 7-9) at a 1024 x 1024 photo's latent, 256 x 256
  positions at the release's 512 channels, forward and gradient (the mapping stage trains it):
  eq. 9's sum runs in chunks (ops/attention.py), so no tensor of either CUDA module has
  hw * hw elements along an axis or two axes of hw (the dense weights: 16 GiB in float32)."""
  from pikfix_jax.models import wan
  side, channels = 256, 512
  hw = side * side
  block = wan.PartialNonLocalBlock(global_res=2)
  f = jax.ShapeDtypeStruct((1, side, side, channels), jnp.float32)
  m = jax.ShapeDtypeStruct((1, side, side, 1), jnp.float32)
  variables = jax.eval_shape(block.init, jax.random.PRNGKey(0), f, m)
  grad = jax.grad(lambda v, x, mask: jnp.sum(block.apply(v, x, mask) ** 2), argnums=(0, 1))
  for fn in (block.apply, grad):
    text = jax.export.export(jax.jit(fn), platforms=['cuda'])(variables, f, m).mlir_module()
    targets = re.findall(r'stablehlo\.custom_call @([\w.$-]+)', text)
    targets += re.findall(r'call_target_name = "([^"]+)"', text)
    assert set(targets) <= set(CUDA_CUSTOM_CALLS), sorted(set(targets))
    shapes = [[int(d) for d in re.findall(r'(\d+)x', t)]
              for t in re.findall(r'tensor<([^>]*)>', text)]
    assert [1, hw, channels] in shapes  # the flattened theta / phi / mu: the sizes are right
    assert not [shape for shape in shapes if hw * hw in shape or shape.count(hw) > 1]
    assert 'stablehlo.while' in text  # the chunk loops
