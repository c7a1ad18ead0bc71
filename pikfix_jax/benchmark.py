"""Benchmarks: `python -m pikfix_jax.benchmark --config=CONFIG --what=...`.

Prints one JSON line per measurement. Results are recorded in docs/BENCHMARKS.md with the
command, machine and date; nothing here is a timed test.
"""

import json
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Config file.')
_WHAT = flags.DEFINE_enum('what', 'train', ['train', 'restore', 'input', 'retrieval'],
                          'What to measure.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Batch size (default: config).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, 'Square image side (default: config).')
_DTYPE = flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'], 'Compute dtype.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps after warm-up.')


def emit(record: dict) -> None:
  """Prints one measurement as a JSON line."""
  print(json.dumps(record), flush=True)


def bench_input(config) -> None:
  """Examples/s of the full training pipeline (decode, crop, Lab, degrade, reference), one
  record per reference strategy (epoch 0 and 1), after 2 warm-up batches."""
  import math  # pylint: disable=g-import-not-at-top
  from pikfix_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  batch_size, warmup = config.train.batch_size, 2
  n_train = input_pipeline.num_examples(config, 'train')
  # Enough passes that one epoch holds the warm-up and the timed batches.
  config.data.train_repeats = max(config.data.train_repeats,
                                  math.ceil((warmup + _STEPS.value) * batch_size / n_train))
  for epoch in range(min(2, len(config.data.reference_strategies))):
    start = time.perf_counter()
    it = iter(input_pipeline.train_dataset(config, epoch=epoch, batch_size=batch_size))
    for _ in range(warmup):
      next(it)
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      next(it)
    seconds = time.perf_counter() - start
    emit({'what': 'input', 'dataset': config.dataset, 'degrade': bool(config.data.degrade),
          'strategy': config.data.reference_strategies[epoch % len(
              config.data.reference_strategies)],
          'image_size': config.data.image_size, 'batch_size': batch_size,
          'examples_per_s': round(_STEPS.value * batch_size / seconds, 1),
          'setup_and_warmup_s': round(setup_s, 1)})


def bench_retrieval(config) -> None:
  """Top-10 query against a synthetic 10,000-image reference index (real shapes, random stats)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from pikfix_jax import retrieval  # pylint: disable=g-import-not-at-top
  from pikfix_jax.ops import dists  # pylint: disable=g-import-not-at-top

  n, size, grid = 10_000, retrieval.DEFAULT_IMAGE_SIZE, retrieval.DEFAULT_GRID
  channels = sum(retrieval.CHANNELS)
  rng = np.random.default_rng(config.seed)
  mean = np.abs(rng.normal(size=(n, channels))).astype(np.float32)
  centered = (0.3 * rng.normal(size=(n, grid * grid, channels))).astype(np.float16)
  index = retrieval.ReferenceIndex(
      [f'img_{i:05d}.jpg' for i in range(n)],
      retrieval.index_meta(size, grid, vgg_fingerprint='', pretrained=False),
      mean=mean, centered=centered)
  query_stats = dists.with_variance(mean[:1], np.moveaxis(centered[:1], 1, 0))
  image = rng.uniform(size=(size, size, 3)).astype(np.float32)

  def timed(fn):
    fn()  # warm-up: compilation, index loading
    times = []
    for _ in range(_STEPS.value):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    return float(np.median(times))

  def rank():
    scores = index.scores_of(query_stats)[0]
    return np.argsort(-scores, kind='stable')[:10]

  rank_s = timed(rank)
  query_s = timed(lambda: index.query(image, top_k=10))
  chunk = retrieval._QUERY_CHUNK  # pylint: disable=protected-access
  rows = np.arange(chunk)
  chunk_stats = dists.Stats(index.stats.mean[rows], index.stats.centered[:, rows],
                            index.stats.var[rows])
  chunk_s = timed(lambda: index.scores_of(chunk_stats))
  emit({'what': 'retrieval', 'index_images': n, 'channels': channels, 'cells': grid * grid,
        'image_size': size, 'index_mb': round((mean.nbytes + centered.nbytes) / 2**20, 1),
        'rank_top10_s': round(rank_s, 4), 'query_top10_with_vgg19_s': round(query_s, 4),
        'all_neighbors_estimate_s': round(chunk_s * n / chunk, 1)})


def bench_train(config) -> None:
  raise NotImplementedError('train benchmark: training issue')


def bench_restore(config) -> None:
  raise NotImplementedError('restore benchmark: restore issue')


def main(argv):
  del argv
  config = _CONFIG.value
  if _BATCH_SIZE.value:
    config.train.batch_size = _BATCH_SIZE.value
  if _IMAGE_SIZE.value:
    config.data.image_size = _IMAGE_SIZE.value
  if _DTYPE.value:
    config.model.dtype = _DTYPE.value
  {'input': bench_input, 'retrieval': bench_retrieval, 'train': bench_train,
   'restore': bench_restore}[_WHAT.value](config)


if __name__ == '__main__':
  app.run(main)
