"""The released checkpoints of Wan et al. ("Bringing Old Photos Back to Life", CVPR 2020;
microsoft/Bringing-Old-Photos-Back-to-Life, MIT) in the Flax networks of models/wan.py: which
variant each checkpoint is, the converter's driver (`convert`), the loader (`load`), the
release's pre- and post-processing of its stage 1 (Global/detection.py, Global/test.py, as
run.py calls them), and the stage-1 pipeline (`Restorer`): RGB uint8 photo -> restored RGB
uint8 (+ the detected scratch mask).

docs/MODEL.md, "Wan et al.: the released networks", lists every step and each place where the
release is ambiguous or fails and what is done here instead; docs/WEIGHTS.md gives the command.
"""

import dataclasses
import json
import os
import time
from typing import Any, Mapping, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

from pikfix_jax import image_io
from pikfix_jax import weights
from pikfix_jax.models import wan
from pikfix_jax.ops import color

ARCH = 'bopbtl'
CONFIG_FILE = 'config.json'
# Checkpoint files, relative to the release's Global/checkpoints folder. The mapping folders
# also hold the name the release gives the experiment (test.py `opt.name`).
FILES = {
    'VAE_A_quality': os.path.join('restoration', 'VAE_A_quality', 'latest_net_G.pth'),
    'VAE_B_quality': os.path.join('restoration', 'VAE_B_quality', 'latest_net_G.pth'),
    'VAE_B_scratch': os.path.join('restoration', 'VAE_B_scratch', 'latest_net_G.pth'),
    'mapping_quality': os.path.join('restoration', 'mapping_quality',
                                    'latest_net_mapping_net.pth'),
    'mapping_scratch': os.path.join('restoration', 'mapping_scratch',
                                    'latest_net_mapping_net.pth'),
    'mapping_Patch_Attention': os.path.join('restoration', 'mapping_Patch_Attention',
                                            'latest_net_mapping_net.pth'),
    'detection': os.path.join('detection', 'FT_Epoch_latest.pt'),
}
_VAE = dict(features=64, n_downsample=2, n_res=4, channels=3, release_io=True)
_MAPPING = dict(widths_in=(128, 256, 512, 512), widths_out=(512, 256, 128))
# The Flax variant of each checkpoint (class in models/wan.py, its fields), with test.py's
# options resolved: ngf 64, k_size 4, n_downsample_global 3, mc 64, start_r 1 (the VAEs);
# mapping_n_block 6, map_mc 512, NL_res, correlation_renormalize, NL_fusion_method 'combine'
# (scratch); mapping_exp 1, inference_optimize (HR); detection.py's UNet(depth 4, wf 6).
NETWORKS: dict[str, tuple[str, dict[str, Any]]] = {
    'VAE_A_quality': ('VAE', _VAE),
    'VAE_B_quality': ('VAE', _VAE),
    'VAE_B_scratch': ('VAE', _VAE),
    'mapping_quality': ('MappingNetwork', dict(_MAPPING, n_res=6, block='none')),
    'mapping_scratch': ('MappingNetwork', dict(
        _MAPPING, n_res=6, global_res=3, block='partial_nonlocal', mask_resize='release',
        release_renorm=True)),
    'mapping_Patch_Attention': ('MappingNetwork', dict(
        _MAPPING, n_res=2, block='patch_attention', mask_resize='release',
        patch_sizes=(8, 4, 2), patch_res=2)),
    'detection': ('ScratchDetector', dict(base_features=64, depth=4, conv_num=2, norm='batch')),
}
# Stage 1's constants (Global/detection.py, Global/test.py).
QUALITY_MULTIPLE = 4  # test.py data_transforms: sides rounded to multiples of 4
DETECTION_MULTIPLE = 16  # detection.py data_transforms('full_size') and scale_tensor
DETECTION_SHORT_SIDE = 256  # scale_tensor: the detector sees the photo at short side 256
DETECTION_THRESHOLD = 0.4  # P >= 0.4 is a scratch
HR_MASK_DILATION = 3  # test.py --HR: cv2.dilate with a 3x3 kernel, 3 iterations
TEST_MODES = ('Full', 'Scale')


def build_network(name: str, networks: Optional[Mapping[str, Any]] = None) -> nn.Module:
  """The Flax module of checkpoint `name`: NETWORKS' variant, or `networks` (a config.json's
  'networks' entry: {'module': class name in models/wan.py, 'kwargs': its fields})."""
  if networks is None:
    cls, kwargs = NETWORKS[name]
  else:
    cls, kwargs = networks[name]['module'], networks[name]['kwargs']
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return getattr(wan, cls)(**kwargs)


def example_inputs(module: nn.Module) -> tuple:
  """Input shapes that `module.init` traces (any size gives the same variable shapes)."""
  if isinstance(module, wan.VAE):
    return (jax.ShapeDtypeStruct((1, 32, 32, module.channels), jnp.float32),)
  if isinstance(module, wan.MappingNetwork):
    return (jax.ShapeDtypeStruct((1, 8, 8, 64), jnp.float32),
            jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))
  return (jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32),)


def variable_shapes(module: nn.Module) -> dict:
  """{'params': ..., ['batch_stats': ...]} of jax.ShapeDtypeStruct (traced, no compute)."""
  return flax.core.unfreeze(
      jax.eval_shape(module.init, jax.random.PRNGKey(0), *example_inputs(module)))


def checkpoints_dir(release_dir: str) -> str:
  """The folder holding restoration/ and detection/: `release_dir` is the repository root
  (Global/checkpoints inside), its Global folder, or that checkpoints folder itself."""
  for candidate in (os.path.join(release_dir, 'Global', 'checkpoints'),
                    os.path.join(release_dir, 'checkpoints'), release_dir):
    if os.path.isdir(os.path.join(candidate, 'restoration')):
      return candidate
  raise ValueError(f'{release_dir}: no restoration/ folder under it, Global/checkpoints or '
                   'checkpoints (unzip the release\'s global_checkpoints.zip in Global/)')


def convert(release_dir: str, output_dir: Optional[str] = None) -> dict[str, dict]:
  """Reads the seven stage-1 checkpoints of a release folder (strict: a missing file, an
  unexpected, missing or misshapen key is a ValueError naming the file and the key) -> {name:
  Flax variables}; with `output_dir`, writes each as `name.msgpack` plus config.json."""
  root = checkpoints_dir(release_dir)
  converted = {}
  for name, relative in FILES.items():
    path = os.path.join(root, relative)
    if not os.path.isfile(path):
      raise ValueError(f'{path}: missing checkpoint file of {name}')
    module = build_network(name)
    state = weights.read_bopbtl_checkpoint(path, detection=name == 'detection')
    converted[name] = weights.convert_bopbtl_state(state, module, variable_shapes(module), path)
  if output_dir is not None:
    save(converted, output_dir, source=os.path.abspath(root))
  return converted


def save(converted: Mapping[str, Mapping], output_dir: str, source: str = '') -> None:
  """Writes converted variables as output_dir/{name}.msgpack and the config.json that `load`
  reads (the class and fields of every network, its file and fingerprint)."""
  os.makedirs(output_dir, exist_ok=True)
  networks = {}
  for name, variables in converted.items():
    cls, kwargs = NETWORKS[name]
    weights.save_variables(os.path.join(output_dir, f'{name}.msgpack'), variables)
    networks[name] = {'module': cls, 'kwargs': kwargs, 'file': f'{name}.msgpack',
                      'fingerprint': weights.fingerprint(variables)}
  config = {'arch': ARCH, 'source': source, 'networks': networks}
  with open(os.path.join(output_dir, CONFIG_FILE + '.tmp'), 'w') as f:
    json.dump(config, f, indent=2)
  os.replace(os.path.join(output_dir, CONFIG_FILE + '.tmp'),
             os.path.join(output_dir, CONFIG_FILE))


@dataclasses.dataclass
class Release:
  """Converted release networks: Flax modules and their variables, keyed by checkpoint name."""
  modules: dict[str, nn.Module]
  variables: dict[str, dict]
  config: dict


def is_release_dir(directory: str) -> bool:
  """Whether `directory` holds a converted release (its config.json says arch 'bopbtl')."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    return False
  with open(path) as f:
    return json.load(f).get('arch') == ARCH


def networks_for(with_scratch: bool = False, hr: bool = False) -> tuple[str, ...]:
  """The checkpoints one stage-1 mode runs (test.py loads only these; the detector is
  detection.py's): quality, scratch (`with_scratch`) or scratch at high resolution (`hr`)."""
  if not with_scratch:
    return ('VAE_A_quality', 'mapping_quality', 'VAE_B_quality')
  return ('detection', 'VAE_A_quality',
          'mapping_Patch_Attention' if hr else 'mapping_scratch', 'VAE_B_scratch')


def load(directory: str, names: Optional[tuple[str, ...]] = None,
         winograd: bool = True) -> Release:
  """The networks `convert` wrote into `directory` (`names`: only those, e.g. `networks_for`
  a mode, whose memory is then all a run holds); each file is checked against its module
  (a missing, extra or misshapen variable is a ValueError naming the file).

  `winograd`: the mapping networks are built with `winograd=True`: lowered for CPU, their wide
  3x3 convs take Winograd's F(2x2, 3x3) (the same function with 4/9 of those convs'
  multiplies; `ops.conv.conv_general_dilated(winograd=True)`); elsewhere nothing changes."""
  path = os.path.join(directory, CONFIG_FILE)
  if not is_release_dir(directory):
    raise ValueError(f'{path}: not a converted {ARCH} release (python -m '
                     'data_prep.convert_weights --arch=bopbtl ...)')
  with open(path) as f:
    config = json.load(f)
  absent = sorted(set(names or ()) - set(config['networks']))
  if absent:
    raise ValueError(f'{path}: no {", ".join(absent)} network in this converted release '
                     '(convert the whole release folder again)')
  modules, variables = {}, {}
  for name, entry in config['networks'].items():
    if names is not None and name not in names:
      continue
    modules[name] = build_network(name, config['networks'])
    file = os.path.join(directory, entry['file'])
    tree = weights.load_variables(file)
    weights.check_tree(tree, variable_shapes(modules[name]), file)
    if winograd and isinstance(modules[name], wan.MappingNetwork):
      modules[name] = modules[name].clone(winograd=True)
    variables[name] = jax.tree_util.tree_map(jnp.asarray, tree)
    del tree
  weights.return_freed_memory()
  return Release(modules, variables, config)


# The release's pre- and post-processing (numbers as Global/detection.py and test.py compute
# them; PIL where the release resizes with PIL).


def _as_rgb(photo: np.ndarray) -> Image.Image:
  """uint8 (H, W), (H, W, 3) or (H, W, 4) -> PIL RGB (the release's .convert('RGB'))."""
  photo = np.asarray(photo)
  if photo.dtype != np.uint8 or photo.ndim not in (2, 3):
    raise ValueError(f'photo: expected uint8 (H, W[, C]), got {photo.dtype} {photo.shape}')
  return Image.fromarray(photo).convert('RGB')


def _rounded_size(rows: float, cols: float, multiple: int) -> tuple[int, int]:
  # Python's round (halves to even), as the release's int(round(x / m) * m)
  return int(round(rows / multiple)) * multiple, int(round(cols / multiple)) * multiple


def quality_resize(photo: np.ndarray, test_mode: str = 'Full') -> np.ndarray:
  """test.py `data_transforms` for --Quality_restore: 'Full' rounds the sides to multiples
  of 4, 'Scale' first sets the short side to 256 (aspect kept, as floats); PIL bilinear;
  an unchanged size keeps the photo as it is."""
  if test_mode not in TEST_MODES:
    raise ValueError(f'test_mode={test_mode!r}: use one of {TEST_MODES}')
  img = _as_rgb(photo)
  rows, cols = img.height, img.width
  if test_mode == 'Scale':
    rows, cols = (rows / cols * 256, 256) if cols < rows else (256, cols / rows * 256)
  return _resize_to_multiple(img, rows, cols, QUALITY_MULTIPLE, Image.BILINEAR,
                             f'for test mode {test_mode}')


def _resize_to_multiple(img: Image.Image, rows: float, cols: float, multiple: int,
                        resample: int, purpose: str) -> np.ndarray:
  """`img` resized (PIL `resample`) to (rows, cols) rounded to multiples of `multiple` as the
  release rounds; unchanged when that is its size; a one-line error when a side rounds to 0."""
  size = _rounded_size(rows, cols, multiple)
  if min(size) == 0:
    raise ValueError(f'photo {img.height}x{img.width}: too small {purpose} '
                     f'(sides round to {size[0]}x{size[1]})')
  if size != (img.height, img.width):
    img = img.resize((size[1], size[0]), resample)
  return np.asarray(img)


def detection_resize(photo: np.ndarray) -> np.ndarray:
  """detection.py `data_transforms(img, 'full_size')`: sides rounded to multiples of 16, PIL
  bicubic (the photo both the detector and the scratch restoration see)."""
  img = _as_rgb(photo)
  return _resize_to_multiple(img, img.height, img.width, DETECTION_MULTIPLE, Image.BICUBIC,
                             'to detect scratches')


def to_signed(photo: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1] as ToTensor + Normalize(0.5, 0.5): (x / 255 - 0.5) / 0.5."""
  return (np.asarray(photo, np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)


def grey(photo: np.ndarray) -> np.ndarray:
  """PIL's convert('L') of an RGB uint8 photo (ITU-R 601-2 luma, PIL's integer rounding)."""
  return np.asarray(_as_rgb(photo).convert('L'))


def detector_size(rows: int, cols: int, short_side: int = DETECTION_SHORT_SIDE
                  ) -> tuple[int, int]:
  """detection.py `scale_tensor`'s size: the short side to `short_side`, the other by the
  aspect ratio, each rounded to a multiple of 16 (a square photo: both sides `short_side`)."""
  if rows < cols:
    return _rounded_size(short_side, cols / rows * short_side, DETECTION_MULTIPLE)
  return _rounded_size(rows / cols * short_side, short_side, DETECTION_MULTIPLE)


def stretch_to_uint8(image: np.ndarray) -> np.ndarray:
  """torchvision save_image(normalize=True) of one image, as test.py saves its output: the
  image stretched to its own min and max (over all channels; divided by max(max - min,
  1e-5)), then x * 255 + 0.5 truncated to uint8; float32 arithmetic as torch's."""
  t = np.asarray(image, np.float32)
  low, high = float(t.min()), float(t.max())
  t = (np.clip(t, low, high) - np.float32(low)) / np.float32(max(high - low, 1e-5))
  return np.clip(t * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)


def dilate(mask: np.ndarray, iterations: int = HR_MASK_DILATION) -> np.ndarray:
  """cv2.dilate(mask, ones((3, 3)), iterations): a (2 iterations + 1)-square max filter, the
  border never winning."""
  # masks are non-negative, so a constant 0 border never wins, as cv2's default border
  return ndimage.maximum_filter(np.asarray(mask), size=2 * iterations + 1, mode='constant',
                                cval=0)


def fill_scratches(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """test.py `irregular_hole_synthesize` with a binary mask: scratch pixels set to white."""
  return np.where(np.asarray(mask, bool)[..., None], np.uint8(255), photo).astype(np.uint8)


# Stage 1


class Restorer:
  """Stage 1 of the release (run.py's 'Overall restoration') with converted networks.

  `restore(photo)` -> (restored RGB uint8, detected mask or None). Without scratches: the
  photo resized by `test_mode` ('Full': sides to multiples of 4; 'Scale': short side 256), the
  quality VAE_A -> mapping_quality -> VAE_B_quality. With scratches: the photo's sides rounded
  to multiples of 16 (bicubic), the detector on its grey version at short side 256, P >= 0.4
  resized back (nearest), the scratch pixels filled with white, VAE_A_quality ->
  mapping_scratch (partial nonlocal) or, `hr`, the mask dilated by 3 and
  mapping_Patch_Attention -> VAE_B_scratch. The output is at the processed size (as the
  release saves it), stretched to its own min/max. `mask` (H, W) bool skips the detector
  (test.py's --test_mask) and must have the processed photo's size.

  `detection_short_side` (256) is the release's; tests lower it to run the detector small."""

  def __init__(self, release: Release, detection_short_side: int = DETECTION_SHORT_SIDE):
    self.release = release
    self.detection_short_side = detection_short_side
    self._jitted = {}

  def _run(self, name: str, method: str, *args) -> jnp.ndarray:
    """One network's call, jitted once per (network, method); 'encode' -> the code,
    'decode' -> the image, 'map' (code, mask), 'logits' (the detector, running statistics)."""
    if (name, method) not in self._jitted:
      module = self.release.modules[name]
      fn = {'encode': lambda v, x: module.apply(v, x, method='encode')[0],
            'decode': lambda v, z: module.apply(v, z, method='decode'),
            'map': lambda v, z, m: module.apply(v, z, m),
            'logits': lambda v, x: module.apply(v, x, train=False)}[method]
      self._jitted[name, method] = jax.jit(fn)
    return self._jitted[name, method](self.release.variables[name], *args)

  def detect(self, photo16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """detection.py on a photo whose sides are multiples of 16 -> (mask (H, W) bool, the
    detector's probabilities at its own size)."""
    rows, cols = photo16.shape[:2]
    x = jnp.asarray(to_signed(grey(photo16)))[None, :, :, None]
    x = wan.torch_interpolate(x, detector_size(rows, cols, self.detection_short_side),
                              'bilinear')
    # ScratchDetector maps [0, 1] to [-1, 1] inside: hand it the signed input mapped back
    prob = jax.nn.sigmoid(self._run('detection', 'logits', (x + 1.0) / 2.0))
    full = wan.torch_interpolate(prob, (rows, cols), 'nearest')
    return np.asarray(full[0, :, :, 0] >= DETECTION_THRESHOLD), np.asarray(prob[0, :, :, 0])

  def restore_details(self, photo: np.ndarray, with_scratch: bool = False, hr: bool = False,
                      test_mode: str = 'Full', mask: Optional[np.ndarray] = None) -> dict:
    """`restore` with its intermediate arrays: {'input' (1, H, W, 3) in [-1, 1], 'mask'
    (H, W) bool or None, 'net_mask' (the mask the mapping sees, after the HR dilation),
    'generated' (1, H, W, 3) tanh output, 'restored' uint8}."""
    if hr and not with_scratch:
      raise ValueError('hr=True is the scratch restoration at high resolution: set '
                       'with_scratch=True')
    if with_scratch:
      photo = detection_resize(photo)
      if mask is None:
        mask, _ = self.detect(photo)
      elif np.shape(mask) != photo.shape[:2]:
        raise ValueError(f'mask {np.shape(mask)} does not match the photo resized to '
                         f'{photo.shape[:2]}')
      mask = np.asarray(mask, bool)
      net_mask = dilate(mask.astype(np.uint8)).astype(bool) if hr else mask
      x = to_signed(fill_scratches(photo, net_mask))[None]
      m = jnp.asarray(net_mask, jnp.float32)[None, :, :, None]
      mapping, decoder = ('mapping_Patch_Attention' if hr else 'mapping_scratch',
                          'VAE_B_scratch')
      code = self._run('VAE_A_quality', 'encode', jnp.asarray(x))
      mapped = self._run(mapping, 'map', code, m)
    else:
      if mask is not None:
        raise ValueError('mask given without with_scratch=True')
      x = to_signed(quality_resize(photo, test_mode))[None]
      net_mask = None
      code = self._run('VAE_A_quality', 'encode', jnp.asarray(x))
      mapped = self._run('mapping_quality', 'map', code, None)
      decoder = 'VAE_B_quality'
    generated = np.asarray(self._run(decoder, 'decode', mapped))
    return {'input': x, 'mask': mask, 'net_mask': net_mask, 'generated': generated,
            'restored': stretch_to_uint8((generated[0] + 1.0) / 2.0)}

  def restore(self, photo: np.ndarray, with_scratch: bool = False, hr: bool = False,
              test_mode: str = 'Full', mask: Optional[np.ndarray] = None
              ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """RGB (or grey) uint8 photo -> (restored RGB uint8 at the processed size, the scratch
    mask (H, W) bool used, or None without scratches)."""
    out = self.restore_details(photo, with_scratch, hr, test_mode, mask)
    return out['restored'], out['mask']


class PhotoRestorer:
  """The stage-1 `Restorer` behind the interface `restore`, `evaluate` and the app call every
  method's restorer through (`inference.PhotoRestorer`): sRGB float (H, W, 3) in [0, 1] (or
  L/100 (H, W[, 1])) -> sRGB float at the photo's own size. The release writes its output at
  the processed size (sides rounded to multiples of 4, or 16 with scratches); here it is
  resized back (bicubic) where that differs, so a photo whose sides are already multiples
  gets the release's pixels. No reference; `mask` (H, W) of the next photo (white = scratch,
  `restore --scratch_mask`) replaces the detector's with `with_scratch`."""

  uses_reference = False

  def __init__(self, release: Release, with_scratch: bool = False, hr: bool = False,
               test_mode: str = 'Full'):
    if hr and not with_scratch:
      raise ValueError('--hr is the release\'s high-resolution scratch restoration: add '
                       '--with_scratch')
    if test_mode not in TEST_MODES:
      raise ValueError(f'--test_mode={test_mode}: use one of {TEST_MODES}')
    self.stage1 = Restorer(release)
    self.with_scratch, self.hr, self.test_mode = with_scratch, hr, test_mode
    self.accepts_mask = with_scratch
    self.mask: Optional[np.ndarray] = None
    self.last_info: dict = {}
    self.last_mask: Optional[np.ndarray] = None  # the scratch mask of the last photo

  def __call__(self, image: np.ndarray, reference_rgb: Optional[np.ndarray] = None,
               outputs: bool = False):
    del reference_rgb
    image = np.asarray(image, np.float32)
    if image.ndim == 2 or image.shape[-1] == 1:
      image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=-1)
    h, w = image.shape[:2]
    photo = np.clip(np.round(image[..., :3] * 255.0), 0, 255).astype(np.uint8)
    mask = None
    if self.mask is not None:
      mask = self.mask > 0.5
      if mask.shape != (h, w):
        raise ValueError(f'scratch mask {mask.shape[1]}x{mask.shape[0]} px; the photo is {w}x{h}')
      size = _rounded_size(h, w, DETECTION_MULTIPLE)
      if size != (h, w):  # the processed photo's size, as the release's --test_mask must be
        mask = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
    start = time.perf_counter()
    out = self.stage1.restore_details(photo, self.with_scratch, self.hr, self.test_mode, mask)
    restored = out['restored'].astype(np.float32) / 255.0
    if restored.shape[:2] != (h, w):
      restored = np.clip(image_io.resize_float(restored, h, w), 0.0, 1.0)
    self.last_info.update(processed=tuple(out['restored'].shape[:2]),
                          seconds=time.perf_counter() - start)
    self.last_mask = out['mask']
    if not outputs:
      return restored
    l, ab = color.rgb_to_lab_normalized(jnp.asarray(restored[None]))
    result = {'rgb': restored, 'restored_l': np.asarray(l[0]), 'ab': np.asarray(ab[0])}
    if self.with_scratch and out['mask'] is not None:  # the mask used, at the photo's size
      used = np.asarray(out['mask'], np.float32)
      if used.shape != (h, w):
        used = np.asarray(Image.fromarray(used).resize((w, h), Image.NEAREST))
      result['scratch_mask'] = (used > 0.5).astype(np.float32)
    return result


def photo_restorer(directory: str, with_scratch: bool = False, hr: bool = False,
                   test_mode: str = 'Full') -> PhotoRestorer:
  """`PhotoRestorer` of a converted release folder (`data_prep.convert_weights --arch=bopbtl`),
  holding only the networks its mode runs."""
  return PhotoRestorer(load(directory, networks_for(with_scratch, hr)), with_scratch, hr,
                       test_mode)
