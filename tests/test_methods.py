"""Methods behind one interface (pikfix_jax/methods): lookup by config.method, the baselines of
the comparison tables (Pix2pix, CMS4CV U-Net / U-Net-GAN) trained by the same loop, restored
by the same `restore` and scored by the same `evaluate`."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.baselines import cms4cv_fusion
from configs.baselines import cms4cv_gan
from configs.baselines import cms4cv_unet
from configs.baselines import pix2pix
from pikfix_jax import evaluate
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import train
from pikfix_jax.data import input_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


def tiny_baseline(name: str):
  """A baseline config narrowed for tests: demo photos at 32 px, small widths."""
  c = {'pix2pix': pix2pix, 'cms4cv_unet': cms4cv_unet, 'cms4cv_gan': cms4cv_gan}[name]
  c = c.get_config()
  c.dataset = 'demo'
  c.data.image_size = c.data.eval_image_size = SIZE
  c.data.degrade = True
  c.data.degradation.num_textures = 2
  c.data.degradation.texture_size = 64
  c.train.batch_size = 4
  c.train.eval_batch_size = 2
  if c.method == 'pix2pix':
    c.model.num_downs, c.model.ngf, c.model.d_features = 5, 8, 8
  else:
    c.model.num_down, c.model.base_features, c.model.d_features = 3, 8, 8
  return c


def test_unknown_method_is_a_one_line_error_listing_the_known():
  c = tiny_baseline('pix2pix')
  c.method = 'deoldify'
  assert {'pikfix', 'pix2pix', 'cms4cv', 'wan2020'} <= set(methods.names())
  assert not {'base', 'supervised'} & set(methods.names())  # modules without a Method
  with pytest.raises(ValueError) as error:
    methods.get(c)
  assert str(error.value) == (f"Unknown config.method 'deoldify'; known methods: "
                              f"{', '.join(methods.names())}.")


def test_each_method_carries_its_labels_paper_rows_and_configs():
  configs = methods.shipped_configs()
  assert {methods.name_of(c) for c in configs} == set(methods.names())
  assert [methods.method_class(c).label(c) for c in configs] == [
      'CMS4CV U-Net (2x SR)', 'CMS4CV Fusion (2x SR)', 'CMS4CV U-Net-GAN (2x SR)',
      "GFP-GAN (degraded L + the clean crop's chroma in)", 'Pik-Fix',
      'Pix2pix', 'Wan et al. 2020 (restored L, zero chroma)',
      'Wan et al. 2020 face network (degraded L + clean chroma in)',
      "Latent diffusion in Wan et al.'s space (DDIM 50 steps, eta 0, seed 0; restored L, zero "
      'chroma)']
  c = cms4cv_gan.get_config()
  c.model.sr_factor = 1
  assert methods.method_class(c).label(c) == 'CMS4CV U-Net-GAN'
  # evaluate's table takes the method's label and its paper row for the dataset.
  c = pix2pix.get_config()
  c.dataset, c.data.degrade = 'voc', True
  rows = {'model': {'psnr': 20.0, 'ssim': 0.7, 'lpips': 0.3}}
  summary = {'scores': {'rows': rows}, 'lpips': 0.3, 'images': 1, 'split': 'test',
             'reference': 'none', 'checkpoint': 'W', 'step': 1, 'eval_image_size': 256,
             'conventions': 'authors'}
  table = evaluate.table_markdown(c, summary, '')
  assert ('| Pix2pix (paper, Pik-Fix Table 1, Pascal VOC (w/ degradation)) | 20.37 | 0.732 | '
          '0.231 |') in table
  assert '| Pix2pix, pikfix_jax (this run) | 20.00 | 0.700 | 0.300 |' in table
  c.dataset = 'div2k'
  c.data.degrade = True
  assert 'The paper reports no Pix2pix numbers' in evaluate.table_markdown(c, summary, '')


def test_fusion_without_segmentation_weights_refuses_to_train():
  c = cms4cv_fusion.get_config()
  c.data.image_size, c.model.base_features = SIZE, 4
  with pytest.raises(ValueError, match='--config.backbones.deeplabv3=FILE'):
    methods.get(c).init_state(0)


@pytest.mark.slow
@pytest.mark.parametrize('name,sr_factor', [('pix2pix', 1), ('cms4cv_unet', 1),
                                            ('cms4cv_unet', 2)])
def test_generator_outputs_any_size(name, sr_factor):
  c = tiny_baseline(name)
  if name != 'pix2pix':
    c.model.sr_factor = sr_factor
  method = methods.get(c)
  assert not method.uses_reference
  variables = method.generator.init(jax.random.PRNGKey(0), np.zeros((1, SIZE, SIZE, 1)),
                                    np.zeros((1, SIZE, SIZE, 3)))
  for h, w in ((32, 32), (37, 50)):
    l = np.random.default_rng(0).random((1, h, w, 1), np.float32)
    out = method.generator.apply(variables, l, np.zeros((1, 8, 8, 3), np.float32))
    assert out['rgb'].shape == (1, h, w, 3)
    assert out['restored_l'].shape == (1, h, w, 1) and out['ab'].shape == (1, h, w, 2)
    assert 0 <= float(out['rgb'].min()) and float(out['rgb'].max()) <= 1


@pytest.mark.slow
@pytest.mark.parametrize('name,factor', [('pix2pix', 0.5), ('cms4cv_unet', 0.7),
                                         ('cms4cv_gan', 0.7)])
def test_overfits_four_images(name, factor):
  """The generator's pixel loss falls by `factor` on one batch of 4 images in 60 steps."""
  c = tiny_baseline(name)
  c.optim.learning_rate = 2e-3
  trainer = train.Trainer(c, steps_per_epoch=1000)
  state, frozen = trainer.init_state(0), trainer.init_frozen(0)
  batch = next(input_pipeline.train_dataset(c, epoch=0, batch_size=4).as_numpy_iterator())
  batch = trainer.shard(batch)
  pixel = 'l1' if name == 'pix2pix' else 'mae'
  first = None
  for _ in range(60):
    state, scalars = trainer.train_step(state, batch, frozen)
    first = float(scalars[pixel]) if first is None else first
  last = float(scalars[pixel])
  assert np.isfinite(last) and last < factor * first, (first, last)
  assert set(scalars) == set(trainer.method.scalars)


_PARALLEL = r'''
import sys
sys.path.insert(0, 'tests')
import jax, numpy as np
from test_methods import tiny_baseline
from pikfix_jax import train
from pikfix_jax.data import input_pipeline
c = tiny_baseline('cms4cv_gan')
c.train.batch_size = 8
c.data.train_repeats = 2
batch = next(input_pipeline.train_dataset(c, epoch=0, batch_size=8).as_numpy_iterator())
params = []
for devices in (jax.devices(), jax.devices()[:1]):
  trainer = train.Trainer(c, 10, mesh=jax.sharding.Mesh(np.array(devices), ('data',)))
  state = trainer.init_state(0)
  for _ in range(3):
    state, _ = trainer.train_step(state, trainer.shard(batch), trainer.init_frozen(0))
  params.append(jax.device_get((state.g_params, state.d_params, state.g_batch_stats)))
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(*map(jax.tree_util.tree_leaves, params)))
print(len(jax.devices()), diff)
'''


@pytest.mark.slow
def test_eight_devices_equal_one_device_for_a_baseline():
  """The CMS4CV U-Net-GAN (BatchNorm over the global batch, D and G): 3 steps on 8 CPU devices
  equal 3 steps on one within 1e-5."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', _PARALLEL], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  devices, diff = result.stdout.split()[-2:]
  assert int(devices) == 8 and float(diff) <= 1e-5, diff


@pytest.mark.slow
def test_baseline_trains_resumes_restores_and_evaluates(tmp_path):
  """The README's baseline commands on the demo photos: main trains and checkpoints, a rerun
  resumes to the same state as an uninterrupted run, restore writes a coloured image of the
  input's size without a reference, evaluate writes its row and the baselines."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  common = [sys.executable, '-m', 'pikfix_jax.main', '--config=configs/baselines/cms4cv_unet.py',
            '--config.dataset=demo', '--config.data.image_size=32',
            '--config.data.eval_image_size=32', '--config.model.num_down=3',
            '--config.model.base_features=8', '--config.train.checkpoint_every=2',
            '--config.train.eval_every=100', '--config.data.degrade=True',
            '--config.data.degradation.num_textures=2',
            '--config.data.degradation.texture_size=64']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')

  def run(*args):
    result = subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result

  whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
  run(*common, f'--workdir={whole}', '--config.train.num_train_steps=4')
  run(*common, f'--workdir={parts}', '--config.train.num_train_steps=2')
  run(*common, f'--workdir={parts}', '--config.train.num_train_steps=4')
  a = loading.load_generator(workdir=whole)[1]
  b = loading.load_generator(workdir=parts)[1]
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)
  photo = tmp_path / 'photo.png'
  Image.fromarray((np.random.default_rng(0).random((45, 61)) * 255).astype(np.uint8)).save(photo)
  out = tmp_path / 'out.png'
  run(sys.executable, '-m', 'pikfix_jax.restore', f'--workdir={whole}', f'--input={photo}',
      f'--output={out}')
  restored = np.asarray(Image.open(out))
  assert restored.shape == (45, 61, 3) and np.ptp(restored.astype(int).mean(-1)) > 0
  run(sys.executable, '-m', 'pikfix_jax.evaluate', '--config=configs/baselines/cms4cv_unet.py',
      f'--workdir={whole}', '--config.dataset=demo', '--config.data.eval_image_size=32',
      '--config.model.num_down=3', '--config.model.base_features=8',
      '--config.data.degrade=True', '--config.data.degradation.num_textures=2',
      '--config.data.degradation.texture_size=64')
  table = open(os.path.join(whole, 'eval', 'table.md')).read()
  assert '| CMS4CV U-Net (2x SR), pikfix_jax (this run) |' in table
  assert 'zero chroma' in table and 'shuffled reference' not in table


@pytest.mark.slow
def test_fusion_trains_with_a_frozen_segmentation(tmp_path):
  """Fusion with (random, converted) DeepLabV3 weights: the segmentation is loaded from the
  file, stays frozen, and the U-Net on grey + class probabilities trains."""
  from pikfix_jax import weights  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'deeplab.msgpack')
  weights.save_variables(path, weights.random_variables('deeplabv3_mobilenet_v3_large', seed=1))
  c = tiny_baseline('cms4cv_unet')
  c.model.segmentation, c.model.num_down = True, 2
  c.backbones.deeplabv3 = path
  c.optim.learning_rate = 2e-3
  trainer = train.Trainer(c, steps_per_epoch=1000)
  state = trainer.init_state(0)
  loaded = weights.load_variables(path)
  np.testing.assert_array_equal(
      state.g_frozen['segmentation']['classifier_4']['kernel'],
      loaded['params']['classifier_4']['kernel'])
  assert 'segmentation' not in state.g_params
  batch = trainer.shard(next(input_pipeline.train_dataset(c, epoch=0, batch_size=4)
                             .as_numpy_iterator()))
  first = None
  for _ in range(20):
    state, scalars = trainer.train_step(state, batch, trainer.init_frozen(0))
    first = float(scalars['mae']) if first is None else first
  assert float(scalars['mae']) < first
  np.testing.assert_array_equal(
      state.g_frozen['segmentation']['classifier_4']['kernel'],
      loaded['params']['classifier_4']['kernel'])
