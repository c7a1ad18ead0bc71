"""GFP-GAN (Wang, Li, Zhang, Shan, "Towards Real-World Blind Face Restoration with Generative
Facial Prior", CVPR 2021) as released for GFPGANv1.3 / v1.4: the "clean" architecture
(TencentARC/GFPGAN, gfpgan/archs/gfpganv1_clean_arch.py `GFPGANv1Clean` over
stylegan2_clean_arch.py `StyleGAN2GeneratorClean`), which needs no custom CUDA ops.

Paper sec. 3 (Fig. 2): a degradation-removal U-Net ("Degradation Removal Module") encodes the
degraded face into latent codes (one W per generator layer, "different_w"; "Latent Code
Mapping") and, at every decoder level, spatial features from which the Channel-Split Spatial
Feature Transform (CS-SFT: the identity half of the channels kept, the other half scaled and
shifted, alpha * F + beta) conditions a StyleGAN2 generator (the generative facial prior;
Karras et al. 2020, modulated convolutions with demodulation, noise injection, skip ToRGB).

Input: an aligned face (B, out_size, out_size, 3), RGB in [-1, 1] (GFPGANer: (rgb / 255 - 0.5)
/ 0.5); output: the restored face in the same range, unclamped (GFPGANer clamps to [-1, 1] when
it converts to 8 bits), and the U-Net's intermediate RGB images (for the paper's pyramid
restoration loss) at 8, 16, ..., out_size.

Every module and parameter is named after the release's state-dict key, so the conversion is
mechanical (pikfix_jax/weights.py `gfpgan_torch_key`): Flax path components joined by '.', each
'_<index>' turned into '.<index>'; leaf 'kernel' is torch 'weight' (convs OIHW -> HWIO, the
modulated convs' (1, O, I, k, k) -> (1, k, k, I, O), linears transposed); other leaves keep
their names, 4-D ones NCHW -> NHWC. The release's fixed noise maps (`stylegan_decoder.noises.*`,
buffers in its files) are the 'buffers' collection. docs/MODEL.md, "GFP-GAN", lists the choices.
"""

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from pikfix_jax.models import layers
from pikfix_jax.ops import conv

LEAKY_SLOPE = 0.2
DEMOD_EPS = 1e-8  # StyleGAN2's demodulation epsilon (eq. 3 of Karras et al. 2020)
STYLE_NORM_EPS = 1e-8
# The release's clean StyleConv multiplies the modulated conv by sqrt(2): the gain of the
# original StyleGAN2's FusedLeakyReLU, moved before the (positively homogeneous) activation.
STYLE_CONV_GAIN = math.sqrt(2.0)

# PyTorch's default Conv2d / Linear weight init (kaiming_uniform, a = sqrt(5): U(+-1/sqrt(fan_in)))
# for the U-Net, which the release leaves at torch's defaults; biases start at 0 here.
_torch_default_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')
# The release's StyleGAN2 inits: modulated weights N(0, 1/fan_in); modulation linears Kaiming
# normal (linear gain) with bias 1; style MLP Kaiming normal with leaky-ReLU(0.2) gain.
_fan_in_normal = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
_style_mlp_init = nn.initializers.variance_scaling(2 / (1 + LEAKY_SLOPE ** 2), 'fan_in', 'normal')


def channels(narrow: float = 1.0, channel_multiplier: float = 2) -> dict[int, int]:
  """The release's width per resolution: 512 up to 32 px, then 256, 128, 64, 32, 16 times
  `channel_multiplier` at 64 .. 1024 px, all times `narrow` (truncated to int). The U-Net uses
  `narrow / 2`, so with sft_half its features match the half of the decoder that SFT changes."""
  widths = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier,
            128: 128 * channel_multiplier, 256: 64 * channel_multiplier,
            512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
  return {side: int(width * narrow) for side, width in widths.items()}


def log_size(out_size: int) -> int:
  """log2(out_size) for a power of two from 8 to 1024 (the release's channel table)."""
  n = int(round(math.log2(out_size))) if out_size > 0 else 0
  if out_size not in [2 ** k for k in range(3, 11)]:
    raise ValueError(f'GFP-GAN out_size={out_size}: expected a power of two from 8 to 1024')
  return n


def num_latent(out_size: int) -> int:
  """W codes the generator reads: 2 per level (4 px: conv + ToRGB; then conv, conv, ToRGB with
  the ToRGB sharing the next level's first code)."""
  return 2 * log_size(out_size) - 2


def noise_shapes(out_size: int, batch: int = 1) -> list[tuple[int, int, int, int]]:
  """NHWC shapes of the per-layer noise maps: 4 px once, then two per level (8, 8, 16, 16, ...)."""
  n = 2 * (log_size(out_size) - 2) + 1
  return [(batch, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), 1) for i in range(n)]


def _leaky(x: jnp.ndarray) -> jnp.ndarray:
  return nn.leaky_relu(x, LEAKY_SLOPE)


def _upsample2(x: jnp.ndarray) -> jnp.ndarray:
  # torch F.interpolate(scale_factor=2, bilinear, align_corners=False): half-pixel centres,
  # edges clamped, as layers.resize's integer-factor stencil.
  return layers.resize(x, 2 * x.shape[1], 2 * x.shape[2])


def _downsample2(x: jnp.ndarray) -> jnp.ndarray:
  # torch's bilinear scale 0.5 (align_corners=False, no antialias) samples at 2i + 0.5: the mean
  # of each 2x2 tile, exactly. layers.resize would anti-alias (a wider filter), so not that.
  return layers.downsample(x, 2)


def _conv(features: int, kernel: int, use_bias: bool = True, name: Optional[str] = None
          ) -> nn.Module:
  pad = kernel // 2
  return layers.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                     use_bias=use_bias, kernel_init=_torch_default_init, name=name)


class ModulatedConv(nn.Module):
  """StyleGAN2's modulated convolution (Karras et al. 2020, eqs. 1-3), no bias: the style gives a
  scale s_i per input channel (`modulation`, a linear layer of the W code); w'_oi = s_i w_oi,
  then (demodulate) w''_oi = w'_oi / sqrt(sum_{i,k} w'_oik^2 + 1e-8).

  Computed as conv(s * x, w) * d (StyleGAN2's non-fused form: same function as the release's
  per-sample grouped conv of the modulated weight, one batched conv instead of B; d from
  sum_i s_i^2 sum_k w_oik^2). `sample_mode` 'upsample' / 'downsample' resizes x bilinearly by 2
  first (the clean arch; the original used a blurred transposed conv)."""
  features: int
  kernel_size: int
  demodulate: bool = True
  sample_mode: Optional[str] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, style: jnp.ndarray) -> jnp.ndarray:
    c, k = x.shape[-1], self.kernel_size
    s = nn.Dense(c, kernel_init=_fan_in_normal, bias_init=nn.initializers.ones,
                 name='modulation')(style)  # (B, C_in)
    kernel = self.param('kernel', _fan_in_normal, (1, k, k, c, self.features))[0]
    if self.sample_mode == 'upsample':
      x = _upsample2(x)
    elif self.sample_mode == 'downsample':
      x = _downsample2(x)
    elif self.sample_mode is not None:
      raise ValueError(f'sample_mode={self.sample_mode!r}: expected upsample, downsample or None')
    y = conv.conv_general_dilated(x * s[:, None, None, :], kernel, (1, 1),
                                  ((k // 2, k // 2), (k // 2, k // 2)),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.demodulate:
      norm = jnp.einsum('bi,io->bo', jnp.square(s), jnp.sum(jnp.square(kernel), axis=(0, 1)))
      y = y * lax.rsqrt(norm + DEMOD_EPS)[:, None, None, :]
    return y


class StyleConv(nn.Module):
  """Modulated 3x3 conv (demodulated) x sqrt(2), + noise x a learned strength (`weight`, one
  scalar per layer; StyleGAN's per-pixel noise, one map shared by all channels), + bias,
  LeakyReLU 0.2."""
  features: int
  sample_mode: Optional[str] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, style: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
    out = ModulatedConv(self.features, 3, True, self.sample_mode, name='modulated_conv')(x, style)
    strength = self.param('weight', nn.initializers.zeros, (1,))
    bias = self.param('bias', nn.initializers.zeros, (1, 1, 1, self.features))
    return _leaky(out * STYLE_CONV_GAIN + strength * noise + bias)


class ToRGB(nn.Module):
  """Modulated 1x1 conv to RGB (no demodulation) + bias, plus the previous level's RGB
  upsampled bilinearly by 2: StyleGAN2's skip-connected output (Karras et al. 2020, Fig. 7)."""
  upsample: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, style: jnp.ndarray,
               skip: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    out = ModulatedConv(3, 1, demodulate=False, name='modulated_conv')(x, style)
    out = out + self.param('bias', nn.initializers.zeros, (1, 1, 1, 3))
    if skip is not None:
      out = out + (_upsample2(skip) if self.upsample else skip)
    return out


class ConstantInput(nn.Module):
  """The generator's learned 4x4 input (`weight`, (1, 4, 4, C)), the same for every image."""
  features: int

  @nn.compact
  def __call__(self, batch: int) -> jnp.ndarray:
    weight = self.param('weight', nn.initializers.normal(1.0), (1, 4, 4, self.features))
    return jnp.broadcast_to(weight, (batch,) + weight.shape[1:])


class NoiseBuffers(nn.Module):
  """The release's fixed noise maps `noise0` .. (collection 'buffers', (1, side, side, 1),
  N(0, 1) at init); used only with randomize_noise=False."""
  out_size: int

  @nn.compact
  def __call__(self) -> list[jnp.ndarray]:
    return [self.variable('buffers', f'noise{i}',
                          lambda s=s: jax.random.normal(self.make_rng('params'), s)).value
            for i, s in enumerate(noise_shapes(self.out_size))]


class StyleGAN2GeneratorCSFT(nn.Module):
  """StyleGAN2 generator ("clean") with CS-SFT after the first conv of every level from 8 px
  (GFP-GAN's CS-SFT): F_out = Split_0(F) ++ (alpha * Split_1(F) + beta) with `sft_half`, else
  alpha * F + beta on all channels; (alpha, beta) = conditions[2j], conditions[2j + 1] at level j.

  `styles`: (B, S) W codes (repeated for every layer) or (B, num_latent, S), one per layer;
  mapped by the 8-layer style MLP (pixel norm, then Linear + LeakyReLU 0.2) unless
  `input_is_latent` (GFP-GAN's encoder predicts W directly; the MLP's parameters stay in the
  released files and are created here too). `noise`: one (B or 1, side, side, 1) map per
  StyleConv (`noise_shapes`); None draws N(0, 1) from rng 'noise' (randomize_noise, the
  release's default) or reads the 'buffers' collection. No truncation or style mixing."""
  out_size: int
  num_style_feat: int = 512
  num_mlp: int = 8
  channel_multiplier: float = 2
  narrow: float = 1.0
  sft_half: bool = False

  @nn.compact
  def __call__(self, styles: jnp.ndarray, conditions: Sequence[jnp.ndarray],
               input_is_latent: bool = False, noise: Optional[Sequence[jnp.ndarray]] = None,
               randomize_noise: bool = True) -> jnp.ndarray:
    n_latent = num_latent(self.out_size)
    ch = channels(self.narrow, self.channel_multiplier)
    if not input_is_latent or self.is_initializing():
      mapped = self._style_mlp(styles if not input_is_latent
                               else jnp.zeros((1, self.num_style_feat), jnp.float32))
      if not input_is_latent:
        styles = mapped
    batch = styles.shape[0]
    latent = styles if styles.ndim == 3 else jnp.broadcast_to(
        styles[:, None], (batch, n_latent, styles.shape[-1]))
    if latent.shape[1:] != (n_latent, self.num_style_feat):
      raise ValueError(f'styles {styles.shape}: expected (B, {self.num_style_feat}) or '
                       f'(B, {n_latent}, {self.num_style_feat})')
    buffers = None
    if self.is_initializing() or (noise is None and not randomize_noise):
      buffers = NoiseBuffers(self.out_size, name='noises')()
    if noise is None:
      noise = buffers if not randomize_noise else [
          jax.random.normal(self.make_rng('noise'), shape)
          for shape in noise_shapes(self.out_size, batch)]
    if len(noise) != len(noise_shapes(self.out_size)):
      raise ValueError(f'{len(noise)} noise maps: expected {len(noise_shapes(self.out_size))}')

    out = ConstantInput(ch[4], name='constant_input')(batch)
    out = StyleConv(ch[4], name='style_conv1')(out, latent[:, 0], noise[0])
    skip = ToRGB(upsample=False, name='to_rgb1')(out, latent[:, 1])
    for j in range(log_size(self.out_size) - 2):
      i = 2 * j + 1  # the release's latent / noise index of this level's first conv
      c = ch[2 ** (j + 3)]
      out = StyleConv(c, 'upsample', name=f'style_convs_{2 * j}')(out, latent[:, i], noise[i])
      if i < len(conditions):  # the U-Net may condition fewer levels
        scale, shift = conditions[i - 1], conditions[i]
        if self.sft_half:
          half = out.shape[-1] // 2
          out = jnp.concatenate([out[..., :half], out[..., half:] * scale + shift], axis=-1)
        else:
          out = out * scale + shift
      out = StyleConv(c, name=f'style_convs_{2 * j + 1}')(out, latent[:, i + 1], noise[i + 1])
      skip = ToRGB(name=f'to_rgbs_{j}')(out, latent[:, i + 2], skip)
    return skip

  def _style_mlp(self, z: jnp.ndarray) -> jnp.ndarray:
    """Pixel norm then num_mlp x (Linear + LeakyReLU 0.2); torch Sequential indices 1, 3, ..."""
    x = z * lax.rsqrt(jnp.mean(jnp.square(z), axis=-1, keepdims=True) + STYLE_NORM_EPS)
    for i in range(self.num_mlp):
      x = _leaky(nn.Dense(self.num_style_feat, kernel_init=_style_mlp_init,
                          name=f'style_mlp_{2 * i + 1}')(x))
    return x


class ResBlock(nn.Module):
  """The U-Net's residual block: conv3x3 (C_in) + LeakyReLU, bilinear resampling by 2
  ('down' / 'up'), conv3x3 (C_out) + LeakyReLU; plus a bias-free 1x1 conv of the resampled input."""
  features: int
  mode: str = 'down'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    resample = _downsample2 if self.mode == 'down' else _upsample2
    out = resample(_leaky(_conv(x.shape[-1], 3, name='conv1')(x)))
    out = _leaky(_conv(self.features, 3, name='conv2')(out))
    return out + _conv(self.features, 1, use_bias=False, name='skip')(resample(x))


class GFPGANv1Clean(nn.Module):
  """GFP-GAN (Fig. 2): degradation-removal U-Net + StyleGAN2 prior with CS-SFT.

  U-Net (the degradation removal module; widths `channels(narrow / 2)`): 1x1 conv +
  LeakyReLU, log2(out_size) - 2 down ResBlocks to 4x4, 3x3 conv + LeakyReLU; the flattened
  4x4 features give the latent codes through one linear layer (`final_linear`, num_latent x S
  outputs with `different_w`); then as many up ResBlocks, each adding the encoder's feature of
  its input size first (U-Net skip), and from each level's features: SFT scale and shift
  (`condition_scale_j` / `condition_shift_j`: conv3x3, LeakyReLU, conv3x3) and an intermediate
  RGB image (`toRGB_j`, 1x1). The decoder is `StyleGAN2GeneratorCSFT` (`stylegan_decoder`).

  Defaults are GFPGANer's for v1.3 / v1.4 (out_size 512, S = 512, channel_multiplier 2, 8 MLP
  layers, input_is_latent, different_w, narrow 1, sft_half): 86,444,252 parameters (plus
  699,024 noise-buffer values). Returns (image, out_rgbs); out_rgbs is [] unless `return_rgb`.
  rngs: 'noise' when randomize_noise and no `noise` is given.
  """
  out_size: int = 512
  num_style_feat: int = 512
  channel_multiplier: float = 2
  num_mlp: int = 8
  input_is_latent: bool = True
  different_w: bool = True
  narrow: float = 1.0
  sft_half: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, noise: Optional[Sequence[jnp.ndarray]] = None,
               randomize_noise: bool = True, return_rgb: bool = True
               ) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    n = log_size(self.out_size)
    if x.ndim != 4 or x.shape[1:] != (self.out_size, self.out_size, 3):
      raise ValueError(f'GFP-GAN input {x.shape}: expected (B, {self.out_size}, '
                       f'{self.out_size}, 3), an aligned face in [-1, 1]')
    ch = channels(self.narrow * 0.5, self.channel_multiplier)
    feat = _leaky(_conv(ch[self.out_size], 1, name='conv_body_first')(x))
    skips = []
    for i in range(n - 2):
      feat = ResBlock(ch[2 ** (n - 1 - i)], 'down', name=f'conv_body_down_{i}')(feat)
      skips.insert(0, feat)
    feat = _leaky(_conv(ch[4], 3, name='final_conv')(feat))
    # The release flattens NCHW features (channel-major); transposing first keeps final_linear's
    # kernel a plain transpose of the released weight.
    flat = jnp.transpose(feat, (0, 3, 1, 2)).reshape(feat.shape[0], -1)
    codes = num_latent(self.out_size) if self.different_w else 1
    style = nn.Dense(codes * self.num_style_feat, kernel_init=_torch_default_init,
                     bias_init=nn.initializers.zeros, name='final_linear')(flat)
    if self.different_w:
      style = style.reshape(style.shape[0], codes, self.num_style_feat)

    conditions, out_rgbs = [], []
    for i in range(n - 2):
      c = ch[2 ** (i + 3)]
      feat = ResBlock(c, 'up', name=f'conv_body_up_{i}')(feat + skips[i])
      sft_c = c if self.sft_half else 2 * c
      for branch in ('condition_scale', 'condition_shift'):
        hidden = _leaky(_conv(c, 3, name=f'{branch}_{i}_0')(feat))
        conditions.append(_conv(sft_c, 3, name=f'{branch}_{i}_2')(hidden))
      if return_rgb or self.is_initializing():
        rgb = _conv(3, 1, name=f'toRGB_{i}')(feat)
        if return_rgb:
          out_rgbs.append(rgb)
    decoder = StyleGAN2GeneratorCSFT(
        self.out_size, self.num_style_feat, self.num_mlp, self.channel_multiplier, self.narrow,
        self.sft_half, name='stylegan_decoder')
    image = decoder(style, conditions, self.input_is_latent, noise, randomize_noise)
    return image, out_rgbs


# ----------------------------------------------------------------------- the discriminator
# GFP-GAN trains against StyleGAN2's residual discriminator (the release's options name basicsr's
# `StyleGAN2Discriminator`, resample kernel [1, 3, 3, 1]; Karras et al. 2020, Fig. 7c). Modules
# are named after its state-dict keys, as the generator's, so `weights.gfpgan_torch_key` maps
# them ('conv_body_1' / 'conv1_0' / 'kernel' -> 'conv_body.1.conv1.0.weight').

RESAMPLE_KERNEL = (1.0, 3.0, 3.0, 1.0)
STDDEV_GROUP = 4
STDDEV_EPS = 1e-8


def _blur(x: jnp.ndarray, pad: tuple[int, int]) -> jnp.ndarray:
  """The release's UpFirDnSmooth before a stride-2 conv: zero-pad (pad[0] before, pad[1] after)
  both spatial axes, then the separable FIR of RESAMPLE_KERNEL normalised to sum 1 (symmetric,
  so correlation = convolution); the output is 3 pixels smaller than the padded input."""
  k = jnp.asarray(RESAMPLE_KERNEL, x.dtype) / sum(RESAMPLE_KERNEL)
  x = jnp.pad(x, ((0, 0), pad, pad, (0, 0)))
  for axis in (1, 2):
    n = x.shape[axis] - len(RESAMPLE_KERNEL) + 1
    x = sum(k[i] * lax.slice_in_dim(x, i, i + n, axis=axis) for i in range(len(k)))
  return x


class EqualConv(nn.Module):
  """StyleGAN's equalised-learning-rate conv: the weight stored N(0, 1) and scaled by
  1/sqrt(fan_in) when applied; `downsample`: the blur, then stride 2 without padding (the
  release's ConvLayer); else 'same' zero padding."""
  features: int
  kernel_size: int
  use_bias: bool = False
  downsample: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', nn.initializers.normal(1.0), (k, k, c, self.features))
    if self.downsample:
      pad = len(RESAMPLE_KERNEL) - 2 + k - 1
      x = _blur(x, ((pad + 1) // 2, pad // 2))
      strides, padding = (2, 2), ((0, 0), (0, 0))
    else:
      strides, padding = (1, 1), ((k // 2, k // 2), (k // 2, k // 2))
    y = conv.conv_general_dilated(x, kernel / math.sqrt(c * k * k), strides, padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


class FusedLeakyReLU(nn.Module):
  """StyleGAN2's biased activation: LeakyReLU_0.2(x + bias) * sqrt(2) (the gain that keeps the
  equalised layers' activations at unit scale)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],))
    return _leaky(x + bias) * math.sqrt(2.0)


class EqualLinear(nn.Module):
  """Equalised linear layer (weight N(0, 1) x 1/sqrt(fan_in), bias 0), optionally followed by
  the fused LeakyReLU on its own bias (the release's activation='fused_lrelu')."""
  features: int
  activate: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param('kernel', nn.initializers.normal(1.0), (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    y = x @ (kernel / math.sqrt(x.shape[-1]))
    return _leaky(y + bias) * math.sqrt(2.0) if self.activate else y + bias


class DiscriminatorResBlock(nn.Module):
  """conv3x3 + act, blurred stride-2 conv3x3 + act, plus a blurred stride-2 1x1 skip (no bias,
  no activation); the sum divided by sqrt(2)."""
  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    out = FusedLeakyReLU(name='conv1_1')(EqualConv(x.shape[-1], 3, name='conv1_0')(x))
    out = FusedLeakyReLU(name='conv2_2')(
        EqualConv(self.features, 3, downsample=True, name='conv2_1')(out))
    skip = EqualConv(self.features, 1, downsample=True, name='skip_1')(x)
    return (out + skip) / math.sqrt(2.0)


def minibatch_stddev(x: jnp.ndarray, group: int = STDDEV_GROUP) -> jnp.ndarray:
  """StyleGAN's minibatch standard deviation as one more channel: images are grouped as the
  release's view(group, -1, ...) does (image i with i + B/G, i + 2B/G, ...; G = min(B, group),
  which must divide B), each feature's std over its group (biased, + 1e-8 under the root),
  averaged over features and positions."""
  b, h, w, c = x.shape
  g = min(b, group)
  if b % g:
    raise ValueError(f'minibatch stddev: batch {b} is not a multiple of the group size {g}')
  grouped = x.reshape(g, b // g, h, w, c)
  std = jnp.sqrt(jnp.var(grouped, axis=0) + STDDEV_EPS)  # (B/G, H, W, C)
  stat = jnp.mean(std, axis=(1, 2, 3))  # (B/G,)
  stat = jnp.tile(stat, g)[:, None, None, None]  # image i gets the stat of i mod B/G
  return jnp.concatenate([x, jnp.broadcast_to(stat, (b, h, w, 1)).astype(x.dtype)], axis=-1)


class StyleGAN2Discriminator(nn.Module):
  """StyleGAN2's residual discriminator as GFP-GAN trains with it (the release's options,
  basicsr's StyleGAN2Discriminator): a face (B, out_size, out_size, 3) in [-1, 1] -> one logit
  per image (B, 1). 1x1 conv + act at out_size; log2(out_size) - 2 residual blocks halving to
  4x4 (widths `channels(narrow, channel_multiplier)` of the next level); the minibatch stddev
  channel; conv3x3 + act; the flattened 4x4 features (channel-major, as the release's NCHW
  view) through a linear + act and a linear to the logit. Equalised learning rate throughout
  (weights N(0, 1), scaled when applied)."""
  out_size: int = 512
  channel_multiplier: float = 2
  narrow: float = 1.0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n = log_size(self.out_size)
    if x.ndim != 4 or x.shape[1:] != (self.out_size, self.out_size, 3):
      raise ValueError(f'discriminator input {x.shape}: expected (B, {self.out_size}, '
                       f'{self.out_size}, 3)')
    ch = channels(self.narrow, self.channel_multiplier)
    out = EqualConv(ch[self.out_size], 1, name='conv_body_0_0')(x)
    out = FusedLeakyReLU(name='conv_body_0_1')(out)
    for i, level in enumerate(range(n, 2, -1)):
      out = DiscriminatorResBlock(ch[2 ** (level - 1)], name=f'conv_body_{i + 1}')(out)
    out = minibatch_stddev(out)
    out = FusedLeakyReLU(name='final_conv_1')(EqualConv(ch[4], 3, name='final_conv_0')(out))
    flat = jnp.transpose(out, (0, 3, 1, 2)).reshape(out.shape[0], -1)
    hidden = EqualLinear(ch[4], activate=True, name='final_linear_0')(flat)
    return EqualLinear(1, name='final_linear_1')(hidden)


# ------------------------------------------------------------- facial component discriminator
COMPONENTS = ('left_eye', 'right_eye', 'mouth')  # image-left eye first (dlib points 36-41)
# The release's RoIAlign output sides at out_size 512 (get_roi_regions), scaled with out_size.
COMPONENT_SIZES_512 = {'left_eye': 80, 'right_eye': 80, 'mouth': 120}


def component_size(name: str, out_size: int) -> int:
  """The side of a component's crop at out_size (the release's 80 / 120 at 512, scaled)."""
  return max(1, round(COMPONENT_SIZES_512[name] * out_size / 512))


class FacialComponentDiscriminator(nn.Module):
  """GFP-GAN's facial component discriminator (paper sec. 3.3, "facial component loss"; the
  release's gfpganv1_arch.py FacialComponentDiscriminator): a VGG-style patch discriminator
  of equalised 3x3 convs with the fused biased LeakyReLU, 64 -> 128 (blurred stride 2) -> 128
  -> 256 (blurred stride 2) -> 256 channels (x `width`), then a 3x3 conv with bias to one
  logit per patch. Returns (logits (B, H/4, W/4, 1), [features after conv3, after conv5]):
  the features feed the component style loss. Names map to the release's keys as the
  StyleGAN2 discriminator's do (a downsampling conv's index 0 is the parameter-free blur)."""
  width: float = 1.0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    a, b, c = (max(1, int(n * self.width)) for n in (64, 128, 256))

    def layer(h, features, name, downsample=False):
      i = 1 if downsample else 0
      h = EqualConv(features, 3, downsample=downsample, name=f'{name}_{i}')(h)
      return FusedLeakyReLU(name=f'{name}_{i + 1}')(h)

    first = layer(layer(layer(x, a, 'conv1'), b, 'conv2', True), b, 'conv3')
    second = layer(layer(first, c, 'conv4', True), c, 'conv5')
    logits = EqualConv(1, 3, use_bias=True, name='final_conv_0')(second)
    return logits, [first, second]
