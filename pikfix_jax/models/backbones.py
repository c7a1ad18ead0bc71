"""ImageNet backbones in Flax (NHWC): ResNet-34, VGG-16/19 and AlexNet, torchvision-compatible.

Inputs are sRGB in [0, 1]; every backbone applies the ImageNet mean/std itself. Parameter
names follow torchvision's state-dict keys with each numeric index merged into the module
name before it ('layer1.0.conv1.weight' <-> params['layer1_0']['conv1']['kernel'],
'features.0.weight' <-> params['features_0']['kernel']); `pikfix_jax/weights.py` converts.
BatchNorm always runs in inference mode on the `batch_stats` collection.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax.models import layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's initialisation (kaiming normal, fan_out, ReLU gain): random features keep
# their scale through depth, which matters when no ImageNet weights are available.
_KAIMING = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

_VGG_CFGS = {
    16: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512),
    19: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512),
}


def imagenet_normalize(x: jnp.ndarray) -> jnp.ndarray:
  """sRGB in [0, 1], (..., 3) -> (x - ImageNet mean) / ImageNet std."""
  mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
  std = jnp.asarray(IMAGENET_STD, x.dtype)
  return (x - mean) / std


def vgg_layer_names(depth: int) -> tuple[str, ...]:
  """ReLU output names of VGG-`depth` in forward order ('relu1_1', 'relu1_2', ...)."""
  names, block, unit = [], 1, 0
  for v in _VGG_CFGS[depth]:
    if v == 'M':
      block, unit = block + 1, 0
    else:
      unit += 1
      names.append(f'relu{block}_{unit}')
  return tuple(names)


def _conv(features: int, kernel: int, stride: int, padding: int, use_bias: bool,
          dtype, name: str) -> nn.Module:
  return layers.Conv(features, (kernel, kernel), strides=(stride, stride),
                     padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                     kernel_init=_KAIMING, dtype=dtype, param_dtype=jnp.float32, name=name)


def _bn(dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


class BasicBlock(nn.Module):
  """torchvision BasicBlock: two 3x3 convs, the first strided, plus a projection shortcut."""
  features: int
  stride: int = 1
  downsample: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    y = _conv(self.features, 3, self.stride, 1, False, self.dtype, 'conv1')(x)
    y = nn.relu(_bn(self.dtype, 'bn1')(y))
    y = _conv(self.features, 3, 1, 1, False, self.dtype, 'conv2')(y)
    y = _bn(self.dtype, 'bn2')(y)
    if self.downsample:
      x = _conv(self.features, 1, self.stride, 0, False, self.dtype, 'downsample_0')(x)
      x = _bn(self.dtype, 'downsample_1')(x)
    return nn.relu(x + y)


class ResNet34(nn.Module):
  """ResNet-34 trunk: sRGB [0, 1] (B, H, W, 3) -> {'layer1'..'layer4'} at strides 4..32."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    x = imagenet_normalize(x.astype(jnp.float32)).astype(self.dtype)
    x = _conv(64, 7, 2, 3, False, self.dtype, 'conv1')(x)
    x = nn.relu(_bn(self.dtype, 'bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    out = {}
    for i, (features, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
      for j in range(blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        x = BasicBlock(features, stride, downsample=(i > 0 and j == 0), dtype=self.dtype,
                       name=f'layer{i + 1}_{j}')(x)
      out[f'layer{i + 1}'] = x
    return out


class VGG(nn.Module):
  """VGG-16/19 `features`: sRGB [0, 1] (B, H, W, 3) -> the requested ReLU outputs.

  `outputs` names ReLU outputs ('relu1_1' .. 'relu5_3' / 'relu5_4'); layers past the deepest
  requested one are neither built nor run. Max-pools are 2x2/2 with floor, as in torchvision.
  """
  depth: int = 19
  outputs: Sequence[str] = ('relu5_4',)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    if self.depth not in _VGG_CFGS:
      raise ValueError(f'VGG depth must be 16 or 19, got {self.depth}')
    names = vgg_layer_names(self.depth)
    unknown = [o for o in self.outputs if o not in names]
    if unknown or not self.outputs:
      raise ValueError(f'VGG-{self.depth} outputs must be among {names}, got {self.outputs}')
    last = max(names.index(o) for o in self.outputs)
    x = imagenet_normalize(x.astype(jnp.float32)).astype(self.dtype)
    out, conv = {}, 0
    for index, v in enumerate(_features_layout(self.depth)):
      if v == 'M':
        x = layers.max_pool_tiles(x, 2)
      elif v != 'relu':
        x = nn.relu(_conv(v, 3, 1, 1, True, self.dtype, f'features_{index}')(x))
        if names[conv] in self.outputs:
          out[names[conv]] = x
        if conv == last:
          break
        conv += 1
    return out


def _features_layout(depth: int) -> list:
  """The config at torchvision `features` indices: [64, 'relu', 64, 'relu', 'M', ...]."""
  layout = []
  for v in _VGG_CFGS[depth]:
    layout.extend(['M'] if v == 'M' else [v, 'relu'])
  return layout


# torchvision's alexnet().features: (index, channels, kernel, stride, padding) of each conv, and
# the ReLU output after it that the lpips package taps (its pretrained_networks.alexnet slices).
_ALEXNET_CONVS = ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1), (8, 256, 3, 1, 1),
                  (10, 256, 3, 1, 1))
ALEXNET_LAYERS = ('relu1', 'relu2', 'relu3', 'relu4', 'relu5')
ALEXNET_MIN_SIZE = 31  # Smallest side whose second 3x3/2 max-pool still has an output (torch).


class AlexNet(nn.Module):
  """AlexNet `features` (Krizhevsky 2014's one-GPU variant, torchvision's layout): sRGB [0, 1]
  (B, H, W, 3) -> {'relu1': 64, 'relu2': 192, 'relu3': 384, 'relu4': 256, 'relu5': 256 channels},
  the ReLU outputs after features.1, .4, .7, .9 and .11 (the taps of LPIPS-Alex, Zhang et al.
  2018). The last max-pool (features.12) has no parameters and feeds no tap: it is not run.
  """
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    if min(x.shape[1:3]) < ALEXNET_MIN_SIZE:
      raise ValueError(f'AlexNet needs images of at least {ALEXNET_MIN_SIZE}x{ALEXNET_MIN_SIZE} '
                       f'px, got {x.shape[1]}x{x.shape[2]}')
    x = imagenet_normalize(x.astype(jnp.float32)).astype(self.dtype)
    out = {}
    for name, (index, features, kernel, stride, padding) in zip(ALEXNET_LAYERS, _ALEXNET_CONVS):
      if index in (3, 6):
        # torch's MaxPool2d(3, 2) before features.3 and .6: overlapping windows, no padding,
        # floor, i.e. a VALID pool (max_pool_tiles only handles non-overlapping tiles).
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
      x = nn.relu(_conv(features, kernel, stride, padding, True, self.dtype,
                        f'features_{index}')(x))
      out[name] = x
    return out
