"""Building blocks shared by the networks: dense units/blocks, residual dense blocks, resizing,
padding to a size multiple, the stride-2 transposed convolution."""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from pikfix_jax.ops import conv

Dtype = Any

# Every convolution of the models: nn.Conv (same parameters) computing with ops.conv, whose
# gradients are fast on XLA:CPU (docs/MODEL.md, "Performance rewrites").
Conv = functools.partial(nn.Conv, conv_general_dilated=conv.conv_general_dilated)


# The same for inference: wide 3x3 convs lowered for CPU by Winograd's F(2x2, 3x3).
WinogradConv = functools.partial(
    nn.Conv, conv_general_dilated=functools.partial(conv.conv_general_dilated, winograd=True))


def normal_around_one(std: float) -> Callable:
  """Initialiser N(1, std^2), for normalisation scales (pix2pix's BatchNorm, Isola et al. 2017)."""
  def init(key: jax.Array, shape: tuple, dtype: Dtype = jnp.float32) -> jnp.ndarray:
    return 1.0 + std * jax.random.normal(key, shape, dtype)
  return init


def resize(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """Bilinear resize of an NHWC tensor (anti-aliased when shrinking); keeps the dtype.

  Upsampling by integer factors (the RDN's levels, the U-Net decoder) is computed as the
  stencil it is (`_upsample_axis`), not by jax.image.resize's matrix products and transposes:
  same values, and on CPU ~1 % of the paper-config training step less (docs/MODEL.md, "Performance rewrites")."""
  h, w = x.shape[1:3]
  if (h, w) == (height, width):
    return x
  if height % h == 0 and width % w == 0:
    return _upsample_axis(_upsample_axis(x, 1, height // h), 2, width // w)
  out = jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), 'bilinear')
  return out.astype(x.dtype)


def _upsample_axis(x: jnp.ndarray, axis: int, factor: int) -> jnp.ndarray:
  """Bilinear upsampling (half-pixel centres) of one axis by an integer factor. Output
  i * factor + r lies at input coordinate i + d, d = (r + 0.5) / factor - 0.5, so it is
  (1 - |d|) x[i] + |d| x[i - 1 or i + 1], the neighbour clamped at the edges (where
  jax.image.resize drops the outside sample and renormalises: the same value)."""
  if factor == 1:
    return x
  n = x.shape[axis]
  before = jnp.concatenate([lax.slice_in_dim(x, 0, 1, axis=axis),
                            lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
  after = jnp.concatenate([lax.slice_in_dim(x, 1, n, axis=axis),
                           lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)
  phases = []
  for r in range(factor):
    d = (r + 0.5) / factor - 0.5
    phases.append((1 - abs(d)) * x + abs(d) * (before if d < 0 else after))
  shape = list(x.shape)
  shape[axis] = n * factor
  return jnp.stack(phases, axis=axis + 1).reshape(shape)


def _tiles(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """(B, H, W, C) -> (B, H // size, size, W // size, size, C): the size x size tiles, a partial
  last row/column of tiles dropped (the floor of a VALID pool)."""
  b, h, w, c = x.shape
  x = x[:, :h - h % size, :w - w % size]
  return x.reshape(b, h // size, size, w // size, size, c)


def downsample(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Average-pools an NHWC tensor by an integer factor (exact box filter; floor, as
  nn.avg_pool). A reshape-mean, not avg_pool: same values, but its gradient is a broadcast,
  where avg_pool's is a strided reduce_window that costs seconds on the 64-channel
  full-resolution SPHist on CPU (docs/MODEL.md, "Performance rewrites")."""
  if factor == 1:
    return x
  return jnp.mean(_tiles(x, factor), axis=(2, 4))


def max_pool_tiles(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """`nn.max_pool(x, (size, size), strides=(size, size), padding='VALID')` (floor: a partial
  last row/column of tiles is dropped), computed as a reshape-max. Same values; the gradient
  is an elementwise mask where nn.max_pool's builds four int32 argmax-index tensors of the
  input's size (the 2x2 pools of the VGG-19 perceptual loss, docs/MODEL.md "Performance rewrites"). The one
  difference: a tie inside a tile shares the gradient where max_pool gives it to the first
  maximum; after a ReLU, ties are at 0, where the ReLU's gradient is 0 either way."""
  return jnp.max(_tiles(x, size), axis=(2, 4))


class DenseUnit(nn.Module):
  """DenseNet unit (Huang et al.): [LN-ReLU-1x1 conv] - LN-ReLU-3x3 conv, returns `growth` maps.

  With `bottleneck=0`: 3x3 conv + ReLU (the RDN's unit; ResidualDenseBlock computes its
  units fused, see there).
  """
  growth: int
  bottleneck: int = 4
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if not self.bottleneck:
      return nn.relu(Conv(self.growth, (3, 3), dtype=self.dtype)(x))
    y = nn.relu(nn.LayerNorm(dtype=self.dtype)(x))
    y = Conv(self.bottleneck * self.growth, (1, 1), use_bias=False, dtype=self.dtype)(y)
    y = nn.relu(nn.LayerNorm(dtype=self.dtype)(y))
    y = Conv(self.growth, (3, 3), use_bias=False, dtype=self.dtype)(y)
    if self.dropout:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return y


class DenseBlock(nn.Module):
  """`num_units` dense units, each seeing the concatenation of all earlier outputs."""
  num_units: int
  growth: int
  bottleneck: int = 4
  dropout: float = 0.0
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    unit_cls = nn.remat(DenseUnit, static_argnums=(2,)) if self.remat else DenseUnit
    features = [x]
    for i in range(self.num_units):
      inputs = jnp.concatenate(features, axis=-1)
      features.append(unit_cls(self.growth, self.bottleneck, self.dropout, self.dtype,
                               name=f'unit{i}')(inputs, train))
    return jnp.concatenate(features, axis=-1)


class ResidualDenseBlock(nn.Module):
  """RDB (Zhang et al. 2018): `num_units` units of 3x3 conv + ReLU, unit k seeing the
  concatenation of the block input and units 0..k-1; 1x1 local feature fusion; local residual.

  Computed "fan-out": instead of unit k convolving the concatenation, every feature map is
  convolved once with the input-channel slices of all later units' kernels (one wide conv in
  place of several narrow ones) and each unit sums its slices. Same function and parameters
  (unit{k}/kernel (3, 3, C + k*growth, growth), unit{k}/bias); on CPU the block's training
  step is ~15% faster because wide convs have faster weight gradients (docs/MODEL.md,
  "Performance rewrites"). `remat` recomputes the dense units in the backward pass, keeping only x.
  """
  num_units: int
  growth: int
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c, g = x.shape[-1], self.growth
    kernels, biases = [], []
    for k in range(self.num_units):
      unit = ConvParams((3, 3, c + k * g, g), name=f'unit{k}')
      kernel, bias = unit()
      kernels.append(kernel.astype(self.dtype))
      biases.append(bias.astype(self.dtype))
    dense = jax.checkpoint(_fan_out_dense_units) if self.remat else _fan_out_dense_units
    y = dense(x.astype(self.dtype), kernels, biases)
    return x + Conv(c, (1, 1), dtype=self.dtype, name='local_fusion')(y)


class ConvParams(nn.Module):
  """The kernel and bias of a conv, with nn.Conv's own default initialisers unless given."""
  shape: tuple
  kernel_init: Callable = nn.Conv.kernel_init

  @nn.compact
  def __call__(self) -> tuple[jnp.ndarray, jnp.ndarray]:
    return (self.param('kernel', self.kernel_init, self.shape),
            self.param('bias', nn.Conv.bias_init, self.shape[-1:]))


def _conv_same(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  return conv.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _fan_out_dense_units(x: jnp.ndarray, kernels: list, biases: list) -> jnp.ndarray:
  """[x, u_0, .., u_{n-1}] with u_k = relu(conv([x, u_0, .., u_{k-1}], kernels[k]) + biases[k]),
  each map convolved once with the slices of the kernels of all units that read it."""
  n, g = len(kernels), kernels[0].shape[-1]
  features, pre_activations, start = [x], [biases[k] for k in range(n)], 0
  for i in range(n):  # features[i] feeds units i..n-1
    width = features[i].shape[-1]
    fanned = _conv_same(features[i], jnp.concatenate(
        [kernels[k][:, :, start:start + width] for k in range(i, n)], axis=-1))
    for j, k in enumerate(range(i, n)):
      pre_activations[k] = pre_activations[k] + fanned[..., j * g:(j + 1) * g]
    features.append(nn.relu(pre_activations[i]))
    start += width
  return jnp.concatenate(features, axis=-1)


def pad_to_multiple(x: jnp.ndarray, multiple: int) -> tuple[jnp.ndarray, tuple[int, int]]:
  """Reflect-pads an NHWC batch so both sides are multiples of `multiple`.

  Returns the padded batch and the original (H, W); `crop_to(y, hw)` undoes it.
  """
  h, w = x.shape[1:3]
  ph, pw = -h % multiple, -w % multiple
  if ph or pw:
    mode = 'reflect' if (ph < h and pw < w) else 'edge'
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
  return x, (h, w)


def crop_to(x: jnp.ndarray, hw: tuple[int, int]) -> jnp.ndarray:
  """The first hw = (H, W) rows and columns of an NHWC batch (undoes `pad_to_multiple`)."""
  return x[:, :hw[0], :hw[1]]


# Output phase r (0: even, 1: odd position along an axis) of torch's ConvTranspose2d(k=4, s=2,
# p=1) reads input positions m - 1 + r and m + r through kernel taps _PHASE_TAPS[r]
# (output y = 2 x - 1 + k).
_PHASE_TAPS = np.array([[3, 1], [2, 0]])


class ConvTransposeStride2(nn.Module):
  """torch.nn.ConvTranspose2d(in, features, kernel_size=4, stride=2, padding=1): (B, H, W, C)
  -> (B, 2H, 2W, features). `kernel` (4, 4, C, features) is torch's weight.permute(2, 3, 0, 1),
  not flipped.

  Computed as one stride-1 2x2 conv giving the four output phases as channels, interleaved
  (depth-to-space): the same function, but its gradients take the fast CPU paths of
  `ops.conv`, where nn.ConvTranspose's lhs-dilated conv has XLA:CPU gradients ~25x slower
  (docs/MODEL.md, "Performance rewrites")."""
  features: int
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.normal(0.02)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    o = self.features
    kernel = self.param('kernel', self.kernel_init, (4, 4, c, o)).astype(self.dtype)
    # phases[a, bb, c, rh, rw, o]: tap (a, bb) of the 2x2 window of output phase (rh, rw).
    taps = kernel[_PHASE_TAPS[:, :, None, None], _PHASE_TAPS[None, None, :, :]]  # rh,a,rw,bb
    phases = jnp.transpose(taps, (1, 3, 4, 0, 2, 5)).reshape(2, 2, c, 4 * o)
    y = conv.conv_general_dilated(x.astype(self.dtype), phases, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = y.reshape(b, h + 1, w + 1, 2, 2, o)
    rows = [jnp.stack([y[:, rh:rh + h, rw:rw + w, rh, rw] for rw in (0, 1)], axis=3)
            for rh in (0, 1)]
    y = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, o)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (o,)).astype(self.dtype)
    return y
