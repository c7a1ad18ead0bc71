"""PyTorch reference modules with torchvision's exact module and state-dict names (tests only),
and hand-written transcriptions of the baselines' networks (pix2pix with junyanz's module names,
CMS4CV's Keras layers) that convert their weights to the Flax modules' variables (`to_flax`).

torchvision is not installed here, so ResNet-34, VGG-16/19, AlexNet and the lpips package's
LPIPS are rewritten with plain torch.nn. Weights are random but non-trivial: kaiming-normal convs
as in torchvision, and BatchNorm affine parameters and running statistics drawn away from 0/1.
"""

import numpy as np
import safetensors.numpy
import torch
from torch import nn
from torch.nn import functional as F

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


class AlexNet(nn.Module):
  """torchvision.models.alexnet (a small classifier: only its key names matter here); forward
  returns the lpips package's taps relu1..relu5 (features.1, .4, .7, .9, .11)."""

  def __init__(self):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(256 * 6 * 6, 16), nn.ReLU(True),
                                    nn.Dropout(), nn.Linear(16, 16), nn.ReLU(True),
                                    nn.Linear(16, 10))

  def forward(self, x, normalize=True):
    """ReLU outputs by name ('relu1' .. 'relu5') of a [0, 1] input."""
    x = imagenet_normalize(x) if normalize else x
    out = {}
    for layer in self.features[:12]:  # the lpips package's slices stop before features.12
      x = layer(x)
      if isinstance(layer, nn.ReLU):
        out[f'relu{len(out) + 1}'] = x.clone()  # later in-place ReLUs must not touch it
    return out


class NetLinLayer(nn.Module):

  def __init__(self, chn_in):
    super().__init__()
    self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(chn_in, 1, 1, 1, 0, bias=False))


# The lpips package's taps and their channels (lpips.pretrained_networks vgg16 / alexnet).
LPIPS_TAPS = {'vgg': (('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3'),
                      (64, 128, 256, 512, 512)),
              'alex': (('relu1', 'relu2', 'relu3', 'relu4', 'relu5'), (64, 192, 384, 256, 256))}


class LPIPS(nn.Module):
  """The lpips package's LPIPS(net='vgg' | 'alex', version='0.1') forward, eval mode; `net` is
  a VGG(16) or an AlexNet above."""

  def __init__(self, net):
    super().__init__()
    self.net = net
    self.taps, channels = LPIPS_TAPS['alex' if isinstance(net, AlexNet) else 'vgg']
    self.register_buffer('shift', torch.tensor([-.030, -.088, -.188])[None, :, None, None])
    self.register_buffer('scale', torch.tensor([.458, .448, .450])[None, :, None, None])
    for l, c in enumerate(channels):
      setattr(self, f'lin{l}', NetLinLayer(c))

  def forward(self, in0, in1):
    f0 = self.net((in0 - self.shift) / self.scale, normalize=False)
    f1 = self.net((in1 - self.shift) / self.scale, normalize=False)
    total = 0
    for l, name in enumerate(self.taps):
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


def random_lpips(net: nn.Module, seed: int) -> LPIPS:
  """LPIPS over `net` with random non-negative heads (trained heads are non-negative)."""
  torch_lpips = LPIPS(net).eval()
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for l in range(5):
      getattr(torch_lpips, f'lin{l}').model[1].weight.uniform_(0.0, 1.0, generator=gen)
  return torch_lpips


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


# DeepLabV3 + MobileNetV3-Large (torchvision.models.segmentation.deeplabv3_mobilenet_v3_large,
# dilated backbone, aux head included so its keys are in the state dict).
# (kernel, expanded, out, squeeze-excite, hardswish, stride, dilation), input 16 channels.
MOBILENET_V3_LARGE_DILATED = [
    (3, 16, 16, False, False, 1, 1), (3, 64, 24, False, False, 2, 1),
    (3, 72, 24, False, False, 1, 1), (5, 72, 40, True, False, 2, 1),
    (5, 120, 40, True, False, 1, 1), (5, 120, 40, True, False, 1, 1),
    (3, 240, 80, False, True, 2, 1), (3, 200, 80, False, True, 1, 1),
    (3, 184, 80, False, True, 1, 1), (3, 184, 80, False, True, 1, 1),
    (3, 480, 112, True, True, 1, 1), (3, 672, 112, True, True, 1, 1),
    (5, 672, 160, True, True, 2, 2), (5, 960, 160, True, True, 1, 2),
    (5, 960, 160, True, True, 1, 2),
]


def make_divisible(v, divisor=8):
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dNormActivation(nn.Sequential):
  """torchvision.ops.Conv2dNormActivation: 0 conv (no bias), 1 BatchNorm, [2 activation]."""

  def __init__(self, cin, cout, kernel, stride=1, groups=1, dilation=1, activation=nn.ReLU,
               eps=1e-5):
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 * dilation,
                        dilation=dilation, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps, momentum=0.01)]
    if activation is not None:
      layers.append(activation(inplace=True))
    super().__init__(*layers)


class SqueezeExcitation(nn.Module):
  """torchvision.ops.SqueezeExcitation with MobileNetV3's Hardsigmoid scale."""

  def __init__(self, channels, squeeze):
    super().__init__()
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc1 = nn.Conv2d(channels, squeeze, 1)
    self.fc2 = nn.Conv2d(squeeze, channels, 1)
    self.activation = nn.ReLU()
    self.scale_activation = nn.Hardsigmoid()

  def forward(self, x):
    scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
    return self.scale_activation(scale) * x


class InvertedResidual(nn.Module):

  def __init__(self, cin, kernel, expanded, cout, use_se, use_hs, stride, dilation):
    super().__init__()
    act = nn.Hardswish if use_hs else nn.ReLU
    layers = []
    if expanded != cin:
      layers.append(Conv2dNormActivation(cin, expanded, 1, activation=act, eps=1e-3))
    layers.append(Conv2dNormActivation(expanded, expanded, kernel,
                                       stride=1 if dilation > 1 else stride, groups=expanded,
                                       dilation=dilation, activation=act, eps=1e-3))
    if use_se:
      layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8)))
    layers.append(Conv2dNormActivation(expanded, cout, 1, activation=None, eps=1e-3))
    self.block = nn.Sequential(*layers)
    self.use_res_connect = stride == 1 and cin == cout

  def forward(self, x):
    y = self.block(x)
    return y + x if self.use_res_connect else y


class ASPPPooling(nn.Sequential):

  def __init__(self, cin, cout):
    super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                     nn.BatchNorm2d(cout), nn.ReLU())

  def forward(self, x):
    size = x.shape[-2:]
    for mod in self:
      x = mod(x)
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


class ASPP(nn.Module):

  def __init__(self, cin, rates=(12, 24, 36), cout=256):
    super().__init__()
    convs = [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())]
    for rate in rates:
      convs.append(nn.Sequential(
          nn.Conv2d(cin, cout, 3, padding=rate, dilation=rate, bias=False),
          nn.BatchNorm2d(cout), nn.ReLU()))
    convs.append(ASPPPooling(cin, cout))
    self.convs = nn.ModuleList(convs)
    self.project = nn.Sequential(nn.Conv2d(len(convs) * cout, cout, 1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(0.5))

  def forward(self, x):
    return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabV3MobileNetV3Large(nn.Module):
  """torchvision's deeplabv3_mobilenet_v3_large(num_classes, aux_loss=True). forward takes a
  [0, 1] image (the ImageNet normalisation of torchvision's transform applied here) and returns
  {'out', 'aux'} logits at the input size and the backbone's 'feat_aux'/'feat_out'."""

  def __init__(self, num_classes=21):
    super().__init__()
    layers, c = [Conv2dNormActivation(3, 16, 3, stride=2, activation=nn.Hardswish, eps=1e-3)], 16
    for kernel, expanded, cout, use_se, use_hs, stride, dilation in MOBILENET_V3_LARGE_DILATED:
      layers.append(InvertedResidual(c, kernel, expanded, cout, use_se, use_hs, stride, dilation))
      c = cout
    layers.append(Conv2dNormActivation(c, 6 * c, 1, activation=nn.Hardswish, eps=1e-3))
    # IntermediateLayerGetter is a ModuleDict over the same children: keys 'backbone.<i>.'.
    self.backbone = nn.Sequential(*layers)
    self.classifier = nn.Sequential(  # DeepLabHead
        ASPP(6 * c), nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
        nn.ReLU(), nn.Conv2d(256, num_classes, 1))
    self.aux_classifier = nn.Sequential(  # FCNHead(40, num_classes)
        nn.Conv2d(40, 10, 3, padding=1, bias=False), nn.BatchNorm2d(10), nn.ReLU(),
        nn.Dropout(0.1), nn.Conv2d(10, num_classes, 1))

  def forward(self, x):
    size = x.shape[-2:]
    x = imagenet_normalize(x)
    out = {}
    for i, layer in enumerate(self.backbone):
      x = layer(x)
      if i == 4:
        out['feat_aux'] = x
    out['feat_out'] = x
    for name, head, feat in (('out', self.classifier, x), ('aux', self.aux_classifier,
                                                          out['feat_aux'])):
      out[name] = F.interpolate(head(feat), size=size, mode='bilinear', align_corners=False)
    return out


def random_deeplab(seed: int, calibration: torch.Tensor) -> DeepLabV3MobileNetV3Large:
  """A randomized DeepLabV3MobileNetV3Large in eval mode, closer to a trained network than
  `randomize` alone: depthwise kernels drawn at fan-in scale (kaiming fan_out divides their
  variance by the channel count, which would leave those layers at the BatchNorm epsilon), and
  BatchNorm statistics calibrated on `calibration` (NCHW, batch > 1)."""
  model = randomize(DeepLabV3MobileNetV3Large(), seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.Conv2d) and m.groups > 1:
        m.weight.mul_(m.out_channels ** 0.5)
  return calibrate_batchnorm(model, calibration)


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
  """Sets every BatchNorm's running statistics to those of `x` (one train-mode pass, cumulative
  average), keeping the affine parameters: each layer then sees roughly unit-variance inputs as
  in a trained network, so the output depends on the image through the whole depth (random
  statistics of a 17-block net leave mostly constants). Returns the model in eval mode."""
  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      m.reset_running_stats()
      m.momentum = None
  with torch.no_grad():
    model.train()(x)
  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      m.num_batches_tracked.fill_(1000)
  return model.eval()

# Pix2pix (Isola et al. 2017) as junyanz/pytorch-CycleGAN-and-pix2pix builds it with
# norm='batch' (BatchNorm, so the convs before a norm have no bias), transcribed by hand.


def _conv_to_flax(conv):
  """Conv2d (O, I, kh, kw) -> Flax {'kernel': (kh, kw, I, O)[, 'bias']}."""
  out = {'kernel': conv.weight.detach().numpy().transpose(2, 3, 1, 0)}
  if conv.bias is not None:
    out['bias'] = conv.bias.detach().numpy()
  return out


def _conv_transpose_to_flax(conv):
  """ConvTranspose2d (I, O, kh, kw) -> {'kernel': (kh, kw, I, O)[, 'bias']}, not flipped
  (`layers.ConvTransposeStride2`)."""
  out = {'kernel': conv.weight.detach().numpy().transpose(2, 3, 0, 1)}
  if conv.bias is not None:
    out['bias'] = conv.bias.detach().numpy()
  return out


def _bn_to_flax(bn):
  """BatchNorm2d -> ({'scale', 'bias'}, {'mean', 'var'})."""
  return ({'scale': bn.weight.detach().numpy(), 'bias': bn.bias.detach().numpy()},
          {'mean': bn.running_mean.numpy(), 'var': bn.running_var.numpy()})


class UnetSkipConnectionBlock(nn.Module):
  """x -> [x | up(submodule(down(x)))]; the outermost block returns up(...) alone."""

  def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
               innermost=False, use_dropout=False):
    super().__init__()
    self.outermost = outermost
    input_nc = outer_nc if input_nc is None else input_nc
    downconv = nn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=False)
    if outermost:
      up = [nn.ReLU(True), nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1), nn.Tanh()]
      layers = [downconv, submodule] + up
    elif innermost:
      layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True),
                nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=False),
                nn.BatchNorm2d(outer_nc)]
    else:
      layers = [nn.LeakyReLU(0.2, True), downconv, nn.BatchNorm2d(inner_nc), submodule,
                nn.ReLU(True), nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=False),
                nn.BatchNorm2d(outer_nc)]
      if use_dropout:
        layers.append(nn.Dropout(0.5))
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    if self.outermost:
      return self.model(x)
    return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
  """junyanz's UnetGenerator(input_nc, output_nc, num_downs, ngf, BatchNorm, use_dropout)."""

  def __init__(self, input_nc, output_nc, num_downs, ngf=64, use_dropout=False):
    super().__init__()
    block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
    for _ in range(num_downs - 5):
      block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout)
    for mult in (4, 2, 1):
      block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block)
    self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                         outermost=True)

  def forward(self, x):
    return self.model(x)

  def to_flax(self):
    """{'params', 'batch_stats'} of `pix2pix.UnetGenerator` with this module's weights."""
    params, stats = {}, {}
    block, i = self.model, 0
    while block is not None:
      submodule, seen_up = None, False
      for layer in block.model:
        if isinstance(layer, UnetSkipConnectionBlock):
          submodule = layer
        elif isinstance(layer, nn.ConvTranspose2d):
          params[f'up{i}'], seen_up = _conv_transpose_to_flax(layer), True
        elif isinstance(layer, nn.Conv2d):
          params[f'down{i}'] = _conv_to_flax(layer)
        elif isinstance(layer, nn.BatchNorm2d):
          name = f'up_norm{i}' if seen_up else f'down_norm{i}'
          params[name], stats[name] = _bn_to_flax(layer)
      block, i = submodule, i + 1
    return {'params': params, 'batch_stats': stats}


class NLayerDiscriminator(nn.Module):
  """junyanz's NLayerDiscriminator(input_nc, ndf, n_layers, BatchNorm): the PatchGAN."""

  def __init__(self, input_nc, ndf=64, n_layers=3):
    super().__init__()
    layers, width = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)], ndf
    for n in range(1, n_layers + 1):
      stride, new_width = (2 if n < n_layers else 1), ndf * min(2 ** n, 8)
      layers += [nn.Conv2d(width, new_width, 4, stride, 1, bias=False),
                 nn.BatchNorm2d(new_width), nn.LeakyReLU(0.2, True)]
      width = new_width
    layers.append(nn.Conv2d(width, 1, 4, 1, 1))
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)

  def to_flax(self):
    """{'params', 'batch_stats'} of `PatchDiscriminator(norm='batch')`."""
    params, stats = {}, {}
    convs = [m for m in self.model if isinstance(m, nn.Conv2d)]
    norms = [m for m in self.model if isinstance(m, nn.BatchNorm2d)]
    for k, conv in enumerate(convs):
      params[f'Conv_{k}'] = _conv_to_flax(conv)
    for k, bn in enumerate(norms):
      params[f'BatchNorm_{k}'], stats[f'BatchNorm_{k}'] = _bn_to_flax(bn)
    return {'params': params, 'batch_stats': stats}


# CMS4CV (Carboniero, Mancinelli, Sacerdote 2024): the Keras layers of appendix 8.3 in torch
# (channels-last Flatten, TF 'same' padding, Keras BatchNormalization eps 1e-3).


class ConvBNLeakyReLU(nn.Module):

  def __init__(self, in_channels, features, slope):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, features, 3, 1, 1, bias=False)
    self.bn = nn.BatchNorm2d(features, eps=1e-3, momentum=0.01)
    self.slope = slope

  def forward(self, x):
    return nn.functional.leaky_relu(self.bn(self.conv(x)), self.slope)


class CMS4CVUNet(nn.Module):
  """The CMS4CV U-Net (`cms4cv.UNet`): inputs must be multiples of 2^num_down."""

  def __init__(self, in_channels, num_down, base, sr_factor, upsampling='nearest', slope=0.3):
    super().__init__()
    self.num_down, self.sr_factor, self.upsampling = num_down, sr_factor, upsampling
    blocks, c = {}, in_channels
    for i in range(num_down):
      blocks[f'down{i}_conv0'] = ConvBNLeakyReLU(c, base * 2 ** i, slope)
      blocks[f'down{i}_conv1'] = ConvBNLeakyReLU(base * 2 ** i, base * 2 ** i, slope)
      c = base * 2 ** i
    width = base * 2 ** num_down
    blocks['bottleneck_conv0'] = ConvBNLeakyReLU(c, width, slope)
    blocks['bottleneck_conv1'] = ConvBNLeakyReLU(width, width, slope)
    for i in reversed(range(num_down)):
      blocks[f'up{i}'] = ConvBNLeakyReLU(width + base * 2 ** i, base * 2 ** i, slope)
      width = base * 2 ** i
    if sr_factor == 2:
      blocks['sr_up'] = ConvBNLeakyReLU(width, base, slope)
    self.blocks = nn.ModuleDict(blocks)
    self.output = nn.Conv2d(base, 3, 1)

  def _up(self, x):
    return nn.functional.interpolate(x, scale_factor=2, mode=self.upsampling)

  def forward(self, x):
    b, skips = self.blocks, []
    for i in range(self.num_down):
      x = b[f'down{i}_conv1'](b[f'down{i}_conv0'](x))
      skips.append(x)
      x = nn.functional.max_pool2d(x, 2)
    x = b['bottleneck_conv1'](b['bottleneck_conv0'](x))
    for i in reversed(range(self.num_down)):
      x = b[f'up{i}'](torch.cat([self._up(x), skips[i]], 1))
    if self.sr_factor == 2:
      x = b['sr_up'](self._up(x))
    return torch.sigmoid(self.output(x))

  def to_flax(self):
    params, stats = {'output': _conv_to_flax(self.output)}, {}
    for name, block in self.blocks.items():
      params[name] = {'conv': _conv_to_flax(block.conv)}
      params[name]['bn'], stats[name] = _bn_to_flax(block.bn)
      stats[name] = {'bn': stats[name]}
    return {'params': params, 'batch_stats': stats}


class CMS4CVDiscriminator(nn.Module):
  """The U-Net-GAN's D (`cms4cv.Discriminator`) for (H, W) inputs."""

  def __init__(self, in_channels, features, num_blocks, height, width, slope=0.3):
    super().__init__()
    self.slope, c = slope, in_channels
    for i in range(num_blocks):
      setattr(self, f'conv{i}', nn.Conv2d(c, features * 2 ** i, 4, 2, 0, bias=i == 0))
      if i:
        setattr(self, f'bn{i}', nn.BatchNorm2d(features * 2 ** i, eps=1e-3, momentum=0.01))
      c, height, width = features * 2 ** i, -(-height // 2), -(-width // 2)
    self.num_blocks = num_blocks
    self.dense = nn.Linear(c * height * width, 1)

  def forward(self, x):
    for i in range(self.num_blocks):
      conv = getattr(self, f'conv{i}')
      pads = []
      for size in (x.shape[3], x.shape[2]):  # TF 'same' for stride 2: (total // 2, rest)
        total = max((-(-size // 2) - 1) * 2 + 4 - size, 0)
        pads += [total // 2, total - total // 2]
      x = conv(nn.functional.pad(x, pads))
      if i:
        x = getattr(self, f'bn{i}')(x)
      x = nn.functional.leaky_relu(x, self.slope)
    return self.dense(x.permute(0, 2, 3, 1).flatten(1))  # channels-last Flatten

  def to_flax(self):
    params, stats = {}, {}
    for i in range(self.num_blocks):
      params[f'conv{i}'] = _conv_to_flax(getattr(self, f'conv{i}'))
      if i:
        params[f'bn{i}'], stats[f'bn{i}'] = _bn_to_flax(getattr(self, f'bn{i}'))
    params['dense'] = {'kernel': self.dense.weight.detach().numpy().T,
                       'bias': self.dense.bias.detach().numpy()}
    return {'params': params, 'batch_stats': stats}


def count_parameters(module_fn) -> int:
  """Parameters of the torch module `module_fn()` builds (on the meta device: shapes only)."""
  with torch.device('meta'):
    return sum(p.numel() for p in module_fn().parameters())
