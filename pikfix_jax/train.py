"""Training: the jitted data-parallel step of any method, evaluation and the training loop.

The method (`config.method`: Pik-Fix, Pix2pix, CMS4CV, ...; pikfix_jax.methods) owns its
networks, losses and optimisers; this module owns data, sharding, checkpoints, SIGTERM and
NaN handling, logging, validation and image grids, the same for every method.
Data parallelism: the global batch is sharded over a 1-D `jax.sharding.Mesh` ('data' axis),
the state is replicated; XLA inserts the gradient all-reduce.
"""

import contextlib
import functools
import os
import signal
from typing import Any, Optional

from absl import logging
from clu import metric_writers
from clu import metrics
from clu import periodic_actions
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from pikfix_jax import checkpoints
from pikfix_jax import distributed
from pikfix_jax import image_io
from pikfix_jax import methods
from pikfix_jax import scoring
from pikfix_jax.data import input_pipeline
from pikfix_jax.data import sources
from pikfix_jax.methods import base

# Re-exported: the state every method checkpoints (pikfix_jax.methods.base).
TrainState = base.TrainState


class Trainer:
  """Jits and shards one method's steps for one config (`config.method`, pikfix_jax.methods).

  It holds nothing that changes: the state comes from `init_state` (or a checkpoint), the
  method's frozen variables (Pik-Fix: the perceptual loss's VGG-19) from `init_frozen`, and
  both are passed to the jitted steps:
    train_step(state, batch, frozen) -> (state, scalars): one optimisation step on a
      global batch (`shard`); `state` is donated.
    predict_step(state, batch) -> {'rgb', ['restored_l', 'ab']}: the generator in inference
      mode on a global batch.
  """

  def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int,
               mesh: Optional[jax.sharding.Mesh] = None):
    self.config = config
    self.steps_per_epoch = steps_per_epoch
    self.mesh = mesh or distributed.data_mesh()
    self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self.data_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec('data'))
    self.method = methods.get(config, steps_per_epoch)
    self._metrics = {}
    self.metrics = self.metrics_of(None)
    self.train_step = jax.jit(self.method.train_step, donate_argnums=(0,),
                              out_shardings=(self.replicated, self.replicated))
    self._stage_steps = {}
    self.predict_step = jax.jit(self._predict_step)

  def step_fn(self, step: int):
    """The jitted `train_step` of the stage that step `step` trains (methods.base.stages)."""
    stage = self.method.stage_of(step)
    if stage is None:
      return self.train_step
    if stage not in self._stage_steps:
      self._stage_steps[stage] = jax.jit(
          functools.partial(self.method.train_step, stage=stage), donate_argnums=(0,),
          out_shardings=(self.replicated, self.replicated))
    return self._stage_steps[stage]

  def metrics_of(self, stage: Optional[str]):
    """The clu metrics collection averaging `stage`'s training scalars (one class per stage:
    instances of one class merge)."""
    if stage not in self._metrics:
      self._metrics[stage] = metrics.Collection.create(
          **{name: metrics.Average.from_output(name) for name in self.method.scalars_of(stage)})
    return self._metrics[stage]

  def init_state(self, seed: int) -> TrainState:
    """The method's random initial state, replicated over the mesh."""
    return jax.device_put(self.method.init_state(seed), self.replicated)

  def init_frozen(self, seed: int) -> Any:
    """The method's frozen variables (the same for the same seed), replicated."""
    return jax.device_put(self.method.init_frozen(seed), self.replicated)

  def shard(self, batch: dict) -> dict:
    """Host-local batch -> global arrays sharded along the 'data' mesh axis."""
    arrays = {k: v for k, v in batch.items() if k != 'id'}
    return {k: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(v))
            for k, v in arrays.items()}

  # ------------------------------------------------------------------------- evaluate
  def _predict_step(self, state: TrainState, batch: dict) -> dict:
    """`predict_step` before jit (class docstring)."""
    outputs = self.method.generator.apply(checkpoints.generator_variables(state),
                                          batch['input_l'], batch['reference_rgb'])
    return {k: outputs[k] for k in ('rgb', 'restored_l', 'ab') if k in outputs}

  def predict(self, state: TrainState, input_l: np.ndarray, reference_rgb: np.ndarray) -> dict:
    """The generator's rgb, restored_l and ab for this process's rows (NumPy; every process
    calls it with its own rows of the global batch)."""
    batch = self.shard({'input_l': input_l, 'reference_rgb': reference_rgb})
    return host_local(self.predict_step(state, batch))

  def evaluate(self, state: TrainState, batches, scorer: scoring.Scorer
               ) -> tuple[dict[str, float], Optional[np.ndarray], list[dict]]:
    """Scores the model and `scorer`'s rows on `batches` (pikfix_jax.scoring: 8-bit sRGB, the
    conventions of `python -m pikfix_jax.evaluate`), averaged over every process's images.

    Returns ({'val_psnr', 'val_ssim', 'val_<row>_psnr', ...}, an image grid of this
    process's first batch, this process's per-image records).
    """
    predict = functools.partial(self.predict, state)
    records, grid, index = [], None, 0
    for batch in batches:
      batch_records, outputs = scorer.score_batch(predict, batch, first_index=index)
      records += batch_records
      index += len(batch['input_l'])
      if grid is None:
        grid = image_grid(batch, outputs)
    sums = {}
    for record in records:
      for row in scorer.rows:
        for metric in ('psnr', 'ssim'):
          name = f'val_{metric}' if row == scoring.MODEL else f'val_{row}_{metric}'
          sums[name] = sums.get(name, 0.0) + record[row][metric]
    names = sorted(f'val_{m}' if row == scoring.MODEL else f'val_{row}_{m}'
                   for row in scorer.rows for m in ('psnr', 'ssim'))
    totals = np.array([sums.get(n, 0.0) for n in names] + [len(records)], np.float64)
    if jax.process_count() > 1:
      totals = np.sum(multihost_utils.process_allgather(totals), axis=0)
    count = max(totals[-1], 1.0)
    return {n: float(v / count) for n, v in zip(names, totals[:-1])}, grid, records


def host_local(tree):
  """numpy values of this process's rows of batch-sharded arrays (multi-host safe: a global
  array spanning other processes' devices cannot be fetched whole); replicated arrays whole."""
  def local(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    rows = {}
    for shard in x.addressable_shards:
      rows.setdefault(shard.index[0].start or 0, shard.data)
    return np.concatenate([np.asarray(rows[k]) for k in sorted(rows)], axis=0)
  return jax.tree_util.tree_map(local, tree)


def image_grid(batch: dict, outputs: dict, max_rows: int = 4) -> np.ndarray:
  """Rows of [degraded input | reference | restored L | output | input L + reference mean
  chroma (the tint baseline) | ground truth], (H', W', 3)."""
  def grey(l):
    return np.repeat(np.clip(l, 0, 1), 3, axis=-1)

  n = min(max_rows, int(np.sum(batch['mask'])) if 'mask' in batch else len(batch['input_l']))
  n = max(n, 1)
  h, w = batch['input_l'].shape[1:3]
  reference = np.asarray(jax.image.resize(batch['reference_rgb'][:n], (n, h, w, 3), 'bilinear'))
  tint = scoring.tint(batch['input_l'][:n], batch['reference_rgb'][:n])
  target = scoring.lab_to_rgb(batch['target_lab'][:n, ..., :1], batch['target_lab'][:n, ..., 1:])
  rows = [np.concatenate([grey(batch['input_l'][i]), np.clip(reference[i], 0, 1),
                          grey(outputs['restored_l'][i]), outputs['rgb'][i], tint[i],
                          target[i]], axis=1) for i in range(n)]
  return np.concatenate(rows, axis=0)


# ------------------------------------------------------------------------------ the loop

class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN or Inf."""


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
  """Optimisation steps per epoch: config.train.steps_per_epoch, else what the input pipeline
  yields per process for one pass (every process yields the same count)."""
  process_count = jax.process_count()
  available = input_pipeline.train_steps_per_epoch(
      config, batch_size=config.train.batch_size // process_count, process_count=process_count)
  if config.train.steps_per_epoch > 0:
    if config.train.steps_per_epoch > available:
      raise ValueError(f'train.steps_per_epoch={config.train.steps_per_epoch} exceeds the '
                       f'{available} batches one epoch of {config.dataset} yields; raise '
                       'data.train_repeats or lower it.')
    return config.train.steps_per_epoch
  if available == 0:
    raise ValueError(f'{config.dataset}: one epoch holds fewer training examples than '
                     f'train.batch_size={config.train.batch_size}; raise data.train_repeats.')
  return available


def total_steps(config: ml_collections.ConfigDict, spe: int) -> int:
  if config.train.num_train_steps > 0:
    return config.train.num_train_steps
  return config.train.num_epochs * spe


class _Terminate:
  """Remembers a SIGTERM so the loop can checkpoint and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: writing a checkpoint and exiting.')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step: int, scalars: dict, loss_terms: tuple[str, ...], workdir: str,
                  last_saved: Optional[int]) -> None:
  values = jax.device_get({k: scalars[k] for k in loss_terms})
  bad = [k for k, v in values.items() if not np.isfinite(v)]
  if bad:
    kept = f'step {last_saved}' if last_saved is not None else 'none written yet'
    raise NonFiniteLossError(
        f'Non-finite loss at step {step}: {", ".join(f"{k}={values[k]}" for k in bad)}. '
        f'Training stopped; the last good checkpoint in {workdir}/checkpoints ({kept}) is kept.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (resuming from the latest checkpoint in `workdir`) and evaluates periodically."""
  os.makedirs(workdir, exist_ok=True)
  process_index, process_count = jax.process_index(), jax.process_count()
  if config.train.batch_size % jax.device_count():
    raise ValueError(f'train.batch_size={config.train.batch_size} must be divisible by the '
                     f'{jax.device_count()} devices.')
  per_process_batch = config.train.batch_size // process_count
  spe = steps_per_epoch(config)
  trainer = Trainer(config, spe)
  method = trainer.method
  first_step, num_steps = method.step_range(total_steps(config, spe))
  state = trainer.init_state(config.seed)
  frozen = trainer.init_frozen(config.seed)
  latest, best = checkpoints.checkpoint_managers(workdir, config)
  last_saved = latest.latest_step()
  if last_saved is not None:
    logging.info('Resuming from %s/checkpoints step %d.', workdir, last_saved)
    state = checkpoints.restore_state(latest, state)
  if int(state.step) < first_step:  # config.train.stage: start at that stage's first step.
    logging.warning('Stage %r starts at step %d; the workdir is at step %d: the earlier '
                    'stages\' networks are used as they are.', config.train.stage, first_step,
                    int(state.step))
    state = state.replace(step=jnp.full_like(state.step, first_step))
  start_step = int(state.step)
  if method.stages() and start_step >= num_steps:
    logging.warning('%s is at step %d: nothing left to train for config.train.stage=%r '
                    '(steps %d-%d).', workdir, start_step, config.train.get('stage', ''),
                    first_step, num_steps)

  writer = metric_writers.create_default_writer(workdir, just_logging=process_index > 0)
  if start_step == 0:
    writer.write_hparams(_flat_hparams(config))
  hooks = [periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)]
  eval_batch = config.train.eval_batch_size // process_count
  validation_split = sources.validation_split(config)

  def run_eval(step: int, final: bool) -> dict:
    """Validation: the model beside the baselines that need no forward pass; at the end also
    the shuffled-reference control, the reference control and the restoration checks, as a
    table in the log and WORKDIR/validation_table.md (pikfix_jax.scoring)."""
    batches = input_pipeline.eval_dataset(config, batch_size=eval_batch,
                                          process_index=process_index,
                                          process_count=process_count, split=validation_split)
    if config.train.num_eval_batches > 0:
      batches = batches.take(config.train.num_eval_batches)
    convention = config.metrics.convention
    uses_reference = trainer.method.uses_reference
    scorer = (scoring.Scorer(control_angles=scoring.CONTROL_ANGLES,
                             restoration=config.data.degrade, convention=convention,
                             uses_reference=uses_reference) if final
              else scoring.Scorer(rows=(scoring.MODEL, scoring.TINT, scoring.ZERO_CHROMA),
                                  convention=convention, uses_reference=uses_reference))
    results, grid, records = trainer.evaluate(state, batches.as_numpy_iterator(), scorer)
    writer.write_scalars(step, results)
    if grid is not None:
      writer.write_images(step, {'validation': grid[None]})
      if process_index == 0:
        image_io.write_image(os.path.join(workdir, 'validation_grid.png'), grid)
    logging.info('step %d: val_psnr %.3f val_ssim %.4f (tint baseline %.3f / %.4f)', step,
                 results['val_psnr'], results['val_ssim'], results['val_tint_psnr'],
                 results['val_tint_ssim'])
    if final and process_index == 0 and records:
      # This process's images (all of them on one process).
      table = (f'Validation at step {step}, {len(records)} images of {config.dataset}/'
               f'{sources.canonical_split(config, validation_split)} '
               f'(process {process_index}):\n\n' +
               scoring.summary_markdown(scoring.summarize(records)))
      logging.info('\n%s', table)
      with open(os.path.join(workdir, 'validation_table.md'), 'w') as f:
        f.write(table)
    return results

  def save(step: int) -> None:
    nonlocal last_saved
    checkpoints.save_state(latest, step, state)
    last_saved = step

  train_metrics = None
  pending = None  # (step, scalars) checked one step late so the device never idles
  step = start_step
  batches = input_pipeline.train_batches(config, start_step=step, steps_per_epoch=spe,
                                         batch_size=per_process_batch,
                                         process_index=process_index,
                                         process_count=process_count)
  with (_Terminate() as terminate, contextlib.closing(batches),
        checkpoints.finish_writes(latest, best)):
    for batch in batches if step < num_steps else ():
      stage = method.stage_of(step)
      state, scalars = trainer.step_fn(step)(state, trainer.shard(batch), frozen)
      step += 1
      if pending is not None:
        _check_finite(*pending, workdir, last_saved)
      pending = (step, scalars, method.loss_terms_of(stage))
      update = trainer.metrics_of(stage).single_from_model_output(**scalars)
      train_metrics = update if train_metrics is None else train_metrics.merge(update)
      for hook in hooks:
        hook(step)
      is_last = step == num_steps
      stage_ends = stage is not None and method.stage_of(step) != stage
      if step % config.train.log_every == 0 or is_last or stage_ends:
        _check_finite(*pending, workdir, last_saved)
        writer.write_scalars(step, {f'train/{k}': v for k, v in
                                    train_metrics.compute().items()})
        train_metrics = None
      if step % config.train.image_every == 0:
        _check_finite(*pending, workdir, last_saved)
        outs = trainer.predict(state, batch['input_l'], batch['reference_rgb'])
        writer.write_images(step, {'train': image_grid(batch, outs)[None]})
      if step % config.train.eval_every == 0 or is_last:
        _check_finite(*pending, workdir, last_saved)
        results = run_eval(step, is_last)
        # best/ ranks complete models only: for a staged method, those of its last stage.
        if stage is None or stage == method.stages()[-1][0]:
          checkpoints.save_state(best, step, state, metrics=results)
      if (step % config.train.checkpoint_every == 0 or is_last or stage_ends or
          terminate.requested):
        _check_finite(*pending, workdir, last_saved)
        save(step)
      if terminate.requested or is_last:
        break
  if pending is not None:
    _check_finite(*pending, workdir, last_saved)
  writer.flush()
  if terminate.requested:
    logging.warning('Stopped by SIGTERM at step %d; checkpoint written. Rerun to resume.', step)
  return state


def _flat_hparams(config: ml_collections.ConfigDict) -> dict:
  flat = flax.traverse_util.flatten_dict(config.to_dict(), sep='.')
  return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat.items()}
