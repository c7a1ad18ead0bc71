"""Multi-process start-up: `jax.distributed.initialize()` when launched as several processes."""

import os

from absl import logging
import jax

# Environment variables that mean "this is one of several processes".
_MULTI_PROCESS_HINTS = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS')


def launched_multi_process() -> bool:
  """True under SLURM with several tasks, or when a coordinator address is given."""
  if any(os.environ.get(k) for k in _MULTI_PROCESS_HINTS):
    return True
  return int(os.environ.get('SLURM_NTASKS', '1')) > 1


def maybe_initialize() -> None:
  """Initialises the distributed runtime from the environment (SLURM or JAX_* variables).

  Explicit settings: JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES, JAX_PROCESS_ID
  (and optionally JAX_LOCAL_DEVICE_IDS=0,1). Under SLURM, jax reads SLURM_* itself.
  """
  if not launched_multi_process():
    return
  kwargs = {}
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    kwargs = dict(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                  num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                  process_id=int(os.environ['JAX_PROCESS_ID']))
    if os.environ.get('JAX_LOCAL_DEVICE_IDS'):
      kwargs['local_device_ids'] = [int(i) for i in os.environ['JAX_LOCAL_DEVICE_IDS'].split(',')]
  jax.distributed.initialize(**kwargs)
  if jax.default_backend() == 'cpu':
    # CPU collectives (gloo) set up their communicator at the first collective and give up
    # if a peer is 30 s late (e.g. still compiling): create it now, while all are in step.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('pikfix_jax.distributed: start')
  logging.info('jax.distributed initialised: process %d of %d.', jax.process_index(),
               jax.process_count())
