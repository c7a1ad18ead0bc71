"""Procedural scratch/crack/dust and paper textures (numpy), plus user texture folders.

Wan et al. (2020, sec. 4.2) blend 62 scratch and 55 paper texture images over photos; those
images are private, so we draw look-alikes: thin bright scratches, branching cracks, dust specks
and hairs (scratch bank), and blotchy, fibrous paper (paper bank). Convention: bright = defect
on black, which is what the screen / lighten / addition blends expect.

User textures: `texture_dir/scratch/*` and `texture_dir/paper/*` (files directly in
`texture_dir` count as scratch textures); grey or colour images, mostly-white ones are inverted.
"""

import dataclasses
import os

from absl import logging
import numpy as np
from PIL import Image
from scipy import ndimage

from pikfix_jax import image_io


@dataclasses.dataclass(frozen=True)
class TextureBank:
  """Two uint8 stacks of square grey textures, shape (N, T, T)."""
  scratch: np.ndarray
  paper: np.ndarray


def make_bank(num_textures: int, size: int, seed: int, texture_dir: str = '') -> TextureBank:
  """Procedural textures (`num_textures` of each kind, `size` px) plus those in `texture_dir`."""
  rng = np.random.default_rng([seed, 0x7e47])
  scratch = [scratch_texture(size, rng) for _ in range(num_textures)]
  paper = [paper_texture(size, rng) for _ in range(num_textures)]
  if texture_dir:
    user_scratch, user_paper = load_user_textures(texture_dir, size)
    scratch += user_scratch
    paper += user_paper
  if not scratch or not paper:
    raise ValueError(f'Texture bank is empty (num_textures={num_textures}, texture_dir='
                     f'{texture_dir!r}); set config.data.degradation.num_textures > 0 or add '
                     'textures under texture_dir/scratch and texture_dir/paper.')
  return TextureBank(np.stack(scratch), np.stack(paper))


def scratch_texture(size: int, rng: np.random.Generator) -> np.ndarray:
  """Bright scratches, cracks, dust specks and hairs on black, uint8 (size, size)."""
  layers = [np.zeros((size, size), np.float32) for _ in range(3)]  # 1, 2 and 3 px wide.
  for _ in range(rng.integers(2, 9)):  # Long film scratches, mostly vertical.
    width = rng.choice(3, p=[0.5, 0.35, 0.15])
    _draw_path(layers[width], _scratch_path(size, rng), rng.uniform(0.6, 1.0), rng)
  for _ in range(rng.integers(0, 4)):  # Branching cracks in the emulsion.
    _draw_crack(layers[0], size, rng, depth=0)
  for _ in range(rng.integers(0, 6)):  # Hairs / fibres: short curly paths.
    _draw_path(layers[0], _curly_path(size, rng, length=rng.uniform(0.03, 0.15) * size),
               rng.uniform(0.4, 0.9), rng)
  n_dust = int(rng.integers(20, 300))  # Dust specks of varying size.
  layers[1][rng.integers(0, size, n_dust), rng.integers(0, size, n_dust)] = rng.uniform(
      0.5, 1.0, n_dust)
  big = np.zeros((size, size), np.float32)
  n_big = int(rng.integers(0, 12))
  big[rng.integers(0, size, n_big), rng.integers(0, size, n_big)] = 1.0
  big = ndimage.grey_dilation(big, footprint=_disk(int(rng.integers(2, 5))))
  canvas = np.maximum.reduce([layers[0], ndimage.grey_dilation(layers[1], size=(2, 2)),
                              ndimage.grey_dilation(layers[2], size=(3, 3))])
  canvas = np.maximum(ndimage.gaussian_filter(canvas, 0.5), ndimage.gaussian_filter(big, 0.8))
  return _to_u8(canvas / max(float(canvas.max()), 1e-6))


def paper_texture(size: int, rng: np.random.Generator) -> np.ndarray:
  """Blotchy, stained, fibrous paper (bright = stain/wear), uint8 (size, size)."""
  field = np.zeros((size, size), np.float32)
  for scale, weight in ((size / 4, 1.0), (size / 16, 0.5), (size / 64, 0.25), (0.7, 0.15)):
    # Low frequencies are drawn on a coarse grid and zoomed up (fast); they wrap around.
    step = max(int(scale // 2), 1)
    coarse = rng.standard_normal((size // step,) * 2).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, scale / step, mode='wrap')
    field += weight * _normalize(ndimage.zoom(coarse, step, order=1, mode='grid-wrap',
                                              grid_mode=True)[:size, :size])
  field = _normalize(field)
  threshold = rng.uniform(0.45, 0.7)  # Stains: the upper part of the field, softly.
  stains = np.clip((field - threshold) / (1.0 - threshold), 0.0, 1.0) ** rng.uniform(0.7, 1.5)
  canvas = np.maximum(rng.uniform(0.05, 0.25) * field, stains)  # Overall wear + stains.
  fibres = np.zeros_like(canvas)
  for _ in range(rng.integers(5, 30)):
    _draw_path(fibres, _curly_path(size, rng, length=rng.uniform(0.01, 0.05) * size),
               rng.uniform(0.2, 0.5), rng)
  return _to_u8(np.maximum(canvas, ndimage.gaussian_filter(fibres, 0.5)))


def load_user_textures(texture_dir: str, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Reads `texture_dir` (see module docstring) -> (scratch list, paper list) of uint8 (T, T)."""
  if not os.path.isdir(texture_dir):
    raise FileNotFoundError(f'texture_dir {texture_dir!r} does not exist (expected '
                            f'{texture_dir}/scratch/*.png and {texture_dir}/paper/*.png).')
  kinds = {'scratch': [], 'paper': []}
  for sub, kind in (('', 'scratch'), ('scratch', 'scratch'), ('paper', 'paper')):
    folder = os.path.join(texture_dir, sub)
    if not os.path.isdir(folder):
      continue
    for name in sorted(os.listdir(folder)):
      path = os.path.join(folder, name)
      if name.startswith('.') or os.path.isdir(path):
        continue
      try:
        grey = image_io.read_image(path).mean(axis=-1)
      except image_io.ImageReadError as e:
        logging.warning('Skipping texture %s', e)
        continue
      if grey.mean() > 0.5:
        grey = 1.0 - grey  # Dark defects on white paper -> bright defects on black.
      kinds[kind].append(np.asarray(Image.fromarray(_to_u8(grey)).resize(
          (size, size), Image.Resampling.BILINEAR)))
  logging.info('Loaded %d scratch and %d paper textures from %s', len(kinds['scratch']),
               len(kinds['paper']), texture_dir)
  return kinds['scratch'], kinds['paper']


def _scratch_path(size: int, rng: np.random.Generator) -> np.ndarray:
  """A long, gently curving, mostly vertical line (film scratch), (n, 2) in (y, x)."""
  angle = rng.normal(np.pi / 2, 0.25) if rng.random() < 0.8 else rng.uniform(0, np.pi)
  length = rng.uniform(0.3, 1.4) * size
  start = rng.uniform(0, size, 2)
  t = np.linspace(0.0, 1.0, max(int(length * 2), 2))[:, None]
  direction = np.array([np.sin(angle), np.cos(angle)])
  normal = np.array([direction[1], -direction[0]])
  bend = rng.normal(0, 0.03) * length * np.sin(np.pi * t * rng.uniform(0.5, 2.0))
  return start + t * length * direction - length / 2 * direction + bend * normal


def _curly_path(size: int, rng: np.random.Generator, length: float) -> np.ndarray:
  steps = max(int(length * 2), 2)
  heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, steps))
  moves = 0.5 * np.stack([np.sin(heading), np.cos(heading)], axis=-1)
  return rng.uniform(0, size, 2) + np.cumsum(moves, axis=0)


def _draw_crack(canvas: np.ndarray, size: int, rng: np.random.Generator, depth: int,
                start=None) -> None:
  """A jagged random walk that sometimes branches."""
  steps = max(int(rng.uniform(0.1, 0.5) * size / (depth + 1)), 2)
  heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.35, steps))
  moves = np.stack([np.sin(heading), np.cos(heading)], axis=-1)
  origin = rng.uniform(0, size, 2) if start is None else start
  path = origin + np.cumsum(moves, axis=0)
  _draw_path(canvas, path, rng.uniform(0.6, 1.0) * (1.0 - 0.25 * depth), rng)
  if depth < 2:
    for _ in range(rng.integers(0, 3)):
      _draw_crack(canvas, size, rng, depth + 1, start=path[rng.integers(0, len(path))])


def _draw_path(canvas: np.ndarray, points: np.ndarray, intensity: float,
               rng: np.random.Generator) -> None:
  """Splats a one-pixel line through `points` (y, x) into canvas (max); blurred by the caller."""
  ij = np.round(points).astype(np.int64)
  keep = (ij[:, 0] >= 0) & (ij[:, 0] < canvas.shape[0]) & (ij[:, 1] >= 0) & (
      ij[:, 1] < canvas.shape[1])
  # Intensity varies along the line (scratches fade in and out).
  phase = np.linspace(0, rng.uniform(1, 8), len(ij)) + rng.uniform(0, 6)
  along = np.clip(intensity * (0.6 + 0.4 * np.sin(phase)), 0.0, 1.0)
  np.maximum.at(canvas, (ij[keep, 0], ij[keep, 1]), along[keep].astype(canvas.dtype))


def _disk(radius: int) -> np.ndarray:
  y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
  return x * x + y * y <= radius * radius


def _normalize(x: np.ndarray) -> np.ndarray:
  return (x - x.min()) / max(float(x.max() - x.min()), 1e-6)


def _to_u8(x: np.ndarray) -> np.ndarray:
  return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
