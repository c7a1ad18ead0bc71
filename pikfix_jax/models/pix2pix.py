"""Pix2pix (Isola et al. 2017, "Image-to-image translation with conditional adversarial
networks") as a colorization + restoration baseline: the U-Net-256 generator, the 70x70
PatchGAN conditioned on the input, and the objective (vanilla GAN + 100 L1).

Layer for layer the networks of the authors' PyTorch code (junyanz/pytorch-CycleGAN-and-pix2pix,
`UnetGenerator(num_downs=8, ngf=64, norm='batch', use_dropout=True)` and
`NLayerDiscriminator(n_layers=3, ndf=64, norm='batch')`); docs/MODEL.md, "Baselines: Pix2pix and
CMS4CV", lists what this port decides.

Colour space: G maps degraded L (B, H, W, 1) in [0, 1] to (B, H, W, 3) in [-1, 1], read as
normalised Lab: channel 0 is the restored L mapped to [-1, 1], channels 1-2 are ab / 110
(`to_lab`, `to_target`). The optimiser is the caller's: Adam(LEARNING_RATE, ADAM_B1, ADAM_B2)
for both networks, constant for 100 epochs, then linearly to 0 over 100 more (junyanz's
defaults).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from pikfix_jax import losses
from pikfix_jax.models import layers
from pikfix_jax.models.discriminator import PatchDiscriminator
from pikfix_jax.models.pikfix import crop_to, pad_to_multiple
from pikfix_jax.ops import conv

LEARNING_RATE = 2e-4
ADAM_B1, ADAM_B2 = 0.5, 0.999
L1_WEIGHT = 100.0  # lambda of eq. 4
INIT_STD = 0.02  # "weights initialized from a Gaussian distribution with mean 0 and std 0.02"
DROPOUT_RATE = 0.5

# Output phase r (0: even, 1: odd position along an axis) of torch's ConvTranspose2d(k=4, s=2,
# p=1) reads input positions m - 1 + r and m + r through kernel taps _PHASE_TAPS[r]
# (output y = 2 x - 1 + k).
_PHASE_TAPS = np.array([[3, 1], [2, 0]])


class ConvTransposeStride2(nn.Module):
  """torch.nn.ConvTranspose2d(in, features, kernel_size=4, stride=2, padding=1): (B, H, W, C)
  -> (B, 2H, 2W, features). `kernel` (4, 4, C, features) is torch's weight.permute(2, 3, 0, 1),
  not flipped.

  Computed as one stride-1 2x2 conv giving the four output phases as channels, interleaved
  (depth-to-space): the same function, but its gradients take the fast CPU paths of
  `ops.conv`, where nn.ConvTranspose's lhs-dilated conv has XLA:CPU gradients ~25x slower
  (docs/MODEL.md, "Performance rewrites")."""
  features: int
  use_bias: bool = True
  kernel_init: Any = nn.initializers.normal(INIT_STD)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    o = self.features
    kernel = self.param('kernel', self.kernel_init, (4, 4, c, o)).astype(self.dtype)
    # phases[a, bb, c, rh, rw, o]: tap (a, bb) of the 2x2 window of output phase (rh, rw).
    taps = kernel[_PHASE_TAPS[:, :, None, None], _PHASE_TAPS[None, None, :, :]]  # rh,a,rw,bb
    phases = jnp.transpose(taps, (1, 3, 4, 0, 2, 5)).reshape(2, 2, c, 4 * o)
    y = conv.conv_general_dilated(x.astype(self.dtype), phases, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = y.reshape(b, h + 1, w + 1, 2, 2, o)
    rows = [jnp.stack([y[:, rh:rh + h, rw:rw + w, rh, rw] for rw in (0, 1)], axis=3)
            for rh in (0, 1)]
    y = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, o)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (o,)).astype(self.dtype)
    return y


class UnetGenerator(nn.Module):
  """Pix2pix's U-Net (junyanz `UnetGenerator`): L (B, H, W, 1) in [0, 1] -> normalised Lab
  (B, H, W, 3) in [-1, 1] (tanh; module docstring).

  `num_downs` 4x4 stride-2 convs (LeakyReLU 0.2 before all but the first; BatchNorm after
  all but the first and the last), as many 4x4 stride-2 transposed convs back (ReLU before
  each; BatchNorm after all but the outermost, which ends in tanh; dropout 0.5 after the
  `num_downs - 5` decoder layers next to the innermost), each decoder layer but the innermost
  seeing [encoder skip, decoder] concatenated. Convs are bias-free except the outermost
  transposed conv (junyanz: no bias with BatchNorm). Widths ngf * (1, 2, 4, 8, 8, ...).

  Any H, W: the input is padded to a multiple of 2^num_downs (`pikfix.pad_to_multiple`:
  reflect, or edge where the pad is not shorter than the side) and the output cropped back.
  `train`: BatchNorm on batch statistics (updating 'batch_stats') and dropout on (rng
  'dropout'). Isola et al. keep both at test time too; that is `train=True` with the updated
  statistics discarded.
  """
  num_downs: int = 8
  ngf: int = 64
  output_channels: int = 3
  init_std: float = INIT_STD
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, l: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if self.num_downs < 5:
      raise ValueError(f'num_downs={self.num_downs}: pix2pix\'s U-Net has at least 5')
    n = self.num_downs
    x, hw = pad_to_multiple(l, 2 ** n)
    x = (2.0 * x - 1.0).astype(self.dtype)  # pix2pix's inputs are in [-1, 1]
    widths = [self.ngf * min(2 ** i, 8) for i in range(n)]
    kernel_init = nn.initializers.normal(self.init_std)

    def norm(name: str) -> nn.Module:
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                          scale_init=layers.normal_around_one(self.init_std),
                          dtype=self.dtype, name=name)

    encoder = []
    for i in range(n):
      if i:
        x = nn.leaky_relu(x, 0.2)
      x = layers.Conv(widths[i], (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                      use_bias=False, kernel_init=kernel_init, dtype=self.dtype,
                      name=f'down{i}')(x)
      if 0 < i < n - 1:
        x = norm(f'down_norm{i}')(x)
      encoder.append(x)
    for i in reversed(range(n)):
      x = nn.relu(x)
      outermost = i == 0
      x = ConvTransposeStride2(self.output_channels if outermost else widths[i - 1],
                               use_bias=outermost, kernel_init=kernel_init, dtype=self.dtype,
                               name=f'up{i}')(x)
      if outermost:
        break
      x = norm(f'up_norm{i}')(x)
      if 4 <= i < n - 1:
        x = nn.Dropout(DROPOUT_RATE, deterministic=not train)(x)
      # junyanz's skip is the LeakyReLU'd encoder output (an in-place activation); the ReLU
      # that opens the next decoder layer makes the two the same.
      x = jnp.concatenate([encoder[i - 1], x], axis=-1)
    return crop_to(jnp.tanh(x).astype(jnp.float32), hw)


def make_discriminator(features: int = 64, num_layers: int = 3, dtype: Any = jnp.float32
                       ) -> PatchDiscriminator:
  """Pix2pix's 70x70 PatchGAN (junyanz `NLayerDiscriminator`, BatchNorm, N(0, 0.02) init):
  call it as D(L, G's output or the target (`to_target`), train=...) -> logits (B, h, w, 1);
  it sees [L, Lab] concatenated, as pix2pix's D sees [input, output]. L may be given in
  [0, 1]: the first conv has a bias, so L's affine map to [-1, 1] changes nothing D can learn
  except at the zero-padded border."""
  return PatchDiscriminator(features=features, num_layers=num_layers, norm='batch',
                            init_std=INIT_STD, dtype=dtype)


def to_target(l: jnp.ndarray, ab: jnp.ndarray) -> jnp.ndarray:
  """Normalised Lab (L in [0, 1], ab in [-1, 1]) -> G's output space (all in [-1, 1])."""
  return jnp.concatenate([2.0 * l - 1.0, ab], axis=-1)


def to_lab(output: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """G's output -> (L in [0, 1], ab in [-1, 1]), the project's normalised Lab."""
  return (output[..., :1] + 1.0) / 2.0, output[..., 1:]


def discriminator_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """(BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)) / 2, BCE with logits averaged over patches: the
  halved objective of sec. 3.3 (gan_mode='vanilla')."""
  return 0.5 * losses.discriminator_loss(real_logits, fake_logits, 'nonsaturating')


def generator_loss(fake_logits: jnp.ndarray, output: jnp.ndarray, target: jnp.ndarray,
                   l1_weight: float = L1_WEIGHT) -> dict[str, jnp.ndarray]:
  """BCE(D(x, G(x)), 1) + l1_weight * |G(x) - y|_1 (eq. 4, non-saturating form), on G's
  output space; returns {'adversarial', 'l1', 'total'}."""
  terms = {'adversarial': losses.generator_adversarial_loss(fake_logits, 'nonsaturating'),
           'l1': losses.l1(output, target)}
  terms['total'] = terms['adversarial'] + l1_weight * terms['l1']
  return terms
