"""A plain-torch transcription of GFP-GAN's released "clean" network (tests only): TencentARC/GFPGAN
`GFPGANv1Clean` (gfpgan/archs/gfpganv1_clean_arch.py) over `StyleGAN2GeneratorClean`
(stylegan2_clean_arch.py), re-written from reading the release, with its exact module and
state-dict names, so that `GFPGANv1Clean(...).state_dict()` has the keys and shapes of the
released files' `params_ema` (noise buffers included). basicsr is not installed here.

`write_release_file` writes a file laid out like GFPGANv1.3.pth / GFPGANv1.4.pth (one
dict, {'params_ema': state_dict}) holding random but non-trivial weights.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SLOPE = 0.2


def _channels(narrow: float, channel_multiplier: float) -> dict[int, int]:
  """Width per resolution: 512 up to 32 px, then halving (times the multiplier) per level."""
  widths = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier,
            128: 128 * channel_multiplier, 256: 64 * channel_multiplier,
            512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
  return {r: int(w * narrow) for r, w in widths.items()}


class NormStyleCode(nn.Module):
  """Pixel norm of the style code (no parameters)."""

  def forward(self, x):
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
  """StyleGAN2's weight modulation / demodulation, per sample, as a grouped conv."""

  def __init__(self, in_channels, out_channels, kernel_size, num_style_feat, demodulate=True,
               sample_mode=None, eps=1e-8):
    super().__init__()
    self.out_channels, self.kernel_size = out_channels, kernel_size
    self.demodulate, self.sample_mode, self.eps = demodulate, sample_mode, eps
    self.modulation = nn.Linear(num_style_feat, in_channels)
    self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size,
                                           kernel_size) / math.sqrt(in_channels * kernel_size ** 2))

  def forward(self, x, style):
    b, c = x.shape[:2]
    w = self.weight * self.modulation(style).view(b, 1, c, 1, 1)
    if self.demodulate:
      w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + self.eps).view(b, -1, 1, 1, 1)
    if self.sample_mode == 'upsample':
      x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    elif self.sample_mode == 'downsample':
      x = F.interpolate(x, scale_factor=0.5, mode='bilinear', align_corners=False)
    h, wd = x.shape[2:]
    out = F.conv2d(x.reshape(1, b * c, h, wd),
                   w.reshape(b * self.out_channels, c, self.kernel_size, self.kernel_size),
                   padding=self.kernel_size // 2, groups=b)
    return out.view(b, self.out_channels, *out.shape[2:])


class StyleConv(nn.Module):

  def __init__(self, in_channels, out_channels, kernel_size, num_style_feat, demodulate=True,
               sample_mode=None):
    super().__init__()
    self.modulated_conv = ModulatedConv2d(in_channels, out_channels, kernel_size, num_style_feat,
                                          demodulate, sample_mode)
    self.weight = nn.Parameter(torch.zeros(1))  # noise strength
    self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

  def forward(self, x, style, noise=None):
    out = self.modulated_conv(x, style) * math.sqrt(2)
    if noise is None:
      noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
    return F.leaky_relu(out + self.weight * noise + self.bias, SLOPE)


class ToRGB(nn.Module):

  def __init__(self, in_channels, num_style_feat, upsample=True):
    super().__init__()
    self.upsample = upsample
    self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
    self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

  def forward(self, x, style, skip=None):
    out = self.modulated_conv(x, style) + self.bias
    if skip is not None:
      if self.upsample:
        skip = F.interpolate(skip, scale_factor=2, mode='bilinear', align_corners=False)
      out = out + skip
    return out


class ConstantInput(nn.Module):

  def __init__(self, num_channel, size):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

  def forward(self, batch):
    return self.weight.repeat(batch, 1, 1, 1)


class StyleGAN2GeneratorCSFT(nn.Module):
  """StyleGAN2GeneratorClean plus the CS-SFT of the first conv of every level (the subclass
  in gfpganv1_clean_arch.py); no truncation or style mixing (GFPGANer uses neither)."""

  def __init__(self, out_size, num_style_feat=512, num_mlp=8, channel_multiplier=2, narrow=1,
               sft_half=False):
    super().__init__()
    self.sft_half = sft_half
    mlp = [NormStyleCode()]
    for _ in range(num_mlp):
      mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(SLOPE)]
    self.style_mlp = nn.Sequential(*mlp)
    ch = _channels(narrow, channel_multiplier)
    self.constant_input = ConstantInput(ch[4], 4)
    self.style_conv1 = StyleConv(ch[4], ch[4], 3, num_style_feat)
    self.to_rgb1 = ToRGB(ch[4], num_style_feat, upsample=False)
    self.log_size = int(math.log(out_size, 2))
    self.num_layers = 2 * (self.log_size - 2) + 1
    self.num_latent = 2 * self.log_size - 2
    # registered in the release's order, so state_dict() lists keys as the released files do
    self.style_convs, self.to_rgbs, self.noises = nn.ModuleList(), nn.ModuleList(), nn.Module()
    for i in range(self.num_layers):
      side = 2 ** ((i + 5) // 2)
      self.noises.register_buffer(f'noise{i}', torch.randn(1, 1, side, side))
    c_in = ch[4]
    for level in range(3, self.log_size + 1):
      c_out = ch[2 ** level]
      self.style_convs.append(StyleConv(c_in, c_out, 3, num_style_feat, sample_mode='upsample'))
      self.style_convs.append(StyleConv(c_out, c_out, 3, num_style_feat))
      self.to_rgbs.append(ToRGB(c_out, num_style_feat))
      c_in = c_out

  def forward(self, styles, conditions, input_is_latent=False, noise=None,
              randomize_noise=True):
    if not input_is_latent:
      styles = self.style_mlp(styles)
    if noise is None:
      noise = ([None] * self.num_layers if randomize_noise else
               [getattr(self.noises, f'noise{i}') for i in range(self.num_layers)])
    latent = styles if styles.ndim == 3 else styles[:, None].repeat(1, self.num_latent, 1)
    out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
    skip = self.to_rgb1(out, latent[:, 1])
    i = 1
    for conv1, conv2, noise1, noise2, to_rgb in zip(self.style_convs[::2], self.style_convs[1::2],
                                                    noise[1::2], noise[2::2], self.to_rgbs):
      out = conv1(out, latent[:, i], noise1)
      if i < len(conditions):
        scale, shift = conditions[i - 1], conditions[i]
        if self.sft_half:
          kept, changed = torch.split(out, out.shape[1] // 2, dim=1)
          out = torch.cat([kept, changed * scale + shift], dim=1)
        else:
          out = out * scale + shift
      out = conv2(out, latent[:, i + 1], noise2)
      skip = to_rgb(out, latent[:, i + 2], skip)
      i += 2
    return skip


class ResBlock(nn.Module):
  """conv3-lrelu-resample-conv3-lrelu plus a bias-free 1x1 skip of the resampled input."""

  def __init__(self, in_channels, out_channels, mode='down'):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
    self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
    self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
    self.factor = 0.5 if mode == 'down' else 2

  def forward(self, x):
    resample = lambda t: F.interpolate(t, scale_factor=self.factor, mode='bilinear',
                                       align_corners=False)
    out = F.leaky_relu(self.conv2(resample(F.leaky_relu(self.conv1(x), SLOPE))), SLOPE)
    return out + self.skip(resample(x))


class GFPGANv1Clean(nn.Module):
  """The release's GFPGANv1Clean; defaults are GFPGANer's (v1.3 / v1.4) settings. forward
  returns (image, out_rgbs) as the release (its `return_latents` and `**kwargs` dropped)."""

  def __init__(self, out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8,
               input_is_latent=True, different_w=True, narrow=1, sft_half=True):
    super().__init__()
    self.input_is_latent, self.different_w = input_is_latent, different_w
    self.num_style_feat = num_style_feat
    ch = _channels(narrow * 0.5, channel_multiplier)  # the U-Net has half the decoder's width
    self.log_size = int(math.log(out_size, 2))
    self.conv_body_first = nn.Conv2d(3, ch[out_size], 1)
    self.conv_body_down = nn.ModuleList(
        ResBlock(ch[2 ** i], ch[2 ** (i - 1)], 'down') for i in range(self.log_size, 2, -1))
    self.final_conv = nn.Conv2d(ch[4], ch[4], 3, 1, 1)
    self.conv_body_up = nn.ModuleList(
        ResBlock(ch[2 ** (i - 1)], ch[2 ** i], 'up')
        for i in range(3, self.log_size + 1))
    self.toRGB = nn.ModuleList(nn.Conv2d(ch[2 ** i], 3, 1) for i in range(3, self.log_size + 1))
    num_latent = 2 * self.log_size - 2
    self.final_linear = nn.Linear(ch[4] * 16, (num_latent if different_w else 1) * num_style_feat)
    self.stylegan_decoder = StyleGAN2GeneratorCSFT(out_size, num_style_feat, num_mlp,
                                                   channel_multiplier, narrow, sft_half)
    self.condition_scale, self.condition_shift = nn.ModuleList(), nn.ModuleList()
    for i in range(3, self.log_size + 1):
      c = ch[2 ** i]
      for branch in (self.condition_scale, self.condition_shift):
        branch.append(nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(SLOPE),
                                    nn.Conv2d(c, c if sft_half else 2 * c, 3, 1, 1)))

  def forward(self, x, noise=None, randomize_noise=True, return_rgb=True):
    feat = F.leaky_relu(self.conv_body_first(x), SLOPE)
    skips = []
    for block in self.conv_body_down:
      feat = block(feat)
      skips.insert(0, feat)
    feat = F.leaky_relu(self.final_conv(feat), SLOPE)
    style = self.final_linear(feat.flatten(1))
    if self.different_w:
      style = style.view(style.shape[0], -1, self.num_style_feat)
    conditions, out_rgbs = [], []
    for i, block in enumerate(self.conv_body_up):
      feat = block(feat + skips[i])
      conditions += [self.condition_scale[i](feat), self.condition_shift[i](feat)]
      if return_rgb:
        out_rgbs.append(self.toRGB[i](feat))
    image = self.stylegan_decoder(style, conditions, self.input_is_latent, noise, randomize_noise)
    return image, out_rgbs


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """Non-trivial random weights everywhere (the release's zero noise strengths and biases would
  leave those paths untested): plain convs and linears N(0, 1/fan_in) (activations stay O(1)
through the U-Net and the SFT products; He init's gain compounds to outputs ~100),
  biases U(-0.1, 0.1), modulation biases U(0.5, 1.5) (the release fills them with 1), noise
  strengths U(0.1, 0.5), constant input and noise buffers N(0, 1); modulated weights keep their
  N(0, 1/fan_in) draw. Returns the model in eval mode."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      leaf = name.rsplit('.', 1)[-1]
      if name.endswith('modulation.bias'):
        p.uniform_(0.5, 1.5, generator=gen)
      elif leaf == 'bias':
        p.uniform_(-0.1, 0.1, generator=gen)
      elif p.ndim == 1:  # StyleConv.weight: the noise strength
        p.uniform_(0.1, 0.5, generator=gen)
      elif name.endswith('constant_input.weight'):
        p.normal_(0, 1, generator=gen)
      elif p.ndim == 5:  # modulated conv weight
        p.normal_(0, 1 / math.sqrt(p[0, 0].numel()), generator=gen)
      elif p.ndim == 4:
        p.normal_(0, 1 / math.sqrt(p[0].numel()), generator=gen)
      else:
        p.normal_(0, 1 / math.sqrt(p.shape[1]), generator=gen)
    for b in model.buffers():
      b.normal_(0, 1, generator=gen)
  return model.eval()


def write_release_file(path: str, model: nn.Module) -> dict:
  """Saves `model` as the released GFPGANv1.3 / v1.4 files are laid out: {'params_ema':
  state_dict} (one copy of the weights; their 348,632,874 bytes are ~87.2 M float32 values,
  this network's parameters plus noise buffers). Returns the state dict."""
  state = {k: v.detach().clone() for k, v in model.state_dict().items()}
  torch.save({'params_ema': state}, path)
  return state


def noise_maps(out_size: int, batch: int, seed: int) -> list[np.ndarray]:
  """One N(0, 1) map per StyleConv (B, 1, side, side), sides 4, 8, 8, 16, 16, ..."""
  rng = np.random.default_rng(seed)
  log_size = int(math.log2(out_size))
  return [rng.standard_normal((batch, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)))
          .astype(np.float32) for i in range(2 * (log_size - 2) + 1)]


def count_state(module_fn) -> tuple[int, int]:
  """(parameters, buffer values) of `module_fn()`, built on the meta device (shapes only)."""
  with torch.device('meta'):
    m = module_fn()
  return sum(p.numel() for p in m.parameters()), sum(b.numel() for b in m.buffers())


# ------------------------------------------------------------------ StyleGAN2Discriminator
# The discriminator GFP-GAN's training options name (basicsr/archs/stylegan2_arch.py
# `StyleGAN2Discriminator`, resample kernel (1, 3, 3, 1)), re-written from reading it: the
# upfirdn2d blur (native form: pad, then a depthwise FIR), equalised convs and linears, the
# fused biased LeakyReLU, its state-dict keys.


class Blur(nn.Module):
  """UpFirDnSmooth for downsampling: pad by (p0, p1), depthwise 4x4 FIR (sum 1)."""

  def __init__(self, pad):
    super().__init__()
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    self.register_buffer('kernel', k / k.sum(), persistent=False)
    self.pad = pad

  def forward(self, x):
    c = x.shape[1]
    x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
    weight = torch.flip(self.kernel, [0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, groups=c)


class EqualConv2d(nn.Module):

  def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
    super().__init__()
    self.stride, self.padding = stride, padding
    self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)
    self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
    self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

  def forward(self, x):
    return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride,
                    padding=self.padding)


class FusedLeakyReLU(nn.Module):

  def __init__(self, channels):
    super().__init__()
    self.bias = nn.Parameter(torch.zeros(channels))

  def forward(self, x):
    return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), SLOPE) * math.sqrt(2)


class EqualLinear(nn.Module):

  def __init__(self, in_channels, out_channels, activation=None):
    super().__init__()
    self.scale = 1 / math.sqrt(in_channels)
    self.activation = activation
    self.weight = nn.Parameter(torch.randn(out_channels, in_channels))
    self.bias = nn.Parameter(torch.zeros(out_channels))

  def forward(self, x):
    out = F.linear(x, self.weight * self.scale)
    if self.activation == 'fused_lrelu':
      return F.leaky_relu(out + self.bias, SLOPE) * math.sqrt(2)
    return out + self.bias


class ConvLayer(nn.Sequential):

  def __init__(self, in_channels, out_channels, kernel_size, downsample=False, bias=True,
               activate=True):
    layers = []
    if downsample:
      pad = 4 - 2 + (kernel_size - 1)
      layers.append(Blur(((pad + 1) // 2, pad // 2)))
      stride, padding = 2, 0
    else:
      stride, padding = 1, kernel_size // 2
    layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=bias and not activate))
    if activate:
      layers.append(FusedLeakyReLU(out_channels))
    super().__init__(*layers)


class DiscriminatorResBlock(nn.Module):

  def __init__(self, in_channels, out_channels):
    super().__init__()
    self.conv1 = ConvLayer(in_channels, in_channels, 3)
    self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
    self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, bias=False,
                          activate=False)

  def forward(self, x):
    return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class StyleGAN2Discriminator(nn.Module):

  def __init__(self, out_size, channel_multiplier=2, stddev_group=4, narrow=1):
    super().__init__()
    channels = _channels(narrow, channel_multiplier)
    log_size = int(math.log(out_size, 2))
    conv_body = [ConvLayer(3, channels[out_size], 1)]
    in_channels = channels[out_size]
    for i in range(log_size, 2, -1):
      out_channels = channels[2 ** (i - 1)]
      conv_body.append(DiscriminatorResBlock(in_channels, out_channels))
      in_channels = out_channels
    self.conv_body = nn.Sequential(*conv_body)
    self.final_conv = ConvLayer(in_channels + 1, channels[4], 3)
    self.final_linear = nn.Sequential(
        EqualLinear(channels[4] * 4 * 4, channels[4], activation='fused_lrelu'),
        EqualLinear(channels[4], 1))
    self.stddev_group = stddev_group

  def forward(self, x):
    out = self.conv_body(x)
    b, c, h, w = out.shape
    group = min(b, self.stddev_group)
    stddev = out.view(group, -1, 1, c, h, w)
    stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
    stddev = stddev.mean([2, 3, 4], keepdims=True).squeeze(2)
    stddev = stddev.repeat(group, 1, h, w)
    out = self.final_conv(torch.cat([out, stddev], 1))
    return self.final_linear(out.view(b, -1))


def randomize_discriminator(model: nn.Module, seed: int) -> nn.Module:
  """The release's init for the equalised weights (N(0, 1), scaled when applied) and
  non-zero biases U(-0.1, 0.1) (the release's zeros would leave them untested)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('bias'):
        p.uniform_(-0.1, 0.1, generator=gen)
      else:
        p.normal_(0, 1, generator=gen)
  return model.eval()


class FacialComponentDiscriminator(nn.Module):
  """The release's VGG-style component discriminator (gfpganv1_arch.py), `width` scaling its
  64 / 128 / 256 channels (1 = the release) so tests run narrow ones."""

  def __init__(self, width=1.0):
    super().__init__()
    a, b, c = (max(1, int(n * width)) for n in (64, 128, 256))
    self.conv1 = ConvLayer(3, a, 3)
    self.conv2 = ConvLayer(a, b, 3, downsample=True)
    self.conv3 = ConvLayer(b, b, 3)
    self.conv4 = ConvLayer(b, c, 3, downsample=True)
    self.conv5 = ConvLayer(c, c, 3)
    self.final_conv = ConvLayer(c, 1, 3, bias=True, activate=False)

  def forward(self, x):
    first = self.conv3(self.conv2(self.conv1(x)))
    second = self.conv5(self.conv4(first))
    return self.final_conv(second), [first, second]


def roi_align(images: np.ndarray, rois: np.ndarray, output_size: int) -> np.ndarray:
  """torchvision.ops.roi_align (aligned=False, spatial_scale 1, sampling_ratio -1) as plain
  loops, transcribed from its CPU kernel: images (B, C, H, W), rois (N, 5) as (batch index,
  x0, y0, x1, y1) -> (N, C, P, P). The reference when torchvision is not installed."""
  _, c, h, w = images.shape
  p = output_size
  out = np.zeros((len(rois), c, p, p), np.float64)

  def sample(img, y, x):
    if y < -1.0 or y > h or x < -1.0 or x > w:
      return np.zeros(c)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
      y0 = y1 = h - 1
      y = float(y0)
    else:
      y1 = y0 + 1
    if x0 >= w - 1:
      x0 = x1 = w - 1
      x = float(x0)
    else:
      x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * img[:, y0, x0] + (1 - ly) * lx * img[:, y0, x1] +
            ly * (1 - lx) * img[:, y1, x0] + ly * lx * img[:, y1, x1])

  for n, (b, x_start, y_start, x_end, y_end) in enumerate(rois.astype(np.float64)):
    img = images[int(b)].astype(np.float64)
    roi_w, roi_h = max(x_end - x_start, 1.0), max(y_end - y_start, 1.0)
    bin_w, bin_h = roi_w / p, roi_h / p
    g_h, g_w = int(math.ceil(roi_h / p)), int(math.ceil(roi_w / p))
    for ph in range(p):
      for pw in range(p):
        total = np.zeros(c)
        for iy in range(g_h):
          y = y_start + ph * bin_h + (iy + 0.5) * bin_h / g_h
          for ix in range(g_w):
            total += sample(img, y, x_start + pw * bin_w + (ix + 0.5) * bin_w / g_w)
        out[n, :, ph, pw] = total / max(g_h * g_w, 1)
  return out
