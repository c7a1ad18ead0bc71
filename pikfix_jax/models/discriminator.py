"""PatchGAN discriminator on chroma (Isola et al. 2017; Pik-Fix sec. 3.4, eq. 9).

D sees (L, ab) and, when conditioned on the reference, the reference's global ab histogram
broadcast over the image (the reference is not spatially aligned with the input, so a
per-pixel concatenation would be meaningless; its colour distribution is what D(I', R)
can be asked to judge against). Output: one logit per overlapping patch.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax.models import layers
from pikfix_jax.ops import conv


class PatchDiscriminator(nn.Module):
  """(L (B,H,W,1), ab (B,H,W,2), optional reference histogram (B, D)) -> logits (B,h,w,1)."""
  features: int = 64
  num_layers: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, l: jnp.ndarray, ab: jnp.ndarray,
               reference_hist: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    x = jnp.concatenate([l, ab], axis=-1).astype(self.dtype)
    pad = ((1, 1), (1, 1))
    # The first conv sees [L, ab, histogram broadcast over the image]. The broadcast part is
    # computed as what it is, a conv of a per-image constant (conv.conv_of_broadcast), not by
    # convolving 64 constant channels at full resolution: same function and parameters
    # (Conv_0/kernel is (4, 4, 3 + D, features)), ~2 % of the paper-config training step's FLOPs.
    hist_dim = 0 if reference_hist is None else reference_hist.shape[-1]
    kernel, bias = layers.ConvParams((4, 4, x.shape[-1] + hist_dim, self.features),
                                     name='Conv_0')()
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    y = conv.conv_general_dilated(x, kernel[:, :, :x.shape[-1]], (2, 2), pad,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if reference_hist is not None:
      y = y + conv.conv_of_broadcast(reference_hist, kernel[:, :, x.shape[-1]:], x.shape[1:3],
                                     (2, 2), pad)
    x = nn.leaky_relu(y + bias, 0.2)
    for n in range(1, self.num_layers + 1):
      stride = 2 if n < self.num_layers else 1
      width = self.features * min(2 ** n, 8)
      x = layers.Conv(width, (4, 4), strides=(stride, stride), padding=pad, use_bias=False,
                      dtype=self.dtype, name=f'Conv_{n}')(x)
      x = nn.GroupNorm(num_groups=None, group_size=1, dtype=self.dtype)(x)  # instance norm
      x = nn.leaky_relu(x, 0.2)
    x = layers.Conv(1, (4, 4), padding=pad, dtype=self.dtype,
                    name=f'Conv_{self.num_layers + 1}')(x)
    return x.astype(jnp.float32)
