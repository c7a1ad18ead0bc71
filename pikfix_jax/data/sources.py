"""Datasets as splits of images in a fixed, canonical order (selected by `config.dataset`).

A `Split` yields `(index, record)` pairs in canonical order and decodes a record into
`{'image': uint8 (H, W, 3), 'id': string}` (RealOld adds `'input'`, its old photo, and
`'reference'` / `'has_reference'`). Splits built from file lists or memory also offer random
access (`lookup`), which lets training permute them exactly; tfds splits are read in order.

| dataset      | train                              | evaluation                   |
| ------------ | ---------------------------------- | ---------------------------- |
| div2k        | tfds `div2k` train (800 HR)        | validation (100)             |
| voc          | 10,000 of tfds `voc/2012` train+validation, seeded (data.split_seed) | 1,000 others ('test') |
| realold      | (none)                             | test (manual dir, realold.py)|
| image_folder | photos under data.image_folder, split by data.split_seed | data.val_fraction of them |
| demo         | scikit-image photos (DEMO_TRAIN)   | DEMO_VALIDATION              |

Model selection ('selection' split): with `data.selection_size` = n > 0, n training images
(drawn by data.split_seed) are held out of 'train' and form the split that training-time
validation scores and `best/` is chosen on, so selection never sees the evaluation split.
"""

import dataclasses
import json
import os
from typing import Any, Callable, Optional

from absl import logging
import ml_collections
import numpy as np
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds

from pikfix_jax import image_io
from pikfix_jax.data import files
from pikfix_jax.data import realold

DATASETS = ('demo', 'div2k', 'voc', 'realold', 'image_folder')
EVAL_SPLIT = {'div2k': 'validation', 'voc': 'test', 'realold': 'test',
              'image_folder': 'validation', 'demo': 'validation'}
# Colour photos shipped inside scikit-image (skimage/data/), so the demo needs no download.
DEMO_TRAIN = ('astronaut.png', 'rocket.jpg', 'motorcycle_left.png', 'motorcycle_right.png',
              'hubble_deep_field.jpg', 'ihc.png', 'retina.jpg')
DEMO_VALIDATION = ('chelsea.png', 'coffee.png')
_TFDS_SIZES = {'div2k': '3.7 GiB', 'voc/2012': '3.6 GiB'}


class DataNotFoundError(FileNotFoundError):
  """The dataset is not where the config says; the message says how to prepare it."""


@dataclasses.dataclass
class Split:
  """One split of a dataset in canonical order (module docstring)."""
  dataset: str
  name: str
  count: int
  records: Callable[[], tf.data.Dataset]  # -> (index int64, record) in canonical order.
  decode: Callable[[Any], dict]  # record -> {'image': uint8 (H, W, 3), 'id': string, ...}.
  lookup: Optional[Callable[[tf.Tensor], Any]] = None  # index -> record (random access).
  ids: Optional[list[str]] = None  # Example ids in canonical order, when known up front.


def canonical_split(config: ml_collections.ConfigDict, split: str) -> str:
  """'train' stays; 'validation' and 'test' both mean the dataset's evaluation split."""
  if config.dataset not in DATASETS:
    raise ValueError(f'Unknown config.dataset {config.dataset!r}; use one of {DATASETS}.')
  if split == 'train':
    if config.dataset == 'realold':
      raise ValueError('realold has no training split (test only; Pik-Fix trains on voc).')
    return 'train'
  if split in ('validation', 'test', 'eval'):
    return EVAL_SPLIT[config.dataset]
  if split == 'selection':
    if config.dataset == 'realold':
      raise ValueError('realold has no training split to hold a selection split out of.')
    if not config.data.selection_size:
      raise ValueError(f'{config.dataset} has no selection split: set '
                       '--config.data.selection_size=N to hold N training images out for it.')
    return 'selection'
  raise ValueError(f'Unknown split {split!r}; use train, selection, validation or test.')


def validation_split(config: ml_collections.ConfigDict) -> str:
  """The split training-time validation scores and `best/` is chosen on: 'selection' (held out
  of the training images) when data.selection_size > 0, else the evaluation split."""
  return 'selection' if config.data.selection_size else 'validation'


_SPLITS: dict[str, Split] = {}


def get_split(config: ml_collections.ConfigDict, split: str) -> Split:
  """The split, built once per process for each relevant part of the config."""
  split = canonical_split(config, split)
  d = config.data
  held_out = d.selection_size if split in ('train', 'selection') else 0
  key = json.dumps([config.dataset, split, d.data_dir, d.manual_dir, d.image_folder,
                    d.val_fraction, d.voc_num_train, d.voc_num_test, d.split_seed, d.cache,
                    held_out])
  if key not in _SPLITS:
    builder = {'demo': _demo, 'div2k': _div2k, 'voc': _voc, 'realold': _realold,
               'image_folder': _image_folder}[config.dataset]
    result = builder(config, 'train' if split == 'selection' else split)
    if d.cache and result.lookup is None and config.dataset != 'realold':
      result = _to_memory(result)
    if held_out:
      result = _hold_out(result, held_out, d.split_seed, selection=split == 'selection')
    _SPLITS[key] = result
  return _SPLITS[key]


def _hold_out(split: Split, size: int, seed: int, selection: bool) -> Split:
  """The `size` images of `split` drawn by `seed` (selection=True), or the others, in
  canonical order and re-indexed from 0."""
  if size < 0 or size >= split.count:
    raise ValueError(f'config.data.selection_size={size} must be in [0, {split.count}): the '
                     f'{split.dataset} training split has {split.count} images and at least '
                     'one must still train.')
  member = np.zeros(split.count, bool)
  member[np.random.default_rng([seed, 0x5E1]).permutation(split.count)[:size]] = True
  if not selection:
    member = ~member
  kept = np.flatnonzero(member)
  name = 'selection' if selection else split.name
  ids = [split.ids[i] for i in kept] if split.ids is not None else None
  if split.lookup is not None:
    kept_t, lookup = tf.constant(kept), split.lookup
    return Split(split.dataset, name, len(kept),
                 records=lambda: tf.data.Dataset.range(len(kept)).map(
                     lambda i: (i, lookup(tf.gather(kept_t, i)))),
                 decode=split.decode, lookup=lambda i: lookup(tf.gather(kept_t, i)), ids=ids)
  member_t = tf.constant(member)
  return Split(split.dataset, name, len(kept),
               records=lambda: split.records().filter(
                   lambda i, r: tf.gather(member_t, i)).map(lambda i, r: r).enumerate(),
               decode=split.decode, ids=ids)


def decode_image(data: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/BMP/GIF bytes -> uint8 (H, W, 3)."""
  image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
  return tf.ensure_shape(image, [None, None, 3])


# ------------------------------------------------------------------------ in-memory images
class MemoryImages:
  """uint8 images of different sizes in one flat variable; `get(i)` slices one out in-graph."""

  def __init__(self, images: list[np.ndarray]):
    sizes = [im.size for im in images]
    self._offsets = tf.constant(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    self._shapes = tf.constant(np.array([im.shape for im in images], np.int64).reshape(-1, 3))
    self._flat = tf.Variable(np.concatenate([im.ravel() for im in images]) if images
                             else np.zeros([0], np.uint8), trainable=False)

  def get(self, index: tf.Tensor) -> tf.Tensor:
    start, end = self._offsets[index], self._offsets[index + 1]
    return tf.ensure_shape(tf.reshape(self._flat[start:end], self._shapes[index]), [None, None, 3])


def memory_split(dataset: str, name: str, images: list[np.ndarray], ids: list[str]) -> Split:
  table = MemoryImages(images)
  ids_t = tf.constant(ids, tf.string)
  return Split(
      dataset, name, len(images),
      records=lambda: tf.data.Dataset.range(len(images)).map(lambda i: (i, i)),
      decode=lambda i: {'image': table.get(i), 'id': tf.gather(ids_t, i)},
      lookup=lambda i: i, ids=list(ids))


def _to_memory(split: Split) -> Split:
  """Decodes a whole split once (config.data.cache) -> random-access memory split."""
  logging.info('Caching %s/%s (%d images) in memory.', split.dataset, split.name, split.count)
  ds = split.records().map(tf.autograph.experimental.do_not_convert(lambda i, r: split.decode(r)),
                           num_parallel_calls=tf.data.AUTOTUNE)
  images, ids = [], []
  for ex in ds.as_numpy_iterator():
    images.append(ex['image'])
    ids.append(ex['id'].decode())
  return memory_split(split.dataset, split.name, images, ids)


def _demo(config, split: str) -> Split:
  del config
  root = os.path.dirname(skimage.data.__file__)
  names = DEMO_TRAIN if split == 'train' else DEMO_VALIDATION
  images = [image_io.to_uint8(image_io.read_image(os.path.join(root, n))) for n in names]
  return memory_split('demo', split, images, [os.path.splitext(n)[0] for n in names])


# ----------------------------------------------------------------------------- file lists
def file_split(dataset: str, name: str, images: list[files.ImageFile]) -> Split:
  table = {'path': tf.constant([f.path for f in images] or [''], tf.string),
           'inline': tf.constant([f.inline for f in images] or [b''], tf.string),
           'id': tf.constant([f.id for f in images] or [''], tf.string)}

  def decode(record):
    data = tf.cond(tf.strings.length(record['inline']) > 0, lambda: record['inline'],
                   lambda: tf.io.read_file(record['path']))
    return {'image': decode_image(data), 'id': record['id']}

  return Split(
      dataset, name, len(images),
      records=lambda: tf.data.Dataset.from_tensor_slices(
          {k: v[:len(images)] for k, v in table.items()}).enumerate(),
      decode=decode,
      lookup=lambda i: {k: tf.gather(v, i) for k, v in table.items()},
      ids=[f.id for f in images])


_SCANS: dict[tuple[str, int], list[files.ImageFile]] = {}


def _image_folder(config, split: str) -> Split:
  root = config.data.image_folder
  if not root or not os.path.isdir(root):
    raise DataNotFoundError(
        f'Dataset image_folder: folder {root!r} does not exist; pass '
        '--config.data.image_folder=DIR with photos (any PIL-readable format, subfolders ok).')
  key = (os.path.abspath(root), config.data.image_size)
  if key not in _SCANS:
    _SCANS[key], _ = files.scan_folder(root, min_size=config.data.image_size)
  images = _SCANS[key]
  n = len(images)
  n_val = int(round(n * config.data.val_fraction))
  if config.data.val_fraction > 0 and n > 1:
    n_val = min(max(n_val, 1), n - 1)
  if n - n_val < 1:
    raise DataNotFoundError(f'Dataset image_folder: {root} has {n} usable images; need at least '
                            '2 (one for training, one for validation).')
  perm = np.random.default_rng([config.data.split_seed, 0xF01D]).permutation(n)
  chosen = sorted(perm[:n_val] if split != 'train' else perm[n_val:])
  return file_split('image_folder', split, [images[i] for i in chosen])


def real_old_split(config: ml_collections.ConfigDict) -> Split:
  """The unpaired real old photos under config.data.real_old_dir (recursive, any PIL-readable
  image; Wan et al.'s domain R), sorted by path, with random access. Scanned once per process."""
  root = config.data.real_old_dir
  if not root or not os.path.isdir(root):
    raise DataNotFoundError(
        f'config.data.real_old_dir={root!r} is not a folder; point it at a folder of real old '
        "photo scans (any PIL-readable format, subfolders ok), or set it to '' to train "
        'without them.')
  key = (os.path.abspath(root), config.data.image_size)
  if not _SCANS.get(key):  # An empty scan is not kept: files may be added and tried again.
    _SCANS[key], _ = files.scan_folder(root, min_size=config.data.image_size)
  if not _SCANS[key]:
    raise DataNotFoundError(
        f'config.data.real_old_dir={root!r} holds no readable image (see the warnings above); '
        "add real old photo scans (JPEG, PNG, TIFF, ...) to it, or set it to '' to train "
        'without them.')
  return file_split('real_old', 'train', _SCANS[key])


# ----------------------------------------------------------------------------------- tfds
def _tfds_load(name: str, split: str, config, decoders) -> tuple[tf.data.Dataset, int]:
  data_dir = config.data.data_dir or None
  where = data_dir or '~/tensorflow_datasets'
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir, download=False, shuffle_files=False,
                   decoders=decoders, read_config=tfds.ReadConfig(add_tfds_id=True))
  except (AssertionError, tfds.core.registered.DatasetNotFoundError, FileNotFoundError) as e:
    raise DataNotFoundError(
        f'Dataset {name}: no prepared data in {where} ({type(e).__name__}). Prepare it once '
        f'with: tfds build {name} --data_dir={where} (downloads {_TFDS_SIZES.get(name, "it")}), '
        'or point --config.data.data_dir at the folder that holds it.') from e
  count = int(ds.cardinality())
  if count < 0:
    count = int(ds.reduce(np.int64(0), lambda c, _: c + 1))
  return ds, count


def _div2k(config, split: str) -> Split:
  decoders = tfds.decode.PartialDecoding({'hr': True}, decoders={'hr': tfds.decode.SkipDecoding()})
  ds, count = _tfds_load('div2k', split, config, decoders)
  return Split(
      'div2k', split, count,
      records=lambda: ds.map(lambda ex: {'data': ex['hr'], 'id': ex['tfds_id']}).enumerate(),
      decode=lambda r: {'image': decode_image(r['data']), 'id': r['id']})


def _voc(config, split: str) -> Split:
  decoders = tfds.decode.PartialDecoding({'image': True, 'image/filename': True},
                                         decoders={'image': tfds.decode.SkipDecoding()})
  ds, total = _tfds_load('voc/2012', 'train+validation', config, decoders)
  n_train, n_test = config.data.voc_num_train, config.data.voc_num_test
  if n_train + n_test > total:
    raise ValueError(f'voc: voc_num_train + voc_num_test = {n_train + n_test} exceeds the '
                     f'{total} images of voc/2012 train+validation.')
  perm = np.random.default_rng([config.data.split_seed, 0x70C]).permutation(total)
  member = np.zeros(total, bool)
  member[perm[:n_train] if split == 'train' else perm[n_train:n_train + n_test]] = True
  member_t = tf.constant(member)

  def records():
    subset = ds.enumerate().filter(lambda i, ex: tf.gather(member_t, i))
    return subset.map(lambda i, ex: {'data': ex['image'], 'id': ex['image/filename']}).enumerate()

  return Split('voc', split, int(member.sum()), records=records,
               decode=lambda r: {'image': decode_image(r['data']), 'id': r['id']})


def _realold(config, split: str) -> Split:
  del split
  data_dir = config.data.data_dir or None
  builder = realold.RealOld(data_dir=data_dir)
  if not builder.is_prepared():
    manual = config.data.manual_dir
    if not manual or not os.path.isdir(os.path.join(manual, 'old')):
      raise DataNotFoundError(
          f'Dataset realold: not built in {builder.data_dir} and no manual dir with old/ and '
          f'restored/ folders (--config.data.manual_dir={manual!r}). Put the photos in '
          'DIR/old/<name>.*, DIR/restored/<name>.* (optional DIR/reference/<name>.*) and pass '
          '--config.data.manual_dir=DIR; see pikfix_jax/data/realold.py.')
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual))
  skip = {k: tfds.decode.SkipDecoding() for k in ('old', 'restored', 'reference')}
  ds = builder.as_dataset(split='test', decoders=skip, shuffle_files=False)
  count = builder.info.splits['test'].num_examples

  def decode(r):
    return {'image': decode_image(r['restored']), 'input': decode_image(r['old']),
            'reference': decode_image(r['reference']), 'has_reference': r['has_reference'],
            'id': r['id']}

  return Split('realold', 'test', count, records=lambda: ds.enumerate(), decode=decode)
