"""Parameters per sub-net and forward FLOPs per image.

  python -m pikfix_jax.model_summary --config=configs/default.py --image_size=256
"""

from absl import app
from absl import flags
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_flags

from pikfix_jax import checkpoints
from pikfix_jax import cli
from pikfix_jax.models import pikfix

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Model config.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'Square input/reference side (multiple of 32).')
_DETAIL = flags.DEFINE_bool('detail', False, 'Also print every parameter tensor.')


def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def abstract_variables(config: ml_collections.ConfigDict, image_size: int):
  """Shapes of the generator and discriminator variables (nothing is materialised)."""
  g = pikfix.build_generator(config.model)
  d = pikfix.build_discriminator(config.model)
  l = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  rgb = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  ab = jax.ShapeDtypeStruct((1, image_size, image_size, 2), jnp.float32)
  k = config.model.histogram.num_bins
  cond = (jax.ShapeDtypeStruct((1, 2 * k), jnp.float32)
          if config.model.discriminator.condition_on_reference else None)
  g_vars = checkpoints.abstract_variables(g, image_size)
  d_vars = jax.eval_shape(d.init, jax.random.PRNGKey(0), l, ab, cond)
  return g, g_vars, d_vars, (l, rgb)


def forward_flops(model, variables, inputs) -> float:
  """Forward FLOPs of one generator call from XLA's cost analysis of the compiled program."""
  compiled = jax.jit(model.apply).lower(variables, *inputs).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', float('nan')))


def summary_table(config: ml_collections.ConfigDict, image_size: int) -> str:
  g, g_vars, d_vars, inputs = abstract_variables(config, image_size)
  params = g_vars['params']
  rows = []
  for name in sorted(params):
    sub = params[name]
    rows.append((f'generator/{name}', count(sub)))
    if name == 'similarity_net':
      _, frozen = checkpoints.split_frozen({name: sub}, train_backbone=False)
      rows.append(('  of which ResNet-34 (frozen by default)', count(frozen)))
  rows.append(('generator total', count(params)))
  rows.append(('discriminator (PatchGAN)', count(d_vars['params'])))
  flops = forward_flops(g, g_vars, inputs)
  width = max(len(r[0]) for r in rows)
  lines = [f'{"module".ljust(width)} | parameters', f'{"-" * width}-|-----------']
  lines += [f'{n.ljust(width)} | {c:>12,d}' for n, c in rows]
  lines.append('')
  lines.append(f'generator forward at {image_size}x{image_size}: {flops / 1e9:.2f} GFLOPs per image '
               '(XLA cost analysis, batch 1)')
  return '\n'.join(lines)


def main(argv):
  del argv
  cli.setup()
  config = _CONFIG.value
  print(summary_table(config, _IMAGE_SIZE.value))
  if _DETAIL.value:
    _, g_vars, _, _ = abstract_variables(config, _IMAGE_SIZE.value)
    print(parameter_overview.get_parameter_overview(g_vars['params'], include_stats=False))


if __name__ == '__main__':
  app.run(main)
