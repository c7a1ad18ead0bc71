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


class PatchDiscriminator(nn.Module):
  """(L (B,H,W,1), ab (B,H,W,2), optional reference histogram (B, D)) -> logits (B,h,w,1)."""
  features: int = 64
  num_layers: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, l: jnp.ndarray, ab: jnp.ndarray,
               reference_hist: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    x = jnp.concatenate([l, ab], axis=-1).astype(self.dtype)
    if reference_hist is not None:
      cond = jnp.broadcast_to(reference_hist[:, None, None, :].astype(self.dtype),
                              x.shape[:3] + (reference_hist.shape[-1],))
      x = jnp.concatenate([x, cond], axis=-1)
    pad = ((1, 1), (1, 1))
    x = layers.Conv(self.features, (4, 4), strides=(2, 2), padding=pad, dtype=self.dtype)(x)
    x = nn.leaky_relu(x, 0.2)
    for n in range(1, self.num_layers + 1):
      stride = 2 if n < self.num_layers else 1
      width = self.features * min(2 ** n, 8)
      x = layers.Conv(width, (4, 4), strides=(stride, stride), padding=pad, use_bias=False,
                      dtype=self.dtype)(x)
      x = nn.GroupNorm(num_groups=None, group_size=1, dtype=self.dtype)(x)  # instance norm
      x = nn.leaky_relu(x, 0.2)
    x = layers.Conv(1, (4, 4), padding=pad, dtype=self.dtype)(x)
    return x.astype(jnp.float32)
