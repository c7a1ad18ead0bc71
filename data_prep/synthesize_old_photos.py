r"""Writes synthetic old photos: degraded / clean PNG pairs, reproducibly.

  python -m data_prep.synthesize_old_photos --input_dir=DIR --output_dir=OUT --seed=0
  python -m data_prep.synthesize_old_photos --demo --output_dir=OUT --grid=docs/images/x.png

Every readable image under --input_dir (recursively; unreadable files are skipped with a
warning) is degraded with the old-photo model of pikfix_jax/data/degradations.py (Wan et al.
2020 sec. 4.2 + Pik-Fix), ranges from --config's data.degradation section
(e.g. --config.data.degradation.hole_prob=1). Output:

  OUT/clean/<relative path>.png      the photo as read (colour)
  OUT/degraded/<relative path>.png   the synthetic old photo (grey unless --nograyscale)

The randomness of each photo depends only on --seed and its relative path, so the same seed
gives byte-identical files, and adding photos does not change the others.
"""

import os

from absl import app
from absl import flags
from absl import logging
import numpy as np
from ml_collections import config_flags
from PIL import Image
import skimage.data
import tensorflow as tf
import tqdm

from pikfix_jax import image_io
from pikfix_jax.data import color_tf
from pikfix_jax.data import degradations
from pikfix_jax.data import files
from pikfix_jax.data import input_pipeline
from pikfix_jax.data import seeds
from pikfix_jax.data import sources

_DEFAULT_CONFIG = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', 'configs',
                                                'default.py'))


def photo_paths(input_dir: str = '', demo: bool = False) -> list[tuple[str, str]]:
  """(path, relative id) of the photos to degrade."""
  if demo:
    root = os.path.dirname(skimage.data.__file__)
    names = sources.DEMO_TRAIN + sources.DEMO_VALIDATION
    return [(os.path.join(root, n), n) for n in names]
  if not input_dir or not os.path.isdir(input_dir):
    raise FileNotFoundError(f'--input_dir {input_dir!r} is not a folder (or pass --demo).')
  return [(os.path.join(input_dir, rel), rel) for rel in files.list_files(input_dir)]


def synthesize(photos: list[tuple[str, str]], output_dir: str, seed: int, config,
               grayscale: bool = True, max_side: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
  """Degrades every photo and writes the PNG pairs; returns the (clean, degraded) arrays."""
  bank = input_pipeline.texture_bank(config)
  channels = 1 if grayscale else 3
  fn = tf.function(lambda x, s: degradations.degrade(x, s, config.data.degradation, bank),
                   autograph=False,
                   input_signature=[tf.TensorSpec([None, None, channels], tf.float32),
                                    tf.TensorSpec([2], tf.int64)])
  pairs = []
  for path, rel in tqdm.tqdm(photos, desc='synthesizing', unit='photo'):
    try:
      clean = image_io.read_image(path)
    except image_io.ImageReadError as e:
      logging.warning('Skipping unreadable image %s', e)
      continue
    if max_side and max(clean.shape[:2]) > max_side:
      scale = max_side / max(clean.shape[:2])
      size = (max(round(clean.shape[1] * scale), 1), max(round(clean.shape[0] * scale), 1))
      clean = np.asarray(Image.fromarray(image_io.to_uint8(clean)).resize(
          size, Image.Resampling.LANCZOS), np.float32) / 255.0
    source = clean
    if grayscale:  # The grey print: Lab lightness rendered as sRGB grey.
      l = color_tf.rgb_to_lab_normalized(clean)[..., :1]
      source = color_tf.luminance_to_gray(l).numpy()
    degraded = fn(tf.constant(source), tf.constant([seeds.seed_int(seed, rel), 0], tf.int64))
    degraded = degraded.numpy()
    stem = os.path.splitext(rel)[0]
    image_io.write_image(os.path.join(output_dir, 'clean', stem + '.png'), clean)
    image_io.write_image(os.path.join(output_dir, 'degraded', stem + '.png'), degraded)
    pairs.append((clean, degraded))
  return pairs


def example_grid(pairs: list[tuple[np.ndarray, np.ndarray]], height: int = 192,
                 columns: int = 2) -> np.ndarray:
  """Clean | degraded pairs side by side, `columns` pairs per row, all rows `height` px."""
  tiles = []
  for clean, degraded in pairs:
    if degraded.shape[-1] == 1:
      degraded = np.repeat(degraded, 3, axis=-1)
    pair = np.concatenate([clean, np.ones((clean.shape[0], 4, 3), np.float32), degraded], 1)
    width = round(pair.shape[1] * height / pair.shape[0])
    tiles.append(np.asarray(Image.fromarray(image_io.to_uint8(pair)).resize(
        (width, height), Image.Resampling.LANCZOS)))
  rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
  width = max(sum(t.shape[1] + 8 for t in row) for row in rows)
  canvas = np.full((len(rows) * (height + 8), width, 3), 255, np.uint8)
  for r, row in enumerate(rows):
    x = 0
    for t in row:
      canvas[r * (height + 8):r * (height + 8) + height, x:x + t.shape[1]] = t
      x += t.shape[1] + 8
  return canvas


def define_flags() -> None:
  """Flags are defined only when run as a program, so the module stays importable."""
  config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG,
                                  'Config whose data.degradation section is used.')
  flags.DEFINE_string('input_dir', None, 'Folder of clean photos (searched recursively).')
  flags.DEFINE_bool('demo', False, 'Use the photos shipped with scikit-image instead of '
                    '--input_dir.')
  flags.DEFINE_string('output_dir', None, 'Folder for clean/ and degraded/.', required=True)
  flags.DEFINE_integer('seed', 0, 'Random seed; same seed -> byte-identical outputs.')
  flags.DEFINE_bool('grayscale', True, 'Degrade (and write) the grey print, as old black-and-'
                    'white photos are; --nograyscale keeps colour.')
  flags.DEFINE_integer('max_side', 0, 'Resize so the long side is at most this (0: keep size).')
  flags.DEFINE_string('grid', '', 'Also write a clean | degraded example grid PNG here.')
  flags.DEFINE_integer('grid_rows', 8, 'Pairs shown in --grid.')


def main(argv):
  del argv
  f = flags.FLAGS
  tf.config.experimental.enable_op_determinism()
  photos = photo_paths(f.input_dir, f.demo)
  pairs = synthesize(photos, f.output_dir, f.seed, f.config, f.grayscale, f.max_side)
  print(f'Wrote {len(pairs)} pairs under {f.output_dir}/clean and /degraded')
  if f.grid:
    image_io.write_image(f.grid, example_grid(pairs[:f.grid_rows]))
    print(f'Wrote {f.grid}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
