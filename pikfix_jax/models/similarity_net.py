"""Similarity sub-net (Pik-Fix sec. 3.2, eq. 1-2).

A ResNet-34 gives layer1..layer4 features of the restored input I'_L and of the reference
R_L. Four convs project them to a common width C (f_1..f_4). For each target scale i, the
maps are weighted by a learnable A_i in R^{1x4}, resized to scale i, concatenated and passed
through one shared conv W (eq. 1). The similarity of eq. (2) and the warp are computed from
these features by `pikfix_jax.ops.warp`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pikfix_jax.models import layers
from pikfix_jax.models.backbones import ResNet34
from pikfix_jax.ops import color

NUM_SCALES = 4
LAYER_NAMES = ('layer1', 'layer2', 'layer3', 'layer4')


class SimilarityNet(nn.Module):
  """(I'_L, R_L) -> per target scale, the features (M_i^I, M_i^R) of eq. (1).

  Attributes:
    width: common projection width C.
    scales: target scales to build (1 = layer1 resolution, 1/4 of the input; 4 = 1/32).
    train_backbone: if False the ResNet-34 is frozen; no gradient is computed through the
      reference branch (it has nothing trainable upstream), but gradients still flow through
      the input branch into the restoration sub-net.
  """
  width: int = 64
  scales: Sequence[int] = (1, 2, 3, 4)
  train_backbone: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_l: jnp.ndarray, reference_l: Any
               ) -> dict[int, tuple[jnp.ndarray, Any]]:
    """reference_l: (B, Hr, Wr, 1), or a tuple of them (several references: the input's
    features are computed once; M_i^R is then a tuple with one map per reference)."""
    backbone = ResNet34(dtype=self.dtype, name='resnet34')
    projections = [layers.Conv(self.width, (3, 3), dtype=self.dtype, name=f'project{j + 1}')
                       for j in range(NUM_SCALES)]
    shared_w = layers.Conv(self.width, (3, 3), dtype=self.dtype, name='shared_conv')
    # A_i in R^{1x4} for each target scale i (eq. 1), initialised to ones.
    coeffs = self.param('scale_coefficients', nn.initializers.ones, (NUM_SCALES, NUM_SCALES))

    def project(l: jnp.ndarray, stop_gradient: bool) -> list[jnp.ndarray]:
      feats = backbone(color.gray_to_rgb(l))
      if stop_gradient:
        feats = jax.lax.stop_gradient(feats)
      return [projections[j](feats[name]) for j, name in enumerate(LAYER_NAMES)]

    several = isinstance(reference_l, (tuple, list))
    f_input = project(input_l, stop_gradient=False)
    f_refs = [project(r, stop_gradient=not self.train_backbone)
              for r in (reference_l if several else (reference_l,))]

    outputs = {}
    for i in self.scales:
      def fuse(f: list[jnp.ndarray]) -> jnp.ndarray:
        h, w = f[i - 1].shape[1:3]
        parts = [layers.resize(coeffs[i - 1, j].astype(self.dtype) * f[j], h, w)
                 for j in range(NUM_SCALES)]
        return shared_w(jnp.concatenate(parts, axis=-1))
      m_refs = tuple(fuse(f) for f in f_refs)
      outputs[i] = (fuse(f_input), m_refs if several else m_refs[0])
    return outputs
