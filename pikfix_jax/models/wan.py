"""Networks of Wan et al. 2020 ("Old Photo Restoration via Deep Latent Space Translation",
TPAMI; journal version of "Bringing Old Photos Back to Life", CVPR 2020): the triplet-domain
VAEs (VAE1 = E_{R,X} / G_{R,X} for real and synthetic old photos, VAE2 = E_Y / G_Y for clean
photos), the latent discriminator D_{R,X} (eq. 3), the latent mapping T with the partial
nonlocal block (sec. 3.2, eqs. 7-10, Table 1), the multi-scale image discriminators and the
scratch-detection U-Net (sec. 3.3). Losses: `losses/wan.py`.

Sizes are Table 1's where it gives them, else the authors' release
(microsoft/Bringing-Old-Photos-Back-to-Life, Global/models/networks.py `GlobalGenerator_DCDCv2`
with the README's `--ngf 64 --k_size 4 --n_downsample_global 3 --mc 64 --start_r 1`,
NonLocal_feature_mapping_model.py, Global/detection_models/networks.py `UNet(depth=4, wf=6)`);
docs/MODEL.md, "Wan et al. 2020: networks", lists every choice and its source.

Images are one-channel luminance (B, H, W, 1) in [0, 1]; every network maps them to [-1, 1]
inside (the release's input range) and the VAE decoders map tanh back to [0, 1]. Any H, W:
inputs are reflect-padded to the needed multiple and outputs cropped back.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pikfix_jax.models import layers
from pikfix_jax.models.discriminator import PatchDiscriminator
from pikfix_jax.ops import attention

# The release's `weights_init`: every conv kernel N(0, 0.02) (also the nonlocal block's output
# conv W, whose zero init the release overwrites when it applies weights_init to the mapping net).
INIT_STD = 0.02
IN_EPS = 1e-5  # torch InstanceNorm2d / BatchNorm2d eps
LEAKY_SLOPE = 0.2
DETECTOR_NORMS = ('batch', 'instance')

_normal = nn.initializers.normal(INIT_STD)


def _conv(features: int, kernel: int, stride: int = 1, padding: int = 0,
          name: Optional[str] = None, winograd: bool = False) -> nn.Module:
  """The release's conv (N(0, 0.02) kernels, bias). `winograd`: wide 3x3 ones lowered for CPU
  by F(2x2, 3x3) (`layers.WinogradConv`; inference, `wan_release.load`)."""
  return (layers.WinogradConv if winograd else layers.Conv)(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((padding, padding), (padding, padding)), kernel_init=_normal, name=name)


def _reflect(x: jnp.ndarray, pad: int) -> jnp.ndarray:
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')


def instance_norm(x: jnp.ndarray) -> jnp.ndarray:
  """torch InstanceNorm2d(affine=False): per image and channel over H, W; no parameters.

  Statistics in float32, two passes (mean, then the centred second moment), each averaged
  over W and then over H: one float32 reduction over all H * W positions accumulates
  sequentially on XLA:CPU (and E[x^2] - E[x]^2 cancels), ~5x further from the exact value
  than torch's; the released checkpoints' parity (~50 normalised layers) needs torch's
  accuracy. The same function as nn.GroupNorm(group_size=1), which this replaced."""
  def mean(t: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(jnp.mean(t, axis=2, keepdims=True), axis=1, keepdims=True)
  t = x.astype(jnp.float32)
  centred = t - mean(t)
  return (centred * jax.lax.rsqrt(mean(centred * centred) + IN_EPS)).astype(x.dtype)


class ResBlock(nn.Module):
  """The release's `ResnetBlock`: x + IN(conv3(pad(ReLU(IN(conv3(pad(x))))))), reflect pads.
  `winograd`: see `_conv`."""
  features: int
  winograd: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(_conv, self.features, 3, winograd=self.winograd)
    y = nn.relu(instance_norm(conv(name='conv0')(_reflect(x, 1))))
    y = instance_norm(conv(name='conv1')(_reflect(y, 1)))
    return x + y


# VAEs (sec. 3.1, Table 1)


class _Encoder(nn.Module):
  features: int
  n_downsample: int
  n_res: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.relu(instance_norm(_conv(self.features, 7, name='stem')(_reflect(x, 3))))
    for i in range(self.n_downsample):
      x = nn.relu(instance_norm(_conv(self.features, 4, 2, 1, name=f'down{i}')(x)))
    for i in range(self.n_res):
      x = ResBlock(self.features, name=f'res{i}')(x)
    return x


class _Decoder(nn.Module):
  features: int
  n_downsample: int
  n_res: int
  channels: int

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    x = z
    for i in range(self.n_res):
      x = ResBlock(self.features, name=f'res{i}')(x)
    for i in range(self.n_downsample):
      # torch ConvTranspose2d(k=4, s=2, p=1), output_padding 0 (the release's k_size 4)
      x = layers.ConvTransposeStride2(self.features, kernel_init=_normal, name=f'up{i}')(x)
      x = nn.relu(instance_norm(x))
    return jnp.tanh(_conv(self.channels, 7, name='out')(_reflect(x, 3)))


class VAE(nn.Module):
  """VAE1 (E_{R,X}, G_{R,X}) or VAE2 (E_Y, G_Y) of sec. 3.1 / Table 1, one class for both.

  Encoder: 7x7 conv, `n_downsample` 4x4 stride-2 convs, `n_res` residual blocks (each conv
  followed by instance norm + ReLU); the latent mean mu is the last block's output,
  (B, ceil(H / 2^n), ceil(W / 2^n), features), 64 x 64 x 64 for a 256 crop. Decoder mirrored:
  `n_res` residual blocks, `n_downsample` 4x4 stride-2 transposed convs (+ IN + ReLU), 7x7 conv
  to `channels`, tanh, mapped to [0, 1] as (tanh + 1) / 2.

  Variance: the release's "reduced VAE" (after MUNIT): the posterior is N(mu, I), fixed unit
  variance, so there is no log-variance head; training decodes z = mu + eps, eps ~ N(0, I), and
  the KL term is `losses.wan.kl_divergence(mu)`. `encode` therefore returns (mu, None).

  `release_io=True` is the released checkpoints' interface (`wan_release`, `channels=3`):
  images in [-1, 1] in and out (the decoder's tanh as it is), no reflect padding and no
  cropping, so any H, W gives torch's floor arithmetic (latent floor(floor(H / 2) / 2); the
  release's pre-processing makes sides multiples of 4).
  """
  features: int = 64
  n_downsample: int = 2
  n_res: int = 4
  channels: int = 1
  release_io: bool = False

  def setup(self):
    self.encoder = _Encoder(self.features, self.n_downsample, self.n_res)
    self.decoder = _Decoder(self.features, self.n_downsample, self.n_res, self.channels)

  def encode(self, x: jnp.ndarray, train: bool = False
             ) -> tuple[jnp.ndarray, Optional[jnp.ndarray]]:
    """Image (B, H, W, C) in [0, 1] -> (mu, None); mu is the latent of the reflect-padded image
    (sides padded to multiples of 2^n_downsample). `train` changes nothing (no batch norm,
    no dropout); kept for a uniform interface."""
    del train
    if self.release_io:
      return self.encoder(x), None
    x, _ = layers.pad_to_multiple(x, 2 ** self.n_downsample)
    return self.encoder(2.0 * x - 1.0), None

  def decode(self, z: jnp.ndarray, train: bool = False,
             hw: Optional[tuple[int, int]] = None) -> jnp.ndarray:
    """Latent (B, h, w, features) -> image (B, h 2^n, w 2^n, C) in [0, 1], cropped to `hw`."""
    del train
    x = self.decoder(z)
    x = x if self.release_io else (x + 1.0) / 2.0
    return x if hw is None else layers.crop_to(x, hw)

  def __call__(self, x: jnp.ndarray, train: bool = False,
               rng: Optional[jax.Array] = None) -> dict[str, jnp.ndarray]:
    """-> {'mu', 'z', 'recon'}: z = mu + N(0, I) noise when `train` (the reparameterisation
    with unit variance; `rng`, or the module's 'noise' rng), z = mu otherwise; recon = G(z)
    cropped to x's size (eq. 2's G(E(x)))."""
    mu, _ = self.encode(x, train)
    z = mu
    if train:
      rng = self.make_rng('noise') if rng is None else rng
      z = mu + jax.random.normal(rng, mu.shape, mu.dtype)
    return {'mu': mu, 'z': z, 'recon': self.decode(z, train, hw=x.shape[1:3])}


# Discriminators


class LatentDiscriminator(nn.Module):
  """D_{R,X} of eq. 3: a PatchGAN on latent codes (B, h, w, C) -> LSGAN logits (B, h', w', 1).

  The release's `feat_D` (`define_D(64, ndf=64, n_layers_D=3, num_D=1)`, an NLayerDiscriminator):
  4x4 convs with padding 2 (pix2pixHD's `padw = ceil(3 / 2)`, which keeps small latents alive:
  9 x 13 codes still give 4 x 6 logits), strides 2 x num_layers then 1, 1, widths
  features * 2^n capped at 512, instance norm (no affine) on all but the first and last, LeakyReLU
  0.2. No sigmoid (LSGAN)."""
  features: int = 64
  num_layers: int = 3

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    del train
    x = nn.leaky_relu(_conv(self.features, 4, 2, 2, name='conv0')(z), LEAKY_SLOPE)
    width = self.features
    for n in range(1, self.num_layers + 1):
      width = min(width * 2, 512)
      stride = 2 if n < self.num_layers else 1
      x = _conv(width, 4, stride, 2, name=f'conv{n}')(x)
      x = nn.leaky_relu(instance_norm(x), LEAKY_SLOPE)
    return _conv(1, 4, 1, 2, name=f'conv{self.num_layers + 1}')(x).astype(jnp.float32)


class MultiscaleDiscriminator(nn.Module):
  """The release's image discriminator (pix2pixHD `MultiscaleDiscriminator`, `num_D=2`,
  `n_layers_D=3`): `num_d` PatchGANs (`PatchDiscriminator`, instance norm, N(0, 0.02) init), the
  k-th seeing the image average-pooled k times (3x3, stride 2, pad 1, padding not counted).

  Call D(image) (unconditional: the VAEs, `--no_cgan`) or D(image, condition) (conditional: the
  mapping stage's D_T sees [degraded input, output]). Returns one (logits, features) per scale,
  finest first; features feed `losses.wan.feature_matching_loss` (eq. 6)."""
  num_d: int = 2
  features: int = 64
  num_layers: int = 3

  @nn.compact
  def __call__(self, image: jnp.ndarray, condition: Optional[jnp.ndarray] = None,
               train: bool = False) -> list[tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]]:
    x = image if condition is None else jnp.concatenate([condition, image], axis=-1)
    outputs = []
    for k in range(self.num_d):
      d = PatchDiscriminator(features=self.features, num_layers=self.num_layers,
                             norm='instance', init_std=INIT_STD, return_features=True,
                             name=f'scale{k}')
      # PatchDiscriminator sees (l, ab) concatenated; all channels go in `l`
      outputs.append(d(x, x[..., :0], train=train))
      if k + 1 < self.num_d:
        x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                        count_include_pad=False)
    return outputs


# Latent mapping T with the partial nonlocal block (sec. 3.2, eqs. 7-10)


def latent_mask(mask: jnp.ndarray, latent_hw: tuple[int, int], factor: int) -> jnp.ndarray:
  """Scratch mask (B, H, W, 1), 1 = defect, -> binary mask at the latent resolution.

  A latent cell is a defect when any pixel of its factor x factor footprint is (> 0.5) after
  the image's reflect padding to a multiple of `factor`: a max-pool, the conservative version
  of the release's bilinear resize + `mask[mask > 0] = 1` (both dilate; the max-pool sees the
  whole footprint, a bilinear 1/4 resize only its central 2 x 2 pixels). A mask already at
  `latent_hw` is only binarised."""
  if tuple(mask.shape[1:3]) != tuple(latent_hw):
    mask, _ = layers.pad_to_multiple(mask, factor)
    mask = layers.max_pool_tiles(mask, factor)
    if tuple(mask.shape[1:3]) != tuple(latent_hw):
      raise ValueError(f'mask {mask.shape} pooled by {factor} does not match latent {latent_hw}')
  return (mask > 0.5).astype(jnp.float32)


def masked_softmax(logits: jnp.ndarray, keep: jnp.ndarray) -> jnp.ndarray:
  """Softmax over the last axis restricted to `keep` (eq. 7): weights on dropped entries are
  exactly 0 and the kept ones sum to 1; a row with nothing kept is all 0. Written without
  infinities, so its gradient has no NaN either."""
  keep = jnp.broadcast_to(keep, logits.shape)
  peak = jnp.max(jnp.where(keep, logits, jnp.finfo(logits.dtype).min), axis=-1, keepdims=True)
  peak = jax.lax.stop_gradient(jnp.where(jnp.any(keep, axis=-1, keepdims=True), peak, 0.0))
  e = jnp.where(keep, jnp.exp(jnp.where(keep, logits, peak) - peak), 0.0)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(total > 0, total, 1.0)


def renormalised_masked_softmax(logits: jnp.ndarray, keep: jnp.ndarray,
                                eps: float = 1e-12) -> jnp.ndarray:
  """The released checkpoints' attention weights (`NonLocalBlock2D_with_mask_Res` with
  `--correlation_renormalize`): softmax over *all* keys, times `keep`, then L1-renormalised
  with torch's F.normalize floor: p_ij keep_j / max(sum_k p_ik keep_k, eps).

  Written as e_ij keep_j / max(S_keep, eps S_all), e = exp(logits - row max over all keys):
  the same function. It equals `masked_softmax` except where the kept keys hold less than
  `eps` of a row's softmax mass; there the release's weights sum to less than 1 (to 0 as the
  kept mass vanishes), which the converted networks must reproduce."""
  keep = jnp.broadcast_to(keep, logits.shape)
  e = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
  kept = jnp.where(keep, e, 0.0)
  total_kept = jnp.sum(kept, axis=-1, keepdims=True)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return kept / jnp.maximum(total_kept, eps * total)


class PartialNonLocalBlock(nn.Module):
  """Partial nonlocal block (Fig. 4, eqs. 7-10) on features F (B, h, w, C) and a binary mask
  m (B, h, w, 1), 1 = defect.

  f_ij = exp(theta(F_i) . phi(F_j)) (eq. 8, embedded Gaussian, no scaling: the release's
  temperature 1); s_ij = (1 - m_j) f_ij / sum_k (1 - m_k) f_ik (eq. 7: a softmax over the intact
  positions only, `masked_softmax`; the release's softmax, masking and L1 renormalisation,
  `--correlation_renormalize`, is the same function); O_i = nu(sum_j s_ij mu(F_j)) (eq. 9), with
  theta, phi, mu, nu 1x1 convs at C channels (the release's inter_channels = in_channels).
  Fusion (eq. 10): F_fuse = (1 - m) rho_local(F) + m rho_global(O), rho_global = `global_res`
  residual blocks, rho_local = `local_res` residual blocks (0: the identity, as the release,
  whose local restoration is the residual blocks after the fusion).

  A query at an intact position i sees only intact keys, so its weights, O_i and (with
  rho_local the identity) F_fuse_i do not depend on F at defect positions.

  `attention_chunk`: with more than this many positions h * w, eq. 9's sum is computed by
  `ops.attention.masked_attention` in attention_chunk x attention_chunk blocks (an online
  softmax: memory linear in h * w instead of the (hw, hw) weights, 16 GB at a 1 MP photo's
  latent) and equals the dense result up to float32 rounding; 0 never chunks. The
  intermediates' 'weights' are then computed separately, densely, for inspecting small inputs:
  MappingNetwork always asks for them, but jit drops them unless they are returned (only an
  un-jitted call at a large size would materialise them).

  `release_renorm=True`: the released checkpoints' weights (`renormalised_masked_softmax`),
  which differ from eq. 7 only where the intact keys hold < 1e-12 of a row's softmax mass; the
  chunked path computes eq. 7 (`ops.attention`), so above attention_chunk positions the
  release's renormalisation is that of eq. 7 (they differ only in such rows)."""
  global_res: int = 2
  local_res: int = 0
  attention_chunk: int = 1024
  release_renorm: bool = False
  winograd: bool = False

  @nn.compact
  def __call__(self, f: jnp.ndarray, m: jnp.ndarray, return_intermediates: bool = False) -> Any:
    b, h, w, c = f.shape
    flat = lambda t: t.reshape(b, h * w, t.shape[-1])
    theta = flat(_conv(c, 1, name='theta')(f))
    phi = flat(_conv(c, 1, name='phi')(f))
    values = flat(_conv(c, 1, name='g')(f))  # mu of eq. 9
    keep = (m.reshape(b, 1, h * w) < 0.5)  # key j is used iff m_j = 0
    softmax = renormalised_masked_softmax if self.release_renorm else masked_softmax
    dense_weights = lambda: softmax(jnp.einsum('bic,bjc->bij', theta, phi), keep)
    n = h * w
    # A symbolic size (export with shape polymorphism) cannot be compared: chunked.
    if self.attention_chunk > 0 and (jax.export.is_symbolic_dim(n) or n > self.attention_chunk):
      o = attention.masked_attention(theta, phi, values, keep[:, 0], self.attention_chunk,
                                     self.attention_chunk)
      weights = dense_weights() if return_intermediates else None
    else:
      weights = dense_weights()
      o = jnp.einsum('bij,bjc->bic', weights, values)
    o = _conv(c, 1, name='W')(o.reshape(b, h, w, c))
    glob = o
    for i in range(self.global_res):
      glob = ResBlock(c, self.winograd, name=f'global_res{i}')(glob)
    local = f
    for i in range(self.local_res):
      local = ResBlock(c, self.winograd, name=f'local_res{i}')(local)
    fused = (1.0 - m) * local + m * glob
    if return_intermediates:
      return fused, {'weights': weights, 'nonlocal': o, 'global': glob, 'local': local}
    return fused


# The released checkpoints' mask resizing and multi-scale patch attention (`wan_release`)

MAPPING_BLOCKS = ('partial_nonlocal', 'none', 'patch_attention')
MASK_RESIZES = ('max_pool', 'release')


def _torch_axis_taps(in_size: int, out_size: int, mode: str
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices (i0, i1) and weights (w0, w1) of torch F.interpolate along one axis
  (mode 'bilinear', align_corners=False, no antialias; or 'nearest', torch's legacy nearest),
  computed in float32 as ATen's CPU kernels do (scale = in / out)."""
  dst = np.arange(out_size)
  scale = np.float32(in_size) / np.float32(out_size)
  if mode == 'nearest':
    if out_size == in_size:
      idx = dst
    elif out_size == 2 * in_size:
      idx = dst >> 1
    else:
      idx = np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), in_size - 1)
    return idx, idx, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
  if mode != 'bilinear':
    raise ValueError(f'mode={mode!r}: use bilinear or nearest')
  if out_size == in_size:
    return dst, dst, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
  src = np.maximum(scale * (dst.astype(np.float32) + np.float32(0.5)) - np.float32(0.5),
                   np.float32(0.0)).astype(np.float32)
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = i0 + (i0 < in_size - 1)
  w1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
  return i0, i1, (np.float32(1.0) - w1).astype(np.float32), w1


def torch_interpolate(x: jnp.ndarray, hw: tuple[int, int], mode: str) -> jnp.ndarray:
  """torch F.interpolate(x, size=hw, mode) of an NHWC tensor, for mode 'bilinear'
  (align_corners=False, not anti-aliased: the release's mask and detector-input resizes) or
  'nearest' (floor(dst * in / out)). Separable: equal to torch up to float rounding."""
  for axis, out_size in ((1, hw[0]), (2, hw[1])):
    i0, i1, w0, w1 = _torch_axis_taps(x.shape[axis], out_size, mode)
    shape = [1] * x.ndim
    shape[axis] = out_size
    a = jnp.take(x, jnp.asarray(i0), axis=axis)
    if mode == 'nearest':
      x = a
      continue
    b = jnp.take(x, jnp.asarray(i1), axis=axis)
    x = a * jnp.asarray(w0).reshape(shape) + b * jnp.asarray(w1).reshape(shape)
  return x


def release_latent_mask(mask: jnp.ndarray, latent_hw: tuple[int, int], block: str
                        ) -> jnp.ndarray:
  """The release's image-size scratch mask (B, H, W, 1), 1 = defect, -> its latent defect
  mask (B, h, w, 1), 1 = defect.

  Both blocks dilate with a bilinear resize and `mask[mask > 0] = 1` (at a 1/4 resize a latent
  cell sees the central 2 x 2 pixels of its footprint); the partial nonlocal block
  (`NonLocalBlock2D_with_mask_Res`) also marks a cell whose nearest-resized pixel (the
  footprint's top-left) is a defect: intact = (1 - dilated) * nearest(1 - mask)."""
  dilated = (torch_interpolate(mask, latent_hw, 'bilinear') > 0).astype(jnp.float32)
  if block == 'patch_attention':
    return dilated
  return 1.0 - (1.0 - dilated) * (1.0 - torch_interpolate(mask, latent_hw, 'nearest'))


def _best_intact_patch(patches: jnp.ndarray, query: jnp.ndarray, chunk: int) -> jnp.ndarray:
  """For one image's patches (n, d) and query flags (n,): the index of the most cosine-similar
  non-query patch for each query (first on ties, as torch.max); non-queries get 0. Queries are
  sorted first and scored `chunk` at a time, chunks past the last query skipped (lax.cond):
  the release scores only the masked patches, and so does this, up to one chunk."""
  n = patches.shape[0]
  unit = patches / jnp.maximum(jnp.linalg.norm(patches, axis=-1, keepdims=True), 1e-12)
  order = jnp.argsort(jnp.logical_not(query), stable=True)  # queries first
  num_queries = jnp.sum(query)
  num_chunks = -(-n // chunk)
  # padded with n: gathers clamp (unused rows), the scatter below drops them
  order = jnp.concatenate([order, jnp.full((num_chunks * chunk - n,), n, order.dtype)])
  order = order.reshape(num_chunks, chunk)

  def score(i: jnp.ndarray) -> jnp.ndarray:
    def compute(_):
      corr = unit[order[i]] @ unit.T
      return jnp.argmax(jnp.where(query[None, :], -jnp.inf, corr), axis=-1)
    return jax.lax.cond(i * chunk < num_queries, compute,
                        lambda _: jnp.zeros((chunk,), jnp.int32), None).astype(jnp.int32)

  best_sorted = jax.lax.map(score, jnp.arange(num_chunks)).reshape(-1)
  return jnp.zeros((n,), jnp.int32).at[order.reshape(-1)].set(best_sorted, mode='drop')


def patch_compose(x: jnp.ndarray, m: jnp.ndarray, patch: int, chunk: int = 256) -> jnp.ndarray:
  """The hard patch composition of the release's `Patch_Attention_4.inference_forward`.

  x (B, h, w, C) is cut into non-overlapping patch x patch tiles (floor(h / patch) x
  floor(w / patch), torch F.unfold, stride = size); a tile whose mean latent mask m exceeds
  0.6 is a query and is replaced by the most cosine-similar tile (vectors of C * patch^2,
  L2-normalised) among the non-query tiles; the tiles are folded back, the remainder rows and
  columns that no tile covers set to 0 (F.fold). An image with no query tile keeps x as it is
  (the release's branch). One with only query tiles, where the release crashes (an argmax over
  no keys), also keeps x: there is no intact tile to copy."""
  b, h, w, c = x.shape
  nh, nw = h // patch, w // patch
  if nh == 0 or nw == 0:
    return x
  tiles = x[:, :nh * patch, :nw * patch].reshape(b, nh, patch, nw, patch, c)
  # torch's unfold vector order: (C, patch, patch)
  vectors = tiles.transpose(0, 1, 3, 5, 2, 4).reshape(b, nh * nw, c * patch * patch)
  cover = m[:, :nh * patch, :nw * patch, 0].reshape(b, nh, patch, nw, patch)
  query = (jnp.mean(cover, axis=(2, 4)) > 0.6).reshape(b, nh * nw)
  out = []
  for i in range(b):  # one image at a time: lax.cond skips chunks without queries
    best = _best_intact_patch(vectors[i], query[i], chunk)
    chosen = jnp.where(query[i][:, None], vectors[i][best], vectors[i])
    folded = chosen.reshape(nh, nw, c, patch, patch).transpose(0, 3, 1, 4, 2)
    folded = folded.reshape(nh * patch, nw * patch, c)
    folded = jnp.pad(folded, ((0, h - nh * patch), (0, w - nw * patch), (0, 0)))
    use = jnp.any(query[i]) & jnp.any(jnp.logical_not(query[i]))
    out.append(jnp.where(use, folded, x[i]))
  return jnp.stack(out)


class PatchAttention(nn.Module):
  """The release's `Patch_Attention_4` (inference path): x = ResBlock(z); x's masked tiles
  replaced by their best intact tile (`patch_compose`); a 3x3 conv (zero pad 1, the release's
  `F_Combine`) of [z, composed, m] back to C channels. m: the binary latent defect mask."""
  patch_size: int
  chunk: int = 256
  winograd: bool = False

  @nn.compact
  def __call__(self, z: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
    c = z.shape[-1]
    x = ResBlock(c, self.winograd, name='res0')(z)
    composed = patch_compose(x, m, self.patch_size, self.chunk)
    return _conv(c, 3, padding=1, name='combine', winograd=self.winograd)(
        jnp.concatenate([z, composed, m], axis=-1))


class MappingNetwork(nn.Module):
  """The latent mapping T: Z_X -> Z_Y (Fig. 3 (II), Table 1), with the partial nonlocal block.

  3x3 convs to `widths_in` (instance norm + ReLU each), the partial nonlocal block (global branch:
  nonlocal + `global_res` residual blocks, fused with the local features by the mask, eq. 10),
  `n_res` residual blocks, 3x3 convs to `widths_out` (IN + ReLU), a 3x3 conv back to the latent's
  channels. Table 1: widths_in (128, 256, 512), global 2, n_res 6, widths_out (256,), out 64. The
  release (mapping_n_block 6, map_mc 512): widths_in (128, 256, 512, 512), global 3, widths_out
  (512, 256, 128).

  `mask`: the scratch mask, 1 = defect, at image resolution (reduced with `latent_mask` by
  `mask_factor` = 2^n_downsample of the VAE) or already at the latent resolution; all zeros for
  photos without structured defects. `train` changes nothing (instance norm only).

  Variants of the released checkpoints (`wan_release`): `block` 'none' (`Mapping_Model`, no
  mask: `mask` may be None), 'partial_nonlocal' (`Mapping_Model_with_mask`, with
  `release_renorm=True`, `global_res=3`), 'patch_attention' (`Mapping_Model_with_mask_2`:
  after `widths_in`, per patch size in `patch_sizes` `patch_res` residual blocks and a
  `PatchAttention`, then `n_res` (the release: 2) residual blocks); `mask_resize='release'`
  reduces an image-size mask as the release does (`release_latent_mask`). `winograd`: its
  wide 3x3 convs lowered for CPU by Winograd's F(2x2, 3x3) (`_conv`; for inference)."""
  widths_in: Sequence[int] = (128, 256, 512)
  n_res: int = 6
  widths_out: Sequence[int] = (256,)
  global_res: int = 2
  local_res: int = 0
  mask_factor: int = 4
  block: str = 'partial_nonlocal'
  mask_resize: str = 'max_pool'
  release_renorm: bool = False
  patch_sizes: Sequence[int] = (8, 4, 2)
  patch_res: int = 2
  winograd: bool = False

  @nn.compact
  def __call__(self, z: jnp.ndarray, mask: Optional[jnp.ndarray] = None, train: bool = False,
               return_intermediates: bool = False) -> Any:
    del train
    if self.block not in MAPPING_BLOCKS or self.mask_resize not in MASK_RESIZES:
      raise ValueError(f'block={self.block!r}, mask_resize={self.mask_resize!r}: use one of '
                       f'{MAPPING_BLOCKS} and {MASK_RESIZES}')
    m = None
    if self.block != 'none':
      if mask is None:
        raise ValueError(f'block={self.block!r} needs a mask')
      if self.mask_resize == 'release':
        m = release_latent_mask(mask.astype(jnp.float32), z.shape[1:3], self.block)
      else:
        m = latent_mask(mask, z.shape[1:3], self.mask_factor)
    x = z
    for i, width in enumerate(self.widths_in):
      x = nn.relu(instance_norm(_conv(width, 3, padding=1, name=f'in{i}',
                                      winograd=self.winograd)(x)))
    inter = {'mask': m}
    if self.block == 'partial_nonlocal':
      nonlocal_input = x
      block = PartialNonLocalBlock(global_res=self.global_res, local_res=self.local_res,
                                   release_renorm=self.release_renorm,
                                   winograd=self.winograd, name='partial_nonlocal')
      x, nl = block(x, m, return_intermediates=True)
      inter.update(nl, nonlocal_input=nonlocal_input, fused=x)
    elif self.block == 'patch_attention':
      for s, patch in enumerate(self.patch_sizes):
        for k in range(self.patch_res):
          x = ResBlock(x.shape[-1], self.winograd, name=f'stage{s}_res{k}')(x)
        x = PatchAttention(patch, winograd=self.winograd, name=f'attention{s}')(x, m)
    for i in range(self.n_res):
      x = ResBlock(x.shape[-1], self.winograd, name=f'res{i}')(x)
    conv = functools.partial(_conv, padding=1, winograd=self.winograd)
    for i, width in enumerate(self.widths_out):
      x = nn.relu(instance_norm(conv(width, 3, name=f'out{i}')(x)))
    x = conv(z.shape[-1], 3, name=f'out{len(self.widths_out)}')(x)
    return (x, inter) if return_intermediates else x

  def attention_weights(self, z: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """The partial nonlocal block's s_ij (B, hw, hw), row = query i, column = key j (row-major
    positions). Call as `module.apply(variables, z, mask, method='attention_weights')`."""
    return self(z, mask, return_intermediates=True)[1]['weights']


# Scratch detection (sec. 3.3)


def blur_downsample(x: jnp.ndarray) -> jnp.ndarray:
  """The release's anti-aliased down-sampling (`antialiasing.Downsample`, filt_size 3, stride 2):
  reflect pad 1, the [1, 2, 1]^2 / 16 binomial filter per channel, stride 2 (ceil(H / 2)).
  Separable, as strided slices: no grouped conv."""
  def axis(t: jnp.ndarray, ax: int) -> jnp.ndarray:
    n = (t.shape[ax] - 1) // 2  # outputs of a 3-tap stride-2 window over the padded axis
    taps = [jax.lax.slice_in_dim(t, k, k + 2 * n - 1, stride=2, axis=ax) for k in range(3)]
    return (taps[0] + 2.0 * taps[1] + taps[2]) / 4.0
  return axis(axis(_reflect(x, 1), 1), 2)


class ScratchDetector(nn.Module):
  """The release's scratch-detection U-Net (Global/detection_models/networks.py `UNet(
  in_channels=1, out_channels=1, depth=4, conv_num=2, wf=6, batch_norm=True,
  up_mode='upsample', antialiasing=True)`): L (B, H, W, 1) in [0, 1] -> mask logits (B, H, W, 1)
  (sigmoid for probabilities; the release thresholds them at 0.4 at test time).

  7x7 conv + LeakyReLU at `base_features`; `depth` levels of [3x3 conv + norm + LeakyReLU,
  blur-pool stride 2] then `conv_num` x [3x3 conv + norm + LeakyReLU] at base * 2^(i+1); the
  decoder mirrors it: bilinear x2 up-sampling + 3x3 conv to base * 2^i, concatenated with the
  skip, `conv_num` x [3x3 conv + norm + LeakyReLU]; a 3x3 output conv. Reflect padding
  throughout. `norm`: 'batch' (the release; batch statistics when `train`, in 'batch_stats')
  or 'instance'. Any H, W: reflect-padded to a multiple of 2^depth, logits cropped back."""
  base_features: int = 64
  depth: int = 4
  conv_num: int = 2
  norm: str = 'batch'

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if self.norm not in DETECTOR_NORMS:
      raise ValueError(f'norm={self.norm!r}: use one of {DETECTOR_NORMS}')

    def norm(t: jnp.ndarray, name: str) -> jnp.ndarray:
      if self.norm == 'instance':
        return instance_norm(t)
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=IN_EPS,
                          name=name)(t)

    def conv_norm_act(t: jnp.ndarray, width: int, name: str) -> jnp.ndarray:
      t = _conv(width, 3, name=name)(_reflect(t, 1))
      return nn.leaky_relu(norm(t, name + '_norm'), LEAKY_SLOPE)

    x, hw = layers.pad_to_multiple(x, 2 ** self.depth)
    x = 2.0 * x - 1.0  # the release's Normalize(0.5, 0.5)
    x = nn.leaky_relu(_conv(self.base_features, 7, name='first')(_reflect(x, 3)), LEAKY_SLOPE)
    skips = []
    for i in range(self.depth):
      skips.append(x)
      x = blur_downsample(conv_norm_act(x, x.shape[-1], f'down{i}'))
      for k in range(self.conv_num):
        x = conv_norm_act(x, self.base_features * 2 ** (i + 1), f'down{i}_block{k}')
    for i in reversed(range(self.depth)):
      width = self.base_features * 2 ** i
      up = layers.resize(x, 2 * x.shape[1], 2 * x.shape[2])
      up = _conv(width, 3, name=f'up{i}')(_reflect(up, 1))
      x = jnp.concatenate([up, skips[i]], axis=-1)
      for k in range(self.conv_num):
        x = conv_norm_act(x, width, f'up{i}_block{k}')
    x = _conv(1, 3, name='last')(_reflect(x, 1))
    return layers.crop_to(x, hw).astype(jnp.float32)
