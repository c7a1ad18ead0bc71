"""Latent diffusion in Wan et al.'s latent space as a method (pikfix_jax/methods/wan_ldm.py):
its stages and switches, the mapping ablation that is Wan et al.'s method, a bfloat16 training
step lowered for CUDA, and the demo command trained in a subprocess, stopped inside a stage,
resumed bitwise, restored and evaluated."""

import io
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import train_stopped_and_resumed, with_overrides
from configs.baselines import wan2020
from configs.baselines import wan_ldm
from pikfix_jax import evaluate
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import restore
from pikfix_jax import restoring
from pikfix_jax import train
from test_gpu_lowering import _check_cuda_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The demo command's tiny variant (64 px, tiny widths, a few steps per stage).
TINY_FLAGS = {
    'dataset': 'demo', 'data.image_size': 64, 'data.eval_image_size': 64,
    'data.degradation.num_textures': 2, 'data.degradation.texture_size': 64,
    'train.batch_size': 2, 'train.eval_batch_size': 2, 'train.num_eval_batches': 1,
    'train.eval_every': 1000, 'train.checkpoint_every': 1000, 'train.log_every': 1,
    'train.image_every': 1000,
    'model.vae_features': 8, 'model.vae_res': 1, 'model.d_features': 8, 'model.d_layers': 2,
    'model.d_scales': 1,
    'model.unet_widths': (16, 32), 'model.unet_res_blocks': 1, 'model.unet_heads': 2,
    'model.sampling_steps': 3,
    'train.stage_steps.vae': 2, 'train.stage_steps.diffusion': 4,
}


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  c = wan_ldm.get_config()
  return with_overrides(c, dict(TINY_FLAGS, **overrides))


def tiny_wan2020_config() -> ml_collections.ConfigDict:
  """Wan et al.'s method with the tiny networks of TINY_FLAGS."""
  c = wan2020.get_config()
  for key, value in TINY_FLAGS.items():
    if key.startswith('model.') and key[6:] in c.model:
      c.model[key[6:]] = value
  return c


def test_stages_labels_and_switches():
  c = tiny_config()
  method = methods.get(c)
  assert method.stages() == (('vae', 2), ('diffusion', 4))
  assert [method.stage_of(s) for s in range(7)] == ['vae'] * 2 + ['diffusion'] * 5
  assert 'DDIM 3 steps' in method.label(c) and method.vgg is None
  c.train.stage = 'diffusion'
  assert methods.get(c).step_range(0) == (2, 6)
  c = tiny_config(**{'model.condition_mask': True, 'train.stage_steps.scratch': 3})
  assert methods.get(c).stages() == (('vae', 2), ('diffusion', 4), ('scratch', 3))
  assert 'mask-conditioned' in methods.get(c).label(c)
  c = tiny_config(**{'model.denoiser': 'mapping'})
  assert [n for n, _ in methods.get(c).stages()] == ['vae', 'mapping', 'scratch']
  assert 'mapping T' in methods.get(c).label(c)
  for field, bad in (('denoiser', 'flow'), ('guidance', 'classifier'),
                     ('parameterization', 'x0')):
    with pytest.raises(ValueError, match=f'config.model.{field}'):
      methods.get(tiny_config(**{f'model.{field}': bad}))


def test_evaluate_takes_the_sampler_settings_from_its_config():
  trained, asked = tiny_config(), tiny_config(**{'model.sampling_steps': 10,
                                                 'model.sampling_seed': 2,
                                                 'model.unet_widths': (8, 8)})
  assert evaluate.apply_inference_options(asked, trained) == ['sampling_steps', 'sampling_seed']
  assert trained.model.sampling_steps == 10 and trained.model.unet_widths == (16, 32)
  assert methods.get(trained).generator.config.sampling_seed == 2
  # Methods without a sampler have none.
  assert evaluate.apply_inference_options(wan2020.get_config(), wan2020.get_config()) == []


@pytest.mark.slow
def test_sampling_seeds_default_to_three_for_a_sampler_and_refuse_others():
  c = tiny_config(**{'model.sampling_seed': 7})
  assert evaluate.sampling_seeds('', c) == [7, 8, 9]
  assert evaluate.sampling_seeds('3', c) == [3]
  assert evaluate.sampling_seeds('', wan2020.get_config()) == [None]
  with pytest.raises(ValueError, match='--sampling_seeds: method .wan2020. does not sample'):
    evaluate.sampling_seeds('0,1', wan2020.get_config())
  for bad in ('a,b', '1,1'):
    with pytest.raises(ValueError, match='--sampling_seeds='):
      evaluate.sampling_seeds(bad, c)


def test_mapping_ablation_has_wan_et_al_s_networks():
  """denoiser='mapping' trains and runs exactly Wan et al.'s networks (the same variables)."""
  ours = methods.get(tiny_config(**{'model.denoiser': 'mapping'})).abstract_variables(32)
  theirs = methods.get(tiny_wan2020_config()).abstract_variables(32)
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
  assert jax.tree.map(lambda a: a.shape, ours) == jax.tree.map(lambda a: a.shape, theirs)
  diffusion = methods.get(tiny_config()).abstract_variables(32)
  assert sorted(diffusion['params']) == ['denoiser', 'vae1', 'vae2']


@pytest.mark.slow
def test_bf16_diffusion_step_lowers_for_cuda_without_cpu_code():
  config = tiny_config(**{'model.dtype': 'bfloat16', 'data.image_size': 32})
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  trainer = train.Trainer(config, steps_per_epoch=100, mesh=mesh)
  state, frozen = jax.eval_shape(lambda: (trainer.init_state(0), trainer.init_frozen(0)))
  batch = {name: jax.ShapeDtypeStruct((2, 32, 32, ch), jnp.float32,
                                      sharding=trainer.data_sharding)
           for name, ch in (('input_l', 1), ('target_lab', 3), ('reference_rgb', 3))}
  # Trainer.train_step: the method's default stage, the diffusion step.
  exported = jax.export.export(trainer.train_step, platforms=['cuda'])(state, batch, frozen)
  _check_cuda_module(exported.mlir_module())


def _main(workdir, **overrides) -> list[str]:
  flags = dict(TINY_FLAGS, **overrides)
  return ([sys.executable, '-m', 'pikfix_jax.main', '--config=configs/baselines/wan_ldm.py',
           f'--workdir={workdir}'] +
          [f'--config.{k}={",".join(map(str, v)) if isinstance(v, tuple) else v}'
           for k, v in flags.items()])


def _env(tmp_path) -> dict:
  # The runs share one compilation cache: the resumed runs compile nothing again.
  return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
              JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'xla_cache'))


@pytest.mark.slow
def test_demo_command_trains_resumes_bitwise_then_restores_and_evaluates(tmp_path):
  env = _env(tmp_path)
  full, split = tmp_path / 'full', tmp_path / 'split'
  subprocess.run(_main(full), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)

  # The same command stopped by SIGTERM inside the diffusion stage (after the VAE stage's
  # checkpoint at step 2), then run again to resume.
  stopped = train_stopped_and_resumed(_main(split), str(split), env, stop_after=2, timeout=300)
  assert 2 < stopped < 6, stopped  # inside the diffusion stage

  _, expected, config = loading.load_generator(workdir=str(full))
  model, resumed, _ = loading.load_generator(workdir=str(split))
  flat = lambda v: jax.tree_util.tree_flatten_with_path(v)[0]
  for (path, a), (_, b) in zip(flat(expected), flat(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
  assert len(flat(expected)) == len(flat(resumed))

  # Restore (the workdir's config: 3 DDIM steps, seed 0) and evaluate.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  photo = tmp_path / 'photo.png'
  Image.fromarray((np.random.default_rng(0).random((41, 57)) * 255).astype(np.uint8)).save(photo)
  messages = io.StringIO()
  outputs = []
  for name in ('a.png', 'b.png'):
    code, _ = restore.run(restoring.Options(workdir=str(full), input=str(photo),
                                          output=str(tmp_path / name)), out=messages)
    assert code == 0, messages.getvalue()
    outputs.append(np.asarray(Image.open(tmp_path / name)))
  assert outputs[0].shape == (41, 57, 3)
  np.testing.assert_array_equal(outputs[0], outputs[1])  # the seed is fixed

  config.train.eval_batch_size = 2
  trained = config.copy_and_resolve_references()
  seeds = evaluate.sampling_seeds('', trained)
  assert seeds == [0, 1, 2]  # the checkpoint's seed and the next two
  summaries = evaluate.evaluate_seeds(config, model, resumed, str(tmp_path / 'eval'), trained,
                                      seeds, [None], max_batches=1)
  table = open(tmp_path / 'eval' / 'seed_0' / 'table.md').read()
  assert "| Latent diffusion in Wan et al.'s space (DDIM 3 steps, eta 0, seed 0" in table
  assert 'input L, zero chroma' in table  # the trivial baselines beside it
  assert all(np.isfinite(s['psnr']) for s in summaries)
  assert summaries[0]['psnr'] != summaries[1]['psnr']  # another seed, other samples
  seeds_table = open(tmp_path / 'eval' / 'seeds.md').read()
  psnrs = np.array([s['psnr'] for s in summaries])
  assert f'| mean ± std over seeds | {psnrs.mean():.2f} ± {psnrs.std(ddof=1):.2f} |' in seeds_table
  assert 'seeds 0,1,2' in seeds_table and 'input L, zero chroma' in seeds_table

  # One compile for every step count: the generator's steps are traced.
  traces = []

  def run(variables, l, steps, seed):
    traces.append(1)
    return model.apply(variables, l, steps=steps, seed=seed)['restored_l']
  run = jax.jit(run)
  l = jnp.full((1, 16, 16, 1), 0.5)
  outs = [run(resumed, l, steps, 0) for steps in (1, 10, 3)]
  assert len(traces) == 1
  np.testing.assert_array_equal(outs[2], model.apply(resumed, l)['restored_l'])


# ------------------------------------------------------------ restore --sampling_steps --seed


def _export(path, config, variables=None) -> str:
  """An orbax export of `config`'s generator (zeros by default: no compute, for the checks
  that run no model)."""
  from pikfix_jax import checkpoints  # pylint: disable=g-import-not-at-top
  if variables is None:
    variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                             methods.get(config).abstract_variables(32))
  checkpoints.write_export(str(path), variables, config)
  return str(path)


def test_restore_sampler_flags_set_the_loaded_config_or_name_the_flag(tmp_path):
  """--sampling_steps / --seed override the checkpoint's sampler (config.model.sampling_*, which
  builds the generator); a method without a sampler gets a one-line error naming the flag."""
  ldm = _export(tmp_path / 'ldm', tiny_config())
  _, config = restoring.build_restorer(restoring.Options(
      input='', output='', checkpoint=ldm, sampling_steps=7, seed=5))
  assert (config.model.sampling_steps, config.model.sampling_seed) == (7, 5)
  assert methods.get(config).generator.config.sampling_steps == 7

  wan = _export(tmp_path / 'wan', tiny_wan2020_config())
  photo = tmp_path / 'photo.png'
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.zeros((40, 40), np.uint8)).save(photo)
  cases = [(wan, dict(seed=1), '--seed: the wan2020 model has no sampler'),
           (ldm, dict(sampling_steps=-1), '--sampling_steps=-1: give a positive number')]
  for checkpoint, kw, message in cases:
    messages = io.StringIO()
    code, _ = restore.run(restoring.Options(checkpoint=checkpoint, input=str(photo),
                                            output=str(tmp_path / 'out.png'), **kw),
                          out=messages)
    log = messages.getvalue()
    assert code == 2 and log.startswith(f'error: {message}') and log.count('\n') == 1, log
  assert not (tmp_path / 'out.png').exists()


@pytest.mark.slow
def test_restore_sampler_flags_change_the_samples_and_the_seed_repeats_them(tmp_path):
  """restore on a random-weight tiny wan_ldm: the same --seed gives the same photo, another
  seed or another --sampling_steps another one; the command line passes the flags through."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  variables = jax.jit(lambda k: methods.get(config).init_generator(k, 32))(
      jax.random.PRNGKey(1))
  ldm = _export(tmp_path / 'ldm', config, variables)
  photo = tmp_path / 'photo.png'
  Image.fromarray((np.random.default_rng(0).random((41, 57)) * 255).astype(np.uint8)).save(photo)
  outputs = {}
  for name, kw in (('default', {}), ('seed0', dict(seed=0)), ('seed1', dict(seed=1)),
                   ('steps1', dict(sampling_steps=1))):
    messages = io.StringIO()
    code, _ = restore.run(restoring.Options(checkpoint=ldm, input=str(photo),
                                            output=str(tmp_path / f'{name}.png'), **kw),
                          out=messages)
    assert code == 0, messages.getvalue()
    outputs[name] = np.asarray(Image.open(tmp_path / f'{name}.png'))
  assert outputs['default'].shape == (41, 57, 3)
  np.testing.assert_array_equal(outputs['default'], outputs['seed0'])  # the checkpoint's seed
  assert not np.array_equal(outputs['seed1'], outputs['seed0'])
  assert not np.array_equal(outputs['steps1'], outputs['seed0'])
  result = subprocess.run(
      [sys.executable, '-m', 'pikfix_jax.restore', f'--checkpoint={ldm}', f'--input={photo}',
       f'--output={tmp_path / "cli.png"}', '--seed=1'], cwd=ROOT, env=_env(tmp_path),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'cli.png')), outputs['seed1'])
