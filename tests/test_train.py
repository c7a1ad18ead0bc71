"""Training loop: checkpoints, resume equivalence, SIGTERM, NaN guard, config errors."""

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_TRAINING, restore_latest, state_params, tiny_train_config
from pikfix_jax import train
from pikfix_jax.data import input_pipeline

pytestmark = TINY_TRAINING
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inject_fault(monkeypatch, step: int, fault) -> None:
  """The training loop's batch of `step` (counted from 1) goes through `fault` first."""
  original = input_pipeline.train_batches

  def train_batches(config, *, start_step, **kwargs):
    batches = original(config, start_step=start_step, **kwargs)
    try:
      for i, batch in enumerate(batches, start=start_step + 1):
        yield fault(batch) if i == step else batch
    finally:
      batches.close()

  monkeypatch.setattr(input_pipeline, 'train_batches', train_batches)


@pytest.mark.slow
def test_resume_equals_uninterrupted_run_and_checkpoint_restores(tmp_path, trained_workdir):
  config = tiny_train_config()
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))
  assert int(full.step) == 4
  step, restored = restore_latest(str(tmp_path / 'full'), config)
  assert step == 4
  for k, v in state_params(full).items():
    np.testing.assert_array_equal(v, state_params(restored)[k], err_msg=k)
  assert os.path.exists(tmp_path / 'full' / 'validation_grid.png')
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'full'))

  # Stopped after 2 steps (epoch 0): the shared workdir, trained with this config and
  # num_train_steps=2. Resume a copy to 4 (crosses into epoch 1: other data, lr decay).
  shutil.copytree(trained_workdir, tmp_path / 'split')
  resumed = train.train_and_evaluate(config, str(tmp_path / 'split'))
  assert int(resumed.step) == 4
  expected = state_params(full)
  for k, v in state_params(resumed).items():
    np.testing.assert_array_equal(v, expected[k], err_msg=k)


@pytest.mark.slow
def test_sigterm_writes_restorable_checkpoint(tmp_path, monkeypatch):
  config = tiny_train_config()
  config.train.checkpoint_every = 100
  config.train.eval_every = 100

  def sigterm(batch):
    os.kill(os.getpid(), signal.SIGTERM)  # handled before step 1 ends
    return batch

  _inject_fault(monkeypatch, 1, sigterm)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 1
  step, restored = restore_latest(str(tmp_path), config)
  assert step == 1 and int(restored.step) == 1


@pytest.mark.slow
def test_nan_loss_stops_with_named_error_and_keeps_last_checkpoint(tmp_path, monkeypatch):
  config = tiny_train_config()
  config.train.checkpoint_every = 2
  _inject_fault(monkeypatch, 3, lambda batch: dict(
      batch, input_l=np.full_like(batch['input_l'], np.nan)))
  with pytest.raises(train.NonFiniteLossError, match=r'step 3: .*total=nan'):
    train.train_and_evaluate(config, str(tmp_path))
  step, restored = restore_latest(str(tmp_path), config)
  assert step == 2
  assert all(np.all(np.isfinite(v)) for v in state_params(restored).values())


@pytest.mark.slow  # a command-line run (subprocess)
def test_unknown_config_key_fails_clearly(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'pikfix_jax.main', '--config=configs/demo.py',
       f'--workdir={tmp_path}', '--config.train.no_such_field=1'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert 'no_such_field' in result.stderr
