"""Pix2pix (Isola et al. 2017, "Image-to-image translation with conditional adversarial
networks") as a colorization + restoration baseline: the U-Net-256 generator, the 70x70
PatchGAN conditioned on the input, and the objective (vanilla GAN + 100 L1).

Layer for layer the networks of the authors' PyTorch code (junyanz/pytorch-CycleGAN-and-pix2pix,
`UnetGenerator(num_downs=8, ngf=64, norm='batch', use_dropout=True)` and
`NLayerDiscriminator(n_layers=3, ndf=64, norm='batch')`); docs/MODEL.md, "Baselines: Pix2pix and
CMS4CV", lists what this port decides.

Colour space: G maps degraded L (B, H, W, 1) in [0, 1] to (B, H, W, 3) in [-1, 1], read as
normalised Lab: channel 0 is the restored L mapped to [-1, 1], channels 1-2 are ab / 110
(`to_lab`, `to_target`). Objective: losses/pix2pix.py; optimiser: configs/baselines/pix2pix.py.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from pikfix_jax.models import layers
from pikfix_jax.models.discriminator import PatchDiscriminator

INIT_STD = 0.02  # "weights initialized from a Gaussian distribution with mean 0 and std 0.02"
DROPOUT_RATE = 0.5


class UnetGenerator(nn.Module):
  """Pix2pix's U-Net (junyanz `UnetGenerator`): L (B, H, W, 1) in [0, 1] -> normalised Lab
  (B, H, W, 3) in [-1, 1] (tanh; module docstring).

  `num_downs` 4x4 stride-2 convs (LeakyReLU 0.2 before all but the first; BatchNorm after
  all but the first and the last), as many 4x4 stride-2 transposed convs back (ReLU before
  each; BatchNorm after all but the outermost, which ends in tanh; dropout 0.5 after the
  `num_downs - 5` decoder layers next to the innermost), each decoder layer but the innermost
  seeing [encoder skip, decoder] concatenated. Convs are bias-free except the outermost
  transposed conv (junyanz: no bias with BatchNorm). Widths ngf * (1, 2, 4, 8, 8, ...).

  Any H, W: the input is padded to a multiple of 2^num_downs (`layers.pad_to_multiple`:
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
    x, hw = layers.pad_to_multiple(l, 2 ** n)
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
      x = layers.ConvTransposeStride2(self.output_channels if outermost else widths[i - 1],
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
    return layers.crop_to(jnp.tanh(x).astype(jnp.float32), hw)


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
