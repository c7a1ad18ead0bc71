"""ops.conv: the model's convolution equals lax.conv_general_dilated, gradients included."""

import re

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pikfix_jax.ops import conv

_DN = ('NHWC', 'HWIO', 'NHWC')


def _grads(fn, x, w):
  y, pullback = jax.vjp(fn, x, w)
  dy = jax.random.normal(jax.random.PRNGKey(3), y.shape).astype(y.dtype)
  return (y,) + pullback(dy)


@pytest.mark.parametrize('n,size,c,o,kernel,strides,padding', [
    (2, 9, 5, 7, (3, 3), (1, 1), 'SAME'),          # RDN / U-Net 3x3
    (2, 9, 7, 3, (3, 3), (1, 1), 'SAME'),          # fewer outputs than inputs: dy transposed
    (2, 7, 5, 2, (2, 3), (1, 1), ((2, 0), (0, 1))),  # the same, uneven kernel and padding
    (3, 6, 8, 4, (1, 1), (1, 1), 'SAME'),          # 1x1 fusions / bottlenecks (matrix product)
    (1, 8, 3, 2, (4, 4), (1, 1), ((1, 2), (2, 1))),  # PatchGAN's last layer, uneven padding
    (2, 7, 3, 5, (3, 2), (1, 1), 'VALID'),
    (2, 8, 3, 4, (4, 4), (2, 2), ((1, 1), (1, 1))),  # PatchGAN's strided layers
    (2, 11, 4, 3, (7, 7), (2, 2), 'SAME'),         # colorizer / ResNet stem
    (1, 9, 3, 2, (3, 3), (2, 2), 'SAME'),          # odd size: uneven SAME padding
    (2, 8, 2, 3, (1, 1), (2, 2), 'VALID'),         # ResNet shortcut projection
    (2, 10, 2, 3, (3, 2), (3, 1), ((0, 2), (1, 0))),  # uneven strides, kernel not a multiple
    (1, 2, 5, 13, (3, 3), (1, 1), 'SAME'),         # few positions, many outputs: matmuls
    (2, 3, 4, 40, (2, 3), (1, 1), ((1, 0), (0, 1))),  # the same, uneven kernel and padding
    (4, 2, 6, 5, (3, 3), (1, 1), 'SAME'),          # output smaller than the kernel: im2col
    (2, 4, 3, 4, (3, 3), (2, 2), 'SAME'),          # the same, strided (ResNet layer4 entry)
    (2, 3, 3, 2, (5, 5), (1, 1), ((2, 2), (1, 3))),  # the same, uneven padding
])
def test_conv_and_its_gradients_equal_lax(n, size, c, o, kernel, strides, padding):
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  x = jax.random.normal(keys[0], (n, size, size + 1, c))
  w = jax.random.normal(keys[1], kernel + (c, o))
  ours = _grads(lambda x, w: conv.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=_DN), x, w)
  ref = _grads(lambda x, w: lax.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=_DN, precision='highest'), x, w)
  for name, a, b in zip(('output', 'input gradient', 'kernel gradient'), ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=name)


def test_conv_by_matmul_matches_torch_and_takes_outputs_smaller_than_the_kernel():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 5, 4, 6)).astype(np.float32)
  w = rng.normal(size=(3, 3, 6, 8)).astype(np.float32)
  ours = conv.conv_by_matmul(jnp.asarray(x), jnp.asarray(w), (2, 2), ((1, 1), (1, 1)))
  ref = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                                   torch.from_numpy(w).permute(3, 2, 0, 1), stride=2, padding=1)
  np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)
  # A 2 x 2 output of a 3 x 3 kernel is one matrix product, no XLA convolution.
  small = jax.jit(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=_DN)).lower(
          jnp.zeros((2, 2, 2, 8)), jnp.zeros((3, 3, 8, 8))).as_text()
  large = jax.jit(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=_DN)).lower(
          jnp.zeros((2, 3, 3, 8)), jnp.zeros((3, 3, 8, 8))).as_text()
  if jax.default_backend() == 'cpu':
    assert 'convolution' not in small and 'dot_general' in small
  assert 'convolution' in large


@pytest.mark.parametrize('c,o', [(4, 6), (6, 4)])
def test_kernel_gradient_matches_torch(c, o):
  """The stacked-rows weight gradient against PyTorch's conv2d weight gradient, both ways of
  computing it: activation transposed (O >= C) and dy transposed (O < C)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 10, 12, c)).astype(np.float32)
  w = rng.normal(size=(3, 3, c, o)).astype(np.float32)
  dy = rng.normal(size=(2, 10, 12, o)).astype(np.float32)
  tw = torch.tensor(w.transpose(3, 2, 0, 1), requires_grad=True)
  ty = torch.nn.functional.conv2d(torch.tensor(x.transpose(0, 3, 1, 2)), tw, padding=1)
  ty.backward(torch.tensor(dy.transpose(0, 3, 1, 2)))
  ours = conv.kernel_gradient(jnp.asarray(x), jnp.asarray(dy), w.shape, ((1, 1), (1, 1)))
  np.testing.assert_allclose(ours, tw.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-5, atol=1e-4)


def _lowered(fn, *args, platform: str = 'cpu') -> str:
  """StableHLO text of `jax.jit(fn)` lowered for `platform` (no device of it needed)."""
  return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def _conv_ops(text: str) -> list[str]:
  """The StableHLO convolutions of `text`, SSA names left out."""
  return sorted(re.sub(r'%[\w#]+', '%', line.strip())
                for line in text.splitlines() if 'stablehlo.convolution' in line)


def test_custom_gradient_is_used_on_cpu_for_plain_convs_only():
  """Stride-1 and strided convs take ops.conv's gradients on CPU (a custom_vjp whose backward
  picks the platform at lowering: test_gradients_are_chosen_by_lowering_platform); dilated
  ones and negative padding use lax's."""
  x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
  jaxpr = lambda **kw: str(jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, dimension_numbers=_DN, **{'padding': ((1, 1), (1, 1)), **kw}))(x, w))
  assert 'custom_vjp' in jaxpr(window_strides=(1, 1))
  assert 'custom_vjp' in jaxpr(window_strides=(2, 2))
  assert 'custom_vjp' not in jaxpr(window_strides=(1, 1), rhs_dilation=(2, 2))
  assert 'custom_vjp' not in jaxpr(window_strides=(1, 1), lhs_dilation=(2, 2))
  assert 'custom_vjp' not in jaxpr(window_strides=(1, 1), padding=((-1, 1), (1, 1)))


@pytest.mark.parametrize('o,matmuls', [(8, False), (64, True)])
def test_matmul_gradients_only_for_few_positions_and_many_outputs(o, matmuls):
  """2 * N * H_out * W_out <= O selects gradients_by_matmul: its backward has no conv (the
  program lowered for CPU)."""
  x, w = jnp.ones((2, 4, 4, 3)), jnp.ones((3, 3, 3, o))
  backward = _lowered(jax.grad(lambda x, w: jnp.sum(conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=_DN)), argnums=(0, 1)), x, w)
  assert (backward.count('stablehlo.dot_general'),
          backward.count('stablehlo.convolution') > 1) == ((2, False) if matmuls else (0, True))


@pytest.mark.parametrize('x_shape,kernel,strides,padding', [
    ((2, 8, 9, 3), (3, 3, 3, 4), (1, 1), 'SAME'),   # stride 1: stacked-rows weight gradient
    ((2, 8, 9, 6), (3, 3, 6, 2), (1, 1), 'SAME'),   # fewer outputs: dy transposed
    ((2, 8, 8, 3), (1, 1, 3, 4), (1, 1), 'SAME'),   # 1x1: a matrix product
    ((2, 11, 11, 3), (7, 7, 3, 4), (2, 2), 'SAME'),  # strided: space-to-depth
    ((1, 2, 2, 3), (3, 3, 3, 16), (1, 1), 'SAME'),  # few positions: matrix products
])
def test_gradients_are_chosen_by_lowering_platform(x_shape, kernel, strides, padding):
  """Traced once, the value and both gradients lower for CUDA to lax's own convolutions (and
  nothing else computing them), and for CPU to the rewrites (other convolutions, or none)."""
  x, w = jnp.ones(x_shape), jnp.ones(kernel)
  step = lambda conv_fn: jax.value_and_grad(lambda x, w: jnp.sum(conv_fn(
      x, w, strides, padding, dimension_numbers=_DN)), argnums=(0, 1))
  ours, plain = step(conv.conv_general_dilated), step(lax.conv_general_dilated)
  cuda = _lowered(ours, x, w, platform='cuda')
  assert _conv_ops(cuda) == _conv_ops(_lowered(plain, x, w, platform='cuda'))
  assert len(_conv_ops(cuda)) == 3 and 'stablehlo.dot_general' not in cuda
  assert 'stablehlo.transpose' not in cuda  # the rewrites' transposed activations
  assert _conv_ops(_lowered(ours, x, w)) != _conv_ops(_lowered(plain, x, w))


def test_space_to_depth_conv_matches_torch_strided_conv():
  """A stride-2 7x7 conv (the stems) rewritten as a stride-1 conv, against PyTorch."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 13, 10, 3)).astype(np.float32)
  w = rng.normal(size=(7, 7, 3, 5)).astype(np.float32)
  expected = torch.nn.functional.conv2d(torch.tensor(x.transpose(0, 3, 1, 2)),
                                        torch.tensor(w.transpose(3, 2, 0, 1)), stride=2,
                                        padding=3).numpy().transpose(0, 2, 3, 1)
  ours = conv.space_to_depth_conv(jnp.asarray(x), jnp.asarray(w), (2, 2), ((3, 3), (3, 3)))
  assert ours.shape == expected.shape == (2, 7, 5, 5)
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)


def test_bfloat16_gradients_keep_dtypes_and_values():
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  x = jax.random.normal(keys[0], (2, 8, 8, 4), jnp.bfloat16)
  w = jax.random.normal(keys[1], (3, 3, 4, 8), jnp.bfloat16)
  ours = _grads(lambda x, w: conv.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                       dimension_numbers=_DN), x, w)
  ref = _grads(lambda x, w: lax.conv_general_dilated(x.astype(jnp.float32), w.astype(
      jnp.float32), (1, 1), 'SAME', dimension_numbers=_DN), x, w)
  for a, b in zip(ours, ref):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=0.05, atol=0.3)


def test_flax_conv_takes_it_with_unchanged_parameters():
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 6, 3))
  ours = nn.Conv(4, (3, 3), conv_general_dilated=conv.conv_general_dilated)
  plain = nn.Conv(4, (3, 3))
  params = plain.init(jax.random.PRNGKey(0), x)
  assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_structure(params)
  loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply(p, x)))
  np.testing.assert_allclose(jax.grad(loss(ours))(params)['params']['kernel'],
                             jax.grad(loss(plain))(params)['params']['kernel'], rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('size,kernel,strides,padding', [
    ((8, 10), (4, 4), (2, 2), ((1, 1), (1, 1))),   # the PatchGAN's first layer
    ((7, 9), (3, 3), (1, 1), ((1, 1), (1, 1))),    # stride 1, odd sizes
    ((9, 6), (3, 2), (3, 1), ((0, 2), (1, 0))),    # uneven strides and padding
])
def test_conv_of_broadcast_equals_conv_of_the_broadcast_image(size, kernel, strides, padding):
  """A per-image constant map convolved without building it: values and both gradients."""
  keys = jax.random.split(jax.random.PRNGKey(5), 2)
  values = jax.random.normal(keys[0], (2, 5))
  w = jax.random.normal(keys[1], kernel + (5, 3))
  ours = _grads(lambda v, w: conv.conv_of_broadcast(v, w, size, strides, padding), values, w)
  ref = _grads(lambda v, w: lax.conv_general_dilated(
      jnp.broadcast_to(v[:, None, None, :], (2,) + size + (5,)), w, strides, padding,
      dimension_numbers=_DN, precision='highest'), values, w)
  assert ours[0].shape == ref[0].shape
  # Border positions see fewer taps than interior ones: the maps are not constant.
  assert float(jnp.std(ref[0][:, :, :, 0])) > 0.1
  for name, a, b in zip(('output', 'values gradient', 'kernel gradient'), ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=name)


# Winograd's F(2x2, 3x3), the inference form of wide 3x3 convs (layers.WinogradConv)


@pytest.mark.parametrize('n,hw,c,o,pads,band_bytes', [
    (2, (9, 12), 5, 6, ((1, 1), (1, 1)), None),    # SAME, odd rows: a cropped tile row
    (1, (10, 7), 3, 4, ((2, 0), (0, 1)), None),    # uneven padding, odd output width
    (2, (13, 11), 4, 3, ((1, 1), (1, 1)), 2000),   # several bands (the loop), the last padded
    (1, (5, 6), 2, 5, ((0, 0), (0, 0)), 300),      # VALID, one tile row per band
])
def test_winograd_conv_matches_torch_in_float64(n, hw, c, o, pads, band_bytes):
  """F(2x2, 3x3) against torch's conv2d in float64: its float32 error at most twice that of
  XLA's direct float32 conv (plus a float32 ulp of the output's scale)."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(n,) + hw + (c,))
  w = rng.normal(size=(3, 3, c, o))
  (top, bottom), (left, right) = pads
  padded = torch.nn.functional.pad(torch.tensor(x.transpose(0, 3, 1, 2)),
                                   (left, right, top, bottom))
  exact = torch.nn.functional.conv2d(padded, torch.tensor(w.transpose(3, 2, 0, 1))).numpy()
  exact = exact.transpose(0, 2, 3, 1)
  x32, w32 = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
  kwargs = {} if band_bytes is None else {'band_bytes': band_bytes}
  ours = conv.winograd_conv3x3(x32, w32, pads, **kwargs)
  direct = lax.conv_general_dilated(x32, w32, (1, 1), pads, dimension_numbers=_DN)
  assert ours.shape == direct.shape == exact.shape and ours.dtype == jnp.float32
  scale = np.abs(exact).max()
  assert np.abs(ours - exact).max() <= 2 * np.abs(direct - exact).max() + 1.2e-7 * scale


def test_winograd_layer_is_conv_with_one_batched_product_lowered_for_cpu():
  """layers.WinogradConv: Conv's parameters and values; lowered for CPU a wide 3x3 stride-1
  conv is one batched product of the 16 transformed positions and no convolution, lowered
  for CUDA lax's convolution; narrow, strided and 1x1 convs stay convolutions on CPU too."""
  from pikfix_jax.models import layers  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 11, 9, 256))
  pads = ((1, 1), (1, 1))
  plain = layers.Conv(256, (3, 3), padding=pads)
  fast = layers.WinogradConv(256, (3, 3), padding=pads)
  variables = plain.init(jax.random.PRNGKey(1), x)
  assert (jax.tree.map(jnp.shape, variables) ==
          jax.tree.map(jnp.shape, fast.init(jax.random.PRNGKey(1), x)))
  want, got = plain.apply(variables, x), fast.apply(variables, x)
  np.testing.assert_allclose(got, want, atol=2e-5 * float(jnp.abs(want).max()))

  def kinds(module, platform='cpu'):
    text = _lowered(lambda v, x: module.apply(v, x), module.init(jax.random.PRNGKey(2), x), x,
                    platform=platform)
    dots = [l for l in text.splitlines() if 'stablehlo.dot_general' in l]
    batched = [l for l in dots if 'batching_dims = [0] x [0]' in l and 'tensor<16x' in l]
    return len(batched), len(dots) - len(batched), len(_conv_ops(text))

  assert kinds(fast) == (1, 0, 0)
  assert kinds(fast, 'cuda') == (0, 0, 1)
  for module in (layers.WinogradConv(128, (3, 3), padding=pads),
                 layers.WinogradConv(256, (3, 3), 2, pads),
                 layers.WinogradConv(256, (1, 1))):
    assert kinds(module) == (0, 0, 1)
