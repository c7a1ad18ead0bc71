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
  raise NotImplementedError('retrieval benchmark: weights/retrieval issue')


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
