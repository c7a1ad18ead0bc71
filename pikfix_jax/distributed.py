"""Multi-process start-up: `jax.distributed.initialize()` when launched as several processes."""

import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

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
    connect_cpu_collectives()
  logging.info('jax.distributed initialised: process %d of %d.', jax.process_index(),
               jax.process_count())


def data_mesh() -> jax.sharding.Mesh:
  """The data-parallel mesh: every device of every process, in `jax.devices()` order, on one
  axis 'data' (train.Trainer's default; `connect_cpu_collectives` connects the same group)."""
  return jax.sharding.Mesh(np.array(jax.devices()), ('data',))


def connect_cpu_collectives() -> None:
  """Connects, while all processes are in step, the device groups that collectives use later.

  CPU collectives (gloo) connect a group of devices at the group's first collective and give
  up if a peer is 30 s late (e.g. still compiling the train step on a busy host). Once
  connected, a group waits for a late peer (tests/test_multiprocess.py: 40 s). Two groups are
  used: the devices of `data_mesh()` (train.Trainer's: gradient all-reduce, metrics), and the
  i-th devices of every process (multihost_utils' process-level collectives, which
  `jax.device_put` of host values to a cross-process sharding runs to check that all
  processes passed the same value). With one device per process they coincide.
  """
  multihost_utils.sync_global_devices('pikfix_jax.distributed: start')
  mesh = data_mesh()
  ones = jax.make_array_from_callback(
      (mesh.size,), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')),
      lambda index: np.ones((1,), np.int32))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  total = int(jax.jit(jnp.sum, out_shardings=replicated)(ones).addressable_data(0))
  if total != mesh.size:
    raise RuntimeError(f'jax.distributed start-up: an all-reduce of ones over {mesh.size} '
                       f'devices gave {total}')
