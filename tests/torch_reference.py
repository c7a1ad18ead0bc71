"""PyTorch reference modules with torchvision's exact module and state-dict names (tests only).

torchvision is not installed here, so ResNet-34, VGG-16/19 and the lpips package's LPIPS are
rewritten with plain torch.nn. Weights are random but non-trivial: kaiming-normal convs as in
torchvision, and BatchNorm affine parameters and running statistics drawn away from 0/1.
"""

import numpy as np
import safetensors.numpy
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_CFGS = {
    16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
    19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512, 'M'],
}


class BasicBlock(nn.Module):

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class ResNet34(nn.Module):
  """torchvision.models.resnet34 (forward returns layer1..layer4 of a [0, 1] input)."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
      stride = 1 if i == 0 else 2
      downsample = None
      if stride != 1:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                   nn.BatchNorm2d(planes))
      layers = [BasicBlock(inplanes, planes, stride, downsample)]
      layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
      setattr(self, f'layer{i + 1}', nn.Sequential(*layers))
      inplanes = planes
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(512, 1000)

  def forward(self, x):
    x = imagenet_normalize(x)
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    out = {}
    for i in range(1, 5):
      x = getattr(self, f'layer{i}')(x)
      out[f'layer{i}'] = x
    return out


class VGG(nn.Module):
  """torchvision.models.vgg16/vgg19 (a small classifier: only its key names matter here)."""

  def __init__(self, depth):
    super().__init__()
    layers, c = [], 3
    for v in VGG_CFGS[depth]:
      if v == 'M':
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
        c = v
    self.features = nn.Sequential(*layers)
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.classifier = nn.Sequential(nn.Linear(512, 16), nn.ReLU(True), nn.Dropout(),
                                    nn.Linear(16, 16), nn.ReLU(True), nn.Dropout(),
                                    nn.Linear(16, 10))

  def forward(self, x, normalize=True):
    """ReLU outputs by name ('relu1_1', ...) of a [0, 1] input."""
    x = imagenet_normalize(x) if normalize else x
    out, block, unit = {}, 1, 0
    for layer in self.features:
      x = layer(x)
      if isinstance(layer, nn.MaxPool2d):
        block, unit = block + 1, 0
      elif isinstance(layer, nn.ReLU):
        unit += 1
        out[f'relu{block}_{unit}'] = x.clone()  # later in-place ReLUs must not touch it
    return out


class NetLinLayer(nn.Module):

  def __init__(self, chn_in):
    super().__init__()
    self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(chn_in, 1, 1, 1, 0, bias=False))


class LPIPS(nn.Module):
  """The lpips package's LPIPS(net='vgg', version='0.1') forward, eval mode."""

  def __init__(self, vgg16):
    super().__init__()
    self.net = vgg16
    self.register_buffer('shift', torch.tensor([-.030, -.088, -.188])[None, :, None, None])
    self.register_buffer('scale', torch.tensor([.458, .448, .450])[None, :, None, None])
    for l, c in enumerate((64, 128, 256, 512, 512)):
      setattr(self, f'lin{l}', NetLinLayer(c))

  def forward(self, in0, in1):
    f0 = self.net((in0 - self.shift) / self.scale, normalize=False)
    f1 = self.net((in1 - self.shift) / self.scale, normalize=False)
    total = 0
    for l, name in enumerate(('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')):
      n0 = f0[name] / (torch.sqrt(torch.sum(f0[name] ** 2, dim=1, keepdim=True)) + 1e-10)
      n1 = f1[name] / (torch.sqrt(torch.sum(f1[name] ** 2, dim=1, keepdim=True)) + 1e-10)
      total = total + getattr(self, f'lin{l}').model((n0 - n1) ** 2).mean([2, 3], keepdim=True)
    return total.flatten()

  def heads_state_dict(self):
    return {k: v for k, v in self.state_dict().items() if k.startswith('lin')}


def imagenet_normalize(x):
  mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype)[None, :, None, None]
  std = torch.tensor(IMAGENET_STD, dtype=x.dtype)[None, :, None, None]
  return (x - mean) / std


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """torchvision-style conv init plus non-trivial BatchNorm statistics; returns eval model."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.Conv2d):
        fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        m.weight.normal_(0, (2.0 / fan_out) ** 0.5, generator=gen)
        if m.bias is not None:
          m.bias.uniform_(-0.1, 0.1, generator=gen)
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5, generator=gen)
        m.bias.uniform_(-0.2, 0.2, generator=gen)
        m.running_mean.normal_(0, 0.2, generator=gen)
        m.running_var.uniform_(0.5, 2.0, generator=gen)
        m.num_batches_tracked.fill_(1000)
  return model.eval()


def save_both(state_dict: dict, directory, name: str) -> tuple[str, str]:
  """Writes a state dict as NAME.pth (torch.save) and NAME.safetensors; returns both paths."""
  pth, st = str(directory / f'{name}.pth'), str(directory / f'{name}.safetensors')
  torch.save(state_dict, pth)
  safetensors.numpy.save_file(
      {k: np.ascontiguousarray(v.numpy()) for k, v in state_dict.items()}, st)
  return pth, st


def to_nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def to_nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


class ResidualDenseBlock(nn.Module):
  """The RDB as Zhang et al. write it (each unit convolves the concatenation of all earlier
  maps), to check the Flax block's fan-out computation."""

  def __init__(self, channels, growth, num_units):
    super().__init__()
    self.units = nn.ModuleList(nn.Conv2d(channels + k * growth, growth, 3, padding=1)
                               for k in range(num_units))
    self.local_fusion = nn.Conv2d(channels + num_units * growth, channels, 1)

  def forward(self, x):
    features = [x]
    for unit in self.units:
      features.append(torch.relu(unit(torch.cat(features, 1))))
    return x + self.local_fusion(torch.cat(features, 1))

  def load_flax(self, params):
    """Copies Flax parameters (HWIO kernels) into this module (OIHW)."""
    def copy(conv, kernel, bias):
      conv.weight.data = torch.from_numpy(np.asarray(kernel).transpose(3, 2, 0, 1).copy())
      conv.bias.data = torch.from_numpy(np.asarray(bias).copy())
    for k, unit in enumerate(self.units):
      copy(unit, params[f'unit{k}']['kernel'], params[f'unit{k}']['bias'])
    copy(self.local_fusion, params['local_fusion']['kernel'], params['local_fusion']['bias'])
