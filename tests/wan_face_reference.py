"""A torch transcription of Wan et al.'s released face-enhancement generator (tests only).

Written from the release's description (microsoft/Bringing-Old-Photos-Back-to-Life,
Face_Enhancement: the SPADE generator as test_face.py builds it with run.py's stage-3 flags
`--label_nc 18 --no_instance --no_parsing_map`, `norm_G=spectralspadesyncbatch3x3`,
`num_upsampling_layers=normal`, `ngf=64`), with the release's module names, so that
`state_dict()` has exactly the keys of its `checkpoints/Setting_9_epoch_100/latest_net_G.pth`
and `checkpoints/FaceSR_512/latest_net_G.pth`: the spectral-normalised block convs store
`weight_orig`, `weight_u`, `weight_v` (torch.nn.utils.spectral_norm), and the parameter-free
synchronised BatchNorm of SPADE stores `running_mean`, `running_var`, `num_batches_tracked`
(SynchronizedBatchNorm2d is a torch `_BatchNorm`: same buffers, and in eval mode the same
`F.batch_norm` with the running statistics as nn.BatchNorm2d, used here).

`ngf`, `load_size` and `spade_hidden` (the release hard-codes 128) are arguments so the tests
can run a small network; `write_fake_release` writes random release-size checkpoints in the
release's folder layout.
"""

import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

NUM_UPSAMPLING = {'normal': 5, 'more': 6, 'most': 7}
RELEASE_FOLDERS = {'Setting_9_epoch_100': 256, 'FaceSR_512': 512}


def _interp_face(face: torch.Tensor, size) -> torch.Tensor:
  # torch's default bilinear: align_corners=False, no anti-aliasing (as the release calls it).
  return F.interpolate(face, size=size, mode='bilinear')


class SPADE(nn.Module):
  """Eq. 16: param-free BatchNorm, then (1 + gamma(face)) * . + beta(face), gamma and beta
  3x3 convs on a shared 3x3 conv + ReLU of the degraded face resized to the features' size."""

  def __init__(self, channels: int, hidden: int = 128):
    super().__init__()
    self.param_free_norm = nn.BatchNorm2d(channels, affine=False)
    self.mlp_shared = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU())
    self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
    self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

  def forward(self, x, face):
    cond = self.mlp_shared(_interp_face(face, x.shape[2:]))
    return self.param_free_norm(x) * (1 + self.mlp_gamma(cond)) + self.mlp_beta(cond)


class SPADEResnetBlock(nn.Module):
  """Pre-activation residual block: SPADE - LeakyReLU(0.2) - conv3x3, twice; a learned
  SPADE + 1x1 conv shortcut when the width changes; block convs spectral-normalised."""

  def __init__(self, fin: int, fout: int, hidden: int = 128):
    super().__init__()
    self.learned_shortcut = fin != fout
    mid = min(fin, fout)
    sn = nn.utils.spectral_norm
    self.conv_0 = sn(nn.Conv2d(fin, mid, 3, padding=1))
    self.conv_1 = sn(nn.Conv2d(mid, fout, 3, padding=1))
    if self.learned_shortcut:
      self.conv_s = sn(nn.Conv2d(fin, fout, 1, bias=False))
    self.norm_0 = SPADE(fin, hidden)
    self.norm_1 = SPADE(mid, hidden)
    if self.learned_shortcut:
      self.norm_s = SPADE(fin, hidden)

  def forward(self, x, face):
    skip = self.conv_s(self.norm_s(x, face)) if self.learned_shortcut else x
    dx = self.conv_0(F.leaky_relu(self.norm_0(x, face), 0.2))
    dx = self.conv_1(F.leaky_relu(self.norm_1(dx, face), 0.2))
    return skip + dx


class SPADEGenerator(nn.Module):
  """The face generator G_f (sec. 3.4, Fig. 5) without a parsing map: face (B, 3, S, S) in
  [-1, 1] -> tanh image (B, 3, s 2^n, s 2^n), s = load_size // 2^n, n = 5 ('normal')."""

  def __init__(self, ngf: int = 64, load_size: int = 256, num_upsampling_layers: str = 'normal',
               spade_hidden: int = 128):
    super().__init__()
    nf = ngf
    self.mode = num_upsampling_layers
    self.start = load_size // 2 ** NUM_UPSAMPLING[num_upsampling_layers]
    self.fc = nn.Conv2d(3, 16 * nf, 3, padding=1)
    block = lambda fin, fout: SPADEResnetBlock(fin, fout, spade_hidden)
    self.head_0 = block(16 * nf, 16 * nf)
    self.G_middle_0 = block(16 * nf, 16 * nf)
    self.G_middle_1 = block(16 * nf, 16 * nf)
    self.up_0 = block(16 * nf, 8 * nf)
    self.up_1 = block(8 * nf, 4 * nf)
    self.up_2 = block(4 * nf, 2 * nf)
    self.up_3 = block(2 * nf, nf)
    final = nf
    if num_upsampling_layers == 'most':
      self.up_4 = block(nf, nf // 2)
      final = nf // 2
    self.conv_img = nn.Conv2d(final, 3, 3, padding=1)

  def forward(self, face):
    up = lambda t: F.interpolate(t, scale_factor=2)  # nn.Upsample's default: nearest
    x = self.fc(_interp_face(face, (self.start, self.start)))
    x = self.head_0(x, face)
    x = self.G_middle_0(up(x), face)
    if self.mode in ('more', 'most'):
      x = up(x)
    x = self.G_middle_1(x, face)
    for name in ('up_0', 'up_1', 'up_2', 'up_3') + (('up_4',) if self.mode == 'most' else ()):
      x = getattr(self, name)(up(x), face)
    return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


def randomize(model: SPADEGenerator, seed: int, power_iterations: int = 2) -> SPADEGenerator:
  """Non-trivial random state: convs ~ N(0, 1 / fan_in) (the output conv smaller, to keep the
  tanh off saturation), biases and BatchNorm running statistics away from 0 / 1, and each
  spectral norm's (u, v) after `power_iterations` steps from a random u (not converged, so a
  converter must use the saved vectors, not an SVD)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, module in model.named_modules():
      if isinstance(module, nn.Conv2d):
        w = module.weight_orig if hasattr(module, 'weight_orig') else module.weight
        fan_in = w[0].numel()
        scale = 0.3 if name == 'conv_img' else 1.0
        w.copy_(torch.randn(w.shape, generator=g) * scale / fan_in ** 0.5)
        if module.bias is not None:
          module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
        if hasattr(module, 'weight_u'):
          mat = w.reshape(w.shape[0], -1)
          u = F.normalize(torch.randn(mat.shape[0], generator=g), dim=0)
          for _ in range(power_iterations):
            v = F.normalize(mat.t() @ u, dim=0)
            u = F.normalize(mat @ v, dim=0)
          module.weight_u.copy_(u)
          module.weight_v.copy_(v)
      elif isinstance(module, nn.BatchNorm2d):
        module.running_mean.copy_(0.3 * torch.randn(module.running_mean.shape, generator=g))
        module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g))
        module.num_batches_tracked.fill_(1000)
  return model.eval()


def release_generator(load_size: int = 256, seed: int = 0, device: str = 'cpu',
                      **kw) -> SPADEGenerator:
  """The release-size generator (ngf 64), random; device='meta' builds shapes only."""
  if device == 'meta':
    with torch.device('meta'):
      return SPADEGenerator(load_size=load_size, **kw).eval()
  return randomize(SPADEGenerator(load_size=load_size, **kw), seed)


def write_fake_release(root: str, ngf: int = 64, seed: int = 0, spade_hidden: int = 128,
                       without_counters: bool = False) -> dict[int, str]:
  """Writes ROOT/Setting_9_epoch_100/latest_net_G.pth (256) and ROOT/FaceSR_512/latest_net_G.pth
  (512) with random weights (ngf=64: the release's size, ~370 MB each), as the release's
  `save_network` does (`torch.save(net.state_dict())`). `without_counters` drops
  num_batches_tracked (a checkpoint of torch < 0.4.1). Returns {load_size: path}."""
  paths = {}
  for i, (folder, size) in enumerate(RELEASE_FOLDERS.items()):
    net = randomize(SPADEGenerator(ngf, size, spade_hidden=spade_hidden), seed + i)
    state = net.state_dict()
    if without_counters:
      state = type(state)((k, v) for k, v in state.items()
                          if not k.endswith('num_batches_tracked'))
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    paths[size] = os.path.join(root, folder, 'latest_net_G.pth')
    torch.save(state, paths[size])
  return paths


def to_nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def to_nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


def run(model: SPADEGenerator, face01: np.ndarray) -> np.ndarray:
  """The release's inference on an NHWC face in [0, 1]: [-1, 1] in, (tanh + 1) / 2 out (as
  test_face.py saves it), NHWC."""
  with torch.no_grad():
    out = model.eval()(to_nchw(face01) * 2.0 - 1.0)
  return (to_nhwc(out) + 1.0) / 2.0
