"""2-D convolution whose gradients are fast on XLA:CPU; a drop-in for
`lax.conv_general_dilated` (every conv of the model, `nn.Conv(conv_general_dilated=...)`).

Same function and same gradients as `lax.conv_general_dilated`; only how the gradients are
computed on CPU differs (docs/MODEL.md, "Performance rewrites"). Each CPU form is chosen when the program is lowered
(`lax.platform_dependent`), so a step traced on a CPU host and lowered for a GPU (`jax.export`)
carries lax's convolution and gradients there:

* Outputs smaller than the kernel (ResNet-34's layer4 on small inputs: 2 x 2 outputs of a
  3 x 3 kernel), forward and both gradients: one im2col matrix product (`conv_by_matmul`),
  where XLA:CPU's convolution runs ~100x slower than its matrix product.

* Stride-1 convs, weight gradient. JAX's rule computes dW as a convolution whose "batch" is
  the input channel and whose "features" are the images, so XLA:CPU transposes every
  activation to (C, H, W, N), a slow copy fused with recomputing the activation. Here:
  1x1 kernels: dW = X^T dY, one matrix product over the N*H*W positions; k x k kernels: the
  activation transposed as a 2-D (N*H*W, C) -> (C, N*H*W) array, padded per image and read
  as the images stacked along the rows, (C, N*Hp, Wp, 1); dW is one "valid" convolution of
  that with dY stacked the same way (its rows zero-padded per image so no product crosses
  two images), read as a (C, kh, kw, O) kernel (`kernel_gradient`). When the conv has fewer
  output than input channels, the roles swap and dy is the tensor transposed (faster there,
  slower with more outputs than inputs).
* Few output positions, many output channels (2 * N * H_out * W_out <= O), both gradients:
  two matrix products with the kernel in its own layout (`gradients_by_matmul`), where XLA
  would copy a (3, 3, 1281, 1024) kernel transposed for the input gradient.
* Strided convs, both gradients. The input gradient of a strided conv is an lhs-dilated
  conv, which XLA:CPU runs with a slow generic kernel. The forward stays XLA's strided conv;
  the backward is that of the same conv written as a stride-1 conv of the space-to-depth
  input (`space_to_depth_conv`), so both gradients take the stride-1 paths above.

Dilated and grouped convolutions use `lax.conv_general_dilated` unchanged, and so do both
gradients on other platforms (GPU/TPU, where cuDNN and XLA compute them natively).

For inference, `conv_general_dilated(..., winograd=True)` (`models.layers.WinogradConv`): the
same, but wide 3x3 stride-1 convs (`takes_winograd`) lowered for CPU take Winograd's F(2x2, 3x3)
(`winograd_conv3x3`), 4/9 of the multiplies, where XLA:CPU's convolution is already near the
CPU's float32 peak (docs/MODEL.md, "Performance rewrites").
"""

import functools
from typing import Any, Optional, Sequence, Union

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Sequence[int],
                         padding: Union[str, Sequence[tuple[int, int]]],
                         lhs_dilation: Optional[Sequence[int]] = None,
                         rhs_dilation: Optional[Sequence[int]] = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None, winograd: bool = False
                         ) -> jnp.ndarray:
  """`lax.conv_general_dilated`, with the CPU gradients above where they apply (decided here
  from the shapes and options; the platform is decided at lowering, `_conv_bwd`).

  `winograd` (inference, `layers.WinogradConv`): a float32 stride-1 conv that `takes_winograd`,
  lowered for CPU, is `winograd_conv3x3`; lowered for another platform, the same as without."""
  plain = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  if lhs.ndim != 4:
    return plain(lhs, rhs)
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if (numbers != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
      or set(lhs_dilation or (1,)) != {1}
      or set(rhs_dilation or (1,)) != {1} or feature_group_count != 1
      or batch_group_count != 1 or preferred_element_type is not None):
    return plain(lhs, rhs)
  strides = tuple(int(s) for s in window_strides)
  pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
          if isinstance(padding, str) else padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if min(min(p) for p in pads) < 0:
    return plain(lhs, rhs)
  if (winograd and strides == (1, 1) and takes_winograd(rhs.shape)
      and lhs.dtype == rhs.dtype == jnp.float32):
    return lax.platform_dependent(
        lhs, rhs, default=lambda x, k: _conv(x, k, strides, pads, precision),
        cpu=functools.partial(winograd_conv3x3, pads=pads, precision=precision))
  return _conv(lhs, rhs, strides, pads, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple, pads: tuple, precision: Any
          ) -> jnp.ndarray:
  """The NHWC conv (non-negative explicit pads), differentiated by `_conv_bwd`: XLA's conv;
  lowered for CPU, `conv_by_matmul` when the output is smaller than the kernel."""
  xla = functools.partial(lax.conv_general_dilated, window_strides=strides, padding=pads,
                          dimension_numbers=_NHWC, precision=precision)
  if _output_smaller_than_kernel(x.shape, kernel.shape, strides, pads):
    return lax.platform_dependent(
        x, kernel, default=xla,
        cpu=functools.partial(conv_by_matmul, strides=strides, pads=pads, precision=precision))
  return xla(x, kernel)


def _output_smaller_than_kernel(x_shape: Sequence[int], kernel_shape: Sequence[int],
                                strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> bool:
  if not all(isinstance(d, int) for d in x_shape[1:3]):
    return False  # symbolic sizes (jax.export): any size, most of them large
  out_h, out_w = _output_size(x_shape, kernel_shape, strides, pads)
  return out_h < kernel_shape[0] or out_w < kernel_shape[1]


def _output_size(x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
                 pads: Sequence[tuple[int, int]]) -> tuple[int, int]:
  return tuple((x_shape[1 + a] + sum(pads[a]) - kernel_shape[a]) // strides[a] + 1
               for a in range(2))


def _patches(x: jnp.ndarray, kernel_hw: Sequence[int], strides: Sequence[int],
             pads: Sequence[tuple[int, int]]) -> jnp.ndarray:
  """(N, H_out, W_out, kh * kw * C): the input patch under every output position, taps in
  the kernel's (i, j, c) order (im2col)."""
  (kh, kw), (sh, sw) = kernel_hw, strides
  out_h, out_w = _output_size(x.shape, (kh, kw), strides, pads)
  padded = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
  return jnp.concatenate(
      [padded[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
       for i in range(kh) for j in range(kw)], axis=-1)


def conv_by_matmul(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int],
                   pads: Sequence[tuple[int, int]], precision: Any = None) -> jnp.ndarray:
  """The NHWC conv as one matrix product of the im2col patches with the (kh * kw * C, O)
  kernel: same values. XLA:CPU's convolution is ~100x slower than its matrix product when the
  output is smaller than the kernel (ResNet-34's layer4 on 64 px inputs: 2 x 2 outputs of a
  3 x 3 kernel), where the patches cost almost nothing."""
  kh, kw, c, o = kernel.shape
  patches = _patches(x, (kh, kw), strides, pads)
  out = lax.dot_general(patches, kernel.reshape(kh * kw * c, o), (((3,), (0,)), ((), ())),
                        precision=precision)
  return out.astype(jnp.result_type(x, kernel))


def _conv_fwd(x, kernel, strides, pads, precision):
  return _conv(x, kernel, strides, pads, precision), (x, kernel)


def _conv_bwd(strides, pads, precision, residuals, dy):
  """(dx, dW): the CPU rewrites where the program is lowered for CPU, lax's elsewhere."""
  x, kernel = residuals
  return lax.platform_dependent(
      x, kernel, dy, cpu=functools.partial(_cpu_gradients, strides, pads, precision),
      default=functools.partial(_lax_gradients, strides, pads, precision))


def _lax_gradients(strides, pads, precision, x, kernel, dy):
  _, pullback = jax.vjp(lambda x_, k_: lax.conv_general_dilated(
      x_, k_, strides, pads, dimension_numbers=_NHWC, precision=precision), x, kernel)
  return pullback(dy)


def _cpu_gradients(strides, pads, precision, x, kernel, dy):
  if _output_smaller_than_kernel(x.shape, kernel.shape, strides, pads):
    _, pullback = jax.vjp(
        lambda x_, k_: conv_by_matmul(x_, k_, strides, pads, precision), x, kernel)
    return pullback(dy)
  if strides != (1, 1):
    # The backward of the same conv as a stride-1 conv of the space-to-depth input: its
    # gradients take the stride-1 rules below instead of XLA:CPU's slow generic kernel for
    # the lhs-dilated conv that a strided conv's input gradient otherwise is.
    _, pullback = jax.vjp(
        lambda x_, k_: space_to_depth_conv(x_, k_, strides, pads, precision), x, kernel)
    return pullback(dy)
  if 2 * dy.shape[0] * dy.shape[1] * dy.shape[2] <= dy.shape[3]:
    dx, dw = gradients_by_matmul(x, kernel, dy, pads, precision)
    return dx, dw.astype(kernel.dtype)
  _, input_grad = jax.vjp(
      lambda x_: lax.conv_general_dilated(x_, kernel, (1, 1), pads, dimension_numbers=_NHWC,
                                          precision=precision), x)
  (dx,) = input_grad(dy)
  return dx, kernel_gradient(x, dy, kernel.shape, pads, precision).astype(kernel.dtype)


def gradients_by_matmul(x: jnp.ndarray, kernel: jnp.ndarray, dy: jnp.ndarray,
                        pads: Sequence[tuple[int, int]], precision: Any = None
                        ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(dx, dW) of the stride-1 NHWC conv y = conv(x, W, pads) as two matrix products over the
  (kh * kw * C) patch axis, the kernel read in its own layout: dW = patches(x)^T dy, and dx
  the shift-and-add (col2im) of dy W^T. For convs with few output positions and a large
  kernel (2 * N * H_out * W_out <= O: the colorizer's 1281->1024 fusion convs at 1/16 and
  1/32 scale, ResNet-34's layer4) this avoids copying the kernel transposed and is ~2x faster
  on CPU; with more positions the patches cost more than they save."""
  kh, kw, c, o = kernel.shape
  n, height, width, _ = x.shape
  out_h, out_w = dy.shape[1:3]
  (top, bottom), (left, right) = pads
  patches = _patches(x, (kh, kw), (1, 1), pads)
  dy_rows = dy.reshape(n * out_h * out_w, o)
  dw = lax.dot_general(patches.reshape(-1, kh * kw * c), dy_rows, (((0,), (0,)), ((), ())),
                       precision=precision).reshape(kernel.shape)
  columns = lax.dot_general(dy_rows, kernel.reshape(kh * kw * c, o), (((1,), (1,)), ((), ())),
                            precision=precision).reshape(n, out_h, out_w, kh, kw, c)
  dx_padded = sum(jnp.pad(columns[:, :, :, i, j],
                          ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
                  for i in range(kh) for j in range(kw))
  return dx_padded[:, top:top + height, left:left + width], dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def space_to_depth_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int],
                        pads: Sequence[tuple[int, int]], precision: Any = None
                        ) -> jnp.ndarray:
  """The stride-(sh, sw) NHWC conv y = conv(x, W, strides, pads) as a stride-1 "valid" conv
  of the space-to-depth input: with i = sh*a + r and j = sw*b + t,
  y[n, p, q, o] = sum_{a, b, (r, t, c)} X2[n, p + a, q + b, (r, t, c)] W2[a, b, (r, t, c), o],
  X2[n, P, Q, (r, t, c)] = pad(x)[n, sh*P + r, sw*Q + t, c] and W2 the kernel, zero-padded to
  multiples of the stride, rearranged the same way. Same values (and gradients)."""
  (sh, sw), (kh, kw, c, o) = strides, kernel.shape
  n, h, w, _ = x.shape
  (top, bottom), (left, right) = pads
  out_h, out_w = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
  if (kh, kw) == (1, 1):  # a 1x1 conv of the subsampled input; no zero taps
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    return _conv(x[:, ::sh, ::sw][:, :out_h, :out_w], kernel, (1, 1), ((0, 0), (0, 0)),
                 precision)
  taps_h, taps_w = -(-kh // sh), -(-kw // sw)
  rows, cols = sh * (out_h + taps_h - 1), sw * (out_w + taps_w - 1)
  x = jnp.pad(x, ((0, 0), (top, max(0, rows - h - top)), (left, max(0, cols - w - left)),
                  (0, 0)))[:, :rows, :cols]
  x = x.reshape(n, rows // sh, sh, cols // sw, sw, c).transpose(0, 1, 3, 2, 4, 5)
  kernel = jnp.pad(kernel, ((0, taps_h * sh - kh), (0, taps_w * sw - kw), (0, 0), (0, 0)))
  kernel = kernel.reshape(taps_h, sh, taps_w, sw, c, o).transpose(0, 2, 1, 3, 4, 5)
  return _conv(x.reshape(n, rows // sh, cols // sw, sh * sw * c),
               kernel.reshape(taps_h, taps_w, sh * sw * c, o), (1, 1), ((0, 0), (0, 0)),
               precision)


def kernel_gradient(x: jnp.ndarray, dy: jnp.ndarray, kernel_shape: Sequence[int],
                    pads: Sequence[tuple[int, int]], precision: Any = None) -> jnp.ndarray:
  """dL/dW (kh, kw, C, O) of the stride-1 NHWC conv y = conv(x, W, pads), given dy = dL/dy:
  dW[i, j, c, o] = sum_{n, y, x} pad(x)[n, y + i, x + j, c] dy[n, y, x, o]."""
  kh, kw, c, o = kernel_shape
  n = x.shape[0]
  (top, bottom), (left, right) = pads
  if (kh, kw) == (1, 1) and not any((top, bottom, left, right)):
    return lax.dot_general(x.reshape(-1, c), dy.reshape(-1, o), (((0,), (0,)), ((), ())),
                           precision=precision).reshape(kernel_shape)
  height, width = x.shape[1:3]
  padded_h, padded_w = height + top + bottom, width + left + right
  out_h, out_w = dy.shape[1:3]
  if o < c:
    # Roles swapped when the output has fewer channels: dy is transposed, (O, rows, cols, 1),
    # and the padded activation is read as it lies, as a (N*Hp, Wp, 1, C) kernel.
    # out[o, p, q, c] = sum_{u, v} D[o, p + u, q + v] pad(x)[u, v, c] with D holding image
    # n's dy rows at n*Hp + kh - 1 + y (kh - 1 zero rows before each image, and at the end)
    # and its columns at kw - 1 + x: out[o, p, q, c] = dW[kh - 1 - p, kw - 1 - q, c, o].
    stacked_x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))).reshape(
        n * padded_h, padded_w, 1, c)
    transposed = jnp.transpose(dy.reshape(n * out_h * out_w, o)).reshape(o, n, out_h, out_w)
    transposed = jnp.pad(transposed, ((0, 0), (0, 0), (kh - 1, 0), (kw - 1, kw - 1)))
    stacked_dy = jnp.pad(transposed.reshape(o, n * padded_h, out_w + 2 * (kw - 1), 1),
                         ((0, 0), (0, kh - 1), (0, 0), (0, 0)))
    out = lax.conv_general_dilated(stacked_dy, stacked_x, (1, 1), 'VALID',
                                   dimension_numbers=_NHWC, precision=precision)  # (o,kh,kw,c)
    return jnp.transpose(out[:, ::-1, ::-1, :], (1, 2, 3, 0))
  # Transposed unpadded, as a 2-D (N*H*W, C) -> (C, N*H*W) transpose, and padded after.
  transposed = jnp.transpose(x.reshape(n * height * width, c))
  transposed = jnp.pad(transposed.reshape(c, n, height, width),
                       ((0, 0), (0, 0), (top, bottom), (left, right)))
  stacked_x = transposed.reshape(c, n * padded_h, padded_w, 1)
  # dy's rows padded to padded_h per image, then stacked: the kh - 1 zero rows after each
  # image keep every window inside one image; the last image's are not needed.
  extra = padded_h - out_h
  stacked_dy = jnp.pad(dy, ((0, 0), (0, extra), (0, 0), (0, 0))).reshape(
      n * padded_h, out_w, 1, o)[:n * padded_h - extra]
  dw = lax.conv_general_dilated(stacked_x, stacked_dy, (1, 1), 'VALID',
                                dimension_numbers=_NHWC, precision=precision)  # (c, kh, kw, o)
  return jnp.transpose(dw, (1, 2, 0, 3))


def conv_of_broadcast(values: jnp.ndarray, kernel: jnp.ndarray, spatial_shape: Sequence[int],
                      strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> jnp.ndarray:
  """The NHWC conv of per-image `values` (B, C) broadcast over a zero-padded H x W image, without
  building that image: out[b, p, q, o] = sum over the taps (i, j) that fall inside the image of
  sum_c values[b, c] kernel[i, j, c, o]. Equal to `conv_general_dilated(broadcast(values),
  kernel, strides, pads)` at a fraction of its cost (one (B, kh, kw, O) product, then which
  taps each output position sees)."""
  def inside(size: int, taps: int, stride: int, pad: tuple[int, int]) -> np.ndarray:
    lo, hi = pad
    positions = np.arange((size + lo + hi - taps) // stride + 1)[:, None] * stride - lo
    positions = positions + np.arange(taps)[None, :]
    return ((positions >= 0) & (positions < size)).astype(np.float32)  # (out, taps)

  (kh, kw), dtype = kernel.shape[:2], kernel.dtype
  rows = jnp.asarray(inside(spatial_shape[0], kh, strides[0], pads[0]), dtype)
  cols = jnp.asarray(inside(spatial_shape[1], kw, strides[1], pads[1]), dtype)
  per_tap = jnp.einsum('bc,ijco->bijo', values.astype(dtype), kernel)
  return jnp.einsum('qj,bpjo->bpqo', cols, jnp.einsum('pi,bijo->bpjo', rows, per_tap))


# Winograd's minimal filtering F(2, 3) (Lavin & Gray, "Fast Algorithms for Convolutional
# Neural Networks", CVPR 2016, eq. 7): y = A^T [(G g G^T) * (B^T d B)] A for a 4 x 4 input
# tile d, 3 x 3 kernel g and 2 x 2 output tile y.
_WINOGRAD_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_WINOGRAD_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_WINOGRAD_AT = ((1, 1, 1, 0), (0, 1, -1, -1))
# Convs with fewer input or output channels gain nothing on XLA:CPU (docs/BENCHMARKS.md).
WINOGRAD_MIN_CHANNELS = 256
# Input-transform bytes per band of tile rows: larger images are transformed and multiplied
# one band at a time (a loop), so the transformed tiles never hold more than this.
WINOGRAD_BAND_BYTES = 32 * 2**20


def takes_winograd(kernel_shape: Sequence[int]) -> bool:
  """Whether a stride-1 conv with this (kh, kw, C, O) kernel is one `winograd_conv3x3` speeds
  up: 3x3, at least WINOGRAD_MIN_CHANNELS in and out."""
  return (tuple(kernel_shape[:2]) == (3, 3)
          and min(kernel_shape[2:]) >= WINOGRAD_MIN_CHANNELS)


def _combine(matrix: Sequence[Sequence[float]], terms: Sequence[jnp.ndarray]
             ) -> list[jnp.ndarray]:
  """[sum_j matrix[i][j] * terms[j] for each row i] for a small constant matrix: adds and
  scalings of whole arrays (zero coefficients skipped), which XLA fuses."""
  rows = []
  for row in matrix:
    total = None
    for coefficient, term in zip(row, terms):
      if coefficient == 0:
        continue
      scaled = term if coefficient == 1 else (
          -term if coefficient == -1 else term * jnp.asarray(coefficient, term.dtype))
      total = scaled if total is None else total + scaled
    rows.append(total)
  return rows


def winograd_conv3x3(x: jnp.ndarray, kernel: jnp.ndarray, pads: Sequence[tuple[int, int]],
                     precision: Any = None, band_bytes: int = WINOGRAD_BAND_BYTES
                     ) -> jnp.ndarray:
  """The stride-1 NHWC conv with a (3, 3, C, O) kernel g and non-negative `pads`, by
  F(2x2, 3x3): the output in 2 x 2 tiles, each from the 4 x 4 input tile d under it, as
  A^T [(G g G^T) * (B^T d B)] A; the transforms are sums of slices, and the products of the
  16 transformed positions, (tiles, C) x (C, O) each, one batched matrix product: 16
  multiply-adds per 2 x 2 outputs where a direct conv does 36. Same values as
  `lax.conv_general_dilated` up to float rounding (its error under twice a direct float32
  conv's: tests/test_conv.py). Rows of tiles are taken in bands of at most `band_bytes` of
  transformed input, so memory stays that of the direct conv plus one band at any size.
  Inference only (differentiable, but not made fast)."""
  n, h, w, c = x.shape
  o = kernel.shape[-1]
  (top, bottom), (left, right) = pads
  out_h, out_w = h + top + bottom - 2, w + left + right - 2
  tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
  # U depends on x (a zero term): computed where this conv runs, not at the program's start,
  # where XLA:CPU's scheduler would make and hold every conv's U (16/9 of its kernel).
  kernel = kernel + jnp.zeros((), kernel.dtype) * x[0, 0, 0, 0].astype(kernel.dtype)
  half = jnp.stack(_combine(_WINOGRAD_G, [kernel[i] for i in range(3)]))  # G g: (4, 3, C, O)
  u16 = jnp.stack(_combine(_WINOGRAD_G, [half[:, j] for j in range(3)]), axis=1).reshape(
      16, c, o)  # G g G^T, [4 p + q]
  band = max(1, min(tiles_h, band_bytes // (16 * n * tiles_w * c * x.dtype.itemsize)))
  bands = -(-tiles_h // band)
  x = jnp.pad(x, ((0, 0), (top, 2 * bands * band + 2 - h - top),
                  (left, 2 * tiles_w + 2 - w - left), (0, 0)))

  def band_output(rows: jnp.ndarray) -> jnp.ndarray:  # (n, 2 band + 2, ...) -> (n, 2 band, ...)
    # B^T d B, one axis at a time: (4, 4, n, band, tiles_w, C), [p, q] the transformed position
    t = jnp.stack(_combine(_WINOGRAD_BT, [rows[:, i:i + 2 * band:2] for i in range(4)]))
    v = jnp.stack(_combine(_WINOGRAD_BT, [t[:, :, :, j:j + 2 * tiles_w:2] for j in range(4)]),
                  axis=1)
    # One batched product over the 16 positions (one kernel, not 16).
    m = lax.dot_general(v.reshape(16, -1, c), u16, (((2,), (1,)), ((0,), (0,))),
                        precision=precision).reshape(4, 4, -1, o)
    # A^T M A: y[a, b] is output (2 t + a, 2 s + b) of tile (t, s)
    y = jnp.stack(_combine(_WINOGRAD_AT, [m[p] for p in range(4)]))
    y = jnp.stack(_combine(_WINOGRAD_AT, [y[:, q] for q in range(4)]), axis=1)
    y = y.reshape(2, 2, n, band, tiles_w, o).transpose(2, 3, 0, 4, 1, 5)
    return y.reshape(n, 2 * band, 2 * tiles_w, o)

  # Band 0, padded to the whole output, is the loop's initial buffer: a buffer of zeros
  # instead depends on nothing, and XLA:CPU's scheduler would make every conv's at the
  # program's start and hold them all.
  out = jnp.pad(band_output(x[:, :2 * band + 2]),
                ((0, 0), (0, 2 * (bands - 1) * band), (0, 0), (0, 0)))

  def next_band(i: jnp.ndarray, out: jnp.ndarray) -> jnp.ndarray:
    rows = lax.dynamic_slice_in_dim(x, 2 * band * i, 2 * band + 2, axis=1)
    return lax.dynamic_update_slice_in_dim(out, band_output(rows), 2 * band * i, axis=1)

  if bands > 1:  # (not traced for one band: a restore's first call traces every conv)
    out = lax.fori_loop(1, bands, next_band, out)
  return out[:, :out_h, :out_w].astype(jnp.result_type(x, kernel))
