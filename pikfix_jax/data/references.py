"""Colour references for training and evaluation (Pik-Fix sec. 4.1; ROMNet sec. 4.1).

Training alternates two strategies, one per epoch:
  1. a crop of the same colour image at another location (never the input's own), colour-
     jittered and slightly affine-warped;
  2. a different training image (never the image itself): one of its `retrieval_top_k` most
     similar images when a retrieval index is given, a uniformly random other image otherwise.
Strategy 2 reads from a *pool*: every training image's centre square resized to the crop size,
kept as one uint8 variable (N, S, S, 3) and gathered by index inside the tf.data graph.

The retrieval index (`pikfix_jax/retrieval.py`) is read by `load_neighbors`: its `paths` rows
are matched to example ids by path suffix and its `neighbors` turned into training indices.
"""

import math
import os
from typing import Sequence

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf


def crop_offset(seed, height, width, size: int) -> tuple[tf.Tensor, tf.Tensor]:
  """A uniformly random top-left corner of a size x size crop."""
  n_y, n_x = height - size + 1, width - size + 1
  k = tf.random.stateless_uniform([], seed, 0, n_y * n_x, dtype=tf.int32)
  return k // n_x, k % n_x


def other_crop_offset(seed, height, width, size: int, y, x,
                      max_shift: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
  """A uniformly random crop corner different from (y, x), at most `max_shift` px away along
  each axis (0: anywhere); needs at least two crop positions in that window."""
  y0, x0 = tf.zeros_like(y), tf.zeros_like(x)
  y1, x1 = height - size, width - size  # Last valid corner.
  if max_shift:
    y0, x0 = tf.maximum(y0, y - max_shift), tf.maximum(x0, x - max_shift)
    y1, x1 = tf.minimum(y1, y + max_shift), tf.minimum(x1, x + max_shift)
  n_y, n_x = y1 - y0 + 1, x1 - x0 + 1
  k = tf.random.stateless_uniform([], seed, 0, n_y * n_x - 1, dtype=tf.int32)
  k = tf.where(k >= (y - y0) * n_x + (x - x0), k + 1, k)  # Skip the input's own position.
  return y0 + k // n_x, x0 + k % n_x


def other_index(seed, index, count) -> tf.Tensor:
  """A uniformly random index in [0, count) different from `index` (count >= 2)."""
  k = tf.random.stateless_uniform([], seed, 0, tf.cast(count, tf.int32) - 1, dtype=tf.int32)
  index = tf.cast(index, tf.int32)
  return tf.where(k >= index, k + 1, k)


def neighbor_index(seed, index, neighbors: tf.Tensor, count) -> tf.Tensor:
  """One of the valid (>= 0) entries of neighbors[index], uniformly; a random other image when
  the row has none."""
  s = tf.random.experimental.stateless_split(seed, 2)
  row = tf.gather(neighbors, index)
  valid = tf.boolean_mask(row, row >= 0)
  n = tf.shape(valid)[0]
  pick = tf.random.stateless_uniform([], s[0], 0, tf.maximum(n, 1), dtype=tf.int32)
  return tf.cond(n > 0, lambda: tf.gather(valid, pick), lambda: other_index(s[1], index, count))


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                       np.float32)


def color_jitter(image: tf.Tensor, seed, config: ml_collections.ConfigDict) -> tf.Tensor:
  """Random brightness, contrast, saturation and hue of an RGB image in [0, 1] (ranges from
  config.data), applied in that order and folded into one affine colour map: contrast scales
  about the channel means, saturation blends with the luma grey, hue rotates chroma in YIQ."""
  c = config
  u = tf.random.stateless_uniform([4], seed, -1.0, 1.0)
  delta = u[0] * c.jitter_brightness
  contrast = 1.0 + u[1] * c.jitter_contrast
  saturation = 1.0 + u[2] * c.jitter_saturation
  angle = u[3] * c.jitter_hue * 2.0 * math.pi
  sat = saturation * tf.eye(3) + (1.0 - saturation) * tf.ones([3, 1]) * _LUMA[None, :]
  cos, sin = tf.cos(angle), tf.sin(angle)
  rot = tf.stack([tf.stack([1.0, 0.0, 0.0]), tf.stack([0.0, cos, -sin]),
                  tf.stack([0.0, sin, cos])])
  hue = tf.constant(np.linalg.inv(_RGB_TO_YIQ)) @ rot @ tf.constant(_RGB_TO_YIQ)
  matrix = contrast * (hue @ sat)
  mean = tf.reduce_mean(image, axis=[0, 1])
  offset = tf.linalg.matvec(hue @ sat, delta + (1.0 - contrast) * mean)
  return tf.clip_by_value(tf.tensordot(image, tf.transpose(matrix), axes=1) + offset, 0.0, 1.0)


def affine_warp(image: tf.Tensor, seed, max_rotation: float, max_scale: float,
                max_shear: float) -> tf.Tensor:
  """Random rotation (degrees), scale and shear about the centre, reflected borders."""
  s = tf.random.experimental.stateless_split(seed, 3)
  u = lambda k, m: tf.random.stateless_uniform([], s[k], -m, m)
  theta = u(0, max_rotation * math.pi / 180.0)
  scale = 1.0 + u(1, max_scale)
  shear = u(2, max_shear)
  cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
  # Output pixel (x, y) samples input pixel M @ ((x, y) - c) + c.
  a0, a1, b0, b1 = cos, -sin + shear, sin, cos
  shape = tf.shape(image)
  cy, cx = tf.cast(shape[0] - 1, tf.float32) / 2, tf.cast(shape[1] - 1, tf.float32) / 2
  transform = tf.stack([a0, a1, cx - a0 * cx - a1 * cy, b0, b1, cy - b0 * cx - b1 * cy, 0.0, 0.0])
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=shape[:2], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='REFLECT')
  return tf.ensure_shape(out[0], image.shape)


def strategy1(image: tf.Tensor, seed, y, x, size: int,
              config: ml_collections.ConfigDict) -> tf.Tensor:
  """Reference strategy 1: another crop of `image` (uint8 or float, at least size+1 on one
  side), jittered and warped; float32 (size, size, 3)."""
  s = tf.random.experimental.stateless_split(seed, 3)
  shape = tf.shape(image)
  max_shift = int(round(config.reference_max_shift * size))
  ry, rx = other_crop_offset(s[0], shape[0], shape[1], size, y, x, max_shift)
  crop = tf.image.convert_image_dtype(image[ry:ry + size, rx:rx + size], tf.float32)
  crop = tf.ensure_shape(crop, [size, size, 3])
  crop = color_jitter(crop, s[1], config)
  return affine_warp(crop, s[2], config.affine_max_rotation, config.affine_max_scale,
                     config.affine_max_shear)


def square_resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Centre square crop resized to (size, size) with antialiasing; uint8 in, uint8 out."""
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  y0, x0 = (shape[0] - side) // 2, (shape[1] - side) // 2
  sq = image[y0:y0 + side, x0:x0 + side]
  out = tf.image.resize(sq, [size, size], method='bilinear', antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def build_pool(images: tf.data.Dataset, size: int) -> np.ndarray:
  """(N, size, size, 3) uint8 from a dataset of uint8 images, in dataset order."""
  resize = tf.autograph.experimental.do_not_convert(lambda im: square_resize(im, size))
  batches = images.map(resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  chunks = [b for b in batches.batch(64).as_numpy_iterator()]
  if not chunks:
    return np.zeros((0, size, size, 3), np.uint8)
  return np.concatenate(chunks)


def match_rows(paths: Sequence[str], ids: Sequence[str]) -> np.ndarray:
  """Row of `paths` holding each id: the path equal to the id or ending in '/<id>', with or
  without its extension (ids are relative paths, file names, demo names or tfds ids); -1 when
  no path, or more than one, matches."""
  rows_of: dict[str, set[int]] = {}
  for row, path in enumerate(paths):
    parts = str(path).replace(os.sep, '/').split('/')
    for k in range(len(parts)):
      suffix = '/'.join(parts[k:])
      for key in (suffix, os.path.splitext(suffix)[0]):
        rows_of.setdefault(key, set()).add(row)
  found = [rows_of.get(i, set()) for i in ids]
  return np.array([next(iter(r)) if len(r) == 1 else -1 for r in found], np.int64)


def load_neighbors(path: str, ids: Sequence[str], train_ids: Sequence[str], top_k: int,
                   exclude_self: bool = True) -> np.ndarray:
  """Most similar training images of each id, from a `pikfix_jax.retrieval` index file.

  The index (.npz) holds `paths` (N,) and `neighbors` (N, K) (rows of `paths`, most similar
  first, < 0 = none). Its rows are matched to `ids` and `train_ids` with `match_rows`; neighbours
  that are not training images (or the image itself, when exclude_self) are dropped.

  Returns:
    int32 (len(ids), top_k): indices into `train_ids`, -1 where fewer neighbours remain.
  Raises:
    ValueError: the file is not an index, or none of `ids` is in it.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'Retrieval index {path!r} not found (config.data.retrieval_index).')
  with np.load(path, allow_pickle=False) as index:
    if 'paths' not in index or 'neighbors' not in index:
      raise ValueError(f'{path} is not a reference index with paths and neighbors (build it '
                       'with pikfix_jax.retrieval.build_index(..., neighbors_k=K)).')
    paths = [str(p) for p in index['paths']]
    neighbors = np.asarray(index['neighbors']).astype(np.int64)
  rows = match_rows(paths, ids)
  if len(ids) and (rows < 0).all():
    raise ValueError(f'Retrieval index {path}: none of the {len(ids)} images is in it (rows are '
                     'matched by path suffix); rebuild it over this dataset\'s images.')
  if (rows < 0).any():
    logging.warning('Retrieval index %s lacks %d of %d images; they get random references.',
                    path, int((rows < 0).sum()), len(ids))
  train_rows = match_rows(paths, train_ids)
  train_of_row = np.full(len(paths) + 1, -1, np.int64)  # Last slot: invalid rows.
  train_of_row[train_rows[train_rows >= 0]] = np.nonzero(train_rows >= 0)[0]
  out = np.full((len(ids), top_k), -1, np.int32)
  for i, row in enumerate(rows):
    if row < 0:
      continue
    cand = neighbors[row]
    cand = train_of_row[np.where((cand >= 0) & (cand < len(paths)), cand, len(paths))]
    cand = cand[(cand >= 0) & ((cand != i) if exclude_self else True)][:top_k]
    out[i, :len(cand)] = cand
  return out
