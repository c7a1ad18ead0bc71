"""Worker for the data-parallel and multi-process tests (run as a subprocess, never by pytest).

Default mode: trains the tiny model (every loss term on) for --steps steps on fixed random
global batches with `train.Trainer`, and writes the final parameters and the per-step
(total loss, D loss, G grad norm, D grad norm) to an .npz file:

  python tests/parallel_worker.py --out=OUT.npz [--devices=N] [--steps=3] [--global_batch=8]
      [--process_id=I --num_processes=P --coordinator=localhost:PORT]
      [--loop=WORKDIR] [--late_s=SECONDS]
      [--adam_eps=1e-5] [--set=model.similarity.temperature=0.1] [--permute]

--devices sets --xla_force_host_platform_device_count (N CPU devices per process). It must be
set before jax is imported: that is why this is a script and not a test helper.
--num_processes > 1: the process joins a jax.distributed job through JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID and `pikfix_jax.distributed.maybe_initialize` (CPU
collectives: gloo), like a launched run, and feeds only its rows of every global batch.
--loop: runs the real training loop (`train.train_and_evaluate`) on the demo photos instead
(global batch --global_batch, evaluation batch the same), with its summaries and checkpoints in
WORKDIR.
--late_s: processes other than 0 start this much later after joining the job (a peer late by
more than gloo's 30 s connect timeout, as a busy host may be while it compiles).
Process 0 writes the .npz.
"""

import argparse
import ast
import os
import sys
import time


def _parse():
  p = argparse.ArgumentParser()
  p.add_argument('--out', required=True)
  p.add_argument('--devices', type=int, default=1)
  p.add_argument('--process_id', type=int, default=0)
  p.add_argument('--num_processes', type=int, default=1)
  p.add_argument('--coordinator', default='')
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--global_batch', type=int, default=8)
  p.add_argument('--image_size', type=int, default=32)
  p.add_argument('--loop', default='',
                 help='Run train.train_and_evaluate on the demo photos with this workdir '
                      '(loop_config()) instead of Trainer steps on random batches.')
  p.add_argument('--late_s', type=float, default=0,
                 help='Processes other than 0 sleep this long after joining the job.')
  p.add_argument('--adam_eps', type=float, default=None,
                 help='config.optim.eps (default: the config\'s, 1e-8). See '
                      'tests/test_parallel.py.')
  p.add_argument('--permute', action='store_true',
                 help='Reverse the rows of every global batch (same batch, other summation '
                      'order: a float32 rounding control).')
  p.add_argument('--set', action='append', default=[],
                 help='Config override section.field=python_literal (repeatable).')
  return p.parse_args()


ARGS = _parse()
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           f' --xla_force_host_platform_device_count={ARGS.devices}').strip()
os.environ['JAX_PLATFORMS'] = 'cpu'
# Compiled with conftest.py's test flags (no LLVM optimisation, elemental loop emitters), in
# the one-device and the multi-device runs alike: the comparisons are between data-parallel
# layouts of one program, not about one compiler setting, and unoptimised code compiles the
# loop's training step ~2.5x faster. STRICT's Adam eps is 1e-5: with 1e-6, rounding noise in
# near-zero gradients became parameter noise above the tests' 1e-5 (tests/test_parallel.py).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.dirname(TESTS))

import jax  # noqa: E402  pylint: disable=g-import-not-at-top

# Before anything compiles (the distributed start-up runs a collective): conftest sets the
# XLA:CPU flags of the command-line tools and the compilation cache.
from conftest import state_params, tiny_config, tiny_train_config  # noqa: E402  pylint: disable=g-import-not-at-top
from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top
from pikfix_jax import distributed  # noqa: E402  pylint: disable=g-import-not-at-top

if ARGS.num_processes > 1:  # the way launchers configure it: JAX_* variables
  os.environ.update(JAX_COORDINATOR_ADDRESS=ARGS.coordinator,
                    JAX_NUM_PROCESSES=str(ARGS.num_processes),
                    JAX_PROCESS_ID=str(ARGS.process_id))
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  distributed.maybe_initialize()
  assert jax.process_count() == ARGS.num_processes
  if ARGS.process_id:
    time.sleep(ARGS.late_s)

import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

from pikfix_jax import train  # noqa: E402  pylint: disable=g-import-not-at-top
from pikfix_jax.ops import color  # noqa: E402  pylint: disable=g-import-not-at-top


def worker_config():
  """The tiny model with every loss term on (random VGG-19 for the perceptual term)."""
  c = tiny_config()
  c.data.image_size = ARGS.image_size
  c.train.batch_size = ARGS.global_batch
  return shared_settings(c)


def shared_settings(c):
  """What the worker's configs share: the paper's perceptual layers (below), --adam_eps, then
  the --set section.field=value overrides.

  conftest's tiny configs use VGG-19's relu1_2 and relu2_2 only. With a random VGG that term is
  ~5e-4, and float32 summation-order noise (5e-8) is 1e-4 of it, over the 1e-5 these
  comparisons allow. The paper's deeper layers keep the term well conditioned.
  """
  c.loss.perceptual_layers = default.get_config().loss.perceptual_layers
  if ARGS.adam_eps is not None:
    c.optim.eps = ARGS.adam_eps
  for item in ARGS.set:
    key, value = item.split('=', 1)
    section, field = key.rsplit('.', 1)
    node = c
    for part in section.split('.'):
      node = node[part]
    node[field] = ast.literal_eval(value)
  return c


def loop_config():
  """tiny_train_config at global batch --global_batch: 3 steps crossing an epoch (other
  reference strategy, lr decay), evaluation and a checkpoint at step 2 and at the end."""
  c = tiny_train_config()
  c.train.batch_size = ARGS.global_batch
  c.data.train_repeats = 4  # 7 demo photos: enough examples per process for 2 steps/epoch
  c.train.steps_per_epoch = 2
  c.train.num_train_steps = ARGS.steps
  c.train.log_every = 1
  c.train.image_every = 2
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.train.num_eval_batches = 1
  # As the training batch: the training image grid and the evaluation share one compiled step.
  c.train.eval_batch_size = ARGS.global_batch
  return shared_settings(c)


def global_batch(step: int, size: int, batch: int) -> dict:
  """A fixed, smooth random global batch (valid Lab targets, references of another image)."""
  rng = np.random.default_rng(1000 + step)
  coarse = rng.uniform(size=(batch, size // 8, size // 8, 3)).astype(np.float32)
  rgb = np.asarray(jax.image.resize(coarse, (batch, size, size, 3), 'bilinear'))
  rgb = np.clip(rgb + 0.05 * rng.normal(size=rgb.shape), 0, 1).astype(np.float32)
  l, ab = color.rgb_to_lab_normalized(rgb)
  target = np.concatenate([np.asarray(l), np.asarray(ab)], axis=-1).astype(np.float32)
  noisy_l = np.clip(target[..., :1] + 0.05 * rng.normal(size=target[..., :1].shape), 0, 1)
  batch = {'input_l': noisy_l.astype(np.float32), 'target_lab': target,
           'reference_rgb': np.roll(rgb, 1, axis=0)}
  return {k: v[::-1] for k, v in batch.items()} if ARGS.permute else batch


def local_slice(batch: dict) -> dict:
  """This process's rows of a global batch (processes own consecutive device blocks)."""
  per = ARGS.global_batch // jax.process_count()
  lo = jax.process_index() * per
  return {k: v[lo:lo + per] for k, v in batch.items()}


def main():
  result = {}
  if ARGS.loop:
    config = loop_config()
    state = train.train_and_evaluate(config, ARGS.loop)
    _finish(state, result)
    return
  config = worker_config()
  trainer = train.Trainer(config, steps_per_epoch=2)  # crosses an lr decay at step 2
  state = trainer.init_state(config.seed)
  vgg_variables = trainer.init_frozen(config.seed)
  losses = []
  for step in range(ARGS.steps):
    batch = local_slice(global_batch(step, ARGS.image_size, ARGS.global_batch))
    state, scalars = trainer.train_step(state, trainer.shard(batch), vgg_variables)
    losses.append([float(np.asarray(scalars[k].addressable_data(0)))
                   for k in ('total', 'd_loss', 'g_grad_norm', 'd_grad_norm')])
  result['losses'] = np.asarray(losses)
  _finish(state, result)


def _finish(state, result: dict) -> None:
  """Writes the final parameters (process 0 only) and leaves the distributed job."""
  result['step'] = np.asarray(state.step.addressable_data(0))
  result['devices'] = np.asarray(jax.device_count())
  result['processes'] = np.asarray(jax.process_count())
  result.update({f'param/{k}': v for k, v in state_params(state).items()})
  if jax.process_index() == 0:
    np.savez(ARGS.out, **result)
  if jax.process_count() > 1:
    jax.distributed.shutdown()


if __name__ == '__main__':
  main()
