"""The ArcFace network of GFP-GAN's identity-preserving loss (Wang et al., CVPR 2021, eq. 6), in
Flax (NHWC), inference form: the release's `ResNetArcFace(block=IRBlock, layers=[2, 2, 2, 2],
use_se=False)` (TencentARC/GFPGAN, gfpgan/archs/arcface_arch.py; its weights are the file
arcface_resnet18.pth of the GFPGAN release).

A grey 128 x 128 face (`identity_input`) -> a 512-d embedding: a 3x3 stem conv (64) with
BatchNorm and PReLU, a 2x2 max pool, four stages of two improved-residual blocks (64, 128,
256, 512 channels, stages 2-4 strided), BatchNorm, dropout (the identity at inference), the
8 x 8 x 512 map flattened in torch's channel-major order, a linear layer to 512 and
BatchNorm1d. BatchNorm reads its running statistics (`batch_stats`), eps 1e-5 as torch's
default. Variable names are the release's state-dict keys with each numeric index merged into
the module name before it ('layer2.0.downsample.1.running_mean' <->
batch_stats['layer2_0']['downsample_1']['mean']; the PReLU slopes are params [...]['prelu']
['weight'], one slope per PReLU as torch's default nn.PReLU()); `weights.py` converts
(--arch=arcface).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from pikfix_jax.models import layers

INPUT_SIZE = 128  # The side of the grey face the network reads (fc5 expects an 8 x 8 map).
EMBEDDING = 512
# The release's grey conversion (gray_resize_for_identity in gfpgan_model.py): these weights,
# not the ITU-R 601 ones rounded to three digits.
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
# The release's xavier-normal initialisation (conv and linear weights) of an untrained net.
_XAVIER = nn.initializers.variance_scaling(1.0, 'fan_avg', 'normal')


def identity_input(image: jnp.ndarray) -> jnp.ndarray:
  """(B, H, W, 3) face in the generator's range ([-1, 1], unclamped) -> (B, 128, 128, 1): the
  release's grey weighted sum, then bilinear resampling with half-pixel centres and no
  anti-aliasing (torch's F.interpolate(mode='bilinear', align_corners=False)); a 512 px face
  becomes the mean of pixels 4i+1 and 4i+2 of each axis."""
  gray = jnp.tensordot(image, jnp.asarray(GRAY_WEIGHTS, image.dtype), axes=([-1], [0]))[..., None]
  if gray.shape[1:3] == (INPUT_SIZE, INPUT_SIZE):
    return gray
  return jax.image.resize(gray, (gray.shape[0], INPUT_SIZE, INPUT_SIZE, 1), 'bilinear',
                          antialias=False).astype(image.dtype)


class PReLU(nn.Module):
  """torch's nn.PReLU(): max(0, x) + a min(0, x) with one learned slope `weight` (init 0.25)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    slope = self.param('weight', nn.initializers.constant(0.25), (1,), jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Module:
  pad = kernel // 2
  return layers.Conv(features, (kernel, kernel), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)), use_bias=False, kernel_init=_XAVIER,
                     name=name)


def _bn(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=name)


class IRBlock(nn.Module):
  """The release's improved residual block without squeeze-excitation: BN, 3x3 conv (width
  kept), BN, PReLU, 3x3 conv (strided, to `features`), BN, plus the shortcut (a strided 1x1
  conv + BN where the shape changes), then the same PReLU again."""
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    prelu = PReLU(name='prelu')  # one module, applied twice, as in the release
    y = _bn('bn0')(x)
    y = _conv(x.shape[-1], 3, 1, 'conv1')(y)
    y = prelu(_bn('bn1')(y))
    y = _conv(self.features, 3, self.stride, 'conv2')(y)
    y = _bn('bn2')(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = _bn('downsample_1')(_conv(self.features, 1, self.stride, 'downsample_0')(x))
    return prelu(y + x)


class ResNetArcFace(nn.Module):
  """(B, 128, 128, 1) grey face (`identity_input`) -> (B, 512) identity embedding (module
  docstring)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 1):
      raise ValueError(f'ResNetArcFace reads (B, {INPUT_SIZE}, {INPUT_SIZE}, 1) grey faces '
                       f'(arcface.identity_input), got {x.shape}')
    x = PReLU(name='prelu')(_bn('bn1')(_conv(64, 3, 1, 'conv1')(x)))
    # nn.max_pool, not layers.max_pool_tiles: the reshape-max's gradient finds the maximum by
    # equality with a recomputed input, which the identity loss's backward pass (through a
    # BatchNorm + PReLU fused differently) missed at XLA:CPU's optimisation level 0, giving
    # 0 / 0; max_pool's gradient routes by the argmax it computed.
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    for stage, features in enumerate((64, 128, 256, 512)):
      for block in range(2):
        stride = 2 if stage > 0 and block == 0 else 1
        x = IRBlock(features, stride, name=f'layer{stage + 1}_{block}')(x)
    x = _bn('bn4')(x)
    # Dropout is the identity at inference; torch flattens NCHW, so channels go first.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = nn.Dense(EMBEDDING, kernel_init=_XAVIER, name='fc5')(x)
    return _bn('bn5')(x)


def embed(variables: dict, image: jnp.ndarray) -> jnp.ndarray:
  """ArcFace embeddings (B, 512) of faces in [-1, 1] (B, H, W, 3): the release's identity
  features (`identity_input`, then the network)."""
  return ResNetArcFace().apply(variables, identity_input(image))



def identity_distance(variables: dict, image: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """(B,) 1 - cos between the ArcFace embeddings of faces and their targets (both (B, H, W, 3)
  in [-1, 1]): evaluation's identity distance (0 = the same identity direction)."""
  a, b = embed(variables, image), embed(variables, target)
  cos = jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-12)
  return 1.0 - cos
