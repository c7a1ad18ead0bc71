"""Benchmarks: `python -m pikfix_jax.benchmark --config=CONFIG --what=...`.

Prints one JSON line per measurement. Results are recorded in docs/BENCHMARKS.md with the
command, machine and date; nothing here is a timed test.
"""

import importlib.util
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import skimage.data

from pikfix_jax import checkpoints
from pikfix_jax import cli
from pikfix_jax import image_io
from pikfix_jax import methods
from pikfix_jax import retrieval
from pikfix_jax.models import pikfix
from pikfix_jax.ops import color
from pikfix_jax.ops import dists

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Config file.')
_WHAT = flags.DEFINE_enum(
    'what', 'train', ['train', 'max_batch', 'restore', 'input', 'retrieval', 'faces',
                      'wan_release'],
    'What to measure. max_batch: the largest global batch whose training step fits in device '
    'memory, by XLA\'s memory analysis of the compiled step (compiles only, runs nothing). '
    'faces: restore --faces=gfpgan (GFP-GAN v1.4 at 512, random weights; needs the faces '
    'extra), --config ignored. wan_release: the released Wan et al. model (--checkpoint, or '
    'random weights in the release\'s layout written by --peer) on a scratched photo of each '
    '--sizes, each run in its own process (time, peak RSS), ours twice: with an empty '
    'compilation cache, then again with what that run cached (a repeat of restore); with '
    '--peer, the release\'s networks in torch beside it.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Batch size (default: config).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, 'Square image side (default: config).')
_DTYPE = flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'], 'Compute dtype.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps after warm-up.')
_MEMORY_LIMIT_GIB = flags.DEFINE_float(
    'memory_limit_gib', None, 'For --what=max_batch: memory per device to fit in, GiB '
    '(default: the device\'s bytes_limit, i.e. what JAX\'s allocator may use; required on CPU).')
_MAX_COMPILES = flags.DEFINE_integer(
    'max_compiles', 8, 'For --what=max_batch: the most step compiles the search may spend; '
    'when they run out it reports the bracket it reached.')


_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', '', 'For --what=wan_release: a converted release (data_prep.convert_weights '
    '--arch=bopbtl); default: random weights written by --peer\'s write_fake_release.')
_PEER = flags.DEFINE_string(
    'peer', '', 'For --what=wan_release: a torch transcription of the release\'s networks and '
    'stage 1 (tests/bopbtl_reference.py), run side by side on the same weights and photo.')
_SIZES = flags.DEFINE_list('sizes', ['256', '512', '1024'], 'For --what=wan_release: square '
                           'photo sides.')
_WITH_SCRATCH = flags.DEFINE_bool('with_scratch', True, 'For --what=wan_release: the scratch '
                                  'restoration (detector + partial nonlocal mapping).')
_HR = flags.DEFINE_bool('hr', False, 'For --what=wan_release: the HR (patch attention) mapping.')
_PEER_MEMORY_GIB = flags.DEFINE_float(
    'peer_memory_gib', 20.0, 'For --what=wan_release: address-space limit of each peer process '
    '(an allocation past it is reported as out of memory instead of swapping the machine).')
_ENGINE = flags.DEFINE_enum('engine', '', ['', 'ours', 'peer'], 'Internal: one wan_release run.')
_RELEASE_ROOT = flags.DEFINE_string('release_root', '', 'Internal: the release folder of --peer.')


def _trainer(config, steps_per_epoch: int = 1000):
  """A `train.Trainer` (train and the input pipeline import TensorFlow, which the wan_release
  children, whose peak memory is measured, must not load: imported here)."""
  from pikfix_jax import train  # pylint: disable=g-import-not-at-top
  return train.Trainer(config, steps_per_epoch=steps_per_epoch)


def memory_status_bytes(field: str) -> Optional[int]:
  """A memory line of Linux's /proc/self/status in bytes ('VmRSS': resident now, 'VmHWM': its
  high-water mark); None where there is no such file or line."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(f'{field}:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def peak_rss_bytes() -> int:
  """This process's peak resident memory: Linux's VmHWM (the high-water mark of its own
  address space), else ru_maxrss. Not ru_maxrss on Linux: a child started by fork or vfork and
  exec keeps its parent's high-water mark in ru_maxrss, so a benchmark child would report the
  parent's peak when that is higher."""
  peak = memory_status_bytes('VmHWM')
  return peak if peak is not None else (
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def emit(record: dict) -> None:
  """Prints one measurement as a JSON line."""
  print(json.dumps(record), flush=True)


def bench_input(config) -> None:
  """Examples/s of the full training pipeline (decode, crop, Lab, degrade, reference), one
  record per reference strategy (epoch 0 and 1), after 2 warm-up batches."""
  from pikfix_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top  (_trainer)
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


def bench_train(config, steps: int) -> None:
  """One optimisation step (G forward once + D update + G update, every loss term) of
  `train.Trainer` on random batches of --batch_size (global, over all local devices) x
  --image_size, data already on device (the input pipeline is measured by --what=input).

  Reports compile time (cold: main() turns the persistent cache off, cli.setup), mean time of
  >= `steps` steps after 2 warm-up steps, images/s, peak memory, FLOPs per image and, where the
  accelerator's peak is known (_PEAK_TFLOPS), MFU. model_flops_per_image counts the model's
  arithmetic once (XLA cost analysis of the step lowered without remat and without the warp's
  query chunking, whose lax.map loop XLA's analysis counts only once); xla_flops_per_image is
  the analysis of the program that runs (counts remat recomputation, undercounts the chunked
  warp).
  """

  batch_size, size = config.train.batch_size, config.data.image_size
  devices = jax.devices()
  if batch_size % len(devices):
    raise ValueError(f'--batch_size={batch_size} must be divisible by the {len(devices)} devices.')
  trainer = _trainer(config)
  state = trainer.init_state(config.seed)
  vgg_variables = trainer.init_frozen(config.seed)
  rng = np.random.default_rng(config.seed)
  batches = [trainer.shard(_random_train_batch(rng, batch_size, size)) for _ in range(2)]

  start = time.perf_counter()
  lowered = trainer.train_step.lower(state, batches[0], vgg_variables)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  xla_flops = _flops(compiled.cost_analysis()) * len(devices)  # per-device SPMD program
  model_flops = _model_flops(config, lowered, state, batches[0], vgg_variables)

  warmup = 2
  for i in range(warmup):
    state, scalars = compiled(state, batches[i % 2], vgg_variables)
  jax.block_until_ready((state, scalars))
  steps = max(steps, 1)
  start = time.perf_counter()
  for i in range(steps):
    state, scalars = compiled(state, batches[i % 2], vgg_variables)
  jax.block_until_ready((state, scalars))
  step_s = (time.perf_counter() - start) / steps
  if not np.isfinite(float(scalars['total'])):
    raise FloatingPointError(f'non-finite loss in the benchmark: {float(scalars["total"])}')

  kind = devices[0].device_kind
  dtype = config.model.get('dtype', 'float32')  # Baselines compute in float32.
  peak = _peak_tflops(kind, dtype)
  achieved = model_flops / step_s / 1e12 if model_flops else None
  memory = compiled.memory_analysis()
  stats = [d.memory_stats() for d in jax.local_devices()]
  if all(stats):
    peak_memory, memory_source = max(s['peak_bytes_in_use'] for s in stats), 'device'
  else:
    peak_memory = peak_rss_bytes()
    memory_source = 'host_rss'
  count = lambda tree: int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))
  emit({
      'what': 'train', 'platform': devices[0].platform, 'device_kind': kind,
      'devices': len(devices), 'processes': jax.process_count(),
      'method': methods.name_of(config), 'dtype': dtype,
      'remat': bool(config.model.get('remat', False)),
      'batch_size': batch_size, 'image_size': size,
      'g_params_m': round((count(state.g_params) + count(state.g_frozen)) / 1e6, 2),
      'g_trainable_params_m': round(count(state.g_params) / 1e6, 2),
      'd_params_m': round(count(state.d_params) / 1e6, 2),
      'lower_s': round(lower_s, 1), 'compile_s': round(compile_s, 1),
      'steps': steps, 'ms_per_step': round(step_s * 1e3, 1),
      'images_per_s': round(batch_size / step_s, 3),
      'model_gflops_per_image': round(model_flops / batch_size / 1e9, 1) if model_flops else None,
      'xla_gflops_per_image': round(xla_flops / batch_size / 1e9, 1) if xla_flops else None,
      'achieved_tflops': round(achieved, 3) if achieved else None,
      'peak_tflops_per_device': peak,
      'mfu': round(achieved / (peak * len(devices)), 4) if achieved and peak else None,
      'peak_memory_gib': round(peak_memory / 2**30, 2), 'peak_memory_source': memory_source,
      'xla_temp_gib_per_device': round(memory.temp_size_in_bytes / 2**30, 4) if memory else None,
      'xla_memory_gib_per_device': (round(step_memory_bytes(memory) / 2**30, 4) if memory
                                    else None),
      'loss': round(float(scalars['total']), 4)})


def step_memory_bytes(memory) -> int:
  """Bytes one device needs to run a compiled program, from its XLA memory analysis:
  arguments + outputs - the donated (aliased) part + temporaries + generated code."""
  return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes
             + memory.generated_code_size_in_bytes)


def largest_fitting(memory_of: Callable[[int], float], limit: float,
                    max_evaluations: int = 8) -> tuple[int, Optional[int]]:
  """Largest k >= 1 with memory_of(k) <= limit, for memory_of increasing in k.

  The memory of a training step is close to affine in the batch (activations grow with it,
  parameters and optimiser state do not), so each next k is where the line through the two
  nearest evaluated points crosses `limit`, kept strictly inside the bracket found so far: an
  affine memory_of takes 4 evaluations (k = 1, 2, the estimate, one past it).

  memory_of may return infinity for a k that could not even be compiled (out of memory).
  Returns (lo, hi): memory_of(lo) fits; hi is the smallest k seen that does not (lo + 1 when the
  search ended exactly), or None when every k evaluated fitted and evaluations ran out.
  Raises ValueError when k = 1 does not fit.
  """
  seen: dict[int, float] = {}

  def evaluate(k: int) -> bool:
    seen[k] = float(memory_of(k))
    return seen[k] <= limit

  if not evaluate(1):
    raise ValueError(f'a batch of 1 per device needs {seen[1] / 2**30:.2f} GiB, more than the '
                     f'limit of {limit / 2**30:.2f} GiB')
  lo, hi = 1, None
  while (hi is None or hi - lo > 1) and len(seen) < max_evaluations:
    if hi is not None:
      a, b = lo, hi
    else:  # every k seen fits: the two largest
      a, b = sorted(seen)[-2:] if len(seen) > 1 else (lo, lo)
    slope = (seen[b] - seen[a]) / (b - a) if b > a else 0.0
    if math.isinf(slope):
      k = (lo + hi) // 2  # the compile itself ran out of memory: bisect
    elif slope > 0:
      k = int((limit - seen[a]) // slope) + a
    else:
      k = 2 * lo  # no slope yet (only k = 1 seen) or memory did not grow
    k = max(k, lo + 1)
    if hi is not None:
      k = min(k, hi - 1)
    if evaluate(k):
      lo = k
    else:
      hi = k
  return lo, hi


def bench_max_batch(config, limit_gib: Optional[float], max_compiles: int) -> None:
  """The largest global batch (a multiple of the device count) of config.data.image_size
  crops whose full training step fits in `limit_gib` per device, by `step_memory_bytes` of the
  compiled step (XLA's memory analysis: what the buffers need, without running it; the
  allocator's fragmentation can make the real peak a little higher). One JSON line per compile,
  then the result. Run it with --config.model.remat=True and False for the remat comparison."""

  devices = jax.devices()
  if limit_gib is None:
    stats = devices[0].memory_stats()
    if not stats or 'bytes_limit' not in stats:
      raise ValueError(f'{devices[0].platform} devices report no memory limit: pass '
                       '--memory_limit_gib for --what=max_batch')
    limit = float(stats['bytes_limit'])
  else:
    limit = limit_gib * 2**30
  size = config.data.image_size
  trainer = _trainer(config)
  state = trainer.init_state(config.seed)
  vgg_variables = trainer.init_frozen(config.seed)
  example = _random_train_batch(np.random.default_rng(config.seed), 1, size)
  common = {'what': 'max_batch', 'device_kind': devices[0].device_kind, 'devices': len(devices),
            'dtype': config.model.dtype, 'remat': bool(config.model.remat), 'image_size': size,
            'limit_gib_per_device': round(limit / 2**30, 2)}

  def memory_of(per_device: int) -> float:
    batch_size = per_device * len(devices)
    batch = {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype,
                                     sharding=trainer.data_sharding)
             for k, v in example.items()}
    start = time.perf_counter()
    lowered = trainer.train_step.lower(state, batch, vgg_variables)
    try:
      needed = step_memory_bytes(lowered.compile().memory_analysis())
    except jax.errors.JaxRuntimeError as e:  # e.g. autotuning buffers for a huge batch
      if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
        raise
      needed = math.inf
    emit({**common, 'batch_size': batch_size,
          'memory_gib_per_device': round(needed / 2**30, 3) if math.isfinite(needed) else None,
          'fits': needed <= limit, 'compile_s': round(time.perf_counter() - start, 1)})
    return needed

  lo, hi = largest_fitting(memory_of, limit, max_compiles)
  emit({**common, 'largest_batch_size': lo * len(devices),
        'smallest_failing_batch_size': hi * len(devices) if hi is not None else None,
        'exact': hi == lo + 1})


# Dense peak TFLOP/s per device by device_kind substring (first match): bfloat16, and float32
# as JAX runs it on tensor cores by default (TF32). Unknown devices (CPU): no MFU.
_PEAK_TFLOPS = (
    ('H200', {'bfloat16': 989.0, 'float32': 494.0}),
    ('H100 PCIe', {'bfloat16': 756.0, 'float32': 378.0}),
    ('H100', {'bfloat16': 989.0, 'float32': 494.0}),  # SXM ("NVIDIA H100 80GB HBM3")
    ('A100', {'bfloat16': 312.0, 'float32': 156.0}),
)


def _peak_tflops(device_kind: str, dtype: str):
  for pattern, peaks in _PEAK_TFLOPS:
    if pattern in device_kind:
      return peaks[dtype]
  return None


def _flops(cost) -> float:
  """'flops' of an XLA cost analysis (a dict, or a list of per-module dicts)."""
  if isinstance(cost, (list, tuple)):
    return float(sum(c.get('flops', 0.0) for c in cost))
  return float((cost or {}).get('flops', 0.0))


def _model_flops(config, lowered, state, batch, vgg_variables) -> float:
  """FLOPs of one global step counted once: the step lowered (not compiled) without remat and
  with the whole warp in one block, analysed by XLA; `lowered` (the timed step) is that program
  already when config has no remat and one warp block."""
  m = config.model
  if not m.get('remat', False) and ('similarity' not in m or
                                    m.similarity.query_chunk >= config.data.image_size**2):
    return _flops(lowered.cost_analysis())  # No remat, no chunked warp (or not Pik-Fix).
  flops_config = config.copy_and_resolve_references()
  flops_config.model.remat = False
  flops_config.model.similarity.query_chunk = config.data.image_size ** 2
  trainer = _trainer(flops_config)
  return _flops(trainer.train_step.lower(state, batch, vgg_variables).cost_analysis())


def _random_train_batch(rng, batch_size: int, size: int) -> dict:
  """A training batch in the contract's format with random content (valid value ranges)."""
  rgb = rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32)
  l, ab = color.rgb_to_lab_normalized(rgb)
  return {'input_l': np.asarray(l), 'target_lab': np.concatenate([l, ab], axis=-1),
          'reference_rgb': rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32)}


def bench_restore(config) -> None:
  """Full-resolution restore of one image_size^2 photo with randomly initialised config.model
  (no checkpoint): `pikfix_jax.inference.Restorer`, as the restore command runs it (default
  tiling, 512 px reference). Reports the first call (compile + run), the median of --steps
  further calls and the process's peak RSS (`peak_rss_bytes`: start-up and compilation too).
  main() turns the persistent compilation cache off, so compile times are cold."""

  size = config.data.image_size
  init_config = config.copy_and_resolve_references()
  init_config.data.image_size = pikfix.MULTIPLE  # the variables do not depend on the size
  method = methods.get(init_config)
  start = time.perf_counter()
  variables = checkpoints.generator_variables(method.init_state(config.seed))
  init_s = time.perf_counter() - start
  restorer = method.make_restorer(variables)
  image = image_io.resize_float(skimage.data.astronaut() / np.float32(255), size, size)
  reference = skimage.data.coffee() / np.float32(255)
  start = time.perf_counter()
  restorer(image, reference)
  first_s = time.perf_counter() - start
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    restorer(image, reference)
    times.append(time.perf_counter() - start)
  info = restorer.last_info
  emit({'what': 'restore', 'method': methods.name_of(config), 'image_size': size,
        'dtype': config.model.get('dtype', 'float32'), 'reference': list(info['reference']),
        'tile_size': getattr(restorer, 'tile_size', None),
        'halo': getattr(restorer, 'halo', None), 'windows': info.get('windows'),
        'window': list(info.get('window', ())) or None,
        'color_resolution': list(info.get('color', ())) or None, 'init_s': round(init_s, 1),
        'first_call_s': round(first_s, 1),
        'run_s': round(float(np.median(times)), 1) if times else None, 'runs': len(times),
        'peak_rss_gib': round(peak_rss_bytes() / 2**30, 2)})


def scratched_photo(size: int) -> np.ndarray:
  """scikit-image's astronaut (a real photo), grey, at size x size, with white scratches: the
  photo every wan_release run restores (uint8 RGB)."""
  grey = image_io.resize_float(skimage.data.astronaut() / np.float32(255), size, size)
  photo = np.repeat(np.mean(grey, axis=-1, keepdims=True), 3, -1)
  rng = np.random.default_rng(0)
  for _ in range(6):  # thin bright lines at random angles
    y0, x0, y1, x1 = rng.integers(0, size, 4)
    n = 2 * size
    ys, xs = np.linspace(y0, y1, n).astype(int), np.linspace(x0, x1, n).astype(int)
    for d in range(max(1, size // 256)):
      photo[np.clip(ys + d, 0, size - 1), xs] = 1.0
  return (photo * 255).astype(np.uint8)


def _load_peer(path: str):
  spec = importlib.util.spec_from_file_location('peer', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def bench_wan_release_one(engine: str, size: int, checkpoint: str, release_root: str) -> None:
  """One run (this process): `engine` 'ours' (wan_release.PhotoRestorer on `checkpoint`) or
  'peer' (--peer's release_stage1 on the torch networks of `release_root`), first call
  (compile + run) and a second, timed, call; peak RSS of the process."""
  from pikfix_jax import wan_release  # pylint: disable=g-import-not-at-top
  photo = scratched_photo(size)
  if engine == 'ours':
    restorer = wan_release.photo_restorer(checkpoint, _WITH_SCRATCH.value, _HR.value)
    run = lambda: restorer(photo / np.float32(255))
  else:
    import torch  # pylint: disable=g-import-not-at-top
    from PIL import Image  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(2)
    peer = _load_peer(_PEER.value)
    # The networks of this mode only, as ours (`wan_release.networks_for`) and the release's
    # test.py and detection.py hold.
    nets = peer.build_release(0, wan_release.networks_for(_WITH_SCRATCH.value, _HR.value))
    for name, net in nets.items():
      state = torch.load(peer.checkpoint_path(release_root, name), weights_only=True)
      net.load_state_dict(state.get('model_state', state) if name == 'detection' else state,
                          strict=False)
    run = lambda: peer.release_stage1(nets, Image.fromarray(photo), _WITH_SCRATCH.value,
                                      _HR.value)
  record = {'what': 'wan_release', 'engine': engine, 'image_size': size,
            'with_scratch': _WITH_SCRATCH.value, 'hr': _HR.value}
  try:
    start = time.perf_counter()
    run()
    record['first_call_s'] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    run()
    record['run_s'] = round(time.perf_counter() - start, 1)
  except (MemoryError, RuntimeError) as e:  # torch's allocation failures are RuntimeErrors
    record['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:160]}'
  record['peak_rss_gib'] = round(peak_rss_bytes() / 2**30, 2)
  emit(record)


def bench_wan_release() -> None:
  """Ours and (with --peer) the release's networks in torch on the same weights and photo,
  each size in its own process; the peer under an address-space limit, so that where the
  release runs out of memory the record says so."""
  checkpoint, root = _CHECKPOINT.value, ''
  if not checkpoint or _PEER.value:
    if not _PEER.value:
      raise app.UsageError('--what=wan_release needs --checkpoint or --peer')
    root = tempfile.mkdtemp(prefix='wan_release_bench_')
    peer = _load_peer(_PEER.value)
    peer.write_fake_release(root, seed=0)
    if not checkpoint:
      from pikfix_jax import wan_release  # pylint: disable=g-import-not-at-top
      checkpoint = os.path.join(root, 'converted')
      wan_release.convert(root, checkpoint)
  # Ours as restore runs it: the persistent compilation cache on (cli.setup), first with an
  # empty cache (a first run), then with what that run wrote (a repeat at this size).
  runs = [('ours', 'empty'), ('ours', 'warm')] + ([('peer', None)] if _PEER.value else [])
  for size in (int(s) for s in _SIZES.value):
    cache_dir = tempfile.mkdtemp(prefix='wan_release_bench_xla_')
    for engine, cache in runs:
      limit = int(_PEER_MEMORY_GIB.value * 2**30) if engine == 'peer' else None
      args = [sys.executable, '-m', 'pikfix_jax.benchmark', '--what=wan_release',
              f'--engine={engine}', f'--sizes={size}', f'--checkpoint={checkpoint}',
              f'--release_root={root}', f'--peer={_PEER.value}',
              f'--with_scratch={_WITH_SCRATCH.value}', f'--hr={_HR.value}']
      env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir) if cache else None
      preexec = (lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))) if limit else None
      result = subprocess.run(args, capture_output=True, text=True, preexec_fn=preexec, env=env)
      lines = [l for l in result.stdout.splitlines() if l.startswith('{')]
      record = json.loads(lines[-1]) if lines else {
          'what': 'wan_release', 'engine': engine, 'image_size': size,
          'with_scratch': _WITH_SCRATCH.value, 'hr': _HR.value,
          'error': f'exit {result.returncode}: ' + (
              result.stderr.strip().splitlines() or [''])[-1][:200]}
      emit(dict(record, compilation_cache=cache) if cache else record)
    shutil.rmtree(cache_dir, ignore_errors=True)


def bench_faces(config) -> None:
  """GFP-GAN v1.3 / v1.4 (512 px faces, 86.4 M parameters, random weights) as restore --faces
  runs it: the network alone on an aligned face (faces/s), and the whole FaceEnhancer (dlib
  detection, alignment, network, paste back) on astronaut (512 x 512, one face). First call
  (compile + run) and the median of --steps further calls."""
  del config
  from pikfix_jax import faces  # pylint: disable=g-import-not-at-top
  from pikfix_jax import weights  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  variables = weights.random_variables('gfpgan')
  init_s = time.perf_counter() - start
  net = faces.gfpgan_net(weights.build_model('gfpgan'), variables)
  enhancer = faces.FaceEnhancer('gfpgan', face_net=net, face_size=512)
  photo = skimage.data.astronaut() / np.float32(255)
  face = enhancer.align(photo, faces.detect_faces(photo)[0])[0].astype(np.float32)
  start = time.perf_counter()
  net(face)
  first_s = time.perf_counter() - start
  timed = {'net': lambda: net(face), 'detect': lambda: faces.detect_faces(photo),
           'photo': lambda: enhancer(photo)}
  medians = {}
  for name, fn in timed.items():
    times = []
    for _ in range(_STEPS.value):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    medians[name] = float(np.median(times))
  emit({'what': 'faces', 'kind': 'gfpgan', 'face_size': 512, 'photo': list(photo.shape[:2]),
        'faces_in_photo': len(enhancer.last_faces), 'init_s': round(init_s, 1),
        'first_call_s': round(first_s, 1), 'net_s': round(medians['net'], 2),
        'faces_per_s': round(1.0 / medians['net'], 3),
        'detect_s': round(medians['detect'], 3), 'photo_s': round(medians['photo'], 2),
        'runs': _STEPS.value, 'devices': jax.device_count(),
        'peak_rss_gib': round(peak_rss_bytes() / 2**30, 2)})


def main(argv):
  del argv
  if _WHAT.value == 'wan_release':
    # A run of ours with $JAX_COMPILATION_CACHE_DIR (bench_wan_release) uses that cache.
    cli.setup(compilation_cache=bool(os.environ.get('JAX_COMPILATION_CACHE_DIR')),
              tensorflow=False)
    if _ENGINE.value:
      bench_wan_release_one(_ENGINE.value, int(_SIZES.value[0]), _CHECKPOINT.value,
                            _RELEASE_ROOT.value)
    else:
      bench_wan_release()
    return
  # As main/restore do (the same XLA:CPU programs are timed), but with cold compiles.
  cli.setup(compilation_cache=False)
  config = _CONFIG.value
  if _BATCH_SIZE.value:
    config.train.batch_size = _BATCH_SIZE.value
  if _IMAGE_SIZE.value:
    config.data.image_size = _IMAGE_SIZE.value
  if _DTYPE.value:
    config.model.dtype = _DTYPE.value
  if _WHAT.value == 'train':
    bench_train(config, _STEPS.value)
  elif _WHAT.value == 'max_batch':
    bench_max_batch(config, _MEMORY_LIMIT_GIB.value, _MAX_COMPILES.value)
  else:
    {'input': bench_input, 'retrieval': bench_retrieval,
     'restore': bench_restore, 'faces': bench_faces}[_WHAT.value](config)


if __name__ == '__main__':
  app.run(main)
