"""Wan et al.'s face network as a method (pikfix_jax/methods/wan2020_face.py, losses/wan_face.py):
its input variants and losses, gradients to G_f and D_f, a loss that falls when overfitting,
the training command stopped by SIGTERM and resumed bitwise, the workdir in restore --faces=wan
and evaluate, and the joint stage behind a tiny trained Wan et al. pipeline."""

import io
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage.data
import skimage.transform

from configs.baselines import wan2020_face as face_config
from conftest import restore_latest, train_stopped_and_resumed, with_overrides
from pikfix_jax import artifacts
from pikfix_jax import evaluate
from pikfix_jax import faces
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import restore
from pikfix_jax import restoring
from pikfix_jax import train
from pikfix_jax.data import input_pipeline
from pikfix_jax.losses import wan_face as face_losses
from pikfix_jax.methods import wan2020_face
from pikfix_jax.ops import color
from test_faces import IdentityRestorer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
# A tiny G_f / D_f on 32 px faces (the shipped config: 256 px, ngf 64).
TINY_FLAGS = {
    'data.image_size': SIZE, 'data.eval_image_size': SIZE,
    'data.degradation.num_textures': 2, 'data.degradation.texture_size': 64,
    'train.batch_size': 2, 'train.eval_batch_size': 2, 'train.num_eval_batches': 1,
    'train.log_every': 1, 'train.image_every': 1000, 'train.eval_every': 1000,
    'model.ngf': 2, 'model.spade_hidden': 8, 'model.d_features': 4, 'model.d_layers': 2,
}


def face_folder(path, count: int = 6) -> str:
  """`count` face-like crops of skimage's astronaut (around her face, shifted), 40 px."""
  os.makedirs(path, exist_ok=True)
  photo = skimage.data.astronaut()
  for i in range(count):
    y, x = 20 + 7 * i, 130 + 9 * (i % 4)
    crop = skimage.transform.resize(photo[y:y + 190, x:x + 190], (40, 40))
    Image.fromarray((crop * 255).round().astype(np.uint8)).save(os.path.join(path, f'f{i}.png'))
  return str(path)


def tiny_config(folder: str = '', **overrides):
  c = face_config.get_config()
  c.data.image_folder = folder
  return with_overrides(c, dict(TINY_FLAGS, **overrides))


# ------------------------------------------------------------------------------- fast


def test_registered_labelled_and_switches(tmp_path):
  assert 'wan2020_face' in methods.names()
  c = tiny_config()
  method = methods.get(c)
  assert method.uses_reference and 'clean chroma' in method.label(c)
  assert method.config_modules == ('configs.baselines.wan2020_face',)
  assert 'wan2020_face' in [x.method for x in methods.shipped_configs()]  # model_summary's rows
  gray = tiny_config(**{'model.gray_input': True})
  assert not methods.get(gray).uses_reference and 'grey input' in method.label(gray)
  # TTUR: G at lr / 2, D at 2 lr (SPADE's defaults).
  assert method.g_config.optim.learning_rate == pytest.approx(1e-4)
  # behind_wan must name a workdir of a reference-free restoration method: one-line errors.
  with pytest.raises(ValueError, match='behind_wan=.*no config.json'):
    methods.get(tiny_config(**{'model.behind_wan': str(tmp_path / 'none')}))
  artifacts.write_config(str(tmp_path / artifacts.CONFIG_FILE), tiny_config())
  with pytest.raises(ValueError, match="trains 'wan2020_face', which needs a reference"):
    methods.get(tiny_config(**{'model.behind_wan': str(tmp_path)}))


def test_face_input_is_degraded_l_with_clean_or_zero_chroma():
  rng = np.random.default_rng(0)
  l = jnp.asarray(rng.uniform(0.2, 0.8, (1, 8, 8, 1)), jnp.float32)
  ab = jnp.asarray(rng.uniform(-0.3, 0.3, (1, 8, 8, 2)), jnp.float32)
  colour = wan2020_face.FaceNetworks().apply({}, l, ab, method='face_input')
  np.testing.assert_allclose(colour, color.lab_normalized_to_rgb(l, ab), atol=1e-6)
  grey = wan2020_face.FaceNetworks(gray_input=True).apply({}, l, ab, method='face_input')
  np.testing.assert_allclose(grey, color.gray_to_rgb(l), atol=1e-6)
  np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-4)  # grey: a = b = 0
  assert np.abs(np.asarray(colour) - np.asarray(grey)).mean() > 0.02  # the chroma is there


def test_losses_are_the_releases_spade_weighting():
  """LSGAN and feature matching averaged over D_f's scales, every D layer weight 1 (SPADE's
  Pix2PixModel), against the sums written out."""
  rng = np.random.default_rng(1)
  arr = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  fake = [(arr(2, 4, 4, 1), (arr(2, 8, 8, 3), arr(2, 4, 4, 5))),
          (arr(2, 2, 2, 1), (arr(2, 4, 4, 3), arr(2, 2, 2, 5)))]
  real = [(arr(2, 4, 4, 1), (arr(2, 8, 8, 3), arr(2, 4, 4, 5))),
          (arr(2, 2, 2, 1), (arr(2, 4, 4, 3), arr(2, 2, 2, 5)))]
  mse = lambda x, t: float(np.mean((np.asarray(x) - t) ** 2))
  d = (mse(real[0][0], 1) + mse(real[1][0], 1)) / 2 + (mse(fake[0][0], 0) + mse(fake[1][0], 0)) / 2
  assert float(face_losses.lsgan_discriminator_loss(real, fake)) == pytest.approx(d, rel=1e-6)
  g = (mse(fake[0][0], 1) + mse(fake[1][0], 1)) / 2
  assert float(face_losses.lsgan_generator_loss(fake)) == pytest.approx(g, rel=1e-6)
  fm = sum(np.mean(np.abs(np.asarray(f) - np.asarray(r))) / 2
           for (_, fs), (_, rs) in zip(fake, real) for f, r in zip(fs, rs))
  assert float(face_losses.feature_matching_loss(fake, real)) == pytest.approx(fm, rel=1e-6)
  # Eq. 17: the release's layer weights 1/32 .. 1 on the five VGG layers.
  features = lambda x: {n: x * (i + 1) for i, n in enumerate(
      ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1'))}
  a, b = arr(1, 4, 4, 3), arr(1, 4, 4, 3)
  want = sum(w * (i + 1) * np.mean(np.abs(np.asarray(a) - np.asarray(b)))
             for i, w in enumerate((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1)))
  assert float(face_losses.perceptual_loss(features, a, b)) == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_gradients_reach_g_and_d_and_the_perceptual_loss_falls_on_four_faces(tmp_path):
  c = tiny_config(face_folder(tmp_path / 'faces', 6), **{'train.batch_size': 4})
  c.optim.learning_rate = 2e-3
  trainer = train.Trainer(c, steps_per_epoch=1000)
  state, frozen = trainer.init_state(0), trainer.init_frozen(0)
  batch = trainer.shard(next(input_pipeline.train_dataset(c, epoch=0, batch_size=4)
                             .as_numpy_iterator()))
  flat = lambda tree: flax.traverse_util.flatten_dict(jax.device_get(tree), sep='/')
  before = flat({'g': state.g_params, 'd': state.d_params, 'stats': state.g_batch_stats})
  values = []
  for step in range(40):
    state, scalars = trainer.train_step(state, batch, frozen)
    assert all(np.isfinite(float(v)) for v in scalars.values()), scalars
    values.append(float(scalars['perceptual']))
    if step == 0:
      after = flat({'g': state.g_params, 'd': state.d_params, 'stats': state.g_batch_stats})
      assert set(after) == set(before)
      # Every G_f and D_f parameter moved (gradients flow to all of them); BatchNorm
      # statistics and the spectral norms' u, v of both were updated.
      unchanged = [k for k in before if np.array_equal(before[k], after[k])]
      assert unchanged == [], unchanged
      assert any('/u' in k for k in before if k.startswith('d/batch_stats'))
  assert np.mean(values[-5:]) < 0.8 * np.mean(values[:5]), (values[:5], values[-5:])


def _main(workdir, folder, **overrides) -> list[str]:
  flags = dict(TINY_FLAGS, **{'data.image_folder': folder, 'train.num_train_steps': 15,
                              'train.checkpoint_every': 5}, **overrides)
  return ([sys.executable, '-m', 'pikfix_jax.main', '--config=configs/baselines/wan2020_face.py',
           f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in flags.items()])


@pytest.mark.slow
def test_command_trains_resumes_bitwise_then_restores_faces_and_evaluates(tmp_path):
  folder = face_folder(tmp_path / 'faces')
  # The runs share one compilation cache: the later runs compile nothing again.
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'xla_cache'))
  full, split = tmp_path / 'full', tmp_path / 'split'
  subprocess.run(_main(full, folder), cwd=ROOT, env=env, check=True, capture_output=True,
                 timeout=600)
  # The same command stopped by SIGTERM after its first checkpoint, then run again.
  stopped = train_stopped_and_resumed(_main(split, folder), str(split), env, stop_after=5,
                                      timeout=300)
  assert 5 <= stopped < 15, stopped

  config = tiny_config(folder, **{'train.num_train_steps': 15})
  (step_a, a), (step_b, b) = restore_latest(str(full), config), restore_latest(str(split), config)
  assert step_a == step_b == 15
  leaves_a = jax.tree_util.tree_flatten_with_path(jax.device_get(a))[0]
  leaves_b = jax.tree_util.tree_leaves(jax.device_get(b))
  assert len(leaves_a) == len(leaves_b)
  for (path, x), y in zip(leaves_a, leaves_b):  # G, D, statistics, optimisers: bitwise
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))

  # The workdir as restore --faces=wan's face network: G_f with its spectral norms folded
  # gives what the training form computes in inference mode.
  model, variables, trained = loading.load_generator(workdir=str(full))
  net, size = faces.wan_face_net(str(full))
  assert size == SIZE
  face = np.asarray(Image.open(os.path.join(folder, 'f0.png')).resize((SIZE, SIZE)),
                    np.float32) / 255.0
  want = model.apply(variables, face[None], method=wan2020_face.FaceNetworks.enhance)[0]
  np.testing.assert_allclose(net(face), want, atol=1e-4)
  photo = tmp_path / 'astronaut.png'
  Image.fromarray(skimage.data.astronaut()).save(photo)
  messages = io.StringIO()
  code, _ = restore.run(restoring.Options(input=str(photo), output=str(tmp_path / 'out.png'),
                                        faces='wan', face_checkpoint=str(full)),
                        restorer=IdentityRestorer(), out=messages)
  assert code == 0 and '1 face(s) restored (--faces=wan)' in messages.getvalue(), (
      messages.getvalue())
  got = np.asarray(Image.open(tmp_path / 'out.png'))
  assert np.abs(got[83:170, 179:266].astype(int) -
                skimage.data.astronaut()[83:170, 179:266]).mean() > 1
  np.testing.assert_array_equal(got[300:], skimage.data.astronaut()[300:])

  # evaluate scores the aligned crops of the folder's held-out split, baselines beside.
  summary = evaluate.evaluate(trained, model, variables, str(tmp_path / 'eval'),
                              reference_control=False)
  table = open(tmp_path / 'eval' / 'table.md').read()
  assert '| Wan et al. 2020 face network (degraded L + clean chroma in)' in table
  assert 'input L, zero chroma' in table
  assert summary['images'] == 1 and np.isfinite(summary['psnr'])


@pytest.mark.slow
def test_behind_a_trained_wan_pipeline(tmp_path):
  """model.behind_wan: G_f's input is the frozen Wan et al. pipeline's restored L (its
  checkpoint's variables, unchanged by training) with the clean chroma."""
  from test_methods_wan2020 import tiny_wan  # pylint: disable=g-import-not-at-top
  wan = tiny_wan(stage_steps=(1, 1, 1))
  wan_dir = str(tmp_path / 'wan')
  train.train_and_evaluate(wan, wan_dir)
  artifacts.write_config(os.path.join(wan_dir, artifacts.CONFIG_FILE), wan)  # as main does
  c = tiny_config(face_folder(tmp_path / 'faces'), **{'model.behind_wan': wan_dir,
                                                      'train.num_train_steps': 2})
  face_dir = str(tmp_path / 'face')
  state = train.train_and_evaluate(c, face_dir)
  artifacts.write_config(os.path.join(face_dir, artifacts.CONFIG_FILE), c)
  assert int(state.step) == 2 and set(state.g_params) == {'face'}
  wan_model, wan_vars, _ = loading.load_generator(workdir=wan_dir)
  frozen = flax.traverse_util.flatten_dict(jax.device_get(state.g_frozen['translation']))
  loaded = flax.traverse_util.flatten_dict(jax.device_get(wan_vars['params']))
  assert frozen and all(np.array_equal(v, loaded[k]) for k, v in frozen.items())

  model, variables, trained = loading.load_generator(workdir=face_dir)
  assert "behind Wan et al.'s translation" in methods.get(trained).label(trained)
  l = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, SIZE, SIZE, 1)), jnp.float32)
  ab = jnp.zeros((1, SIZE, SIZE, 2))
  r_f = model.apply(variables, l, ab, method=wan2020_face.FaceNetworks.face_input)
  restored = wan_model.apply(wan_vars, l)['restored_l']
  np.testing.assert_allclose(r_f, color.gray_to_rgb(restored), atol=1e-5)
  summary = evaluate.evaluate(trained, model, variables, str(tmp_path / 'eval'),
                              reference_control=False)
  assert np.isfinite(summary['psnr'])
  # The face pipeline runs G_f alone on the (already restored) photo's crop.
  net, size = faces.wan_face_net(face_dir)
  assert net(np.full((size, size, 3), 0.5, np.float32)).shape == (size, size, 3)
