"""PatchGAN discriminator on chroma (Isola et al. 2017; Pik-Fix sec. 3.4, eq. 9).

D sees (L, ab) and, when conditioned on the reference, the reference's global ab histogram
broadcast over the image (the reference is not spatially aligned with the input, so a
per-pixel concatenation would be meaningless; its colour distribution is what D(I', R)
can be asked to judge against). Output: one logit per overlapping patch.

The same network is pix2pix's D (junyanz `NLayerDiscriminator`, n_layers=3) with
`norm='batch'` and `init_std=0.02` (`pix2pix.make_discriminator`).
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax.models import layers
from pikfix_jax.ops import conv


NORMS = ('instance', 'batch')


class PatchDiscriminator(nn.Module):
  """(L (B,H,W,1), ab (B,H,W,2), optional reference histogram (B, D)) -> logits (B,h,w,1).

  `ab` may have any number of channels (pix2pix passes its whole 3-channel output).
  `norm`: 'instance' (Pik-Fix; affine GroupNorm of group size 1) or 'batch' (pix2pix; BatchNorm,
  batch statistics when `train`, then updated in the 'batch_stats' collection, torch's momentum
  0.1 and eps 1e-5). `init_std`: None keeps flax's initialisers; a float draws conv kernels from
  N(0, std^2), BatchNorm scales from N(1, std^2), biases 0 (Isola et al. 2017, sec. 6.2).
  `return_features`: return (logits, (the output of every LeakyReLU, in order)) for
  pix2pixHD's discriminator feature matching (Wan et al. 2020, eq. 6); same parameters.
  """
  features: int = 64
  num_layers: int = 3
  norm: str = 'instance'
  init_std: Optional[float] = None
  return_features: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, l: jnp.ndarray, ab: jnp.ndarray,
               reference_hist: Optional[jnp.ndarray] = None, train: bool = False
               ) -> Any:
    if self.norm not in NORMS:
      raise ValueError(f'norm={self.norm!r}: use one of {NORMS}')
    kernel_init = (nn.Conv.kernel_init if self.init_std is None
                   else nn.initializers.normal(self.init_std))
    x = jnp.concatenate([l, ab], axis=-1).astype(self.dtype)
    pad = ((1, 1), (1, 1))
    # The first conv sees [L, ab, histogram broadcast over the image]. The broadcast part is
    # computed as what it is, a conv of a per-image constant (conv.conv_of_broadcast), not by
    # convolving 64 constant channels at full resolution: same function and parameters
    # (Conv_0/kernel is (4, 4, 3 + D, features)), ~2 % of the paper-config training step's FLOPs.
    hist_dim = 0 if reference_hist is None else reference_hist.shape[-1]
    kernel, bias = layers.ConvParams((4, 4, x.shape[-1] + hist_dim, self.features),
                                     kernel_init, name='Conv_0')()
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    y = conv.conv_general_dilated(x, kernel[:, :, :x.shape[-1]], (2, 2), pad,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if reference_hist is not None:
      y = y + conv.conv_of_broadcast(reference_hist, kernel[:, :, x.shape[-1]:], x.shape[1:3],
                                     (2, 2), pad)
    x = nn.leaky_relu(y + bias, 0.2)
    features = [x]
    for n in range(1, self.num_layers + 1):
      stride = 2 if n < self.num_layers else 1
      width = self.features * min(2 ** n, 8)
      x = layers.Conv(width, (4, 4), strides=(stride, stride), padding=pad, use_bias=False,
                      kernel_init=kernel_init, dtype=self.dtype, name=f'Conv_{n}')(x)
      if self.norm == 'instance':
        x = nn.GroupNorm(num_groups=None, group_size=1, dtype=self.dtype)(x)
      else:
        scale_init = (nn.initializers.ones if self.init_std is None
                      else layers.normal_around_one(self.init_std))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         scale_init=scale_init, dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
      features.append(x)
    x = layers.Conv(1, (4, 4), padding=pad, kernel_init=kernel_init, dtype=self.dtype,
                    name=f'Conv_{self.num_layers + 1}')(x)
    if self.return_features:
      return x.astype(jnp.float32), tuple(features)
    return x.astype(jnp.float32)
