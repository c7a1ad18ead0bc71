"""Face enhancement of Wan et al. 2020 ("Old Photo Restoration via Deep Latent Space
Translation", TPAMI, sec. 3.4, Fig. 5, eqs. 16-18): the progressive SPADE generator G_f and its
multi-scale discriminator D_f.

G_f starts from z, the degraded face r_f down-sampled to s x s (8 x 8 for a 256 face), and
up-samples it 5 times (nearest x2) through SPADE residual blocks; r_f, resized to every scale,
modulates each normalisation (eq. 16): gamma(r_f^i) * BN(h) + beta(r_f^i). Sizes and layers are
the authors' release (microsoft/Bringing-Old-Photos-Back-to-Life, Face_Enhancement: the SPADE
generator with run.py's stage-3 flags `--label_nc 18 --no_instance --no_parsing_map`,
norm_G `spectralspadesyncbatch3x3`, `num_upsampling_layers normal`, ngf 64: 92,059,587
parameters, the paper's "92.1M"); docs/MODEL.md, "Wan et al.: face enhancement", lists every
choice and its source.

Faces are RGB (B, S, S, 3) in [0, 1], the aligned face resized to `load_size` (256; 512 for the
release's FaceSR_512); the networks map it to the release's [-1, 1] inside and the generator
maps its tanh back to [0, 1].

The release's block convs are spectral-normalised. `FaceGenerator(spectral_norm=False)` (the
default) holds the effective kernels W_orig / sigma that torch uses in eval mode, which is what
`weights.convert_face_generator` writes; `spectral_norm=True` is the training form
(`SpectralConv`: W_orig in params, torch's power-iteration vectors u, v in 'batch_stats'), and
`fold_spectral_norm` turns its variables into the default form's.
"""

import functools
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pikfix_jax.models import layers
from pikfix_jax.ops import conv

# Up-samplings of the release's `num_upsampling_layers` ('more' adds one between the middle
# blocks, 'most' also one more block at the end); the start is load_size // 2^n.
NUM_UPSAMPLING = {'normal': 5, 'more': 6, 'most': 7}
# The released checkpoints (Face_Enhancement/checkpoints/NAME/latest_net_G.pth) and the face
# size run.py runs each at (`--load_size`; FaceSR_512 with `--HR`).
RELEASE_CHECKPOINTS = {'Setting_9_epoch_100': 256, 'FaceSR_512': 512}
SPADE_HIDDEN = 128  # the release's hard-coded width of SPADE's shared conv
EPS = 1e-5  # torch (Sync)BatchNorm2d / InstanceNorm2d eps
SN_EPS = 1e-12  # torch spectral_norm's normalisation eps
LEAKY_SLOPE = 0.2
# The release's init (`--init_type xavier --init_variance 0.02`): xavier_normal_(gain=0.02),
# biases 0; only matters for training from scratch.
_xavier = nn.initializers.variance_scaling(0.02 ** 2, 'fan_avg', 'normal')


# Resampling exactly as the release's torch calls


@functools.lru_cache(maxsize=None)
def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """torch bilinear, align_corners=False, no anti-aliasing, along one axis: output i reads
  input src = (i + 0.5) n_in / n_out - 0.5 (clamped at 0) from floor(src) and the next pixel
  (clamped at the edge), weighted by the fraction. In float32 as torch's CPU kernel computes
  it (the scale n_in / n_out rounded first): in float64 the weights differ by ~1e-5 at
  non-integer scales."""
  scale = np.float32(n_in) / np.float32(n_out)
  src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5))
                   - np.float32(0.5), np.float32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int32), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  return i0, i1, np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)


def torch_bilinear(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """`F.interpolate(x, size=(height, width), mode='bilinear')` on NHWC: the release's resizing
  of the face to each scale. Unlike `layers.resize` it does not anti-alias when shrinking:
  256 -> 8 averages the 2 x 2 pixels at the centre of each 32 x 32 tile, as the release."""
  for axis, n_out in ((1, height), (2, width)):
    if x.shape[axis] != n_out:
      i0, i1, frac = _bilinear_taps(x.shape[axis], n_out)
      frac = jnp.asarray(frac, x.dtype).reshape([n_out if a == axis else 1 for a in range(4)])
      x = jnp.take(x, i0, axis=axis) * (1 - frac) + jnp.take(x, i1, axis=axis) * frac
  return x


def upsample_nearest2(x: jnp.ndarray) -> jnp.ndarray:
  """nn.Upsample(scale_factor=2) (nearest): each pixel repeated 2 x 2."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


# Spectral normalisation (Miyato et al. 2018) as torch.nn.utils.spectral_norm computes it


def _l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
  return x / jnp.maximum(jnp.linalg.norm(x), SN_EPS)


def torch_weight_matrix(kernel: jnp.ndarray) -> jnp.ndarray:
  """HWIO kernel -> torch's (out, in * kh * kw) weight matrix (the OIHW weight flattened)."""
  return jnp.transpose(kernel, (3, 2, 0, 1)).reshape(kernel.shape[-1], -1)


def spectral_sigma(kernel: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
  """sigma = u . (W v) with the stored vectors: torch's estimate, used as is in eval mode."""
  return jnp.dot(u, torch_weight_matrix(kernel) @ v)


class SpectralConv(nn.Module):
  """torch `spectral_norm(nn.Conv2d(..., padding=k // 2))` (stride 1, zero padding, or
  `padding` given): params kernel = W_orig (HWIO) and bias; 'batch_stats' u (out,) and v
  (in * kh * kw,), torch's weight_u / weight_v. With `update_stats` (training) one power
  iteration v = n(W^T u), u = n(W v) first updates them; the kernel used is W_orig / (u . W v),
  u and v held constant for the gradient, as torch."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: Optional[int] = None
  use_bias: bool = True
  kernel_init: Any = _xavier

  @nn.compact
  def __call__(self, x: jnp.ndarray, update_stats: bool = False) -> jnp.ndarray:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features))
    n_in = k * k * x.shape[-1]
    # torch starts from normalised N(0, 1) vectors
    u = self.variable('batch_stats', 'u',
                      lambda: _l2_normalize(jax.random.normal(self.make_rng('params'),
                                                              (self.features,))))
    v = self.variable('batch_stats', 'v',
                      lambda: _l2_normalize(jax.random.normal(self.make_rng('params'), (n_in,))))
    if update_stats and not self.is_initializing():
      w = jax.lax.stop_gradient(torch_weight_matrix(kernel))
      v.value = _l2_normalize(w.T @ u.value)
      u.value = _l2_normalize(w @ v.value)
    sigma = spectral_sigma(kernel, jax.lax.stop_gradient(u.value),
                           jax.lax.stop_gradient(v.value))
    pad = k // 2 if self.padding is None else self.padding
    y = conv.conv_general_dilated(x, (kernel / sigma).astype(x.dtype),
                                  (self.strides, self.strides), ((pad, pad), (pad, pad)),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(y.dtype)
    return y


def fold_spectral_norm(variables: Any) -> dict:
  """Variables of a `spectral_norm=True` network -> those of its default form: every
  SpectralConv's kernel replaced by kernel / (u . W v) with its stored u, v (torch's eval-mode
  weight), u and v dropped. Works on numpy or jax arrays; returns numpy float32."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  out = {}
  for path, value in flat.items():
    collection, *module, leaf = path
    if collection == 'batch_stats' and leaf in ('u', 'v'):
      continue
    value = np.asarray(value, np.float32)
    if collection == 'params' and leaf == 'kernel' and ('batch_stats', *module, 'u') in flat:
      u, v = (np.asarray(flat[('batch_stats', *module, n)], np.float64) for n in ('u', 'v'))
      w = value.astype(np.float64).transpose(3, 2, 0, 1).reshape(value.shape[-1], -1)
      sigma = np.dot(u, w @ v)
      if not (np.isfinite(sigma) and sigma > 0):  # torch would divide by it all the same
        raise ValueError(f'{"/".join(module)}: spectral norm sigma = u . W v is {sigma}, '
                         'not a positive number (corrupt u / v?)')
      value = (value / sigma).astype(np.float32)
    out[path] = value
  return flax.traverse_util.unflatten_dict(out)


def _conv(features: int, kernel: int, name: str, spectral: bool = False,
          use_bias: bool = True) -> nn.Module:
  if spectral:
    return SpectralConv(features, kernel, use_bias=use_bias, name=name)
  pad = kernel // 2
  return layers.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                     use_bias=use_bias, kernel_init=_xavier, name=name)


# Generator G_f (sec. 3.4)


class SPADE(nn.Module):
  """Eq. 16: the parameter-free BatchNorm of h (torch's SyncBatchNorm without affine: running
  statistics in eval, batch statistics when `train`), modulated per element as
  BN(h) (1 + gamma) + beta, with gamma, beta = 3x3 convs of ReLU(3x3 conv (`hidden` wide) of
  the degraded face resized bilinearly to h's size) (the release's "no parsing map" form: the
  condition is the face alone)."""
  hidden: int = SPADE_HIDDEN

  @nn.compact
  def __call__(self, h: jnp.ndarray, face: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    c = h.shape[-1]
    # momentum 0.9 = torch's 0.1. Flax keeps the biased batch variance as the running one
    # (torch the unbiased): a training-only difference of a factor n / (n - 1).
    normalized = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=EPS,
                              use_scale=False, use_bias=False, name='param_free_norm')(h)
    cond = torch_bilinear(face, h.shape[1], h.shape[2]).astype(h.dtype)
    actv = nn.relu(_conv(self.hidden, 3, 'mlp_shared')(cond))
    gamma = _conv(c, 3, 'mlp_gamma')(actv)
    beta = _conv(c, 3, 'mlp_beta')(actv)
    return normalized * (1.0 + gamma) + beta


class SPADEResBlock(nn.Module):
  """The release's SPADE residual block: out = shortcut + conv_1(a(SPADE_1(conv_0(a(SPADE_0(x)))))),
  a = LeakyReLU(0.2), 3x3 convs to min(fin, fout) then `features`; the shortcut is x, or
  conv_s(SPADE_s(x)) (1x1, no bias) when the width changes. Block convs are spectral-normalised
  in the release (`spectral`: the training form; otherwise folded kernels)."""
  features: int
  hidden: int = SPADE_HIDDEN
  spectral: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, face: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    fin, fout = x.shape[-1], self.features
    mid = min(fin, fout)
    act = lambda t: nn.leaky_relu(t, LEAKY_SLOPE)

    def conv_(features, kernel, name, use_bias=True):
      module = _conv(features, kernel, name, self.spectral, use_bias)
      return (functools.partial(module, update_stats=train) if self.spectral else module)

    skip = x
    if fin != fout:
      skip = conv_(fout, 1, 'conv_s', use_bias=False)(
          SPADE(self.hidden, name='norm_s')(x, face, train))
    dx = conv_(mid, 3, 'conv_0')(act(SPADE(self.hidden, name='norm_0')(x, face, train)))
    dx = conv_(fout, 3, 'conv_1')(act(SPADE(self.hidden, name='norm_1')(dx, face, train)))
    return skip + dx


class FaceGenerator(nn.Module):
  """G_f (sec. 3.4, Fig. 5): aligned face r_f (B, H, W, 3) in [0, 1] (H = W = load_size in the
  release) -> enhanced face (B, S, S, 3) in [0, 1], S = s 2^n, s = load_size // 2^n,
  n = NUM_UPSAMPLING[num_upsampling_layers] (5: 8 -> 256, or 16 -> 512 for the release's
  FaceSR_512, which run.py runs with the same 'normal' layers at --load_size 512).

  z = r_f resized bilinearly to s x s (the paper's "8 x 8 down-sampled patch"), a 3x3 conv to
  16 ngf channels (`fc`), then SPADE residual blocks: head_0 (16 ngf) at s, x2, G_middle_0,
  G_middle_1 (16 ngf), then x2 + up_0..up_3 (8, 4, 2, 1 ngf); 'most' adds x2 + up_4 (ngf / 2);
  LeakyReLU, 3x3 conv to RGB, tanh, mapped to [0, 1]. Every block's SPADE sees r_f (eq. 16).
  `train`: BatchNorm batch statistics (and, with `spectral_norm`, one power iteration),
  both updated in 'batch_stats'."""
  load_size: int = 256
  ngf: int = 64
  num_upsampling_layers: str = 'normal'
  spade_hidden: int = SPADE_HIDDEN
  spectral_norm: bool = False

  def start_size(self) -> int:
    if self.num_upsampling_layers not in NUM_UPSAMPLING:
      raise ValueError(f'num_upsampling_layers={self.num_upsampling_layers!r}: use one of '
                       f'{tuple(NUM_UPSAMPLING)}')
    n = NUM_UPSAMPLING[self.num_upsampling_layers]
    if self.load_size < 2 ** n:
      raise ValueError(f'load_size {self.load_size} is below 2^{n}: no {n} up-samplings fit')
    return self.load_size // 2 ** n

  @nn.compact
  def __call__(self, face: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    s, nf, mode = self.start_size(), self.ngf, self.num_upsampling_layers
    r_f = 2.0 * face - 1.0  # the release's Normalize(0.5, 0.5)
    block = lambda width, name: SPADEResBlock(width, self.spade_hidden, self.spectral_norm,
                                              name=name)
    x = _conv(16 * nf, 3, 'fc')(torch_bilinear(r_f, s, s))
    x = block(16 * nf, 'head_0')(x, r_f, train)
    x = block(16 * nf, 'G_middle_0')(upsample_nearest2(x), r_f, train)
    if mode in ('more', 'most'):
      x = upsample_nearest2(x)
    x = block(16 * nf, 'G_middle_1')(x, r_f, train)
    widths = [8 * nf, 4 * nf, 2 * nf, nf] + ([nf // 2] if mode == 'most' else [])
    for i, width in enumerate(widths):
      x = block(width, f'up_{i}')(upsample_nearest2(x), r_f, train)
    x = _conv(3, 3, 'conv_img')(nn.leaky_relu(x, LEAKY_SLOPE))
    return ((jnp.tanh(x) + 1.0) / 2.0).astype(jnp.float32)


# Discriminator D_f (eq. 18)


class _NLayerDiscriminator(nn.Module):
  """SPADE's NLayerDiscriminator (`norm_D spectralinstance`): 4x4 convs, padding 2; the first
  (stride 2, bias, no norm) and last (to 1 logit, stride 1) plain, the middle ones
  spectral-normalised without bias + instance norm (no affine); widths features * 2^n capped
  at 512, strides 2 but the last middle conv 1; LeakyReLU 0.2."""
  features: int = 64
  num_layers: int = 4
  spectral_norm: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False
               ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
    def plain(features, stride, name):
      return layers.Conv(features, (4, 4), strides=(stride, stride), padding=((2, 2), (2, 2)),
                         kernel_init=_xavier, name=name)

    x = nn.leaky_relu(plain(self.features, 2, 'conv0')(x), LEAKY_SLOPE)
    features, width = [x], self.features
    for n in range(1, self.num_layers):
      width = min(width * 2, 512)
      stride = 1 if n == self.num_layers - 1 else 2
      if self.spectral_norm:
        x = SpectralConv(width, 4, stride, 2, use_bias=False, name=f'conv{n}')(x, train)
      else:
        x = layers.Conv(width, (4, 4), strides=(stride, stride), padding=((2, 2), (2, 2)),
                        use_bias=False, kernel_init=_xavier, name=f'conv{n}')(x)
      x = nn.GroupNorm(num_groups=None, group_size=1, epsilon=EPS, use_scale=False,
                       use_bias=False)(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
      features.append(x)
    logits = plain(1, 1, f'conv{self.num_layers}')(x)
    return logits.astype(jnp.float32), tuple(features)


class FaceDiscriminator(nn.Module):
  """D_f of eq. 18, for training (the release ships no discriminator; the paper's
  "same ... discriminator" as its Pix2Pix comparison, and the SPADE code base the generator
  comes from, give SPADE's MultiscaleDiscriminator): `num_d` NLayer discriminators
  (`num_layers` 4, 64 features, spectral norm + instance norm), the k-th on the image
  average-pooled k times (3x3, stride 2, pad 1, padding not counted).

  D(face) (the release with `--no_parsing_map` feeds the image alone: eq. 18 is unconditional)
  or D(face, condition) (concatenated on channels). Images in [0, 1], mapped to [-1, 1].
  Returns one (logits, features) per scale, finest first (LSGAN logits for eq. 18; features
  for feature matching). `train`: the spectral norms' power iteration updates 'batch_stats'."""
  num_d: int = 2
  features: int = 64
  num_layers: int = 4
  spectral_norm: bool = True

  @nn.compact
  def __call__(self, face: jnp.ndarray, condition: Optional[jnp.ndarray] = None,
               train: bool = False) -> list[tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]]:
    x = 2.0 * face - 1.0
    if condition is not None:
      x = jnp.concatenate([2.0 * condition - 1.0, x], axis=-1)
    outputs = []
    for k in range(self.num_d):
      outputs.append(_NLayerDiscriminator(self.features, self.num_layers, self.spectral_norm,
                                          name=f'scale{k}')(x, train))
      if k + 1 < self.num_d:
        x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                        count_include_pad=False)
    return outputs


# Release state-dict names

_TORCH_LEAF = {'kernel': 'weight', 'bias': 'bias', 'mean': 'running_mean',
               'var': 'running_var', 'u': 'weight_u', 'v': 'weight_v'}


def torch_key(path: tuple[str, ...], spectral: bool = False) -> str:
  """Flax path in a FaceGenerator collection -> the release's state-dict key:
  ('head_0', 'norm_0', 'mlp_shared', 'kernel') -> 'head_0.norm_0.mlp_shared.0.weight' (the
  release's Sequential(conv, ReLU)); ('up_0', 'conv_s', 'kernel') -> 'up_0.conv_s.weight_orig'
  when `spectral` (a SpectralConv, whose u / v are 'weight_u' / 'weight_v')."""
  *modules, leaf = path
  name = '.'.join('mlp_shared.0' if m == 'mlp_shared' else m for m in modules)
  torch_leaf = _TORCH_LEAF[leaf]
  if spectral and leaf == 'kernel':
    torch_leaf = 'weight_orig'
  return f'{name}.{torch_leaf}'
