"""LPIPS v0.1 (Zhang et al. 2018), VGG-16 or AlexNet, in Flax: the `lpips` package's numbers.

distance = sum over layers l of mean_{h,w} sum_c w_lc (f0_lhwc / |f0_lhw| - f1_lhwc / |f1_lhw|)^2
with f the backbone's taps (`NET_LAYERS`: VGG-16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3;
AlexNet relu1..relu5) and w_l >= 0 the 1x1 heads 'lin0'..'lin4'. Parameters: {'net': the
backbone (torchvision 'features.N.*' <-> 'features_N'), 'lin{l}': {'model_1': {'kernel'}}}
(the package's 'lin{l}.model.1.weight'). Without trained heads every w_lc is 1, which is the
package's `lpips=False` baseline.
"""

import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax.models import backbones
from pikfix_jax.models import layers

LAYERS = ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')  # VGG-16's taps.
NET_LAYERS = {'vgg': LAYERS, 'alex': backbones.ALEXNET_LAYERS}
NETS = tuple(NET_LAYERS)
# The package's ScalingLayer: (x - shift) / scale on inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # lpips.normalize_tensor


class _NetLin(nn.Module):
  """The package's NetLinLayer: (Dropout, 1x1 conv without bias); dropout is a no-op at eval."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return layers.Conv(1, (1, 1), use_bias=False, kernel_init=nn.initializers.ones,
                       param_dtype=jnp.float32, name='model_1')(x.astype(jnp.float32))


class LPIPS(nn.Module):
  """LPIPS distance between images in [-1, 1], (B, H, W, 3) each -> (B,).

  `net`: 'vgg' (the package's LPIPS(net='vgg')) or 'alex' (LPIPS(net='alex'), the package's
  default and the Pik-Fix authors' choice; images of at least 31x31 px).
  """
  net: str = 'vgg'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x0: jnp.ndarray, x1: jnp.ndarray) -> jnp.ndarray:
    if self.net not in NET_LAYERS:
      raise ValueError(f'LPIPS net must be one of {NETS}, got {self.net!r}')
    if self.net == 'vgg':
      net = backbones.VGG(depth=16, outputs=LAYERS, dtype=self.dtype, name='net')
    else:
      net = backbones.AlexNet(dtype=self.dtype, name='net')
    f0, f1 = net(_to_imagenet_input(x0)), net(_to_imagenet_input(x1))
    total = 0.0
    for l, name in enumerate(NET_LAYERS[self.net]):
      diff = (_unit_normalize(f0[name]) - _unit_normalize(f1[name])) ** 2
      total = total + jnp.mean(_NetLin(name=f'lin{l}')(diff), axis=(1, 2, 3))
    return total


def _to_imagenet_input(x: jnp.ndarray) -> jnp.ndarray:
  """[-1, 1] -> [0, 1]. The backbones' ImageNet normalisation of (x+1)/2 equals the package's
  ScalingLayer on x exactly: (1 + SHIFT) / 2 is the ImageNet mean, SCALE / 2 its std."""
  return (x.astype(jnp.float32) + 1.0) * 0.5


def _unit_normalize(f: jnp.ndarray) -> jnp.ndarray:
  f = f.astype(jnp.float32)
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + _EPS)
