"""A PyTorch (CPU) transcription of the inference networks and test-time steps of Wan et al.'s
release, microsoft/Bringing-Old-Photos-Back-to-Life (MIT), for tests only: written anew from
the release's Global/models/networks.py, NonLocal_feature_mapping_model.py, mapping_model.py,
Global/detection_models/networks.py and antialiasing.py, Global/test.py and detection.py,
with every test-time option resolved (docs/MODEL.md, "Wan et al.: the released networks").

Module attribute names are chosen so that `state_dict()` keys equal the release's checkpoint
keys; `write_fake_release` writes a release folder with random weights in the release's layout
(plus decoy files a converter must ignore). The image steps (`release_*` functions) mirror
the release's scripts with PIL and torch, the way the scripts do them.
"""

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image
import torch
from torch import nn
from torch.nn import functional as F

# The options Global/test.py's parameter_set fixes for every restoration run.
NGF, K_SIZE, N_DOWNSAMPLE_GLOBAL, MC, START_R = 64, 4, 3, 64, 1
MAPPING_N_BLOCK, MAP_MC = 6, 512
# Checkpoint folders (under Global/checkpoints/restoration) and the file each network loads.
RESTORATION_FILES = {
    'VAE_A_quality': 'latest_net_G.pth',
    'VAE_B_quality': 'latest_net_G.pth',
    'VAE_B_scratch': 'latest_net_G.pth',
    'mapping_quality': 'latest_net_mapping_net.pth',
    'mapping_scratch': 'latest_net_mapping_net.pth',
    'mapping_Patch_Attention': 'latest_net_mapping_net.pth',
}
DETECTION_FILE = os.path.join('detection', 'FT_Epoch_latest.pt')


def release_weights_init(module: nn.Module) -> None:
  """The release's `weights_init`: every Conv* weight N(0, 0.02) (biases keep torch's default),
  BatchNorm2d weight N(1, 0.02) and bias 0."""
  name = type(module).__name__
  if 'Conv' in name:
    module.weight.data.normal_(0.0, 0.02)
  elif 'BatchNorm2d' in name:
    module.weight.data.normal_(1.0, 0.02)
    module.bias.data.fill_(0)


def _norm(channels: int) -> nn.Module:
  # get_norm_layer('instance'): no affine parameters, no running statistics (no state keys)
  return nn.InstanceNorm2d(channels, affine=False)


class ResnetBlock(nn.Module):
  """x + [reflect 1, conv3, IN, ReLU, reflect 1, conv3, IN](x) (dilation 1); keys
  conv_block.1 and conv_block.5."""

  def __init__(self, dim: int):
    super().__init__()
    self.conv_block = nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim), nn.ReLU(True),
        nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim))

  def forward(self, x):
    return x + self.conv_block(x)


class GlobalGenerator_DCDCv2(nn.Module):  # pylint: disable=invalid-name
  """The VAE (netG_A / netG_B) with the test-time options: RGB in and out, ngf 64, k_size 4
  (so output_padding 0), n_downsample_global 3, mc 64, start_r 1, spatio_size 64, feat_dim -1,
  norm instance, no segmentation head (tanh kept)."""

  def __init__(self, input_nc: int = 3, output_nc: int = 3):
    super().__init__()
    n, width = N_DOWNSAMPLE_GLOBAL, lambda c: min(c, MC)
    enc = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, width(NGF), 7), _norm(width(NGF)),
           nn.ReLU(True)]
    for i in range(n - 1):  # the first start_r without residual blocks, then 2 after each
      cin, cout = width(NGF * 2 ** i), width(NGF * 2 ** (i + 1))
      enc += [nn.Conv2d(cin, cout, K_SIZE, 2, 1), _norm(cout), nn.ReLU(True)]
      if i >= START_R:
        enc += [ResnetBlock(cout), ResnetBlock(cout)]
    top = width(NGF * 2 ** n)
    enc += [ResnetBlock(top), ResnetBlock(top)]  # spatio_size 64's block, then the last one
    self.encoder = nn.Sequential(*enc)

    dec = [ResnetBlock(top), ResnetBlock(top)]
    for i in range(1, n):
      cin, cout = width(NGF * 2 ** (n - i)), width(NGF * 2 ** (n - i - 1))
      if i < n - START_R:
        dec += [ResnetBlock(cin), ResnetBlock(cin)]
      dec += [nn.ConvTranspose2d(cin, cout, K_SIZE, 2, 1, output_padding=0), _norm(cout),
              nn.ReLU(True)]
    dec += [nn.ReflectionPad2d(3), nn.Conv2d(width(NGF), output_nc, 7), nn.Tanh()]
    self.decoder = nn.Sequential(*dec)

  def forward(self, x, flow: str = 'enc_dec'):
    if flow == 'enc':
      return self.encoder(x)
    if flow == 'dec':
      return self.decoder(x)
    return self.decoder(self.encoder(x))


def _conv_in_relu(cin: int, cout: int) -> list:
  return [nn.Conv2d(cin, cout, 3, 1, 1), _norm(cout), nn.ReLU(True)]


def _mapping_in_layers() -> list:
  # 64 -> 128 -> 256 -> 512 -> 512 (widths min(64 * 2^(i + 1), map_mc))
  return sum((_conv_in_relu(min(64 * 2 ** i, MAP_MC), min(64 * 2 ** (i + 1), MAP_MC))
              for i in range(4)), [])


def _mapping_out_layers() -> list:
  # 512 -> 512 -> 256 -> 128, then a plain conv to the code's 64 channels
  layers = sum((_conv_in_relu(min(64 * 2 ** (4 - i), MAP_MC), min(64 * 2 ** (3 - i), MAP_MC))
                for i in range(3)), [])
  return layers + [nn.Conv2d(128, 64, 3, 1, 1)]


class Mapping_Model(nn.Module):  # pylint: disable=invalid-name
  """--Quality_restore's mapping (no mask): keys model.N."""

  def __init__(self):
    super().__init__()
    self.model = nn.Sequential(*_mapping_in_layers(),
                               *[ResnetBlock(MAP_MC) for _ in range(MAPPING_N_BLOCK)],
                               *_mapping_out_layers())

  def forward(self, x, mask=None):
    del mask
    return self.model(x)


class NonLocalBlock2D_with_mask_Res(nn.Module):  # pylint: disable=invalid-name
  """The partial nonlocal block as --Scratch_and_Quality_restore sets it: in = inter = 512
  channels, mode 'combine', re_norm True, temperature 1, no use_self, no cosine."""

  def __init__(self, channels: int = MAP_MC):
    super().__init__()
    self.inter_channels = channels
    self.g = nn.Conv2d(channels, channels, 1)
    self.W = nn.Conv2d(channels, channels, 1)  # pylint: disable=invalid-name
    nn.init.zeros_(self.W.weight)  # then overwritten by weights_init, as in the release
    nn.init.zeros_(self.W.bias)
    self.theta = nn.Conv2d(channels, channels, 1)
    self.phi = nn.Conv2d(channels, channels, 1)
    self.res_block = nn.Sequential(*[ResnetBlock(channels) for _ in range(3)])

  def attention(self, x, mask):
    """(weights (B, hw, hw), keep (B, 1, h, w)) as the release computes them."""
    b, _, h, w = x.shape
    theta = self.theta(x).view(b, self.inter_channels, -1).permute(0, 2, 1)
    phi = self.phi(x).view(b, self.inter_channels, -1)
    weights = F.softmax(torch.matmul(theta, phi) / 1.0, dim=2)
    # keep = 1 - dilated(bilinear resize > 0), times the nearest-resized (1 - mask)
    dilated = F.interpolate(mask, (h, w), mode='bilinear')
    dilated[dilated > 0] = 1.0
    keep = (1 - dilated) * F.interpolate(1 - mask, (h, w))
    weights = keep.view(b, 1, -1).repeat(1, h * w, 1) * weights
    return F.normalize(weights, p=1, dim=2), keep

  def forward(self, x, mask):
    b, _, h, w = x.shape
    weights, keep = self.attention(x, mask)
    values = self.g(x).view(b, self.inter_channels, -1).permute(0, 2, 1)
    y = torch.matmul(weights, values).permute(0, 2, 1).contiguous()
    w_y = self.res_block(self.W(y.view(b, self.inter_channels, h, w)))
    keep = keep.repeat(1, self.inter_channels, 1, 1)
    return keep * x + (1 - keep) * w_y


class Mapping_Model_with_mask(nn.Module):  # pylint: disable=invalid-name
  """--Scratch_and_Quality_restore's mapping (NL_res, NL_use_mask): before_NL, NL, after_NL."""

  def __init__(self):
    super().__init__()
    self.before_NL = nn.Sequential(*_mapping_in_layers())  # pylint: disable=invalid-name
    self.NL = NonLocalBlock2D_with_mask_Res()  # pylint: disable=invalid-name
    self.after_NL = nn.Sequential(  # pylint: disable=invalid-name
        *[ResnetBlock(MAP_MC) for _ in range(MAPPING_N_BLOCK)], *_mapping_out_layers())

  def forward(self, x, mask):
    return self.after_NL(self.NL(self.before_NL(x), mask))


class Patch_Attention_4(nn.Module):  # pylint: disable=invalid-name
  """Multi-scale patch attention at one patch size (the inference path the release runs,
  `inference_optimize`): res_block (one ResnetBlock) and F_Combine (1025 -> 512)."""

  def __init__(self, patch_size: int, channels: int = MAP_MC):
    super().__init__()
    self.patch_size = patch_size
    self.F_Combine = nn.Conv2d(2 * channels + 1, channels, 3, 1, 1)  # pylint: disable=invalid-name
    self.res_block = nn.Sequential(ResnetBlock(channels))

  def forward(self, z, mask):
    x = self.res_block(z)
    _, _, h, w = x.shape
    p = self.patch_size
    mask = F.interpolate(mask, (h, w), mode='bilinear')
    mask[mask > 0] = 1.0
    cover = F.unfold(mask, kernel_size=(p, p), padding=0, stride=p)
    is_query = (torch.mean(cover, dim=1, keepdim=True) > 0.6).float()[0, 0, :]
    query_index = torch.nonzero(is_query, as_tuple=True)[0]
    if len(query_index) == 0:
      composed = x
    else:
      key_index = torch.nonzero(is_query != 1, as_tuple=True)[0]
      tiles = F.unfold(x, kernel_size=(p, p), padding=0, stride=p)
      queries = torch.index_select(tiles, 2, query_index).permute(0, 2, 1)
      keys = torch.index_select(tiles, 2, key_index)
      corr = torch.bmm(F.normalize(queries, dim=2), F.normalize(keys, dim=1))
      _, best = torch.max(F.softmax(corr, dim=2), dim=2)  # empty keys: the release's crash
      chosen = torch.gather(keys, 2, best.view(best.size(0), 1, -1).expand(
          keys.size(0), keys.size(1), -1))
      tiles[:, :, query_index] = chosen
      composed = F.fold(tiles, output_size=(h, w), kernel_size=(p, p), padding=0, stride=p)
    return self.F_Combine(torch.cat((z, composed, mask), dim=1))


class Mapping_Model_with_mask_2(nn.Module):  # pylint: disable=invalid-name
  """--HR's mapping (mapping_exp 1): convs + 2 blocks, patch attention at 8, 2 blocks, at 4,
  2 blocks, at 2, 2 blocks + out convs (mapping_n_block is not used)."""

  def __init__(self):
    super().__init__()
    self.before_NL = nn.Sequential(  # pylint: disable=invalid-name
        *_mapping_in_layers(), ResnetBlock(MAP_MC), ResnetBlock(MAP_MC))
    self.NL_scale_1 = Patch_Attention_4(8)  # pylint: disable=invalid-name
    self.res_block_1 = nn.Sequential(ResnetBlock(MAP_MC), ResnetBlock(MAP_MC))
    self.NL_scale_2 = Patch_Attention_4(4)  # pylint: disable=invalid-name
    self.res_block_2 = nn.Sequential(ResnetBlock(MAP_MC), ResnetBlock(MAP_MC))
    self.NL_scale_3 = Patch_Attention_4(2)  # pylint: disable=invalid-name
    self.after_NL = nn.Sequential(  # pylint: disable=invalid-name
        ResnetBlock(MAP_MC), ResnetBlock(MAP_MC), *_mapping_out_layers())

  def forward(self, x, mask):
    x = self.NL_scale_1(self.before_NL(x), mask)
    x = self.NL_scale_2(self.res_block_1(x), mask)
    x = self.NL_scale_3(self.res_block_2(x), mask)
    return self.after_NL(x)


class Downsample(nn.Module):
  """antialiasing.Downsample(filt_size 3, stride 2, reflect): reflect pad 1, per-channel
  [1, 2, 1]^2 / 16, stride 2; the filter is a buffer (key `filt`)."""

  def __init__(self, channels: int):
    super().__init__()
    a = torch.tensor([1.0, 2.0, 1.0])
    filt = a[:, None] * a[None, :]
    self.register_buffer('filt', (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))
    self.pad = nn.ReflectionPad2d(1)

  def forward(self, x):
    return F.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


class UNetConvBlock(nn.Module):

  def __init__(self, conv_num: int, cin: int, cout: int):
    super().__init__()
    layers = []
    for _ in range(conv_num):
      layers += [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout),
                 nn.LeakyReLU(0.2, True)]
      cin = cout
    self.block = nn.Sequential(*layers)

  def forward(self, x):
    return self.block(x)


class UNetUpBlock(nn.Module):

  def __init__(self, conv_num: int, cin: int, cout: int):
    super().__init__()
    self.up = nn.Sequential(nn.Upsample(mode='bilinear', scale_factor=2, align_corners=False),
                            nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3))
    self.conv_block = UNetConvBlock(conv_num, cin, cout)

  def forward(self, x, bridge):
    up = self.up(x)
    dy, dx = (bridge.shape[2] - up.shape[2]) // 2, (bridge.shape[3] - up.shape[3]) // 2
    bridge = bridge[:, :, dy:dy + up.shape[2], dx:dx + up.shape[3]]  # center crop
    return self.conv_block(torch.cat([up, bridge], 1))


class UNet(nn.Module):
  """The scratch detector as Global/detection.py builds it: UNet(in 1, out 1, depth 4,
  conv_num 2, wf 6, padding, batch_norm, up_mode 'upsample', no tanh, antialiasing). Its
  `sync_bn` wrapper rebinds a local name only, so the module (and its keys) is a plain UNet.
  Sides must be multiples of 16."""

  def __init__(self, depth: int = 4, conv_num: int = 2, wf: int = 6):
    super().__init__()
    self.first = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(1, 2 ** wf, 7),
                               nn.LeakyReLU(0.2, True))
    prev = 2 ** wf
    self.down_path, self.down_sample = nn.ModuleList(), nn.ModuleList()
    for i in range(depth):
      self.down_sample.append(nn.Sequential(
          nn.ReflectionPad2d(1), nn.Conv2d(prev, prev, 3), nn.BatchNorm2d(prev),
          nn.LeakyReLU(0.2, True), Downsample(prev)))
      self.down_path.append(UNetConvBlock(conv_num, prev, 2 ** (wf + i + 1)))
      prev = 2 ** (wf + i + 1)
    self.up_path = nn.ModuleList()
    for i in reversed(range(depth)):
      self.up_path.append(UNetUpBlock(conv_num, prev, 2 ** (wf + i)))
      prev = 2 ** (wf + i)
    self.last = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(prev, 1, 3))

  def forward(self, x):
    x = self.first(x)
    skips = []
    for down, block in zip(self.down_sample, self.down_path):
      skips.append(x)
      x = block(down(x))
    for i, up in enumerate(self.up_path):
      x = up(x, skips[-i - 1])
    return self.last(x)


def randomize_batchnorm(model: nn.Module, seed: int) -> nn.Module:
  """Running statistics and affine parameters away from 0 / 1 (a trained net's are), so a
  converter that mixes them up fails the parity tests."""
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      c = m.num_features
      m.weight.data = 1.0 + 0.2 * torch.randn(c, generator=g)
      m.bias.data = 0.1 * torch.randn(c, generator=g)
      m.running_mean.data = 0.1 * torch.randn(c, generator=g)
      m.running_var.data = 0.5 + torch.rand(c, generator=g)
      m.num_batches_tracked.fill_(1000)
  return model


def build_release(seed: int = 0, names: Optional[Sequence[str]] = None
                  ) -> dict[str, nn.Module]:
  """The seven networks of the release's stage 1 (`names`: only those, as test.py builds only
  its mode's), randomly initialised as the release initialises them (weights_init; the
  detector with torch's defaults and randomised BatchNorm statistics), in eval mode, keyed by
  checkpoint folder ('detection' for the UNet). The values depend on `names` (one random
  stream); the benchmark loads weights files into them."""
  torch.manual_seed(seed)
  builders = {'VAE_A_quality': GlobalGenerator_DCDCv2, 'VAE_B_quality': GlobalGenerator_DCDCv2,
              'VAE_B_scratch': GlobalGenerator_DCDCv2, 'mapping_quality': Mapping_Model,
              'mapping_scratch': Mapping_Model_with_mask,
              'mapping_Patch_Attention': Mapping_Model_with_mask_2}
  nets = {name: build() for name, build in builders.items() if names is None or name in names}
  for net in nets.values():
    net.apply(release_weights_init)
  if names is None or 'detection' in names:
    nets['detection'] = randomize_batchnorm(UNet(), seed)
    # torch's default init gives logits within +-0.02 of 0: P ~ 0.5 >= 0.4 everywhere, an
    # all-scratch mask (which the release then saves as all black, `release_save_image`). A
    # larger output layer spreads P over (0, 1), so the fake mask is mixed as a trained one's.
    nets['detection'].last[1].weight.data.mul_(300.0)
    nets['detection'].last[1].bias.data.mul_(300.0)
  return {k: v.eval() for k, v in nets.items()}


def checkpoint_path(root: str, name: str) -> str:
  """Where the release keeps network `name`'s weights under `root` (the repository root)."""
  base = os.path.join(root, 'Global', 'checkpoints')
  if name == 'detection':
    return os.path.join(base, DETECTION_FILE)
  return os.path.join(base, 'restoration', name, RESTORATION_FILES[name])


def write_fake_release(root: str, seed: int = 0, drop_counter: str = 'detection',
                       decoys: bool = True) -> dict[str, nn.Module]:
  """Writes `build_release(seed)`'s weights under root/Global/checkpoints in the release's
  layout and returns the networks. `drop_counter`: the network whose BatchNorm
  `num_batches_tracked` entries are left out (as in checkpoints saved by torch < 0.4.1).
  `decoys`: discriminator and optimizer files beside the weights, which must be ignored."""
  nets = build_release(seed)
  for name, net in nets.items():
    path = checkpoint_path(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state = net.state_dict()
    if name == drop_counter:
      state = {k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}
    if name == 'detection':
      torch.save({'model_state': state, 'epoch': 100}, path)
    else:
      torch.save(state, path)
    if decoys and name != 'detection':
      folder = os.path.dirname(path)
      torch.save({'model.0.weight': torch.zeros(64, 6, 4, 4)},
                 os.path.join(folder, 'latest_net_D.pth'))
      torch.save({'state': {}, 'param_groups': []}, os.path.join(folder, 'latest_optimizer_D.pth'))
  return nets


# The release's image steps (Global/detection.py, Global/test.py), with PIL and torch.


def release_round(value: float) -> int:
  """Python's round (halves to even), as the release's `int(round(x / 16) * 16)` uses it."""
  return int(round(value))


def release_quality_resize(img: Image.Image, scale: bool) -> Image.Image:
  """test.py `data_transforms` ('Full': scale False; 'Scale': True): sides to multiples of 4
  (after the short side to 256 when scaling), PIL bilinear; unchanged if already there."""
  ow, oh = img.size
  pw, ph = ow, oh
  if scale:
    if ow < oh:
      ow, oh = 256, ph / pw * 256
    else:
      oh, ow = 256, pw / ph * 256
  h, w = release_round(oh / 4) * 4, release_round(ow / 4) * 4
  if (h, w) == (ph, pw):
    return img
  return img.resize((w, h), Image.BILINEAR)


def release_detection_resize(img: Image.Image) -> Image.Image:
  """detection.py `data_transforms(img, 'full_size')`: sides rounded to multiples of 16,
  PIL bicubic; unchanged if already there."""
  ow, oh = img.size
  h, w = release_round(oh / 16) * 16, release_round(ow / 16) * 16
  if (h, w) == (oh, ow):
    return img
  return img.resize((w, h), Image.BICUBIC)


def release_scale_tensor(t: torch.Tensor, short_side: int = 256) -> torch.Tensor:
  """detection.py `scale_tensor`: the short side to `short_side` (256 in the release), each
  side rounded to a multiple of 16, torch bilinear (not anti-aliased)."""
  _, _, rows, cols = t.shape
  if rows < cols:
    new_rows, new_cols = short_side, cols / rows * short_side
  else:
    new_cols, new_rows = short_side, rows / cols * short_side
  size = [release_round(new_rows / 16) * 16, release_round(new_cols / 16) * 16]
  return F.interpolate(t, size, mode='bilinear')


def release_detect(unet: nn.Module, photo: Image.Image, short_side: int = 256
                   ) -> tuple[Image.Image, np.ndarray, torch.Tensor]:
  """detection.py's loop body: -> (the 16-multiple RGB photo, the mask as the PNG it saves
  (H, W, 3) uint8 0/255, the probabilities at the detector's size)."""
  transformed = release_detection_resize(photo.convert('RGB'))
  grey = torch.from_numpy(np.asarray(transformed.convert('L'), np.float32) / 255.0)
  grey = ((grey - 0.5) / 0.5)[None, None]
  rows, cols = grey.shape[2:]
  with torch.no_grad():
    prob = torch.sigmoid(unet(release_scale_tensor(grey, short_side)))
  full = F.interpolate(prob, [rows, cols], mode='nearest')
  saved = release_save_image((full >= 0.4).float())
  return transformed, saved, prob


def release_save_image(t: torch.Tensor) -> np.ndarray:
  """torchvision (0.9) save_image(t, nrow=1, padding=0, normalize=True) of one image
  (1, C, H, W) -> the uint8 (H, W, 3) array it writes: stretched to its own min / max
  (divided by max(max - min, 1e-5)), x * 255 + 0.5 truncated; one channel repeated."""
  t = t[0].clone()
  if t.shape[0] == 1:
    t = torch.cat([t, t, t], 0)
  low, high = float(t.min()), float(t.max())
  t.clamp_(min=low, max=high)
  t.sub_(low).div_(max(high - low, 1e-5))
  return t.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


def release_dilate(mask: np.ndarray, iterations: int = 3) -> np.ndarray:
  """cv2.dilate(mask, np.ones((3, 3)), iterations) with the default border (outside pixels
  never win), as iterated 3x3 max pools."""
  t = torch.from_numpy(mask.astype(np.float32)).permute(2, 0, 1)[None]
  for _ in range(iterations):
    t = F.max_pool2d(t, 3, stride=1, padding=1)
  return t[0].permute(1, 2, 0).numpy().astype(np.uint8)


def release_stage1(nets: dict, photo: Image.Image, with_scratch: bool = False,
                   hr: bool = False, test_mode: str = 'Full',
                   mask_png: Optional[np.ndarray] = None, short_side: int = 256,
                   dtype: torch.dtype = torch.float32) -> dict:
  """run.py's stage 1 for one photo: detection.py (with_scratch) then test.py -> {'input' (the
  network's input, 1 x 3 x H x W in [-1, 1]), 'mask' (1 x 1 x H x W or None), 'generated'
  (tanh output), 'restored' (the uint8 image test.py saves), 'mask_png'}. `mask_png` skips
  the detector (a given mask, as test.py's --test_mask). `dtype` torch.float64 (with the
  networks in float64) gives the restoration without float32 rounding."""
  to_tensor = lambda im: torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)
  normalise = lambda t: ((t - 0.5) / 0.5)[None]
  if with_scratch:
    if mask_png is None:
      photo, mask_png, _ = release_detect(nets['detection'], photo, short_side)
    else:
      photo = release_detection_resize(photo.convert('RGB'))
    mask = mask_png
    if hr:
      mask = release_dilate(mask, 3)
    m = mask.astype(np.float64) / 255
    hole = (np.asarray(photo).astype(np.float64) * (1 - m) + m * 255).astype(np.uint8)
    mask_t = to_tensor(mask)[:1][None]
    x = normalise(to_tensor(Image.fromarray(hole).convert('RGB')))
    mapping = nets['mapping_Patch_Attention' if hr else 'mapping_scratch']
    vae_b = nets['VAE_B_scratch']
  else:
    photo = photo.convert('RGB')
    if test_mode in ('Full', 'Scale'):
      photo = release_quality_resize(photo, scale=test_mode == 'Scale')
    x = normalise(to_tensor(photo))
    mask_t = torch.zeros_like(x)
    mapping, vae_b = nets['mapping_quality'], nets['VAE_B_quality']
  x, mask_t = x.to(dtype), mask_t.to(dtype)
  with torch.no_grad():
    code = nets['VAE_A_quality'](x, flow='enc')
    generated = vae_b(mapping(code, mask_t), flow='dec')
  return {'input': x, 'mask': mask_t if with_scratch else None, 'generated': generated,
          'restored': release_save_image((generated + 1.0) / 2.0), 'mask_png': mask_png}
