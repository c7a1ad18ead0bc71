"""A plain-torch transcription of the ArcFace network of GFP-GAN's identity loss (tests only):
TencentARC/GFPGAN `ResNetArcFace(block='IRBlock', layers=[2, 2, 2, 2], use_se=False)`
(gfpgan/archs/arcface_arch.py), re-written from reading the release with its module names, so
that its state_dict() has the keys and shapes of arcface_resnet18.pth; and the release's
`gray_resize_for_identity` (gfpgan/models/gfpgan_model.py).

`write_release_file` writes such a file with random weights and BatchNorm statistics,
optionally under DataParallel's 'module.' prefix.
"""

import torch
from torch import nn
from torch.nn import functional as F


def gray_resize_for_identity(image: torch.Tensor, size: int = 128) -> torch.Tensor:
  """(B, 3, H, W) -> (B, 1, size, size): the release's grey weights, bilinear, half-pixel."""
  gray = 0.2989 * image[:, 0] + 0.5870 * image[:, 1] + 0.1140 * image[:, 2]
  return F.interpolate(gray[:, None], (size, size), mode='bilinear', align_corners=False)


class IRBlock(nn.Module):
  """BN, conv3x3, BN, PReLU, conv3x3 (strided), BN, + shortcut, the same PReLU."""

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
    super().__init__()
    self.bn0 = nn.BatchNorm2d(inplanes)
    self.conv1 = nn.Conv2d(inplanes, inplanes, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(inplanes)
    self.prelu = nn.PReLU()
    self.conv2 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    y = self.prelu(self.bn1(self.conv1(self.bn0(x))))
    y = self.bn2(self.conv2(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return self.prelu(y + shortcut)


class ResNetArcFace(nn.Module):
  """The release's ResNetArcFace with IRBlocks, two per stage, no squeeze-excitation."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.prelu = nn.PReLU()
    self.maxpool = nn.MaxPool2d(2, 2)
    width = 64
    for index, planes in enumerate((64, 128, 256, 512)):
      stride = 1 if index == 0 else 2
      downsample = None
      if stride != 1 or width != planes:
        downsample = nn.Sequential(nn.Conv2d(width, planes, 1, stride, bias=False),
                                   nn.BatchNorm2d(planes))
      stage = nn.Sequential(IRBlock(width, planes, stride, downsample), IRBlock(planes, planes))
      setattr(self, f'layer{index + 1}', stage)
      width = planes
    self.bn4 = nn.BatchNorm2d(512)
    self.dropout = nn.Dropout()
    self.fc5 = nn.Linear(512 * 8 * 8, 512)
    self.bn5 = nn.BatchNorm1d(512)

  def forward(self, x):
    x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
    for index in range(1, 5):
      x = getattr(self, f'layer{index}')(x)
    x = self.dropout(self.bn4(x))
    return self.bn5(self.fc5(x.flatten(1)))


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """Random non-trivial weights: fan-in-scaled conv / linear weights, BatchNorm affine and
  running statistics away from (1, 0), PReLU slopes in (0, 0.5); eval mode."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (nn.Conv2d, nn.Linear)):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=g) / fan_in ** 0.5)
        if module.bias is not None:
          module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
      elif isinstance(module, nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
        n = module.num_features
        module.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
        module.bias.copy_(0.1 * torch.randn(n, generator=g))
        module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
        module.running_var.copy_(0.5 + torch.rand(n, generator=g))
        module.num_batches_tracked.fill_(1000)
      elif isinstance(module, nn.PReLU):
        module.weight.copy_(0.5 * torch.rand(module.weight.shape, generator=g))
  return model.eval()


def write_release_file(path: str, seed: int = 0, data_parallel: bool = False) -> ResNetArcFace:
  """A random ArcFace saved as arcface_resnet18.pth is (a bare state dict; every key under
  'module.' with `data_parallel`); returns the network."""
  model = randomize(ResNetArcFace(), seed)
  prefix = 'module.' if data_parallel else ''
  torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
  return model
