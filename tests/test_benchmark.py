"""The benchmark's measurements: the training step's JSON record and the largest-batch search."""

import json
import math

import pytest

from pikfix_jax import benchmark
from tests.conftest import tiny_config


def _records(capsys) -> list[dict]:
  return [json.loads(line) for line in capsys.readouterr().out.splitlines()
          if line.startswith('{')]


def _affine(base: float, per_item: float, calls: list):
  def memory_of(k: int) -> float:
    calls.append(k)
    return base + per_item * k
  return memory_of


def test_a_child_reports_its_own_peak_memory_not_its_parents():
  """The wan_release children's peak RSS is their own (VmHWM), even when the parent that
  started them holds more (ru_maxrss carries a parent's high-water mark over fork + exec)."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  held = np.ones(2**30 // 8)  # 1 GiB, touched
  assert benchmark.peak_rss_bytes() > 2**30
  child = subprocess.run(
      [sys.executable, '-c', 'from pikfix_jax import benchmark; '
       'print(benchmark.peak_rss_bytes())'], capture_output=True, text=True, check=True,
      env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
  assert 0 < int(child.stdout.split()[-1]) < 2**30 // 2, child.stdout
  del held


@pytest.mark.parametrize('base, per_item, limit, expected', [
    (10.0, 3.0, 100.0, 30),  # 10 + 3 * 30 = 100 fits exactly, 31 does not
    (10.0, 3.0, 99.9, 29),
    (50.0, 0.5, 51.0, 2),
    (5.0, 7.0, 12.0, 1),
    (1000.0, 1e-3, 1000.5, 500),
])
def test_largest_fitting_finds_the_exact_batch_of_an_affine_memory_in_four_compiles(
    base, per_item, limit, expected):
  calls = []
  lo, hi = benchmark.largest_fitting(_affine(base, per_item, calls), limit)
  assert (lo, hi) == (expected, expected + 1)
  assert len(calls) == len(set(calls)) <= 4  # each batch compiled at most once


def test_largest_fitting_brackets_a_nonlinear_memory_and_stops_at_the_budget():
  memory = lambda k: 10.0 + k ** 1.5 + (40.0 if k > 20 else 0.0)  # a jump (another algorithm)
  brute = max(k for k in range(1, 1000) if memory(k) <= 100.0)
  calls = []

  def memory_of(k):
    calls.append(k)
    return memory(k)

  assert benchmark.largest_fitting(memory_of, 100.0, max_evaluations=12) == (brute, brute + 1)
  assert len(calls) <= 12
  # With two compiles only, it reports how far it got: two fitting batches, no failing one.
  assert benchmark.largest_fitting(memory, 100.0, max_evaluations=2) == (2, None)


def test_largest_fitting_bisects_where_the_compile_itself_runs_out_of_memory():
  memory = lambda k: 10.0 + 2.0 * k if k <= 40 else math.inf
  assert benchmark.largest_fitting(memory, 1000.0, max_evaluations=16) == (40, 41)


def test_largest_fitting_says_when_one_example_per_device_does_not_fit():
  with pytest.raises(ValueError, match=r'a batch of 1 per device needs 2\.00 GiB, more than '
                                       r'the limit of 1\.00 GiB'):
    benchmark.largest_fitting(lambda k: k * 2.0 * 2**30, 2**30)


@pytest.mark.slow
def test_train_record_and_max_batch_search_on_the_tiny_model(capsys):
  """--what=train prints a consistent record; --what=max_batch compiles the same step (its
  memory at that batch is the train record's) and reports the largest batch under the limit."""
  config = tiny_config()
  config.train.batch_size = 1
  config.model.similarity.query_chunk = 32 * 32  # one warp block: FLOPs from the timed program
  benchmark.bench_train(config, steps=1)
  (train,) = _records(capsys)
  assert train['what'] == 'train' and train['batch_size'] == 1 and train['image_size'] == 32
  assert train['images_per_s'] == pytest.approx(1000.0 / train['ms_per_step'], rel=0.01)
  assert 0 < train['model_gflops_per_image'] < 50  # tiny widths; VGG-19's first two blocks at 32 px
  assert train['xla_memory_gib_per_device'] > train['xla_temp_gib_per_device'] > 0
  assert train['loss'] > 0 and train['g_trainable_params_m'] < train['g_params_m']

  # One compile, of the program just timed (the persistent cache has it); the search itself is
  # covered above.
  one = train['xla_memory_gib_per_device']
  benchmark.bench_max_batch(config, limit_gib=one + 1.0, max_compiles=1)
  first, result = _records(capsys)
  assert first['fits'] and first['batch_size'] == 1
  assert first['memory_gib_per_device'] == pytest.approx(one, abs=0.01)
  assert result == {**{k: first[k] for k in ('what', 'device_kind', 'devices', 'dtype', 'remat',
                                             'image_size', 'limit_gib_per_device')},
                    'largest_batch_size': 1, 'smallest_failing_batch_size': None,
                    'exact': False}

  with pytest.raises(ValueError, match='--memory_limit_gib'):
    benchmark.bench_max_batch(config, limit_gib=None, max_compiles=2)  # CPU: no bytes_limit
