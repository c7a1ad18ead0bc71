"""Export an inference-only model: `python -m pikfix_jax.export --workdir=DIR --output=PATH`.

PATH (a new directory) receives
  variables/   orbax checkpoint of the generator's {'params', 'batch_stats'} (float32): no
               optimiser state, no discriminator, no training step;
  config.json  the resolved training config (the `model` section defines the architecture);
  export.json  where it came from (workdir, step, latest/best) and its size.
`python -m pikfix_jax.restore --checkpoint=PATH ...` and `restore.load_generator(checkpoint=PATH)`
read it.
"""

import json
import os
import shutil
import sys

from absl import app
from absl import flags
import jax
import numpy as np
import orbax.checkpoint as ocp

from pikfix_jax import cli
from pikfix_jax import restore


def define_flags() -> dict:
  """The command-line flags (defined only when run as a program)."""
  return {
      'workdir': flags.DEFINE_string('workdir', None, 'Training workdir.'),
      'output': flags.DEFINE_string('output', None, 'Directory to write (must not exist, '
                                    'unless --force).'),
      'use_best': flags.DEFINE_bool('use_best', False, 'Export the best checkpoint by '
                                    'validation PSNR instead of the latest.'),
      'step': flags.DEFINE_integer('step', None, 'Export this step (default: latest / best).'),
      'force': flags.DEFINE_bool('force', False, 'Replace an existing exported model at '
                                 '--output.'),
  }


_FLAGS: dict = {}


def directory_size(path: str) -> int:
  """Bytes of all files under `path`."""
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def export(workdir: str, output: str, use_best: bool = False, step=None,
           force: bool = False) -> dict:
  """Writes the inference-only checkpoint; returns the export.json record."""
  output = os.path.abspath(output)
  if os.path.exists(output):
    if not force:
      raise restore.RestoreError(f'--output={output} exists; pass --force to replace it')
    if not restore.is_export(output):
      raise restore.RestoreError(f'--output={output} exists and is not an exported model; '
                                 'refusing to replace it')
    shutil.rmtree(output)
  model, variables, config, info = restore.load_generator_info(
      workdir=workdir, use_best=use_best, step=step)
  del model
  os.makedirs(output)
  variables = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), variables)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(output, restore.EXPORT_VARIABLES), variables)
  checkpointer.wait_until_finished()
  with open(os.path.join(output, restore.CONFIG_FILE), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  num_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(variables)))
  record = {'workdir': os.path.abspath(workdir), 'checkpoint': info['source'],
            'step': info['step'], 'use_best': bool(use_best), 'num_variables': num_params}
  record['bytes'] = directory_size(output)
  with open(os.path.join(output, restore.EXPORT_META), 'w') as f:
    json.dump(record, f, indent=2)
  return record


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup(compilation_cache=False)
  f = {k: v.value for k, v in _FLAGS.items()}
  if not f['workdir'] or not f['output']:
    print('error: --workdir and --output are required', file=sys.stderr)
    sys.exit(2)
  try:
    record = export(f['workdir'], f['output'], f['use_best'], f['step'], f['force'])
  except (restore.RestoreError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'exported step {record["step"]} of {record["checkpoint"]} -> {f["output"]} '
        f'({record["num_variables"]:,} numbers, {record["bytes"] / 2**20:.1f} MiB)')


if __name__ == '__main__':
  _FLAGS.update(define_flags())
  app.run(main)
