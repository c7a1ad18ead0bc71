"""DeepLabV3 with a MobileNetV3-Large backbone in Flax (NHWC): torchvision's
`deeplabv3_mobilenet_v3_large`, for frozen use (21 Pascal VOC classes).

MobileNetV3-Large: Howard et al. 2019, "Searching for MobileNetV3" (arXiv:1905.02244).
DeepLabV3 / ASPP: Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image
Segmentation" (arXiv:1706.05587).

Inputs are sRGB in [0, 1], (B, H, W, 3); the ImageNet mean/std that torchvision's
`SemanticSegmentation` transform applies is applied here. Outputs are per-pixel class logits
(B, H, W, num_classes), upsampled from stride 16 to the input size as torchvision does.
BatchNorm always runs in inference mode on the `batch_stats` collection.

Parameter names are torchvision's state-dict keys with every '.' turned into '_' (the module
path; `pikfix_jax.weights.torch_key` maps back): 'backbone.1.block.0.0.weight' <->
params['backbone_1']['block_0_0']['kernel'], 'classifier.0.convs.4.1.weight' <->
params['classifier_0']['convs_4_1']['kernel']. No torchvision module name here contains '_',
so the mapping is one-to-one. The auxiliary FCN head (`aux_classifier.*`, a training-time loss
on the stride-8 features) is not built; its weights are ignored on conversion.
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from pikfix_jax.models import backbones
from pikfix_jax.models import layers

# torchvision's MobileNetV3 conv initialisation (kaiming normal, fan_out). Only used without
# converted weights.
_KAIMING = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# The bottleneck table of MobileNetV3-Large (Howard et al. 2019, Table 1) as torchvision builds
# it with dilated=True: (kernel, expanded, out, squeeze-excite, hardswish, stride, dilation).
# The last three blocks (C4) keep stride 1 and dilate their depthwise convs by 2 instead, so
# the backbone's output stride is 16, not 32 (DeepLabV3's atrous backbone).
BNECK_LARGE = (
    (3, 16, 16, False, False, 1, 1),
    (3, 64, 24, False, False, 2, 1),  # C1
    (3, 72, 24, False, False, 1, 1),
    (5, 72, 40, True, False, 2, 1),  # C2: features index 4, the stride-8 'aux' output
    (5, 120, 40, True, False, 1, 1),
    (5, 120, 40, True, False, 1, 1),
    (3, 240, 80, False, True, 2, 1),  # C3
    (3, 200, 80, False, True, 1, 1),
    (3, 184, 80, False, True, 1, 1),
    (3, 184, 80, False, True, 1, 1),
    (3, 480, 112, True, True, 1, 1),
    (3, 672, 112, True, True, 1, 1),
    (5, 672, 160, True, True, 2, 2),  # C4 (stride replaced by dilation)
    (5, 960, 160, True, True, 1, 2),
    (5, 960, 160, True, True, 1, 2),
)
STEM_CHANNELS = 16
LAST_CHANNELS = 960  # 6 x 160: features index 16, the stride-16 'out' output
AUX_INDEX = 4  # torchvision's stage_indices[-4]: the last block at stride 8
ATROUS_RATES = (12, 24, 36)
ASPP_CHANNELS = 256
BACKBONE_BN_EPS = 1e-3  # MobileNetV3's BatchNorm2d(eps=0.001); the DeepLab head uses 1e-5


def make_divisible(v: float, divisor: int = 8) -> int:
  """torchvision's `_make_divisible`: round to a multiple of `divisor`, never below it nor
  more than 10 % below `v` (gives the squeeze-excitation widths)."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


def _conv(features: int, kernel: int, *, stride: int = 1, dilation: int = 1, groups: int = 1,
          use_bias: bool = False, dtype, name: str) -> nn.Module:
  # torch pads (kernel - 1) // 2 * dilation on every side; explicit pads reproduce its output
  # size for odd inputs too (SAME padding would pad asymmetrically for stride 2).
  pad = (kernel - 1) // 2 * dilation
  return layers.Conv(features, (kernel, kernel), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                     feature_group_count=groups, use_bias=use_bias, kernel_init=_KAIMING,
                     dtype=dtype, param_dtype=jnp.float32, name=name)


def _bn(epsilon: float, dtype, name: str) -> nn.BatchNorm:
  # torch momentum 0.01 is flax 0.99; irrelevant here (inference statistics only).
  return nn.BatchNorm(use_running_average=True, momentum=0.99, epsilon=epsilon, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


class SqueezeExcitation(nn.Module):
  """torchvision's SqueezeExcitation as MobileNetV3 uses it: global mean -> 1x1 conv -> ReLU ->
  1x1 conv -> hardsigmoid, scaling the channels (Howard et al. 2019, section 5.3)."""
  squeeze: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    scale = jnp.mean(x, axis=(1, 2), keepdims=True)
    scale = nn.relu(_conv(self.squeeze, 1, use_bias=True, dtype=self.dtype, name='fc1')(scale))
    scale = _conv(x.shape[-1], 1, use_bias=True, dtype=self.dtype, name='fc2')(scale)
    return jax.nn.hard_sigmoid(scale) * x  # relu6(x + 3) / 6, as torch's Hardsigmoid


class InvertedResidual(nn.Module):
  """MobileNetV3 bottleneck (torchvision's InvertedResidual): [1x1 expand] -> depthwise kxk ->
  [squeeze-excite] -> 1x1 linear projection, plus the input when shapes allow.

  Submodules are named by their index in torchvision's `block` Sequential; a Conv2dNormActivation
  at index j is 'block_j_0' (conv) and 'block_j_1' (BatchNorm)."""
  kernel: int
  expanded: int
  out: int
  use_se: bool
  use_hs: bool
  stride: int
  dilation: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    act = jax.nn.hard_swish if self.use_hs else nn.relu
    in_channels, j, y = x.shape[-1], 0, x
    if self.expanded != in_channels:  # the first block (16 -> 16) has no expansion
      y = _conv(self.expanded, 1, dtype=self.dtype, name=f'block_{j}_0')(y)
      y = act(_bn(BACKBONE_BN_EPS, self.dtype, f'block_{j}_1')(y))
      j += 1
    # torchvision: a dilated block never strides (its stride becomes the dilation).
    stride = 1 if self.dilation > 1 else self.stride
    y = _conv(self.expanded, self.kernel, stride=stride, dilation=self.dilation,
              groups=self.expanded, dtype=self.dtype, name=f'block_{j}_0')(y)
    y = act(_bn(BACKBONE_BN_EPS, self.dtype, f'block_{j}_1')(y))
    j += 1
    if self.use_se:
      y = SqueezeExcitation(make_divisible(self.expanded // 4, 8), self.dtype,
                            name=f'block_{j}')(y)
      j += 1
    y = _conv(self.out, 1, dtype=self.dtype, name=f'block_{j}_0')(y)
    y = _bn(BACKBONE_BN_EPS, self.dtype, f'block_{j}_1')(y)
    if self.stride == 1 and in_channels == self.out:
      y = y + x
    return y


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling (Chen et al. 2017, section 3.3), torchvision's layout:
  convs_0 1x1, convs_1..3 3x3 at the atrous rates, convs_4 image pooling; concatenated and
  projected by project_0/1 (1x1 conv + BN + ReLU; its Dropout(0.5) is a no-op here)."""
  rates: tuple[int, ...] = ATROUS_RATES
  features: int = ASPP_CHANNELS
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    def conv_bn_relu(y, kernel, dilation, index, conv_at):
      y = _conv(self.features, kernel, dilation=dilation, dtype=self.dtype,
                name=f'convs_{index}_{conv_at}')(y)
      return nn.relu(_bn(1e-5, self.dtype, f'convs_{index}_{conv_at + 1}')(y))

    branches = [conv_bn_relu(x, 1, 1, 0, 0)]
    for i, rate in enumerate(self.rates, start=1):
      branches.append(conv_bn_relu(x, 3, rate, i, 0))
    # Image pooling: torchvision's ASPPPooling is [AdaptiveAvgPool2d(1), conv, BN, ReLU]
    # (hence convs_N_1/convs_N_2), then a bilinear resize of a 1x1 map: a broadcast.
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = conv_bn_relu(pooled, 1, 1, len(self.rates) + 1, 1)
    branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (self.features,)))
    y = jnp.concatenate(branches, axis=-1)
    y = _conv(self.features, 1, dtype=self.dtype, name='project_0')(y)
    return nn.relu(_bn(1e-5, self.dtype, 'project_1')(y))


class DeepLabV3MobileNetV3Large(nn.Module):
  """torchvision's deeplabv3_mobilenet_v3_large (Chen et al. 2017 on Howard et al. 2019),
  inference only, without the auxiliary head.

  __call__(x, return_features=False): x sRGB in [0, 1], (B, H, W, 3), any H, W >= 1 ->
  logits (B, H, W, num_classes) in float32 (class = argmax; VOC order, 0 = background).
  With return_features, also the backbone outputs as torchvision's IntermediateLayerGetter
  names them: {'aux': features index 4 (stride 8, 40 ch), 'out': index 16 (stride 16, 960 ch)}.
  """
  num_classes: int = 21
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, return_features: bool = False):
    b, h, w, _ = x.shape
    x = backbones.imagenet_normalize(x.astype(jnp.float32)).astype(self.dtype)
    # backbone = MobileNetV3-Large `features` (torchvision's model.backbone.<index>).
    x = _conv(STEM_CHANNELS, 3, stride=2, dtype=self.dtype, name='backbone_0_0')(x)
    x = jax.nn.hard_swish(_bn(BACKBONE_BN_EPS, self.dtype, 'backbone_0_1')(x))
    features = {}
    for i, cfg in enumerate(BNECK_LARGE, start=1):
      x = InvertedResidual(*cfg, dtype=self.dtype, name=f'backbone_{i}')(x)
      if i == AUX_INDEX:
        features['aux'] = x
    last = len(BNECK_LARGE) + 1
    x = _conv(LAST_CHANNELS, 1, dtype=self.dtype, name=f'backbone_{last}_0')(x)
    x = jax.nn.hard_swish(_bn(BACKBONE_BN_EPS, self.dtype, f'backbone_{last}_1')(x))
    features['out'] = x
    # classifier = DeepLabHead: ASPP, 3x3 conv + BN + ReLU, 1x1 conv to the classes.
    y = ASPP(dtype=self.dtype, name='classifier_0')(x)
    y = _conv(ASPP_CHANNELS, 3, dtype=self.dtype, name='classifier_1')(y)
    y = nn.relu(_bn(1e-5, self.dtype, 'classifier_2')(y))
    y = _conv(self.num_classes, 1, use_bias=True, dtype=self.dtype, name='classifier_4')(y)
    logits = upsample_bilinear(y.astype(jnp.float32), h, w)
    return (logits, features) if return_features else logits


def upsample_bilinear(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """F.interpolate(mode='bilinear', align_corners=False) to a size >= the input's, NHWC.

  jax.image.resize samples at half-pixel centres with scale out/in as torch does; at the
  borders it drops the outside tap and renormalises, which equals torch's clamped index.
  Without antialiasing the triangle kernel is not widened (the same for upsampling anyway).
  """
  if (height, width) == x.shape[1:3]:
    return x
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), 'bilinear',
                          antialias=False)


def param_count(params: Optional[dict] = None) -> int:
  """Number of parameters (11,025,477 for 21 classes: torchvision's 11,029,328 less the
  3,851 of the auxiliary head); of `params` if given, else of a freshly shaped model."""
  if params is None:
    params = jax.eval_shape(DeepLabV3MobileNetV3Large().init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))['params']
  return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
