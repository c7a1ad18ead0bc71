"""Train Pik-Fix: `python -m pikfix_jax.main --config=configs/div2k.py --workdir=DIR`.

Any config field can be overridden with `--config.section.field=value`. Rerunning with the
same workdir resumes from its latest checkpoint.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from pikfix_jax import artifacts
from pikfix_jax import cli
from pikfix_jax import distributed
from pikfix_jax import train

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard '
                               'events, the resolved config and validation grids.')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config (configs/*.py).',
                                          lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup()
  distributed.maybe_initialize()  # before any JAX computation; importing runs none
  config = _CONFIG.value
  workdir = _WORKDIR.value
  logging.info('JAX process %d/%d, %d local / %d global devices: %s', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    artifacts.write_config(os.path.join(workdir, artifacts.CONFIG_FILE), config)
  try:
    train.train_and_evaluate(config, workdir)
  except (train.NonFiniteLossError, FileNotFoundError, ValueError) as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
