"""Export an inference-only model: `python -m pikfix_jax.export --workdir=DIR --output=PATH`.

PATH (a new directory) receives, with the default --format=orbax,
  variables/   orbax checkpoint of the generator's {'params', 'batch_stats'} (float32): no
               optimiser state, no discriminator, no training step;
  config.json  the resolved training config (the `model` section defines the architecture);
  export.json  where it came from (workdir, step, latest/best) and its size.
`python -m pikfix_jax.restore --checkpoint=PATH ...` and `loading.load_generator(checkpoint=
PATH)` read it. With --format=stablehlo [--platforms=cpu,cuda] it receives instead
  restore_forward.jax_export  the serialized `jax.export` of the generator's forward pass
               (`restore_forward`, variables inside) for those platforms, spatial sizes
               symbolic multiples of 32 (`export_forward`);
  export.json  where it came from and what the artifact expects (inputs, platforms, model).
`restore --checkpoint=PATH` runs it without the model code (`inference.ExportedRestorer`).
"""

import functools
import json
import os
import shutil
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pikfix_jax import artifacts
from pikfix_jax import checkpoints
from pikfix_jax import cli
from pikfix_jax import inference
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax.models import pikfix

FORMATS = ('orbax', 'stablehlo')
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # jax.export's lowering platforms


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
      'format': flags.DEFINE_enum('format', 'orbax', FORMATS, 'orbax: the variables and config '
                                  '(restore, evaluate, Python). stablehlo: a serialized '
                                  'jax.export of the forward pass, run by restore alone.'),
      'platforms': flags.DEFINE_list('platforms', ['cpu', 'cuda'], 'With --format=stablehlo: '
                                     f'the platforms to lower for ({", ".join(PLATFORMS)}).'),
  }


_FLAGS: dict = {}


def directory_size(path: str) -> int:
  """Bytes of all files under `path`."""
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def restore_forward(model: nn.Module) -> Callable[..., jnp.ndarray]:
  """(variables, luminance (B, H, W, 1), reference (B, Hr, Wr, 3)) -> sRGB (B, H, W, 3): the
  generator's inference forward pass (what --format=stablehlo exports, variables bound)."""
  return lambda variables, l, reference: model.apply(variables, l, reference)['rgb']


def forward_specs() -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
  """The exported forward pass's inputs, float32 with symbolic sizes: luminance
  (1, 32h, 32w, 1) and reference (1, 32rh, 32rw, 3), for any h, w, rh, rw >= 1."""
  scope = jax.export.SymbolicScope()
  m = pikfix.MULTIPLE
  return (jax.ShapeDtypeStruct(jax.export.symbolic_shape(f'1, {m}*h, {m}*w, 1', scope=scope),
                               jnp.float32),
          jax.ShapeDtypeStruct(jax.export.symbolic_shape(f'1, {m}*rh, {m}*rw, 3', scope=scope),
                               jnp.float32))


def export_forward(model: nn.Module, variables: dict, platforms: Sequence[str]
                   ) -> jax.export.Exported:
  """`restore_forward` with `variables` bound (constants of the program), exported for
  `platforms` on the inputs of `forward_specs`; the output is sRGB (1, 32h, 32w, 3)."""
  forward = jax.jit(functools.partial(restore_forward(model), variables))
  return jax.export.export(forward, platforms=tuple(platforms))(*forward_specs())


def export(workdir: str, output: str, use_best: bool = False, step=None,
           force: bool = False, export_format: str = 'orbax',
           platforms: Sequence[str] = ('cpu', 'cuda')) -> dict:
  """Writes the inference-only model in `export_format` (module docstring); returns the
  export.json record."""
  if export_format not in FORMATS:
    raise ValueError(f'--format={export_format}: use one of {", ".join(FORMATS)}')
  unknown = sorted(set(platforms) - set(PLATFORMS))
  if export_format == 'stablehlo' and (unknown or not platforms):
    raise ValueError(f'--platforms={",".join(platforms)}: use some of {", ".join(PLATFORMS)}')
  output = os.path.abspath(output)
  if os.path.exists(output):
    if not force:
      raise artifacts.RestoreError(f'--output={output} exists; pass --force to replace it')
    if not (artifacts.is_export(output) or artifacts.is_stablehlo_export(output)):
      raise artifacts.RestoreError(f'--output={output} exists and is not an exported model; '
                                     'refusing to replace it')
    shutil.rmtree(output)
  model, variables, config, info = loading.load_generator_info(
      workdir=workdir, use_best=use_best, step=step)
  if export_format == 'stablehlo' and not methods.get(config).exports_stablehlo:
    raise ValueError(f'--format=stablehlo: method {config.method!r} pads inside its network to '
                     'sizes jax.export cannot express symbolically; use --format=orbax')
  os.makedirs(output)
  variables = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), variables)
  num_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(variables)))
  record = {'workdir': os.path.abspath(workdir), 'checkpoint': info['source'],
            'step': info['step'], 'use_best': bool(use_best), 'num_variables': num_params}
  if export_format == 'stablehlo':
    exported = export_forward(model, variables, platforms)
    with open(os.path.join(output, artifacts.EXPORT_ARTIFACT), 'wb') as f:
      f.write(exported.serialize())
    m = pikfix.MULTIPLE
    record.update({
        'format': 'stablehlo', 'artifact': artifacts.EXPORT_ARTIFACT,
        'platforms': list(exported.platforms),
        'inputs': {'luminance': f'float32 (1, {m}*h, {m}*w, 1): CIE L / 100 of the photo, '
                                f'padded to multiples of {m}',
                   'reference': f'float32 (1, {m}*rh, {m}*rw, 3): sRGB in [0, 1], sides '
                                f'multiples of {m}'},
        'output': f'float32 (1, {m}*h, {m}*w, 3): sRGB in [0, 1]',
        'multiple': m,
        'reference_size': inference.DEFAULT_REFERENCE_SIZE,  # what restore resizes to by default
        'jax_version': jax.__version__,
        'calling_convention_version': exported.calling_convention_version,
        'model': json.loads(config.model.to_json_best_effort())})
  else:
    checkpoints.write_export(output, variables, config)
  record['bytes'] = directory_size(output)
  with open(os.path.join(output, artifacts.EXPORT_META), 'w') as f:
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
    record = export(f['workdir'], f['output'], f['use_best'], f['step'], f['force'],
                    f['format'], f['platforms'])
  except (artifacts.RestoreError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'exported step {record["step"]} of {record["checkpoint"]} -> {f["output"]} '
        f'({record["num_variables"]:,} numbers, {record["bytes"] / 2**20:.1f} MiB)')


if __name__ == '__main__':
  _FLAGS.update(define_flags())
  app.run(main)
