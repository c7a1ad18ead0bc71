"""Parameters per network and forward FLOPs per image, for one method or all of them.

  python -m pikfix_jax.model_summary --config=configs/default.py --image_size=256
  python -m pikfix_jax.model_summary --all_methods --image_size=256   # one table, every method
"""

from absl import app
from absl import flags
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_flags

from pikfix_jax import cli
from pikfix_jax import methods

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Model config.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'Square input/reference side (multiple of 32).')
_DETAIL = flags.DEFINE_bool('detail', False, 'Also print every parameter tensor.')
_ALL = flags.DEFINE_bool('all_methods', False, 'One table over every method\'s config '
                         '(each method\'s Method.config_modules) instead of --config\'s breakdown.')

def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def abstract_variables(config: ml_collections.ConfigDict, image_size: int):
  """(method, generator variable shapes, discriminator param shapes, example inputs); nothing
  is materialised."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.image_size = image_size
  method = methods.get(config)
  l = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  rgb = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return (method, method.abstract_variables(image_size),
          method.abstract_discriminator(image_size), (l, rgb))


def forward_flops(model, variables, inputs, fn=None) -> float:
  """Forward FLOPs of one generator call (or of `fn(module, *inputs)`, one of its networks)
  from XLA's cost analysis of the compiled program."""
  apply = model.apply if fn is None else (lambda v, *a: model.apply(v, *a, method=fn))
  compiled = jax.jit(apply).lower(variables, *inputs).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', float('nan')))


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
  widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
  lines = [' | '.join(str(h).ljust(w) for h, w in zip(header, widths)),
           '-|-'.join('-' * w for w in widths)]
  lines += [' | '.join(str(c).rjust(w) if i else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
  return '\n'.join(lines)


def summary_table(config: ml_collections.ConfigDict, image_size: int) -> str:
  """Parameters of each top-level part of the method's generator, its discriminator, and the
  generator's forward FLOPs."""
  method, g_vars, d_params, inputs = abstract_variables(config, image_size)
  params = g_vars['params']
  rows = []
  for name in sorted(params):
    sub = params[name]
    rows.append((f'generator/{name}', f'{count(sub):,d}'))
    _, frozen = method.split_frozen({name: sub})
    if count(frozen):
      rows.append(('  of which frozen (not trained)', f'{count(frozen):,d}'))
  rows.append(('generator total', f'{count(params):,d}'))
  rows.append(('discriminator', f'{count(d_params):,d}'))
  flops = forward_flops(method.generator, g_vars, inputs)
  lines = [_table(rows, ('module', 'parameters')), '',
           f'generator forward at {image_size}x{image_size}: {flops / 1e9:.2f} GFLOPs per image '
           '(XLA cost analysis, batch 1)']
  for name, fn in method.networks().items():
    net_flops = forward_flops(method.generator, g_vars, inputs[:1], fn)
    lines.append(f'  {name}: {net_flops / 1e9:.2f} GFLOPs')
  return '\n'.join(lines)


def methods_table(image_size: int) -> str:
  """One row per config of `methods.shipped_configs`: parameters (generator, discriminator) and the
  generator's forward GFLOPs per image at image_size^2."""
  rows = []
  for config in methods.shipped_configs():
    method, g_vars, d_params, inputs = abstract_variables(config, image_size)
    flops = forward_flops(method.generator, g_vars, inputs)
    rows.append((method.label(config), config.method, f'{count(g_vars["params"]):,d}', f'{count(d_params):,d}',
                 f'{flops / 1e9:.2f}'))
  return _table(rows, ('method', 'config.method', 'generator params', 'discriminator params',
                       f'GFLOPs/image at {image_size}^2'))


def main(argv):
  del argv
  cli.setup()
  if _ALL.value:
    print(methods_table(_IMAGE_SIZE.value))
    return
  config = _CONFIG.value
  print(summary_table(config, _IMAGE_SIZE.value))
  if _DETAIL.value:
    _, g_vars, _, _ = abstract_variables(config, _IMAGE_SIZE.value)
    print(parameter_overview.get_parameter_overview(g_vars['params'], include_stats=False))


if __name__ == '__main__':
  app.run(main)
