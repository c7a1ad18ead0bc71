"""Wan et al. 2020 as a method (pikfix_jax/methods/wan2020.py): its three stages train by the
same loop, resume exactly inside any stage, run alone with config.train.stage, and the trained
workdir restores photos and is scored by evaluate."""

import io
import os

import numpy as np
import pytest

from configs.baselines import wan2020
from conftest import state_params
from pikfix_jax import artifacts
from pikfix_jax import evaluate
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import restore
from pikfix_jax import restoring
from pikfix_jax import train
from pikfix_jax.data import input_pipeline
from test_train import _inject_fault

SIZE = 32


def tiny_wan(stage_steps=(2, 2, 2)):
  c = wan2020.get_config()
  c.dataset = 'demo'
  c.data.image_size = c.data.eval_image_size = SIZE
  c.data.degradation.num_textures = 2
  c.data.degradation.texture_size = 64
  c.train.batch_size = 2
  c.train.eval_batch_size = 2
  c.train.eval_every = c.train.checkpoint_every = 100
  c.train.stage_steps = stage_steps
  m = c.model
  m.vae_features, m.vae_res = 8, 1
  m.mapping_widths_in, m.mapping_global_res, m.mapping_res = (16, 16), 1, 1
  m.mapping_widths_out = (16,)
  m.detector_features, m.detector_depth = 8, 2
  m.d_features, m.d_layers = 8, 2
  return c


def test_stages_and_stage_option_and_bad_input():
  c = tiny_wan()
  method = methods.get(c)
  assert [method.stage_of(s) for s in range(7)] == ['vae'] * 2 + ['mapping'] * 2 + ['scratch'] * 3
  assert method.step_range(0) == (0, 6)
  c.train.stage = 'mapping'
  assert methods.get(c).step_range(0) == (2, 4)
  c.train.stage = 'faces'
  with pytest.raises(ValueError, match=r"Unknown config.train.stage 'faces'.*vae, mapping, "
                                       r'scratch'):
    methods.get(c).step_range(0)
  c = tiny_wan()
  c.data.defect_mask = False
  with pytest.raises(ValueError, match='data.defect_mask=True'):
    methods.get(c)


@pytest.mark.slow
def test_each_stage_loss_falls_when_overfitting_four_images():
  c = tiny_wan(stage_steps=(40, 40, 40))
  c.train.batch_size = 4
  c.optim.learning_rate = 1e-3
  trainer = train.Trainer(c, steps_per_epoch=1000)
  state, frozen = trainer.init_state(0), trainer.init_frozen(0)
  batch = trainer.shard(next(input_pipeline.train_dataset(c, epoch=0, batch_size=4)
                             .as_numpy_iterator()))
  watched = {'vae': ('vae1_l1', 'vae2_l1'), 'mapping': ('latent_l1',), 'scratch': ('total',)}
  # Fall by at least this factor over 40 steps (mean of the last 5 against the first 5).
  factors = {'vae': 0.7, 'mapping': 0.8, 'scratch': 0.7}
  for first_step, stage in ((0, 'vae'), (40, 'mapping'), (80, 'scratch')):
    values = []
    for step in range(first_step, first_step + 40):
      state, scalars = trainer.step_fn(step)(state, batch, frozen)
      values.append(sum(float(scalars[k]) for k in watched[stage]))
    assert np.isfinite(values).all(), stage
    assert np.mean(values[-5:]) < factors[stage] * np.mean(values[:5]), (stage, values[:5],
                                                                         values[-5:])


@pytest.mark.slow
def test_killed_in_a_stage_resumes_exactly_then_restores_and_evaluates(tmp_path, monkeypatch):
  c = tiny_wan()
  full = train.train_and_evaluate(c, str(tmp_path / 'full'))
  assert int(full.step) == 6
  artifacts.write_config(str(tmp_path / 'full' / artifacts.CONFIG_FILE), c)  # as main does

  def sigterm(batch):
    os.kill(os.getpid(), __import__('signal').SIGTERM)
    return batch

  _inject_fault(monkeypatch, 3, sigterm)  # inside the mapping stage
  stopped = train.train_and_evaluate(c, str(tmp_path / 'split'))
  assert int(stopped.step) == 3
  monkeypatch.undo()
  resumed = train.train_and_evaluate(c, str(tmp_path / 'split'))
  assert int(resumed.step) == 6
  expected = state_params(full)
  for k, v in state_params(resumed).items():
    np.testing.assert_array_equal(v, expected[k], err_msg=k)

  # One stage alone on a fresh workdir: the mapping's steps only.
  c.train.stage = 'mapping'
  alone = train.train_and_evaluate(c, str(tmp_path / 'alone'))
  assert int(alone.step) == 4

  from PIL import Image  # pylint: disable=g-import-not-at-top
  photo = tmp_path / 'photo.png'
  Image.fromarray((np.random.default_rng(0).random((41, 57)) * 255).astype(np.uint8)).save(photo)
  messages = io.StringIO()
  code, _ = restore.run(restoring.Options(workdir=str(tmp_path / 'full'), input=str(photo),
                                        output=str(tmp_path / 'out.png')), out=messages)
  assert code == 0, messages.getvalue()
  assert np.asarray(Image.open(tmp_path / 'out.png')).shape == (41, 57, 3)
  # --scratch_mask replaces the detector's mask: an all-white one changes the output.
  Image.fromarray(np.full((41, 57), 255, np.uint8)).save(tmp_path / 'mask.png')
  code, _ = restore.run(restoring.Options(workdir=str(tmp_path / 'full'), input=str(photo),
                                        output=str(tmp_path / 'masked.png'),
                                        scratch_mask=str(tmp_path / 'mask.png')), out=messages)
  assert code == 0, messages.getvalue()
  assert not np.array_equal(np.asarray(Image.open(tmp_path / 'out.png')),
                            np.asarray(Image.open(tmp_path / 'masked.png')))
  model, variables, trained = loading.load_generator(workdir=str(tmp_path / 'full'))
  summary = evaluate.evaluate(trained, model, variables, str(tmp_path / 'eval'))
  table = open(tmp_path / 'eval' / 'table.md').read()
  assert '| Wan et al. 2020 (restored L, zero chroma), pikfix_jax (this run) |' in table
  assert np.isfinite(summary['psnr'])
