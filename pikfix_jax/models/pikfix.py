"""The Pik-Fix generator (Fig. 2): restoration -> similarity + SPHist warp -> colorization.

(degraded L, reference RGB) -> restored L, ab, Lab and RGB, plus the intermediate tensors the
losses and image summaries need. All ablations of Tables 4-6 are switches of `config.model`:

* Table 4 (`histogram.fusion`, `histogram.scales`): input ab fusion = ('ab', 'input'),
  multi-scale ab fusion = ('ab', 'multi'), single-scale histogram fusion = ('histogram',
  'single'), multi-scale histogram fusion = ('histogram', 'multi') (the paper's model).
* Table 5 (`similarity.mode`): 'none' (reference colours resized, not warped), 'single'
  (one similarity map at 1/4 resolution, its warp pooled to the other scales), 'multi'.
* Table 6 (`restoration.levels`): (1,) single-level RDN, (1, 4, 8) multi-level.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from pikfix_jax.models import layers
from pikfix_jax.models.colorization_net import ColorizationNet
from pikfix_jax.models.discriminator import PatchDiscriminator
from pikfix_jax.models import restoration_net
from pikfix_jax.models.similarity_net import NUM_SCALES, SimilarityNet
from pikfix_jax.ops import color
from pikfix_jax.ops import histogram
from pikfix_jax.ops import warp

MULTIPLE = 32  # Input and reference sides must be multiples of this (ResNet layer4 stride).
SCALE_STRIDE = {i: 2 ** (i + 1) for i in range(1, NUM_SCALES + 1)}  # scale i -> 1/4 .. 1/32

SIMILARITY_MODES = ('multi', 'single', 'none')
FUSIONS = ('histogram', 'ab')
LOSS_CENTERS = ('fixed', 'learned')
FUSION_SCALES = ('multi', 'single', 'input')


def dtype_from_name(name: str) -> Any:
  return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[name]


def _flatten(x: jnp.ndarray) -> jnp.ndarray:
  return x.reshape(x.shape[0], -1, x.shape[-1])


class PikFix(nn.Module):
  """The generator. `config` is the `model` section of the config (see configs/default.py)."""
  config: ml_collections.FrozenConfigDict

  def setup(self):
    c = self.config
    if c.similarity.mode not in SIMILARITY_MODES:
      raise ValueError(f'model.similarity.mode={c.similarity.mode!r}: use one of {SIMILARITY_MODES}')
    if c.histogram.fusion not in FUSIONS:
      raise ValueError(f'model.histogram.fusion={c.histogram.fusion!r}: use one of {FUSIONS}')
    if c.histogram.scales not in FUSION_SCALES:
      raise ValueError(f'model.histogram.scales={c.histogram.scales!r}: use one of {FUSION_SCALES}')
    if self.loss_centers_mode() not in LOSS_CENTERS:
      raise ValueError(f'model.histogram.loss_centers={self.loss_centers_mode()!r}: use one of '
                       f'{LOSS_CENTERS}')
    dtype = dtype_from_name(c.dtype)
    r, s, z = c.restoration, c.similarity, c.colorization
    self.restoration_net = restoration_net.from_config(r, remat=c.remat, dtype=dtype)
    if s.mode != 'none':
      self.similarity_net = SimilarityNet(
          width=s.width, scales=self.similarity_scales(), train_backbone=s.train_backbone,
          dtype=dtype)
    self.colorization_net = ColorizationNet(
        block_units=tuple(z.block_units), growth=z.growth, bottleneck=z.bottleneck,
        stem_features=z.stem_features, fusion_units=z.fusion_units, dropout=z.dropout,
        remat=c.remat, dtype=dtype)
    h = c.histogram
    self.bin_centers = self.param(
        'bin_centers', lambda _: histogram.init_bin_centers(h.num_bins, h.vmin, h.vmax))

  def fusion_scales(self) -> tuple[int, ...]:
    """Encoder scales that receive reference colour features."""
    return tuple(range(1, NUM_SCALES + 1)) if self.config.histogram.scales == 'multi' else (1,)

  def similarity_scales(self) -> tuple[int, ...]:
    return self.fusion_scales() if self.config.similarity.mode == 'multi' else (1,)

  def centers(self) -> jnp.ndarray:
    if self.config.histogram.learn_centers:
      return self.bin_centers
    return jax.lax.stop_gradient(self.bin_centers)

  def loss_centers_mode(self) -> str:
    # Configs written before the field existed trained with the learnable centres.
    return self.config.histogram.get('loss_centers', 'learned')

  def loss_centers(self) -> jnp.ndarray:
    """Bin centres of the EMD term's histograms (eq. 7). 'fixed': eq. (4)'s, as the authors'
    loss keeps them: shared learnable centres let the EMD fall by moving the centres (collapsed
    or outside [-1, 1], both histograms become equal whatever the colours; docs/MODEL.md)."""
    h = self.config.histogram
    if self.loss_centers_mode() == 'fixed':
      return histogram.init_bin_centers(h.num_bins, h.vmin, h.vmax)
    return self.centers()

  def reference_values(self, reference_ab: jnp.ndarray) -> jnp.ndarray:
    """The per-pixel reference colour representation that is warped: SPHist or raw ab."""
    h = self.config.histogram
    if h.fusion == 'histogram':
      return histogram.sphist(reference_ab, self.centers(), h.sigma)
    return reference_ab

  def __call__(self, input_l: jnp.ndarray, reference_rgb: jnp.ndarray,
               train: bool = False) -> dict[str, Any]:
    """Args:
      input_l: degraded luminance (B, H, W, 1) in [0, 1]; H, W multiples of 32.
      reference_rgb: colour reference (B, Hr, Wr, 3) sRGB in [0, 1]; Hr, Wr multiples of 32.
      train: enables dropout (needs a 'dropout' rng when config dropout > 0).

    Several references: `reference_rgb` a tuple of (B, Hr_r, Wr_r, 3), each its own size; the
    warp attends over every position of every reference (ops/warp.py), the 'none' ablation
    averages their resized colours, and `reference_hist` is that of all their pixels.

    Returns a dict with `restored_l` (B,H,W,1), `ab` (B,H,W,2) in [-1,1], `lab` (normalised
    L, a, b), `rgb`, `confidence` {scale: (B,h,w,1)}, `warped` {scale: (B,h,w,V)},
    `output_hist` / `reference_hist` (B, 2, K) global SPHist of output / reference ab.
    """
    several = isinstance(reference_rgb, (tuple, list))
    references = tuple(reference_rgb) if several else (reference_rgb,)
    for name, x in (('input', input_l),) + tuple(('reference', r) for r in references):
      if x.shape[1] % MULTIPLE or x.shape[2] % MULTIPLE:
        raise ValueError(f'{name} size {x.shape[1:3]} is not a multiple of {MULTIPLE}; '
                         'use pikfix_jax.models.layers.pad_to_multiple')
    c = self.config
    restored_l = self.restoration_net(input_l)
    labs = [color.rgb_to_lab_normalized(r) for r in references]
    reference_ab = [ab for _, ab in labs]
    values = [self.reference_values(ab) for ab in reference_ab]

    warped, confidence = {}, {}
    if c.similarity.mode == 'none':
      for i in self.fusion_scales():
        h, w = input_l.shape[1] // SCALE_STRIDE[i], input_l.shape[2] // SCALE_STRIDE[i]
        warped[i] = sum(layers.resize(layers.downsample(v, SCALE_STRIDE[i]), h, w)
                        for v in values) / len(values)
        confidence[i] = jnp.zeros((input_l.shape[0], h, w, 1), jnp.float32)
    else:
      reference_l = tuple(l for l, _ in labs)
      features = self.similarity_net(restored_l, reference_l if several else reference_l[0])
      for i, (m_input, m_ref) in features.items():
        m_refs = m_ref if several else (m_ref,)
        v = [_flatten(layers.downsample(x, SCALE_STRIDE[i])) for x in values]
        out, conf = warp.warp_histogram(_flatten(m_input), [_flatten(m) for m in m_refs], v,
                                        c.similarity.temperature, c.similarity.query_chunk)
        warped[i] = out.reshape(m_input.shape[:3] + (-1,))
        confidence[i] = conf.reshape(m_input.shape[:3] + (1,))
      for i in self.fusion_scales():
        if i not in warped:  # single similarity map: pool its warp to the other scales
          factor = SCALE_STRIDE[i] // SCALE_STRIDE[1]
          warped[i] = layers.downsample(warped[1], factor)
          confidence[i] = layers.downsample(confidence[1], factor)

    fused = {i: jnp.concatenate([warped[i], confidence[i]], axis=-1) for i in self.fusion_scales()}
    input_features = None
    if c.histogram.scales == 'input':
      input_features = layers.resize(fused.pop(1), *input_l.shape[1:3])
    ab = self.colorization_net(restored_l, fused, input_features, train)

    lab = jnp.concatenate([restored_l, ab], axis=-1)
    rgb = color.lab_normalized_to_rgb(jnp.clip(restored_l, 0.0, 1.0), ab)
    centers, sigma = self.loss_centers(), c.histogram.sigma
    return {
        'restored_l': restored_l,
        'ab': ab,
        'lab': lab,
        'rgb': rgb,
        'warped': warped,
        'confidence': confidence,
        'output_hist': histogram.global_histogram(histogram.sphist(ab, centers, sigma)),
        'reference_hist': histogram.global_histogram(jnp.concatenate(
            [_flatten(histogram.sphist(ab, centers, sigma)) for ab in reference_ab], axis=1)),
    }


def build_generator(model_config: ml_collections.ConfigDict) -> PikFix:
  return PikFix(ml_collections.FrozenConfigDict(model_config))


def build_discriminator(model_config: ml_collections.ConfigDict) -> PatchDiscriminator:
  d = model_config.discriminator
  return PatchDiscriminator(features=d.features, num_layers=d.num_layers,
                            dtype=dtype_from_name(model_config.dtype))
