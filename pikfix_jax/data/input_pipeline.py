"""tf.data input pipelines producing the batch format of docs/CONTRACTS.md.

Public API (called by the training loop, the evaluator, the retrieval index builder):
  train_dataset(config, *, epoch, batch_size, process_index=0, process_count=1)
  train_steps_per_epoch(config, *, batch_size, process_count=1)
  eval_dataset(config, *, batch_size, process_index=0, process_count=1)
  num_examples(config, split)
  images(config, split)

Randomness is stateless: crops, degradations and references of an example depend only on
(config.seed, epoch, the example's position in the epoch), so parallel maps stay deterministic;
evaluation depends only on config.data.split_seed and the example index.
"""

import concurrent.futures
import functools
import json
import math
import os
from typing import Iterator, Optional

import ml_collections
import numpy as np
import tensorflow as tf

from pikfix_jax import retrieval
from pikfix_jax import weights
from pikfix_jax.data import color_tf
from pikfix_jax.data import degradations
from pikfix_jax.data import face_components
from pikfix_jax.data import references
from pikfix_jax.data import seeds
from pikfix_jax.data import sources
from pikfix_jax.data import textures

_AUTOTUNE = tf.data.AUTOTUNE
# Our graph code uses explicit tf.cond / tf.while_loop, so AutoGraph is not needed; skipping its
# source transformation makes building a pipeline several times faster.
_plain = tf.autograph.experimental.do_not_convert
# XLA fuses the long element-wise chains of the colour conversions (several times faster on
# CPU); used where shapes are static (training crops), so each compiles once.
_rgb_to_lab_xla = tf.function(color_tf.rgb_to_lab_normalized, jit_compile=True,
                              autograph=False)
_luminance_to_gray_xla = tf.function(color_tf.luminance_to_gray, jit_compile=True,
                                     autograph=False)
_gray_to_luminance_xla = tf.function(color_tf.gray_to_luminance, jit_compile=True,
                                     autograph=False)
_rotate_hue_xla = tf.function(color_tf.rotate_hue, jit_compile=True, autograph=False)


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Images in 'train' or in the evaluation split ('validation' / 'test')."""
  return sources.get_split(config, split).count


def images(config: ml_collections.ConfigDict, split: str) -> tf.data.Dataset:
  """Full-size {'image': uint8 (H, W, 3), 'id': string} in canonical order (the order of
  training indices; retrieval-index rows are matched to these ids, docs/DATA.md)."""
  s = sources.get_split(config, split)
  ds = s.records().map(
      _plain(lambda i, r: {k: v for k, v in s.decode(r).items() if k in ('image', 'id')}),
      num_parallel_calls=_AUTOTUNE, deterministic=True)
  return _finish(ds)


def train_steps_per_epoch(config: ml_collections.ConfigDict, *, batch_size: int,
                          process_count: int = 1) -> int:
  """Batches that `train_dataset` yields per process and epoch (batch_size per process):
  train_repeats * (N // process_count) // batch_size, the same on every process."""
  n = sources.get_split(config, 'train').count
  return config.data.train_repeats * (n // process_count) // batch_size


def train_dataset(config: ml_collections.ConfigDict, *, epoch: int, batch_size: int,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """One epoch of training batches for this process (drop_remainder; every process gets the
  same number of batches, from disjoint examples).

  Batches: input_l (B, S, S, 1), target_lab (B, S, S, 3), reference_rgb (B, S, S, 3), id (B,),
  with S = config.data.image_size; with config.data.defect_mask also defect_mask (B, S, S, 1),
  with config.data.real_old_dir also real_l (B, S, S, 1), with config.data.face_components
  also face_boxes (B, 3, 4) and face_box_valid (B, 3) (docs/DATA.md). The reference
  strategy of the epoch is config.data.reference_strategies[epoch % len(...)].
  """
  split = sources.get_split(config, 'train')
  d = config.data
  strategies = tuple(d.reference_strategies)
  if not strategies or set(strategies) - {1, 2}:
    raise ValueError(f'config.data.reference_strategies must hold 1 and/or 2, got {strategies}.')
  strategy = strategies[epoch % len(strategies)]
  if strategy == 2 and split.count < 2:
    raise ValueError(f'{split.dataset}: reference strategy 2 needs at least 2 training images.')
  steps = train_steps_per_epoch(config, batch_size=batch_size, process_count=process_count)
  if steps == 0:
    raise ValueError(
        f'{split.dataset}: {split.count} training images x train_repeats={d.train_repeats} over '
        f'{process_count} process(es) give fewer examples than batch_size={batch_size}; raise '
        'config.data.train_repeats or lower the batch size.')
  n = steps * batch_size
  base_seed = seeds.seed_int(config.seed, epoch, 'train')

  if split.lookup is not None:  # Exact global permutation, strided over processes.
    rng = np.random.default_rng(base_seed)
    order = np.concatenate([rng.permutation(split.count) for _ in range(d.train_repeats)])
    positions = np.arange(process_index, len(order), process_count)[:n]
    ds = tf.data.Dataset.from_tensor_slices((order[positions], positions.astype(np.int64)))
    ds = ds.map(lambda i, pos: (i, pos, split.lookup(i)))
  else:  # Sequential tfds reading: shard by index, seeded shuffle buffer.
    ds = split.records().filter(lambda i, r: i % process_count == process_index)
    ds = ds.shuffle(d.shuffle_buffer, seed=base_seed, reshuffle_each_iteration=True)
    ds = ds.repeat(d.train_repeats).take(n).enumerate()
    ds = ds.map(lambda k, ir: (ir[0], k * process_count + process_index, ir[1]))

  make = _train_example_fn(config, split, strategy, base_seed)
  ds = ds.map(_plain(lambda i, pos, r: make(i, pos, split.decode(r))),
              num_parallel_calls=_AUTOTUNE, deterministic=True)
  if d.real_old_dir:
    # A dataset of its own, zipped in: the examples' graph stays exactly as without it (even a
    # larger graph can round other fields differently), so its other fields keep their bits.
    ds = tf.data.Dataset.zip((ds, _real_old_crops(config, base_seed, n, process_index,
                                                  process_count)))
    ds = ds.map(lambda example, real_l: {**example, 'real_l': real_l})
  return _finish(ds.batch(batch_size, drop_remainder=True))


def train_batches(config: ml_collections.ConfigDict, *, start_step: int, steps_per_epoch: int,
                  batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """NumPy training batches from global step `start_step` on, epoch after epoch, endlessly:
  the first `steps_per_epoch` batches of `train_dataset` for each epoch, so step s always gets
  the same batch (resuming is exact).

  A background thread builds the next epoch's pipeline and pulls its first batch while the
  current epoch trains: building one (tracing the example function, compiling its XLA parts,
  filling the buffers) took seconds per epoch that the accelerator otherwise sat idle.
  """
  def start(epoch: int, skip: int) -> tuple[Optional[dict], Iterator[dict]]:
    ds = train_dataset(config, epoch=epoch, batch_size=batch_size,
                       process_index=process_index, process_count=process_count)
    batches = ds.take(steps_per_epoch).skip(skip).as_numpy_iterator()
    return next(batches, None), batches

  epoch, skip = divmod(start_step, steps_per_epoch)
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='next_epoch')
  try:
    upcoming = pool.submit(start, epoch, skip)
    while True:
      first, rest = upcoming.result()
      if first is None:
        raise ValueError(f'Epoch {epoch} of the training split yields no batch of {batch_size}.')
      epoch += 1
      upcoming = pool.submit(start, epoch, 0)
      yield first
      yield from rest
  finally:
    pool.shutdown(wait=False, cancel_futures=True)


def eval_dataset(config: ml_collections.ConfigDict, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, split: str = 'validation') -> tf.data.Dataset:
  """The evaluation split (or `split`: 'selection', sources.validation_split), in order, sharded over processes; the last batch of every process is
  padded with `mask` = 0 rows so all processes yield the same number of full batches.

  With config.data.eval_image_size = S > 0 images are centre-cropped to S x S (resized up first
  when smaller); with 0 they keep their size and batch_size must be 1. References are
  R x R, R = eval_image_size or image_size.
  """
  d = config.data
  size = d.eval_image_size
  if size == 0 and batch_size != 1:
    raise ValueError('config.data.eval_image_size=0 (full images) needs eval batch_size 1.')
  split = sources.get_split(config, split)
  angles = eval_hue_rotations(config)
  per_process = math.ceil(split.count / process_count) * len(angles)
  total = math.ceil(per_process / batch_size) * batch_size
  ds = split.records().filter(lambda i, r: i % process_count == process_index)
  # Every image once per angle of data.eval_hue_rotations, in that order; example k of image i
  # (its degradation's seed) is i * len(angles) + k.
  ds = ds.flat_map(lambda i, r: tf.data.Dataset.from_tensor_slices(
      (tf.constant(angles, tf.float32), tf.range(len(angles), dtype=tf.int64))).map(
          lambda a, k: (i, i * len(angles) + k, r, a)))
  make = _eval_example_fn(config, split)
  ds = ds.map(_plain(lambda i, example, r, a: make(i, example, split.decode(r), a)),
              num_parallel_calls=_AUTOTUNE, deterministic=True)
  padding = {k: tf.zeros([1 if n is None else n for n in spec.shape], spec.dtype)
             for k, spec in ds.element_spec.items()}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat()).take(total)
  return _finish(ds.batch(batch_size, drop_remainder=True))


# -------------------------------------------------------------------------- example builders
# stateless_fold_in keys of further per-example draws (s[0..2] are crop, degradation, reference).
_HUE_STREAM = 3
_CLEAN_STREAM = 4
_REAL_OLD_STREAM = 5


def _train_example_fn(config, split: sources.Split, strategy: int, base_seed: int):
  d = config.data
  size = d.image_size
  bank = texture_bank(config) if d.degrade else None
  if strategy == 2:
    pool = reference_pool(config, 'train', size)
    neighbors = None
    if d.retrieval_index:
      ids = split_ids(split)
      neighbors = tf.constant(references.load_neighbors(d.retrieval_index, ids, ids,
                                                        d.retrieval_top_k))

  components = None
  if d.face_components:  # per example (3, 5) boxes, gathered by index
    components = tf.constant(face_components.table(d.face_components, split_ids(split),
                                                   d.eye_enlarge_ratio))

  def make(index, position, example):
    seed = tf.stack([tf.constant(base_seed, tf.int64), tf.cast(position, tf.int64)])
    s = tf.random.experimental.stateless_split(seed, 3)
    image = resize_for_crops(example['image'], size)
    shape = tf.shape(image)
    y, x = references.crop_offset(s[0], shape[0], shape[1], size)
    crop = tf.ensure_shape(tf.image.convert_image_dtype(image[y:y + size, x:x + size], tf.float32),
                           [size, size, 3])
    if strategy == 1:
      reference = references.strategy1(image, s[2], y, x, size, d)
    else:
      if neighbors is None:
        j = references.other_index(s[2], index, split.count)
      else:
        j = references.neighbor_index(s[2], index, neighbors, split.count)
      reference = tf.image.convert_image_dtype(tf.gather(pool, j), tf.float32)
    if d.hue_rotation:
      # One angle for the example: its colours, and its reference's, turn together.
      angle = tf.random.stateless_uniform(
          [], tf.random.experimental.stateless_fold_in(seed, _HUE_STREAM),
          -d.hue_rotation, d.hue_rotation)
      crop, reference = _rotate_hue_xla(crop, angle), _rotate_hue_xla(reference, angle)
    target = _rgb_to_lab_xla(crop)
    input_l = target[..., :1]
    # Without data.defect_mask no mask op is built: the graph is the one it always was.
    defect = tf.zeros_like(input_l) if d.defect_mask else None
    if d.degrade:
      if d.defect_mask:
        degraded, defect = degrade_luminance(input_l, s[1], config, bank, xla=True,
                                             with_mask=True)
      else:
        degraded = degrade_luminance(input_l, s[1], config, bank, xla=True)
      if d.degradation.clean_prob:
        coin = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seed, _CLEAN_STREAM))
        degraded = tf.where(coin < d.degradation.clean_prob, input_l, degraded)
        if defect is not None:  # A clean input has no defect.
          defect = tf.where(coin < d.degradation.clean_prob, tf.zeros_like(defect), defect)
      input_l = degraded
    batch = {'input_l': input_l, 'target_lab': target, 'reference_rgb': reference,
             'id': example['id']}
    if defect is not None:
      batch['defect_mask'] = defect
    if components is not None:
      scale = tf.cast(shape[:2], tf.float32) / tf.cast(tf.shape(example['image'])[:2], tf.float32)
      batch['face_boxes'], batch['face_box_valid'] = face_components.in_crop(
          tf.gather(components, index), scale, y, x, size)
    return batch

  return make


def _eval_example_fn(config, split: sources.Split):
  d = config.data
  size = d.eval_image_size
  ref_size = size or d.image_size
  # The selection split's degradations are drawn apart from the evaluation split's.
  base_seed = seeds.seed_int(d.split_seed, 'selection' if split.name == 'selection' else 'eval')
  bank = texture_bank(config) if d.degrade else None
  if d.eval_reference not in ('auto', 'self'):
    raise ValueError(f"config.data.eval_reference must be 'auto' or 'self', got "
                     f'{d.eval_reference!r}.')
  auto = d.eval_reference == 'auto'
  eval_pool = (reference_pool(config, 'selection' if split.name == 'selection' else 'validation',
                              ref_size) if auto and split.count > 1 else None)
  if d.eval_reference_query not in ('crop', 'image'):
    raise ValueError(f"config.data.eval_reference_query must be 'crop' or 'image', got "
                     f'{d.eval_reference_query!r}.')
  top1 = train_pool = None
  if auto and d.retrieval_index and config.dataset != 'realold':
    train_split = sources.get_split(config, 'train')
    if size and d.eval_reference_query == 'crop':
      top1 = tf.constant(crop_references(config, split, train_split))
    else:
      top1 = tf.constant(references.load_neighbors(
          d.retrieval_index, split_ids(split), split_ids(train_split), 1,
          exclude_self=False)[:, 0])
    train_pool = reference_pool(config, 'train', ref_size)

  def reference_for(i, seed, target):
    """uint8 (R, R, 3) reference of example i when the dataset brings none (docs/DATA.md)."""
    if eval_pool is None:
      return references.square_resize(target, ref_size)  # 'self', or a single eval image.
    other = lambda: tf.gather(eval_pool, references.other_index(seed, i, split.count))
    if top1 is None:
      return other()
    j = tf.gather(top1, i)  # The most similar training image (paper), when indexed.
    return tf.cond(j >= 0, lambda: tf.gather(train_pool, tf.maximum(j, 0)), other)

  def make(index, position, example, angle):
    """Example `position` of the evaluation: image `index` at hue rotation `angle`."""
    seed = tf.stack([tf.constant(base_seed, tf.int64), tf.cast(position, tf.int64)])
    s = tf.random.experimental.stateless_split(seed, 2)
    original = target = example['image']
    observed = example.get('input', target)
    if size:
      original = target = center_crop(target, size)
      observed = center_crop(observed, size)
    target = tf.cond(angle == 0.0, lambda: target, lambda: _rotate_uint8(target, angle))
    target_lab = color_tf.rgb_to_lab_normalized(tf.image.convert_image_dtype(target, tf.float32))
    if 'input' in example:  # Real old photo (RealOld): no synthetic degradation.
      input_l = color_tf.rgb_to_lab_normalized(
          tf.image.convert_image_dtype(observed, tf.float32))[..., :1]
      # Its defects are real and unlabelled: no synthetic defect, zeros (docs/DATA.md).
      defect = tf.zeros_like(input_l) if d.defect_mask else None
    else:
      input_l = target_lab[..., :1]
      defect = tf.zeros_like(input_l) if d.defect_mask else None
      if d.degrade and d.defect_mask:
        input_l, defect = degrade_luminance(input_l, s[0], config, bank, with_mask=True)
      elif d.degrade:
        input_l = degrade_luminance(input_l, s[0], config, bank)
    reference = reference_for(index, s[1], original)
    if 'has_reference' in example:
      reference = tf.cond(example['has_reference'],
                          lambda: references.square_resize(example['reference'], ref_size),
                          lambda: reference)
    # The reference turns with its ground truth.
    reference = tf.cond(angle == 0.0, lambda: reference, lambda: _rotate_uint8(reference, angle))
    name = tf.cond(angle == 0.0, lambda: example['id'], lambda: tf.strings.join(
        [example['id'], tf.strings.format('@hue{}', tf.cast(tf.round(angle), tf.int32))]))
    batch = {'input_l': input_l, 'target_lab': target_lab,
             'reference_rgb': tf.image.convert_image_dtype(reference, tf.float32),
             'id': name, 'mask': tf.constant(1.0)}
    if defect is not None:
      batch['defect_mask'] = defect  # Padding rows: zeros, like every other field.
    return batch

  return make


_CROP_REFERENCES: dict[str, np.ndarray] = {}


def crop_references(config: ml_collections.ConfigDict, split: sources.Split,
                    train_split: sources.Split) -> np.ndarray:
  """The most similar training image of every evaluation image, queried with the centre crop
  the model is scored on (data.eval_image_size), not the whole photo (docs/DATA.md).

  The query is the crop's clean luminance: the index compares luminance only (retrieval.py),
  and the crop is the same for every hue rotation. Returns int64 (N,) training indices; cached
  per process.
  """
  d = config.data
  stat = os.stat(d.retrieval_index) if os.path.exists(d.retrieval_index) else None
  key = json.dumps([d.retrieval_index, stat and (stat.st_size, stat.st_mtime_ns),
                    config.backbones.vgg19, d.eval_image_size, split.dataset, split.name,
                    split.count, train_split.count, d.split_seed, d.selection_size])
  if key in _CROP_REFERENCES:
    return _CROP_REFERENCES[key]
  index = retrieval.ReferenceIndex.load(d.retrieval_index)
  if index.meta['pretrained']:
    if not config.backbones.vgg19:
      raise ValueError(f'{d.retrieval_index} was built with pretrained VGG-19 weights: pass the '
                       'same file as --config.backbones.vgg19 to query it with evaluation crops '
                       "(or --config.data.eval_reference_query=image).")
    index = retrieval.ReferenceIndex.load(d.retrieval_index, vgg_variables=weights.maybe_load_backbone(
        config.backbones.vgg19, 'vgg19', weights.variable_shapes('vgg19')))
  train_rows = references.match_rows(index.paths, split_ids(train_split))
  indexed = np.flatnonzero(train_rows >= 0)
  if not len(indexed):
    raise ValueError(f'Retrieval index {d.retrieval_index}: none of the {train_split.count} '
                     'training images is in it (rows are matched by path suffix); rebuild it '
                     'over the training images.')
  crops = split.records().map(
      _plain(lambda i, r: center_crop(split.decode(r)['image'], d.eval_image_size)),
      num_parallel_calls=_AUTOTUNE, deterministic=True)
  top1 = [indexed[np.argmax(index.scores(crop / 255.0)[train_rows[indexed]])]
          for crop in crops.as_numpy_iterator()]
  _CROP_REFERENCES[key] = np.asarray(top1, np.int64)
  return _CROP_REFERENCES[key]


# ------------------------------------------------------------------------------- helpers
def eval_hue_rotations(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """config.data.eval_hue_rotations, checked: the angles (degrees) each evaluation image is
  scored at."""
  angles = tuple(float(a) for a in config.data.eval_hue_rotations)
  if not angles:
    raise ValueError('config.data.eval_hue_rotations is empty; use (0,) to score the images '
                     'as they are.')
  return angles


def _rotate_uint8(image: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
  """uint8 (H, W, 3) with its CIE Lab hue rotated by `angle` degrees (color_tf.rotate_hue),
  rounded back to uint8: an 8-bit photo like the others of the split."""
  rgb = color_tf.rotate_hue(tf.image.convert_image_dtype(image, tf.float32), angle)
  return tf.cast(tf.clip_by_value(tf.round(rgb * 255.0), 0, 255), tf.uint8)


def split_ids(split: sources.Split) -> list[str]:
  """Example ids of a split in canonical order (read once from the data for tfds splits)."""
  if split.ids is None:
    ds = split.records().map(_plain(lambda i, r: r['id']))
    split.ids = [i.decode() for i in ds.as_numpy_iterator()]
  return split.ids


def degrade_luminance(l: tf.Tensor, seed, config: ml_collections.ConfigDict, bank,
                      xla: bool = False, with_mask: bool = False):
  """Degrades normalised L (H, W, 1) as the grey print it shows (old photos are black and
  white), returning normalised L; with `with_mask`, (L, defect mask (H, W, 1)) where the mask
  is `degradations.degrade_with_mask`'s on the grey print. `xla` for static shapes only."""
  gray = (_luminance_to_gray_xla if xla else color_tf.luminance_to_gray)(l)
  g = config.data.degradation
  if with_mask:
    gray, mask = degradations.degrade_with_mask(gray, seed, g, bank)
  else:
    gray = degradations.degrade(gray, seed, g, bank)
  l = (_gray_to_luminance_xla if xla else color_tf.gray_to_luminance)(gray)
  return (l, mask) if with_mask else l


def _real_old_crops(config: ml_collections.ConfigDict, base_seed: int, n: int,
                    process_index: int, process_count: int) -> tf.data.Dataset:
  """`real_l` of this process's `n` examples of the epoch, in order: example k sits at epoch
  position k * process_count + process_index (as in train_dataset) and draws its real photo
  and crop from its seed (base_seed, position)'s own stream, so resuming gets the same ones."""
  real = sources.real_old_split(config)
  size = config.data.image_size

  def crop(k):
    seed = tf.stack([tf.constant(base_seed, tf.int64), k * process_count + process_index])
    return real_old_crop(real, tf.random.experimental.stateless_fold_in(seed, _REAL_OLD_STREAM),
                         size)

  return tf.data.Dataset.range(n).map(_plain(crop), num_parallel_calls=_AUTOTUNE,
                                      deterministic=True)


def real_old_crop(real: sources.Split, seed, size: int) -> tf.Tensor:
  """Normalised L (size, size, 1) of a random crop of a random photo of `real` (the unpaired
  real old photos of data.real_old_dir), both drawn from `seed`; small photos are resized up
  first, as training crops are."""
  s = tf.random.experimental.stateless_split(seed, 2)
  j = tf.random.stateless_uniform([], s[0], 0, real.count, dtype=tf.int32)
  image = resize_for_crops(real.decode(real.lookup(j))['image'], size)
  shape = tf.shape(image)
  y, x = references.crop_offset(s[1], shape[0], shape[1], size)
  crop = tf.ensure_shape(tf.image.convert_image_dtype(image[y:y + size, x:x + size], tf.float32),
                         [size, size, 3])
  return _rgb_to_lab_xla(crop)[..., :1]


def resize_for_crops(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes up (aspect kept) so that the short side is >= size and the long side >= size + 1,
  i.e. a size x size crop fits at two different positions at least (reference strategy 1)."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  factor = tf.maximum(size / tf.reduce_min(shape), (size + 1) / tf.reduce_max(shape))
  return tf.cond(factor > 1.0, lambda: _enlarge(image, factor), lambda: image)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes up when the short side is below `size`, then takes the centre size x size crop."""
  factor = size / tf.reduce_min(tf.cast(tf.shape(image)[:2], tf.float32))
  image = tf.cond(factor > 1.0, lambda: _enlarge(image, factor), lambda: image)
  shape = tf.shape(image)
  y0, x0 = (shape[0] - size) // 2, (shape[1] - size) // 2
  return tf.ensure_shape(image[y0:y0 + size, x0:x0 + size], [size, size, 3])


def _enlarge(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """uint8 (H, W, 3) -> bilinear resize to ceil((H, W) * factor), uint8."""
  new = tf.cast(tf.math.ceil(tf.cast(tf.shape(image)[:2], tf.float32) * factor), tf.int32)
  out = tf.image.resize(image, new, method='bilinear')
  return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


@functools.lru_cache(maxsize=8)
def _bank(num: int, size: int, texture_dir: str):
  bank = textures.make_bank(num, size, seed=0, texture_dir=texture_dir)
  return (tf.Variable(bank.scratch, trainable=False), tf.Variable(bank.paper, trainable=False))


def texture_bank(config: ml_collections.ConfigDict):
  """(scratch, paper) uint8 variables (N, T, T); a fixed library (seed 0), like Wan et al.'s."""
  g = config.data.degradation
  return _bank(g.num_textures, g.texture_size, g.texture_dir)


_POOLS: dict[str, tf.Variable] = {}


def reference_pool(config: ml_collections.ConfigDict, split: str, size: int) -> tf.Variable:
  """Every image of `split`, centre square resized to size x size: uint8 (N, size, size, 3),
  in canonical order. Built once per process (keep it: VOC at 256 px is ~2 GB)."""
  s = sources.get_split(config, split)
  key = f'{id(s)}/{size}'
  if key not in _POOLS:
    ds = s.records().map(_plain(lambda i, r: s.decode(r)['image']),
                         num_parallel_calls=_AUTOTUNE, deterministic=True)
    _POOLS[key] = tf.Variable(references.build_pool(ds, size), trainable=False)
  return _POOLS[key]


def _finish(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options).prefetch(_AUTOTUNE)
