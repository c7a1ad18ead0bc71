"""torchvision / lpips state dicts -> Flax variables, and the converted-file format.

Key mapping (one-to-one, both directions): a torchvision key is the Flax path with each
'_<index>' turned back into '.<index>' and the leaf renamed — kernel|scale -> weight, bias ->
bias, mean -> running_mean, var -> running_var. Conv kernels go OIHW -> HWIO. Classifier
heads ('fc.', 'classifier.', timm's 'pre_logits.'/'head.'; for deeplabv3_mobilenet_v3_large,
whose 'classifier.' is the segmentation head, only 'aux_classifier.') and BatchNorm
'num_batches_tracked' are ignored; any other extra key, a missing key or a wrong shape is a
ValueError naming the key and the file. Converted variables are stored as Flax msgpack.

GFP-GAN (arch 'gfpgan', the released GFPGANv1.3 / v1.4 files) has its own mechanical mapping
(`gfpgan_torch_key`, models/gfpgan.py): its torch names have underscores, so only '_<index>'
components become '.<index>'; its config is read off the file's shapes (`gfpgan_config`).

ArcFace (arch 'arcface', the GFPGAN release's arcface_resnet18.pth: models/arcface.py) follows
the torchvision rule, its PReLU slopes ('weight' leaves) kept as they are; the keys may carry
the 'module.' prefix of a DataParallel save.
"""

import ctypes
import ctypes.util
import functools
import hashlib
import json
import os
import re
from typing import Any, Callable, Mapping, Optional

from absl import logging
import flax
import flax.linen
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import numpy as st_numpy

from pikfix_jax import models
from pikfix_jax.models import arcface
from pikfix_jax.models import backbones
from pikfix_jax.models import deeplab
from pikfix_jax.models import gfpgan
from pikfix_jax.models import lpips
from pikfix_jax.models import wan_face

ARCHS = ('resnet34', 'vgg19', 'vgg16', 'lpips_vgg', 'lpips_alex',
         'deeplabv3_mobilenet_v3_large', 'gfpgan', 'bopbtl_face', 'arcface')
# Wan et al.'s released face-enhancement generator (models/wan_face.py; convert_face_generator).
FACE_ARCH = 'bopbtl_face'
# LPIPS archs: the lpips package's `net` and the files their conversion reads (backbone, heads).
LPIPS_NETS = {'lpips_vgg': 'vgg', 'lpips_alex': 'alex'}
LPIPS_FILES = {'lpips_vgg': ('VGG-16', 'vgg16-397923af.pth', 'vgg.pth'),
               'lpips_alex': ('AlexNet', 'alexnet-owt-7be5be79.pth', 'alex.pth')}
_IGNORED_PREFIXES = ('fc.', 'classifier.', 'pre_logits.', 'head.')
# Per-arch replacements of _IGNORED_PREFIXES. DeepLabV3's 'classifier.' is the segmentation
# head (converted, so an extra key under it is an error); only the auxiliary FCN head, a
# training-time loss on the stride-8 features that the Flax model does not build, is dropped.
_ARCH_IGNORED_PREFIXES = {'deeplabv3_mobilenet_v3_large': ('aux_classifier.',)}
_LEAF_TO_TORCH = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                  'mean': 'running_mean', 'var': 'running_var', 'weight': 'weight'}
# torch.nn.DataParallel's prefix on every key of a state dict saved through it.
_DATA_PARALLEL_PREFIX = 'module.'
_WARNED: set = set()


def build_model(arch: str) -> flax.linen.Module:
  """The Flax module whose variables `arch` files hold (every layer of the architecture)."""
  if arch == 'resnet34':
    return backbones.ResNet34()
  if arch in ('vgg19', 'vgg16'):
    depth = int(arch[3:])
    return backbones.VGG(depth=depth, outputs=(backbones.vgg_layer_names(depth)[-1],))
  if arch in LPIPS_NETS:
    return lpips.LPIPS(net=LPIPS_NETS[arch])
  if arch == 'deeplabv3_mobilenet_v3_large':
    return deeplab.DeepLabV3MobileNetV3Large()
  if arch == 'gfpgan':
    return gfpgan.GFPGANv1Clean()  # the released v1.3 / v1.4 config (512 px faces)
  if arch == FACE_ARCH:
    return wan_face.FaceGenerator()  # the variables of both released sizes (256, 512)
  if arch == 'arcface':
    return arcface.ResNetArcFace()
  raise ValueError(f'Unknown arch {arch!r}; expected one of {ARCHS}')


# Archs whose input shape the architecture fixes: GFP-GAN's out_size, ArcFace's grey 128 px face
# (the size its linear layer fits).
_FIXED_INPUTS = {'gfpgan': (1, 512, 512, 3),
                 'arcface': (1, arcface.INPUT_SIZE, arcface.INPUT_SIZE, 1)}


def _init_args(arch: str, x) -> tuple:
  if arch in _FIXED_INPUTS:
    shape = _FIXED_INPUTS[arch]
    return ((jax.ShapeDtypeStruct(shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct)
             else jnp.zeros(shape, x.dtype)),)
  return (x, x) if arch in LPIPS_NETS else (x,)


def random_variables(arch: str, seed: int = 0) -> dict:
  """Random (torchvision-style) initialisation of the full `arch`, as numpy arrays."""
  args = _init_args(arch, jnp.zeros((1, 32, 32, 3), jnp.float32))
  variables = _jitted_init(arch)(jax.random.PRNGKey(seed), *args)
  return jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(variables))


@functools.lru_cache(maxsize=None)
def _jitted_init(arch: str):
  return models.jit_init(build_model(arch).init)


def variable_shapes(arch: str) -> dict:
  """{'params': ..., 'batch_stats': ...} of `jax.ShapeDtypeStruct` for `arch` (no compute)."""
  args = _init_args(arch, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  return flax.core.unfreeze(jax.eval_shape(build_model(arch).init, jax.random.PRNGKey(0), *args))


def torch_key(path: tuple[str, ...]) -> str:
  """Flax path inside a collection -> torchvision key.

  ('layer1_0', 'bn1', 'var') -> 'layer1.0.bn1.running_var'; ('features_0', 'kernel') ->
  'features.0.weight'. params and batch_stats leaves have distinct names, so the collection
  is not needed.
  """
  *modules, leaf = path
  return '.'.join([m.replace('_', '.') for m in modules] + [_LEAF_TO_TORCH[leaf]])


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A .pth (torch.load, weights_only) or .safetensors file -> {key: numpy array}."""
  if path.endswith('.safetensors'):
    return dict(st_numpy.load_file(path))
  if path.endswith(('.pth', '.pt', '.bin')):
    # torch is optional (only for .pth files; requirements-dev.txt) and heavy: imported here.
    import torch  # pylint: disable=g-import-not-at-top
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, Mapping):
      raise ValueError(f'{path}: expected a state dict, got {type(state).__name__}')
    for key, value in state.items():
      if not isinstance(value, torch.Tensor):
        raise ValueError(f'{path}: key {key!r} holds a {type(value).__name__}, not a tensor '
                         '(expected a flat torchvision state dict)')
    return {k: v.detach().cpu().numpy() for k, v in state.items()}
  raise ValueError(f'{path}: unknown weight file type (expected .pth, .pt, .bin or .safetensors)')


def take_state(state_dict: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
               source: str, torch_to_flax: Callable[[tuple, tuple], Optional[tuple]],
               ignored: Callable[[str], bool] = lambda key: False) -> dict:
  """The strict core of every converter. `expected`: {torch key: (Flax path, Flax shape)};
  `torch_to_flax(flax_path, flax_shape)`: the axis permutation taking the torch tensor to the
  Flax layout (None: same layout). Every key of `state_dict` must be expected or `ignored`,
  every expected key present with the torch shape; else a one-line ValueError naming `source`
  and the key. Returns the Flax variables, float32."""
  for key in state_dict:
    if key not in expected and not ignored(key):
      raise ValueError(f'{source}: unexpected key {key!r}')
  out = {}
  for key, (flax_path, shape) in expected.items():
    if key not in state_dict:
      raise ValueError(f'{source}: missing key {key!r}')
    value = np.asarray(state_dict[key], np.float32)
    perm = torch_to_flax(flax_path, tuple(shape))
    torch_shape = tuple(shape[i] for i in np.argsort(perm)) if perm else tuple(shape)
    if value.shape != torch_shape:
      raise ValueError(f'{source}: key {key!r} has shape {value.shape}, expected {torch_shape}')
    out[flax_path] = value.transpose(perm) if perm else value
  return flax.traverse_util.unflatten_dict(out)


def _torchvision_perm(flax_path: tuple, shape: tuple) -> Optional[tuple[int, ...]]:
  """Conv kernels OIHW -> HWIO, linear (out, in) -> (in, out)."""
  del flax_path
  return {4: (2, 3, 1, 0), 2: (1, 0)}.get(len(shape))


def convert_state_dict(state_dict: Mapping[str, np.ndarray], shapes: dict,
                       source: str = '<state dict>',
                       ignored_prefixes: tuple[str, ...] = _IGNORED_PREFIXES) -> dict:
  """Maps a torchvision-layout state dict onto the Flax variable tree `shapes` (strict); extra
  keys under `ignored_prefixes` (and BatchNorm counters) are dropped."""
  flat = flax.traverse_util.flatten_dict(shapes)
  expected, bn_modules = {}, set()
  for (collection, *path), leaf in flat.items():
    expected[torch_key(tuple(path))] = ((collection, *path), leaf.shape)
    if collection == 'batch_stats':
      bn_modules.add(torch_key(tuple(path)).rsplit('.', 1)[0])
  ignored = lambda key: key.startswith(tuple(ignored_prefixes)) or (
      key.endswith('.num_batches_tracked') and key.rsplit('.', 1)[0] in bn_modules)
  return take_state(state_dict, expected, source, _torchvision_perm, ignored)


def convert_files(arch: str, path: str, lpips_heads: Optional[str] = None) -> dict:
  """Reads torchvision weights (and, for lpips_vgg / lpips_alex, the lpips package's v0.1
  heads file, vgg.pth / alex.pth) into Flax variables."""
  if arch == 'gfpgan':
    return convert_gfpgan_state_dict(read_gfpgan_file(path), path)
  if arch == FACE_ARCH:
    return convert_face_generator(read_state_dict(path), path)
  if arch == 'arcface':  # strict: its file has no classifier head to drop
    return convert_state_dict(strip_data_parallel(read_state_dict(path), path),
                              variable_shapes(arch), path, ignored_prefixes=())
  shapes = variable_shapes(arch)
  if arch in _ARCH_IGNORED_PREFIXES:
    return convert_state_dict(read_state_dict(path), shapes, path, _ARCH_IGNORED_PREFIXES[arch])
  if arch not in LPIPS_NETS:
    return convert_state_dict(read_state_dict(path), shapes, path)
  if not lpips_heads:
    backbone, _, heads_file = LPIPS_FILES[arch]
    raise ValueError(f'{arch} needs the torchvision {backbone} file and the lpips heads file '
                     f'({heads_file})')
  params = shapes['params']
  net = convert_state_dict(read_state_dict(path), {'params': params['net']}, path)
  heads_shapes = {'params': {k: v for k, v in params.items() if k != 'net'}}
  heads = convert_state_dict(read_state_dict(lpips_heads), heads_shapes, lpips_heads)
  for key, kernel in flax.traverse_util.flatten_dict(heads['params']).items():
    if np.any(kernel < 0):
      raise ValueError(f'{lpips_heads}: key {torch_key(key)!r} has negative '
                       'weights; LPIPS heads are non-negative')
  return {'params': {'net': net['params'], **heads['params']}}


def strip_data_parallel(state_dict: Mapping[str, np.ndarray], source: str
                        ) -> dict[str, np.ndarray]:
  """The state dict with DataParallel's 'module.' prefix taken off the keys that carry it
  (basicsr's load_network does the same); two keys that become one are a ValueError."""
  out = {}
  for key, value in state_dict.items():
    bare = key[len(_DATA_PARALLEL_PREFIX):] if key.startswith(_DATA_PARALLEL_PREFIX) else key
    if bare in out:
      raise ValueError(f'{source}: key {key!r} appears with and without the '
                       f'{_DATA_PARALLEL_PREFIX!r} prefix')
    out[bare] = value
  return out


def convert_face_generator(state_dict: Mapping[str, np.ndarray], source: str = '<state dict>',
                           module: Optional[flax.linen.Module] = None) -> dict:
  """The release's face generator state dict (Face_Enhancement/checkpoints/*/latest_net_G.pth)
  -> variables of `module` (default `wan_face.FaceGenerator()`, the release's size), strictly:
  a missing, unexpected or misshapen key is a ValueError naming it and `source`. The block
  convs' weight_orig, weight_u, weight_v become the effective kernel weight_orig / (u . W v),
  torch's eval-mode spectral norm (`wan_face.fold_spectral_norm`); BatchNorm
  num_batches_tracked may be there or not."""
  module = wan_face.FaceGenerator() if module is None else module
  expected, bn_modules = _face_expected_keys(module.ngf, module.num_upsampling_layers,
                                             module.spade_hidden)
  counter = lambda key: (key.endswith('.num_batches_tracked') and
                         key.rsplit('.', 1)[0] in bn_modules)
  kernels = lambda flax_path, shape: (2, 3, 1, 0) if len(shape) == 4 else None  # OIHW -> HWIO
  variables = take_state(state_dict, expected, source, kernels, counter)
  try:
    return wan_face.fold_spectral_norm(variables)
  except ValueError as e:
    raise ValueError(f'{source}: {e}') from None


@functools.lru_cache(maxsize=None)
def _face_expected_keys(ngf: int, num_upsampling_layers: str, spade_hidden: int
                        ) -> tuple[dict, frozenset]:
  """({release key: (Flax path in the spectral-norm training form, shape)}, the BatchNorm
  module prefixes) of a face generator; its variables do not depend on load_size."""
  module = wan_face.FaceGenerator(ngf=ngf, num_upsampling_layers=num_upsampling_layers,
                                  spade_hidden=spade_hidden, spectral_norm=True)
  face = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(
      jax.eval_shape(module.init, jax.random.PRNGKey(0), face)))
  expected, bn_modules = {}, set()
  for (collection, *path), leaf in flat.items():
    spectral = path[-1] == 'kernel' and ('batch_stats', *path[:-1], 'u') in flat
    key = wan_face.torch_key(tuple(path), spectral)
    expected[key] = ((collection, *path), tuple(leaf.shape))
    if collection == 'batch_stats' and path[-1] == 'mean':
      bn_modules.add(key.rsplit('.', 1)[0])
  return expected, frozenset(bn_modules)


def face_load_size(checkpoint: str) -> Optional[int]:
  """The face size a released face checkpoint runs at, from its folder's name
  (`wan_face.RELEASE_CHECKPOINTS`: Setting_9_epoch_100 -> 256, FaceSR_512 -> 512), or None."""
  folder = os.path.basename(os.path.dirname(os.path.abspath(checkpoint)))
  return wan_face.RELEASE_CHECKPOINTS.get(folder)


def face_meta_path(path: str) -> str:
  """The JSON file beside converted face weights: weights/x.msgpack -> weights/x.json."""
  return os.path.splitext(path)[0] + '.json'


def save_face_generator(path: str, variables: Mapping[str, Any], load_size: int,
                        source: str = '') -> None:
  """Writes converted face-generator variables and, beside them (`face_meta_path`), which
  variant they are: {"arch", "load_size", "num_upsampling_layers", "ngf", "source",
  "fingerprint"}; the two released sizes have the same variables, so only this tells them
  apart."""
  save_variables(path, variables)
  meta = {'arch': FACE_ARCH, 'load_size': int(load_size), 'num_upsampling_layers': 'normal',
          'ngf': int(np.shape(variables['params']['conv_img']['kernel'])[2]),
          'source': source, 'fingerprint': fingerprint(variables)}
  with open(face_meta_path(path) + '.tmp', 'w') as f:
    json.dump(meta, f, indent=1)
  os.replace(face_meta_path(path) + '.tmp', face_meta_path(path))


def load_face_generator(path: str) -> tuple[wan_face.FaceGenerator, dict]:
  """(the FaceGenerator of the variant recorded beside `path`, its variables, checked)."""
  meta_path = face_meta_path(path)
  if not os.path.exists(meta_path):
    raise ValueError(f'{path}: no {os.path.basename(meta_path)} beside it saying the face size '
                     '(write both with data_prep.convert_weights --arch=bopbtl_face)')
  with open(meta_path) as f:
    meta = json.load(f)
  module = wan_face.FaceGenerator(load_size=meta['load_size'], ngf=meta['ngf'],
                                  num_upsampling_layers=meta['num_upsampling_layers'])
  face = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  tree = load_variables(path)
  check_tree(tree, flax.core.unfreeze(jax.eval_shape(module.init, jax.random.PRNGKey(0), face)),
             f'{path} ({FACE_ARCH})')
  return module, tree


def save_variables(path: str, variables: Mapping[str, Any]) -> None:
  """Writes a variable tree as Flax msgpack (atomically)."""
  tree = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32),
                                flax.core.unfreeze(variables))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.tmp', 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(tree))
  os.replace(path + '.tmp', path)


def load_variables(path: str, arch: Optional[str] = None) -> dict:
  """Reads a msgpack written by `save_variables`; with `arch`, checks every path and shape."""
  with open(path, 'rb') as f:
    tree = flax.serialization.msgpack_restore(f.read())
  if arch is not None:
    check_tree(tree, variable_shapes(arch), f'{path} ({arch})')
  return tree


def return_freed_memory() -> None:
  """Hands the memory the C allocator keeps after frees back to the system (glibc's
  malloc_trim; nothing where the C library has no such call). Reading a checkpoint frees
  two copies of every array (the file's bytes, the decoded arrays) after copying it into
  JAX's buffers; glibc keeps those pages in the process, where they count in its memory until
  it ends (measured on the released Wan et al. restorer: docs/BENCHMARKS.md)."""
  try:
    trim = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim
  except (OSError, AttributeError):
    return
  trim(0)


def check_tree(tree: Mapping[str, Any], shapes: Mapping[str, Any], source: str) -> None:
  """ValueError naming the first Flax path that is missing, extra or of the wrong shape."""
  got = flax.traverse_util.flatten_dict(dict(tree), sep='/')
  want = flax.traverse_util.flatten_dict(dict(shapes), sep='/')
  missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  if missing or extra:
    what, key = ('missing', missing[0]) if missing else ('unexpected', extra[0])
    raise ValueError(f'{source}: {what} variable {key!r}')
  for key, leaf in want.items():
    if tuple(np.shape(got[key])) != tuple(leaf.shape):
      raise ValueError(f'{source}: variable {key!r} has shape {np.shape(got[key])}, '
                       f'expected {tuple(leaf.shape)}')


def fingerprint(variables: Mapping[str, Any]) -> str:
  """A short hash of a variable tree (paths and values), to tie indexes to weights."""
  h = hashlib.sha256()
  for key, value in sorted(flax.traverse_util.flatten_dict(dict(variables), sep='/').items()):
    h.update(key.encode())
    h.update(np.ascontiguousarray(np.asarray(value, np.float32)).tobytes())
  return h.hexdigest()[:16]


def maybe_load_backbone(path: str, arch: str, init_variables: Mapping[str, Any]) -> dict:
  """Pretrained variables for a backbone, or `init_variables` (with one warning) if path is ''.

  `path` is a converted msgpack (data_prep.convert_weights) or, for resnet34/vgg19/vgg16, a
  torchvision .pth/.safetensors converted on the fly. The result has exactly the structure of
  `init_variables` (arrays or `jax.ShapeDtypeStruct`s; e.g. a VGG built only up to relu5_2
  gets only those layers), with its dtypes.
  """
  if not path:
    if arch not in _WARNED:
      _WARNED.add(arch)
      logging.warning(
          'No pretrained %s weights given (config.backbones): the %s uses UNTRAINED random '
          'features. See docs/WEIGHTS.md to download and convert ImageNet weights.', arch,
          {'resnet34': 'similarity sub-net', 'vgg19': 'perceptual loss / reference retrieval',
           'vgg16': 'VGG-16 feature extractor', 'lpips_vgg': 'LPIPS metric',
           'lpips_alex': 'LPIPS metric'}.get(arch, arch))
    return init_variables
  if path.endswith(('.pth', '.pt', '.bin', '.safetensors')):
    full = convert_files(arch, path)
  else:
    full = load_variables(path, arch)
  flat_full = flax.traverse_util.flatten_dict(dict(full), sep='/')
  flat_init = flax.traverse_util.flatten_dict(flax.core.unfreeze(init_variables), sep='/')
  out = {}
  for key, init in flat_init.items():  # arrays or jax.ShapeDtypeStruct
    if key not in flat_full or np.shape(flat_full[key]) != tuple(init.shape):
      raise ValueError(f'{path} ({arch}) does not fit the model: variable {key!r}')
    out[key] = jnp.asarray(flat_full[key], init.dtype)
  logging.info('Loaded pretrained %s weights from %s', arch, path)
  return flax.traverse_util.unflatten_dict(out, sep='/')


# --- GFP-GAN (models/gfpgan.py) ---------------------------------------------------------------

# Torch -> Flax axis order per Flax leaf: 'kernel' is torch's 'weight' (modulated conv
# (1, O, I, k, k), conv OIHW, linear (out, in)); any other 4-D leaf (constant input, StyleConv /
# ToRGB biases, noise buffers) is NCHW. Everything else keeps its layout.
_GFPGAN_KERNEL_PERMS = {5: (0, 3, 4, 2, 1), 4: (2, 3, 1, 0), 2: (1, 0)}
_GFPGAN_NCHW_TO_NHWC = (0, 2, 3, 1)


def _gfpgan_perm(leaf: str, ndim: int) -> Optional[tuple[int, ...]]:
  if leaf == 'kernel':
    return _GFPGAN_KERNEL_PERMS.get(ndim)
  return _GFPGAN_NCHW_TO_NHWC if ndim == 4 else None


def gfpgan_torch_key(path: tuple[str, ...]) -> str:
  """Flax path inside a collection -> the release's state-dict key: components joined by '.',
  '_<index>' components split off ('condition_scale_0_2' -> 'condition_scale.0.2'; the
  release's own names, such as 'style_conv1' or 'noise0', have no '_<digits>' part), leaf
  'kernel' -> 'weight'. ('stylegan_decoder', 'style_convs_3', 'modulated_conv', 'kernel') ->
  'stylegan_decoder.style_convs.3.modulated_conv.weight'."""
  *modules, leaf = path
  modules = [re.sub(r'_(\d+)(?=_|$)', r'.\1', m) for m in modules]
  return '.'.join(modules + ['weight' if leaf == 'kernel' else leaf])


def gfpgan_torch_shapes(variables: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """{release key: torch shape} of a GFP-GAN Flax variable tree (arrays or shape structs)."""
  out = {}
  for (_, *path), leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(variables)).items():
    shape = tuple(np.shape(leaf))
    perm = _gfpgan_perm(path[-1], len(shape))
    if perm is not None:
      shape = tuple(shape[i] for i in np.argsort(perm))
    out[gfpgan_torch_key(tuple(path))] = shape
  return out


def read_gfpgan_file(path: str) -> dict[str, np.ndarray]:
  """A released GFP-GAN .pth ({'params_ema': state dict}; like GFPGANer, 'params' if there is
  no 'params_ema') or a bare state dict -> {key: numpy array}. torch.load(weights_only=True)."""
  import torch  # pylint: disable=g-import-not-at-top
  state = torch.load(path, map_location='cpu', weights_only=True)
  if not isinstance(state, Mapping):
    raise ValueError(f'{path}: expected a dict, got {type(state).__name__}')
  for name in ('params_ema', 'params'):
    if name in state:
      state = state[name]
      break
  if not isinstance(state, Mapping):
    raise ValueError(f'{path}: params_ema holds a {type(state).__name__}, not a state dict')
  for key, value in state.items():
    if not isinstance(value, torch.Tensor):
      raise ValueError(f'{path}: key {key!r} holds a {type(value).__name__}, not a tensor '
                       "(expected {'params_ema': state dict} or a state dict)")
  return {k: v.detach().cpu().float().numpy() for k, v in state.items()}


def gfpgan_config(shapes: Mapping[str, tuple[int, ...]], source: str = '<state dict>') -> dict:
  """The GFPGANv1Clean fields a release state dict ({key: torch shape}) was built with.
  out_size from the number of down blocks; narrow from the constant input's width;
  channel_multiplier from the 64 px width (1 below 64 px, where it changes nothing);
  different_w / sft_half from the widths of final_linear / the SFT convs. input_is_latent is not
  in the weights: True, as GFPGANer runs every released clean model."""
  def shape(key: str) -> tuple[int, ...]:
    if key not in shapes:
      raise ValueError(f'{source}: missing key {key!r} (not a GFPGANv1Clean state dict?)')
    return tuple(shapes[key])
  downs = {m.group(1) for k in shapes for m in [re.match(r'conv_body_down\.(\d+)\.', k)] if m}
  out_size = 2 ** (len(downs) + 2)
  gfpgan.log_size(out_size)
  narrow = shape('stylegan_decoder.constant_input.weight')[1] / 512
  style = shape('stylegan_decoder.style_conv1.modulated_conv.modulation.weight')[1]
  num_mlp = len([k for k in shapes if re.fullmatch(r'stylegan_decoder\.style_mlp\.\d+\.weight', k)])
  multiplier = 1
  if out_size >= 64:
    multiplier = shape('stylegan_decoder.to_rgbs.3.modulated_conv.weight')[2] / (256 * narrow)
    multiplier = int(multiplier) if float(multiplier).is_integer() else multiplier
  codes = shape('final_linear.weight')[0]
  if codes not in (style, gfpgan.num_latent(out_size) * style):
    raise ValueError(f"{source}: key 'final_linear.weight' has {codes} outputs, expected {style} "
                     f'or {gfpgan.num_latent(out_size) * style}')
  sft = shape('condition_scale.0.2.weight')[0]
  hidden = shape('condition_scale.0.0.weight')[0]
  if sft not in (hidden, 2 * hidden):
    raise ValueError(f"{source}: key 'condition_scale.0.2.weight' has {sft} outputs, expected "
                     f'{hidden} or {2 * hidden}')
  return dict(out_size=out_size, num_style_feat=style, channel_multiplier=multiplier,
              num_mlp=num_mlp, input_is_latent=True, different_w=codes != style,
              narrow=narrow if not narrow.is_integer() else int(narrow), sft_half=sft == hidden)


def gfpgan_variable_shapes(model: 'gfpgan.GFPGANv1Clean') -> dict:
  """{'params': ..., 'buffers': ...} of `jax.ShapeDtypeStruct` for a GFPGANv1Clean (no compute)."""
  x = jax.ShapeDtypeStruct((1, model.out_size, model.out_size, 3), jnp.float32)
  return flax.core.unfreeze(jax.eval_shape(model.init, jax.random.PRNGKey(0), x))


def convert_gfpgan_state_dict(state_dict: Mapping[str, np.ndarray],
                              source: str = '<state dict>') -> dict:
  """A GFPGANv1Clean release state dict -> Flax variables of `GFPGANv1Clean(**gfpgan_config)`
  (strict: a missing, unexpected or misshapen key is a ValueError naming it and `source`)."""
  config = gfpgan_config({k: np.shape(v) for k, v in state_dict.items()}, source)
  shapes = gfpgan_variable_shapes(gfpgan.GFPGANv1Clean(**config))
  expected = {gfpgan_torch_key(tuple(path)): ((collection, *path), leaf.shape)
              for (collection, *path), leaf in flax.traverse_util.flatten_dict(shapes).items()}
  return take_state(state_dict, expected, source,
                    lambda flax_path, shape: _gfpgan_perm(flax_path[-1], len(shape)))


def load_gfpgan(path: str) -> tuple['gfpgan.GFPGANv1Clean', dict]:
  """(model, variables) from a converted GFP-GAN msgpack (`data_prep.convert_weights
  --arch=gfpgan`); the config is read off the shapes, every path and shape checked."""
  tree = load_variables(path)
  model = gfpgan.GFPGANv1Clean(**gfpgan_config(gfpgan_torch_shapes(tree), path))
  check_tree(tree, gfpgan_variable_shapes(model), f'{path} (gfpgan)')
  return model, tree


# Wan et al.'s released checkpoints (`--arch=bopbtl`; pikfix_jax/wan_release.py drives it).

BOPBTL_ARCH = 'bopbtl'
_BOPBTL_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                  'mean': 'running_mean', 'var': 'running_var'}


def read_bopbtl_checkpoint(path: str, detection: bool = False) -> dict[str, np.ndarray]:
  """A release checkpoint (torch.load, weights_only) -> {key: numpy array}: a flat state dict
  (latest_net_*.pth) or, `detection`, the 'model_state' of FT_Epoch_latest.pt."""
  import torch  # pylint: disable=g-import-not-at-top
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path}: not a readable torch checkpoint ({type(e).__name__}: '
                     f'{str(e).splitlines()[0] if str(e) else ""})') from None
  if detection:
    if not isinstance(state, Mapping) or 'model_state' not in state:
      raise ValueError(f"{path}: missing key 'model_state' (the detector's checkpoint is "
                       "{'model_state': state dict, ...})")
    state = state['model_state']
  if not isinstance(state, Mapping):
    raise ValueError(f'{path}: expected a state dict, got {type(state).__name__}')
  for key, value in state.items():
    if not isinstance(value, torch.Tensor):
      raise ValueError(f'{path}: key {key!r} holds a {type(value).__name__}, not a tensor')
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _bopbtl_module_key(module: flax.linen.Module, path: tuple[str, ...]) -> str:
  """Flax module path inside a release network -> the release's torch module prefix."""
  from pikfix_jax.models import wan  # pylint: disable=g-import-not-at-top
  res = lambda name: int(name[3:])  # 'res3' -> 3
  conv_in_block = lambda p: f'conv_block.{1 + 4 * int(p[4:])}'  # conv0 -> 1, conv1 -> 5
  head, rest = path[0], path[1:]
  if isinstance(module, wan.VAE):
    sub = path[1]
    if head == 'encoder':
      n_first = 1 + 3 * (module.n_downsample + 1)  # stem + down-samplings (conv, IN, ReLU)
      if sub == 'stem':
        return 'encoder.1'
      if sub.startswith('down'):
        return f'encoder.{4 + 3 * int(sub[4:])}'
      return f'encoder.{n_first + res(sub)}.{conv_in_block(path[2])}'
    if sub.startswith('res'):
      return f'decoder.{res(sub)}.{conv_in_block(path[2])}'
    if sub.startswith('up'):
      return f'decoder.{module.n_res + 3 * int(sub[2:])}'
    return f'decoder.{module.n_res + 3 * module.n_downsample + 1}'  # pad, conv, tanh
  if isinstance(module, wan.MappingNetwork):
    n_in = len(module.widths_in)
    pre, post = ('model', 'model') if module.block == 'none' else ('before_NL', 'after_NL')
    first_out = (3 * n_in + module.n_res) if module.block == 'none' else module.n_res
    if head.startswith('in'):
      return f'{pre}.{3 * int(head[2:])}'
    if head.startswith('out'):
      return f'{post}.{first_out + 3 * int(head[3:])}'
    if head.startswith('res'):
      offset = 3 * n_in if module.block == 'none' else 0
      return f'{post}.{offset + res(head)}.{conv_in_block(rest[0])}'
    if head == 'partial_nonlocal':
      if rest[0].startswith('global_res'):
        return f'NL.res_block.{int(rest[0][10:])}.{conv_in_block(rest[1])}'
      return f'NL.{rest[0]}'
    if head.startswith('stage'):  # 'stage1_res0'
      stage, k = (int(t) for t in head[5:].split('_res'))
      block = f'before_NL.{3 * n_in + k}' if stage == 0 else f'res_block_{stage}.{k}'
      return f'{block}.{conv_in_block(rest[0])}'
    if head.startswith('attention'):
      scale = f'NL_scale_{int(head[9:]) + 1}'
      if rest[0] == 'combine':
        return f'{scale}.F_Combine'
      return f'{scale}.res_block.{res(rest[0])}.{conv_in_block(rest[1])}'
  if isinstance(module, wan.ScratchDetector):
    block = lambda name: 4 * int(name.split('_block')[1][0]) + (2 if name.endswith('_norm')
                                                                 else 1)
    if head in ('first', 'last'):
      return f'{head}.1'
    if head.startswith('down'):
      level = int(head[4:].split('_')[0])
      if '_block' in head:
        return f'down_path.{level}.block.{block(head)}'
      return f'down_sample.{level}.{2 if head.endswith("_norm") else 1}'
    if head.startswith('up'):
      level = module.depth - 1 - int(head[2:].split('_')[0])
      if '_block' in head:
        return f'up_path.{level}.conv_block.block.{block(head)}'
      return f'up_path.{level}.up.2'
  raise ValueError(f'no release key for {type(module).__name__} variable {"/".join(path)}')


def convert_bopbtl_state(state: Mapping[str, np.ndarray], module: flax.linen.Module,
                         shapes: Mapping[str, Any], source: str) -> dict:
  """A release state dict -> the Flax variables of its `module` (models/wan.py variant;
  `shapes` from `jax.eval_shape(module.init, ...)`). Strict: a missing, unexpected or
  misshapen key is a one-line ValueError naming `source` and the key. Conv kernels go OIHW ->
  HWIO, transposed convs (in, out, kh, kw) -> (kh, kw, in, out). BatchNorm
  'num_batches_tracked' may be there or not (torch < 0.4.1 did not save it); the detector's
  anti-aliasing filters ('down_sample.N.4.filt') must be the fixed [1, 2, 1]^2 / 16."""
  from pikfix_jax.models import wan  # pylint: disable=g-import-not-at-top
  expected, bn_modules = {}, set()
  for (collection, *path), leaf in flax.traverse_util.flatten_dict(dict(shapes)).items():
    prefix = _bopbtl_module_key(module, tuple(path[:-1]))
    expected[f'{prefix}.{_BOPBTL_LEAVES[path[-1]]}'] = ((collection, *path), leaf.shape)
    if collection == 'batch_stats':
      bn_modules.add(prefix)
  filters = {}
  if isinstance(module, wan.ScratchDetector):
    a = np.array([1.0, 2.0, 1.0], np.float32)
    for level in range(module.depth):
      c = module.base_features * 2 ** level
      filters[f'down_sample.{level}.4.filt'] = np.tile(
          (np.outer(a, a) / 16.0)[None, None], (c, 1, 1, 1))
  for key, want in filters.items():
    if key not in state:
      raise ValueError(f'{source}: missing key {key!r}')
    if np.shape(state[key]) != want.shape or not np.allclose(state[key], want, atol=1e-7):
      raise ValueError(f'{source}: key {key!r} is not the [1, 2, 1]^2 / 16 filter of shape '
                       f'{want.shape} (got shape {np.shape(state[key])})')
  transposed = isinstance(module, wan.VAE)  # only the VAE decoder's 'up' layers

  def kernels(flax_path: tuple, shape: tuple) -> Optional[tuple[int, ...]]:
    if len(shape) != 4:
      return None
    return (2, 3, 0, 1) if transposed and flax_path[2].startswith('up') else (2, 3, 1, 0)

  counter = lambda key: (key.endswith('.num_batches_tracked') and
                         key.rsplit('.', 1)[0] in bn_modules)
  return take_state(state, expected, source, kernels,
                    ignored=lambda key: key in filters or counter(key))
