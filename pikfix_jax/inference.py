"""The inference engine: a trained Pik-Fix generator applied to photos of any size.

`Restorer` reduces a photo to its CIE lightness L, pads it to a multiple of 32
(`layers.pad_to_multiple`), restores and colorizes it, and crops back. The reference is resized
so that its longer side is min(reference_size, the padded input's longer side), aspect kept,
sides multiples of 32 (`reference_shape`): that bounds the number of keys of the similarity
warp (which is chunked over queries).

Memory (docs/RESTORE.md): inference runs in two jitted stages.
1. The restoration sub-net runs on overlapping windows of at most tile_size^2 pixels whose
   overlap (`restoration_halo`) exceeds the sub-net's receptive field, so the stitched result
   equals the untiled one (the x8 RDN level sees ~120 px around each pixel).
2. Similarity, SPHist warp and colorization run on the whole image. Above color_max_pixels
   (default 2048^2) they run on the restored L resized to that many pixels, and the ab channels
   are upsampled to full resolution (colour is low-frequency; the restored luminance stays full
   resolution).
Every distinct padded shape compiles once (jit caches per shape). `ExportedRestorer` runs an
export written with `--format=stablehlo` instead: the whole generator at once, from its
serialized `jax.export` artifact, without the model code. `python -m pikfix_jax.restore` is the
command-line program around both.
"""

import abc
import json
import math
import os
import time
from typing import Optional, Sequence, Union

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pikfix_jax import artifacts
from pikfix_jax import image_io
from pikfix_jax.models import layers
from pikfix_jax.models import pikfix
from pikfix_jax.models.restoration_net import RestorationNet
from pikfix_jax.ops import color

MIN_SIDE = 8  # Smallest input side accepted (px).
DEFAULT_REFERENCE_SIZE = 512
DEFAULT_TILE_SIZE = 1536
DEFAULT_COLOR_MAX_PIXELS = 2048 * 2048


class InputTooSmallError(artifacts.RestoreError):
  """The input photo is smaller than MIN_SIDE on a side."""


# ------------------------------------------------------------------------------ tiling

def restoration_halo(model_config: ml_collections.ConfigDict) -> int:
  """Overlap (px) between restoration windows that makes tiling exact.

  Level f of the RDN (avg-pooled by f; windows start at multiples of 32, so the pools align)
  applies 2 + num_blocks * num_units 3x3 convs. Zero padding at a window edge corrupts one more
  low-resolution pixel per conv, bilinear upsampling reads one pixel further, and two
  full-resolution 3x3 convs follow: f * (convs + 1) + 2 px, rounded up to a multiple of 32
  (paper config: 8 * 15 + 2 = 122 -> 128; checked empirically: 120 px is already exact).
  """
  r = model_config.restoration
  convs = 2 + r.num_blocks * r.num_units
  reach = max(f * (convs + 1) for f in r.levels) + 2
  return int(math.ceil(reach / pikfix.MULTIPLE) * pikfix.MULTIPLE)


def window_starts(size: int, window: int, halo: int) -> list[int]:
  """Starts of windows of `window` px covering [0, size) whose cores (window minus `halo` on
  inner sides) tile it. Multiples of 32 when the inputs are."""
  if window >= size:
    return [0]
  if window <= 2 * halo:
    raise ValueError(f'tile size {window} must exceed twice the halo ({halo})')
  starts = [0]
  while starts[-1] + window < size:
    starts.append(min(starts[-1] + window - 2 * halo, size - window))
  return starts


def _cores(starts: list[int], window: int, halo: int, size: int) -> list[tuple[int, int]]:
  """[begin, end) of the pixels each window contributes."""
  bounds = [0] + [s + halo for s in starts[1:]] + [size]
  return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


def _window_size(size: int, tile: int, halo: int) -> int:
  """Smallest multiple of 32 <= tile that needs as few windows as `tile` does."""
  if size <= tile:
    return size
  n = len(window_starts(size, tile, halo))
  need = math.ceil((size - 2 * halo) / n) + 2 * halo
  return min(tile, int(math.ceil(need / pikfix.MULTIPLE) * pikfix.MULTIPLE))


# ---------------------------------------------------------------------------- restorer

def _restoration(module: pikfix.PikFix, l: jnp.ndarray) -> jnp.ndarray:
  return module.restoration_net(l)


def _skip_restoration(next_fun, args, kwargs, context):
  """Interceptor: the restoration sub-net returns its input (already restored)."""
  if isinstance(context.module, RestorationNet) and context.method_name == '__call__':
    return args[0]
  return next_fun(*args, **kwargs)


def reference_shape(height: int, width: int, reference_size: int, input_hw: Sequence[int]
                    ) -> tuple[int, int]:
  """(H, W) the reference is resized to: longer side min(reference_size, padded input's
  longer side), aspect kept, both multiples of 32."""
  m = pikfix.MULTIPLE
  longest = min(reference_size, max(int(math.ceil(s / m) * m) for s in input_hw))
  longest = max(m, longest // m * m)
  short = max(m, int(round(longest * min(height, width) / max(height, width) / m)) * m)
  return (longest, short) if height >= width else (short, longest)


class PhotoRestorer(abc.ABC):
  """What every restorer does around the network: a photo of any size reduced to its L and
  padded to multiples of 32, its reference resized (`reference_shape`), the network's sRGB
  output cropped back. Subclasses implement `restore_padded`."""

  uses_reference = True  # False: the network ignores its reference (restore asks for none).
  multi_reference = False  # True: the network takes several references at once (Pik-Fix).

  def __init__(self, reference_size: int = DEFAULT_REFERENCE_SIZE):
    m = pikfix.MULTIPLE
    if reference_size < m or reference_size % m:
      raise artifacts.RestoreError(
          f'--reference_size={reference_size} must be a positive multiple of {m}')
    self.reference_size = reference_size
    self._to_l = jax.jit(lambda rgb: color.rgb_to_lab_normalized(rgb)[0])
    self.last_info: dict = {}

  def prepare_reference(self, reference_rgb: Union[np.ndarray, Sequence[np.ndarray]],
                        input_hw: Sequence[int]) -> Union[np.ndarray, tuple]:
    """sRGB (H, W, 3) -> resized (1, Hr, Wr, 3) float32 (see `reference_shape`); a list of
    references -> a tuple of them, each resized on its own (one is unwrapped; several need a
    `multi_reference` restorer)."""
    if isinstance(reference_rgb, (list, tuple)):
      if len(reference_rgb) != 1 and not self.multi_reference:
        raise artifacts.RestoreError(f'{len(reference_rgb)} references given; this method takes '
                                     'one (several references: Pik-Fix)')
      prepared = tuple(self.prepare_reference(r, input_hw) for r in reference_rgb)
      return prepared[0] if len(prepared) == 1 else prepared
    hw = reference_shape(reference_rgb.shape[0], reference_rgb.shape[1], self.reference_size,
                         input_hw)
    return image_io.resize_float(np.asarray(reference_rgb, np.float32)[..., :3], *hw)[None]

  @abc.abstractmethod
  def restore_padded(self, l: jnp.ndarray, reference: jnp.ndarray) -> dict:
    """Padded L (1, H, W, 1) and reference (1, Hr, Wr, 3) -> {'rgb': sRGB (1, H, W, 3)}, and
    'restored_l' (1, H, W, 1) and 'ab' (1, H, W, 2) where the restorer has them."""

  def __call__(self, image: np.ndarray, reference_rgb: np.ndarray,
               outputs: bool = False) -> Union[np.ndarray, dict]:
    """Restores one photo.

    Args:
      image: sRGB (H, W, 3) in [0, 1] (grey photos have equal channels) or L/100 (H, W[, 1]).
      reference_rgb: colour reference, sRGB (Hr, Wr, 3) in [0, 1], any size; or a list of them
        (several references, `multi_reference` restorers).
      outputs: return every output `restore_padded` gives, cropped, instead of the sRGB.
    Returns:
      sRGB (H, W, 3) float32 in [0, 1]; with `outputs`, {'rgb' (H, W, 3), 'restored_l'
      (H, W, 1), 'ab' (H, W, 2)} (what the restorer has).
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
      image = image[..., None]
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
      raise InputTooSmallError(f'the photo is {w}x{h} px; the smallest supported size is '
                               f'{MIN_SIDE}x{MIN_SIDE}')
    start = time.perf_counter()
    padded, hw = layers.pad_to_multiple(jnp.asarray(image[None]), pikfix.MULTIPLE)
    l = self._to_l(padded) if padded.shape[-1] == 3 else padded
    reference = self.prepare_reference(reference_rgb, padded.shape[1:3])
    several = isinstance(reference, tuple)
    reference = (tuple(jnp.asarray(r) for r in reference) if several
                 else jnp.asarray(reference))
    out = {k: np.asarray(layers.crop_to(v, hw)[0])
           for k, v in self.restore_padded(l, reference).items()}
    shapes = [tuple(r.shape[1:3]) for r in (reference if several else (reference,))]
    self.last_info.update(padded=tuple(padded.shape[1:3]),
                          reference=shapes if several else shapes[0],
                          seconds=time.perf_counter() - start)
    return out if outputs else out['rgb']


class Restorer(PhotoRestorer):
  """Applies a Pik-Fix generator to photos of any size (module docstring)."""

  multi_reference = True

  def __init__(self, model: pikfix.PikFix, variables: dict,
               reference_size: int = DEFAULT_REFERENCE_SIZE, tile_size: int = DEFAULT_TILE_SIZE,
               color_max_pixels: int = DEFAULT_COLOR_MAX_PIXELS, dtype: Optional[str] = None,
               query_chunk: Optional[int] = None):
    super().__init__(reference_size)
    m = pikfix.MULTIPLE
    if tile_size and tile_size % m:
      raise artifacts.RestoreError(
          f'--tile_size={tile_size} must be a multiple of {m} (0: no tiling)')
    model_config = (model.config.as_configdict()
                    if isinstance(model.config, ml_collections.FrozenConfigDict)
                    else ml_collections.ConfigDict(model.config))
    if dtype:
      model_config.dtype = dtype
    if query_chunk:
      model_config.similarity.query_chunk = query_chunk
    self.model = pikfix.build_generator(model_config)
    self.model_config = model_config
    self.variables = jax.device_put(variables)
    self.halo = restoration_halo(model_config)
    self.tile_size = max(tile_size, 2 * self.halo + m) if tile_size else 0
    if tile_size and tile_size != self.tile_size:
      logging.warning('--tile_size=%d is below twice the exact overlap (%d px): using %d.',
                      tile_size, self.halo, self.tile_size)
    self.color_max_pixels = color_max_pixels
    model_ = self.model
    self._restore_l = jax.jit(lambda v, l: model_.apply(v, l, method=_restoration))

    def colorize(v, restored, reference):
      with nn.intercept_methods(_skip_restoration):
        return model_.apply(v, restored, reference)['ab']
    self._colorize = jax.jit(colorize)
    self._shrink = jax.jit(lambda x, hw: jax.image.resize(
        x, (x.shape[0],) + hw + (x.shape[3],), 'linear', antialias=True), static_argnums=1)
    self._upsample_ab = jax.jit(self._upsample_ab_fn)
    self._compose = jax.jit(
        lambda restored, ab: color.lab_normalized_to_rgb(jnp.clip(restored, 0.0, 1.0), ab))

  @staticmethod
  def _upsample_ab_fn(ab: jnp.ndarray, restored: jnp.ndarray) -> jnp.ndarray:
    """ab at the restored L's resolution (the colour stage may run smaller, `color_shape`)."""
    if ab.shape[1:3] != restored.shape[1:3]:
      ab = jax.image.resize(ab, restored.shape[:3] + (2,), 'linear')
    return ab

  def restore_luminance(self, l: jnp.ndarray) -> jnp.ndarray:
    """Padded L (1, H, W, 1) -> restored L, window by window when larger than tile_size."""
    _, h, w, _ = l.shape
    tile = self.tile_size or max(h, w)
    wh, ww = _window_size(h, tile, self.halo), _window_size(w, tile, self.halo)
    ys, xs = window_starts(h, wh, self.halo), window_starts(w, ww, self.halo)
    self.last_info['windows'] = len(ys) * len(xs)
    self.last_info['window'] = (wh, ww)
    if len(ys) == 1 and len(xs) == 1:
      return self._restore_l(self.variables, l)
    out = np.zeros(l.shape, np.float32)
    for y, (y0, y1) in zip(ys, _cores(ys, wh, self.halo, h)):
      for x, (x0, x1) in zip(xs, _cores(xs, ww, self.halo, w)):
        window = self._restore_l(self.variables, l[:, y:y + wh, x:x + ww])
        out[:, y0:y1, x0:x1] = np.asarray(window[:, y0 - y:y1 - y, x0 - x:x1 - x])
    return jnp.asarray(out)

  def color_shape(self, h: int, w: int) -> tuple[int, int]:
    """Resolution of the colorization stage for a padded (h, w) input."""
    if not self.color_max_pixels or h * w <= self.color_max_pixels:
      return h, w
    m = pikfix.MULTIPLE
    scale = math.sqrt(self.color_max_pixels / (h * w))
    return max(m, int(h * scale) // m * m), max(m, int(w * scale) // m * m)

  def restore_padded(self, l: jnp.ndarray, reference: jnp.ndarray) -> dict:
    restored = self.restore_luminance(l)
    ch, cw = self.color_shape(*restored.shape[1:3])
    small = restored if (ch, cw) == restored.shape[1:3] else self._shrink(restored, (ch, cw))
    ab = self._upsample_ab(self._colorize(self.variables, small, reference), restored)
    self.last_info['color'] = (ch, cw)
    return {'rgb': self._compose(restored, ab), 'restored_l': restored, 'ab': ab}


class WholeImageRestorer(PhotoRestorer):
  """Applies any method's generator to the whole padded photo in one jitted call (the
  baselines: their networks pad to their own multiples inside)."""

  def __init__(self, model: nn.Module, variables: dict, uses_reference: bool = True,
               reference_size: int = DEFAULT_REFERENCE_SIZE, accepts_mask: bool = False,
               max_pixels: int = 0):
    super().__init__(reference_size)
    self.max_pixels = max_pixels  # 0: any size (what the padded photo may have, else an error)
    self.uses_reference = uses_reference
    self.accepts_mask = accepts_mask
    self.mask: Optional[np.ndarray] = None  # (H, W) defect mask of the next photo (Wan et al.)
    self.variables = jax.device_put(variables)
    self._apply = jax.jit(model.apply)

  def restore_padded(self, l: jnp.ndarray, reference: jnp.ndarray) -> dict:
    h, w = l.shape[1:3]
    if self.max_pixels and h * w > self.max_pixels:
      raise artifacts.RestoreError(
          f'the padded photo is {w}x{h} px, above this model\'s {self.max_pixels} pixels at once '
          '(config.model.max_restore_pixels: its memory grows with the size); '
          'downscale the photo or raise the limit on a larger machine')
    kwargs = {}
    if self.mask is not None:
      mask = jnp.asarray(self.mask, jnp.float32)[None, :, :, None]
      if mask.shape[1:3] != l.shape[1:3]:  # padded like the photo
        mask, _ = layers.pad_to_multiple(mask, pikfix.MULTIPLE)
      kwargs['mask'] = mask
    out = self._apply(self.variables, l, reference, **kwargs)
    return {k: out[k] for k in ('rgb', 'restored_l', 'ab', 'scratch_mask') if k in out}


class Chain:
  """One restorer after another (`restore --colorize_with`): `first` restores the photo (the
  released Wan et al. model, say), `second` colours its output with the reference (a trained
  Pik-Fix). Same call as `PhotoRestorer`; a defect mask goes to `first`."""

  def __init__(self, first, second):
    self.first, self.second = first, second
    self.uses_reference = second.uses_reference
    self.multi_reference = getattr(second, 'multi_reference', False)
    self.accepts_mask = getattr(first, 'accepts_mask', False)
    self.last_info: dict = {}

  @property
  def mask(self) -> Optional[np.ndarray]:
    return getattr(self.first, 'mask', None)

  @mask.setter
  def mask(self, value: Optional[np.ndarray]) -> None:
    self.first.mask = value

  def __call__(self, image: np.ndarray, reference_rgb: np.ndarray,
               outputs: bool = False) -> Union[np.ndarray, dict]:
    restored = self.first(image, None)
    out = self.second(restored, reference_rgb, outputs=outputs)
    self.last_info = dict(self.second.last_info, seconds=self.first.last_info.get('seconds', 0.0)
                          + self.second.last_info.get('seconds', 0.0))
    return out


# Lowering platform names (jax.export) of each JAX backend.
_EXPORT_PLATFORMS = {'cpu': ('cpu',), 'gpu': ('cuda', 'rocm'), 'tpu': ('tpu',)}


class ExportedRestorer(PhotoRestorer):
  """Runs a `--format=stablehlo` export (docs/RESTORE.md, "Export"): the deserialized jax.export
  artifact of the generator's forward pass, with its variables inside, and no model code. The
  artifact's spatial sizes are symbolic (multiples of 32), so each photo runs whole: no
  restoration windows, no reduced colour resolution (`Restorer`'s memory bounds)."""

  def __init__(self, path: str, reference_size: int = DEFAULT_REFERENCE_SIZE):
    super().__init__(reference_size)
    with open(os.path.join(path, artifacts.EXPORT_META)) as f:
      self.meta = json.load(f)
    with open(os.path.join(path, artifacts.EXPORT_ARTIFACT), 'rb') as f:
      exported = jax.export.deserialize(bytearray(f.read()))
    backend = jax.default_backend()
    if not set(_EXPORT_PLATFORMS.get(backend, (backend,))) & set(exported.platforms):
      raise artifacts.RestoreError(
          f'{path} was exported for {", ".join(exported.platforms)}; JAX runs '
          f'on {backend} here (export again with --platforms)')
    self._forward = jax.jit(exported.call)  # compiled once per padded shape

  def restore_padded(self, l: jnp.ndarray, reference: jnp.ndarray) -> dict:
    self.last_info.update(windows=1, window=tuple(l.shape[1:3]), color=tuple(l.shape[1:3]))
    return {'rgb': self._forward(l, reference)}
