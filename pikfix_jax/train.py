"""Training: train state, the jitted data-parallel step, evaluation and the training loop.

One jitted step updates the PatchGAN discriminator and the generator. The generator's
forward pass runs once (`jax.vjp`): D is updated on its (stop-gradient) output, then the
generator's loss is differentiated w.r.t. that output - with D before or after its update
(`config.train.d_first`) - and pulled back through the generator.
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
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import dm_pix
from jax.experimental import multihost_utils

from pikfix_jax import checkpoints
from pikfix_jax import distributed
from pikfix_jax import image_io
from pikfix_jax import losses
from pikfix_jax import models
from pikfix_jax import scoring
from pikfix_jax import weights
from pikfix_jax.data import input_pipeline
from pikfix_jax.data import sources
from pikfix_jax.models import backbones
from pikfix_jax.models import pikfix
from pikfix_jax.ops import color

LOSS_TERMS = ('total', 'l1_luminance', 'perceptual', 'emd', 'l1_chroma', 'adversarial')
SCALARS = LOSS_TERMS + ('d_loss', 'd_real', 'd_fake', 'psnr', 'ssim', 'g_grad_norm',
                        'd_grad_norm', 'learning_rate', 'bin_center_min', 'bin_center_max',
                        'bin_gap_mean', 'bin_gap_min')

TrainMetrics = metrics.Collection.create(
    **{name: metrics.Average.from_output(name) for name in SCALARS})


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training (and is checkpointed)."""
  step: jnp.ndarray
  g_params: Any  # Trainable generator parameters.
  g_frozen: Any  # Frozen generator parameters (checkpoints.split_frozen).
  g_batch_stats: Any  # BatchNorm statistics of the backbones (inference mode, never updated).
  d_params: Any
  g_opt_state: Any
  d_opt_state: Any
  rng: jnp.ndarray


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
  """Adam (paper betas by default), lr decayed x decay_rate at the end of every epoch."""
  o = config.optim
  schedule = optax.exponential_decay(o.learning_rate, transition_steps=steps_per_epoch,
                                     decay_rate=o.decay_rate, staircase=True)
  adam = optax.adam(schedule, b1=o.b1, b2=o.b2)
  return optax.chain(optax.clip_by_global_norm(o.grad_clip), adam) if o.grad_clip else adam


def learning_rate(config: ml_collections.ConfigDict, step, steps_per_epoch: int):
  return config.optim.learning_rate * config.optim.decay_rate ** (step // steps_per_epoch)


def _seed_keys(seed: int) -> tuple[jnp.ndarray, ...]:
  """(generator init, discriminator init, VGG-19 init, dropout) keys of a training seed."""
  return tuple(jax.random.split(jax.random.PRNGKey(seed), 4))


class Trainer:
  """Builds the models and the jitted, sharded step functions for one config.

  It holds nothing that changes: the state comes from `init_state` (or a checkpoint), the
  perceptual loss's frozen VGG-19 from `init_vgg`, and both are passed to the jitted steps:
    train_step(state, batch, vgg_variables) -> (state, scalars): one optimisation step on a
      global batch (`shard`); `state` is donated.
    predict_step(state, batch) -> {'rgb', 'restored_l', 'ab'}: the generator in inference
      mode on a global batch.
  """

  def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int,
               mesh: Optional[jax.sharding.Mesh] = None):
    self.config = config
    self.steps_per_epoch = steps_per_epoch
    self.mesh = mesh or distributed.data_mesh()
    self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self.data_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec('data'))
    self.generator = pikfix.build_generator(config.model)
    self.discriminator = pikfix.build_discriminator(config.model)
    self.g_tx = make_optimizer(config, steps_per_epoch)
    self.d_tx = make_optimizer(config, steps_per_epoch)
    self.vgg = backbones.VGG(depth=19, outputs=tuple(config.loss.perceptual_layers),
                             dtype=pikfix.dtype_from_name(config.model.dtype))
    self.train_step = jax.jit(self._train_step, donate_argnums=(0,),
                              out_shardings=(self.replicated, self.replicated))
    self.predict_step = jax.jit(self._predict_step)

  # --------------------------------------------------------------------------- state
  def init_state(self, seed: int) -> TrainState:
    """Random initial state, with pretrained backbones loaded when the config names them."""
    c = self.config
    size = c.data.image_size
    l = jnp.zeros((1, size, size, 1), jnp.float32)
    rgb = jnp.zeros((1, size, size, 3), jnp.float32)
    g_key, d_key, _, rng = _seed_keys(seed)

    def init(g_key, d_key):
      g_vars = self.generator.init(g_key, l, rgb)
      k = c.model.histogram.num_bins
      condition = (jnp.zeros((1, 2 * k), jnp.float32)
                   if c.model.discriminator.condition_on_reference else None)
      d_vars = self.discriminator.init(d_key, l, jnp.zeros((1, size, size, 2)), condition)
      return g_vars, d_vars

    g_vars, d_vars = models.jit_init(init, out_shardings=self.replicated)(g_key, d_key)
    g_vars = flax.core.unfreeze(g_vars)
    if 'similarity_net' in g_vars['params']:
      resnet = {'params': g_vars['params']['similarity_net']['resnet34'],
                'batch_stats': g_vars['batch_stats']['similarity_net']['resnet34']}
      resnet = weights.maybe_load_backbone(c.backbones.resnet34, 'resnet34', resnet)
      g_vars['params']['similarity_net']['resnet34'] = resnet['params']
      g_vars['batch_stats']['similarity_net']['resnet34'] = resnet['batch_stats']
    g_params, g_frozen = checkpoints.split_frozen(g_vars['params'],
                                                  c.model.similarity.train_backbone)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), g_params=g_params, g_frozen=g_frozen,
        g_batch_stats=g_vars.get('batch_stats', {}), d_params=d_vars['params'],
        g_opt_state=models.jit_init(self.g_tx.init)(g_params),
        d_opt_state=models.jit_init(self.d_tx.init)(d_vars['params']),
        rng=rng)
    return jax.device_put(state, self.replicated)

  def init_vgg(self, seed: int) -> dict:
    """Frozen VGG-19 variables of the perceptual loss: config.backbones.vgg19, or a random
    init from `seed` when no weights are given (the same for the same seed)."""
    _, _, key, _ = _seed_keys(seed)
    size = self.config.data.image_size
    init = models.jit_init(self.vgg.init)(key, jnp.zeros((1, size, size, 3), jnp.float32))
    variables = weights.maybe_load_backbone(self.config.backbones.vgg19, 'vgg19', init)
    return jax.device_put(variables, self.replicated)

  # ----------------------------------------------------------------------------- step
  def _condition(self, outputs: dict) -> Optional[jnp.ndarray]:
    if not self.config.model.discriminator.condition_on_reference:
      return None
    hist = outputs['reference_hist']
    return jax.lax.stop_gradient(hist.reshape(hist.shape[0], -1))

  def _train_step(self, state: TrainState, batch: dict, vgg_variables: dict
                  ) -> tuple[TrainState, dict]:
    """`train_step` before jit (class docstring)."""
    c = self.config
    vgg_features = functools.partial(self.vgg.apply, vgg_variables)
    step_rng = jax.random.fold_in(state.rng, state.step)
    target_l = batch['target_lab'][..., :1]
    target_ab = batch['target_lab'][..., 1:]

    def forward(g_params):
      variables = {'params': checkpoints.merge_params(g_params, state.g_frozen),
                   'batch_stats': state.g_batch_stats}
      return self.generator.apply(variables, batch['input_l'], batch['reference_rgb'],
                                  train=True, rngs={'dropout': step_rng})

    outputs, pullback = jax.vjp(forward, state.g_params)
    condition = self._condition(outputs)
    fake_ab = jax.lax.stop_gradient(outputs['ab'])

    def d_loss_fn(d_params):
      # D judges chroma: real and fake ab are both shown with the ground-truth luminance.
      real = self.discriminator.apply({'params': d_params}, target_l, target_ab, condition)
      fake = self.discriminator.apply({'params': d_params}, target_l, fake_ab, condition)
      return losses.discriminator_loss(real, fake, c.loss.adversarial), (real, fake)

    def d_update(d_params, d_opt_state):
      (d_loss, (real, fake)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
      updates, d_opt_state = self.d_tx.update(grads, d_opt_state, d_params)
      aux = {'d_loss': d_loss, 'd_real': jnp.mean(jax.nn.sigmoid(real)),
             'd_fake': jnp.mean(jax.nn.sigmoid(fake)), 'd_grad_norm': optax.global_norm(grads)}
      return optax.apply_updates(d_params, updates), d_opt_state, aux

    def d_updates(d_params, d_opt_state):
      # Unrolled, not lax.scan: inside a loop body XLA:CPU lowers D's weight-gradient
      # convolutions to a naive kernel (~20x slower; docs/MODEL.md, "Performance rewrites").
      for _ in range(c.train.d_steps):
        d_params, d_opt_state, aux = d_update(d_params, d_opt_state)
      return d_params, d_opt_state, aux

    d_params, d_opt_state = state.d_params, state.d_opt_state
    if c.train.d_first:
      d_params, d_opt_state, d_aux = d_updates(d_params, d_opt_state)

    def g_loss_fn(outs):
      fake_logits = self.discriminator.apply(
          {'params': d_params}, target_l, outs['ab'], condition)
      terms = losses.generator_losses(outs, batch['target_lab'], fake_logits,
                                      vgg_features, c.loss)
      return terms['total'], terms

    (_, terms), cotangent = jax.value_and_grad(g_loss_fn, has_aux=True)(outputs)
    (g_grads,) = pullback(cotangent)
    g_updates, g_opt_state = self.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    if not c.train.d_first:
      d_params, d_opt_state, d_aux = d_updates(d_params, d_opt_state)

    target_rgb = color.lab_normalized_to_rgb(target_l, target_ab)
    scalars = dict(terms, **d_aux)
    scalars['psnr'] = jnp.mean(dm_pix.psnr(outputs['rgb'], target_rgb))
    scalars['ssim'] = jnp.mean(dm_pix.ssim(outputs['rgb'], target_rgb))
    scalars['g_grad_norm'] = optax.global_norm(g_grads)
    scalars['learning_rate'] = learning_rate(c, state.step, self.steps_per_epoch)
    scalars.update(bin_center_spread(g_params['bin_centers']))
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              g_opt_state=g_opt_state, d_opt_state=d_opt_state)
    return new_state, scalars

  def shard(self, batch: dict) -> dict:
    """Host-local batch -> global arrays sharded along the 'data' mesh axis."""
    arrays = {k: v for k, v in batch.items() if k != 'id'}
    return {k: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(v))
            for k, v in arrays.items()}

  # ------------------------------------------------------------------------- evaluate
  def _predict_step(self, state: TrainState, batch: dict) -> dict:
    """`predict_step` before jit (class docstring)."""
    outputs = self.generator.apply(checkpoints.generator_variables(state), batch['input_l'],
                                   batch['reference_rgb'])
    return {k: outputs[k] for k in ('rgb', 'restored_l', 'ab')}

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


def bin_center_spread(centers: jnp.ndarray) -> dict:
  """The SPHist's learnable bin centres (eq. 4) in four numbers, to watch for a collapse
  (gaps near 0) or a drift out of [-1, 1]."""
  gaps = jnp.diff(jnp.sort(centers, axis=-1), axis=-1)
  return {'bin_center_min': jnp.min(centers), 'bin_center_max': jnp.max(centers),
          'bin_gap_mean': jnp.mean(gaps), 'bin_gap_min': jnp.min(gaps)}


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


def _check_finite(step: int, scalars: dict, workdir: str, last_saved: Optional[int]) -> None:
  values = jax.device_get({k: scalars[k] for k in LOSS_TERMS + ('d_loss',)})
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
  num_steps = total_steps(config, spe)
  trainer = Trainer(config, spe)
  state = trainer.init_state(config.seed)
  vgg_variables = trainer.init_vgg(config.seed)
  latest, best = checkpoints.checkpoint_managers(workdir, config)
  last_saved = latest.latest_step()
  if last_saved is not None:
    logging.info('Resuming from %s/checkpoints step %d.', workdir, last_saved)
    state = checkpoints.restore_state(latest, state)
  start_step = int(state.step)

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
    scorer = (scoring.Scorer(control_angles=scoring.CONTROL_ANGLES,
                             restoration=config.data.degrade, convention=convention) if final
              else scoring.Scorer(rows=(scoring.MODEL, scoring.TINT, scoring.ZERO_CHROMA),
                                  convention=convention))
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
      state, scalars = trainer.train_step(state, trainer.shard(batch), vgg_variables)
      step += 1
      if pending is not None:
        _check_finite(*pending, workdir, last_saved)
      pending = (step, scalars)
      update = TrainMetrics.single_from_model_output(**scalars)
      train_metrics = update if train_metrics is None else train_metrics.merge(update)
      for hook in hooks:
        hook(step)
      is_last = step == num_steps
      if step % config.train.log_every == 0 or is_last:
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
        checkpoints.save_state(best, step, state, metrics=run_eval(step, is_last))
      if step % config.train.checkpoint_every == 0 or is_last or terminate.requested:
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
