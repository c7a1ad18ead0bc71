"""launch/: the scripts parse (bash -n, shellcheck when installed), the SLURM task picks the
right local devices, and launch/local.sh trains the demo config on 2 CPU devices."""

import glob
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'launch', '*.sh')) +
                 [os.path.join(REPO, 'launch', 'slurm.sbatch')])
# The demo config shrunk further so the test compiles quickly (same code paths; the
# evaluation batch is the training batch, so the training image grid reuses its compiled step).
TINY = ['--config.data.image_size=32', '--config.data.eval_image_size=32',
        '--config.model.restoration.features=8', '--config.model.restoration.growth=4',
        '--config.model.restoration.num_blocks=1', '--config.model.restoration.num_units=2',
        '--config.model.similarity.width=8', '--config.model.histogram.num_bins=8',
        '--config.model.colorization.block_units=(2,2,2,2)',
        '--config.model.colorization.growth=4', '--config.model.colorization.stem_features=8',
        '--config.model.colorization.fusion_units=1', '--config.model.discriminator.features=8',
        '--config.model.discriminator.num_layers=2',
        '--config.train.batch_size=4', '--config.train.eval_batch_size=4',
        '--config.train.num_eval_batches=1', '--config.train.log_every=1',
        '--config.train.image_every=2', '--config.train.eval_every=2',
        '--config.train.checkpoint_every=2']


def test_scripts_exist_and_parse():
  names = [os.path.basename(s) for s in SCRIPTS]
  assert {'local.sh', 'slurm.sbatch', 'slurm_task.sh'} <= set(names)
  for script in SCRIPTS:
    assert os.access(script, os.X_OK), script
    subprocess.run(['bash', '-n', script], check=True)


@pytest.mark.skipif(shutil.which('shellcheck') is None, reason='shellcheck not installed')
def test_scripts_pass_shellcheck():
  result = subprocess.run(['shellcheck', '--shell=bash', *SCRIPTS], capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize('env, expected', [
    ({'SLURM_NTASKS_PER_NODE': '1', 'CUDA_VISIBLE_DEVICES': '0,1,2,3'}, '0,1,2,3'),
    ({'SLURM_TASKS_PER_NODE': '4(x2)', 'SLURM_LOCALID': '2', 'CUDA_VISIBLE_DEVICES': '0,1,2,3'},
     '2'),
    ({'SLURM_NTASKS_PER_NODE': '4', 'SLURM_LOCALID': '3', 'CUDA_VISIBLE_DEVICES': '3'}, '0'),
    ({'SLURM_NTASKS_PER_NODE': '1', 'CUDA_VISIBLE_DEVICES': ''}, ''),
    ({'SLURM_NTASKS_PER_NODE': '1', 'CUDA_VISIBLE_DEVICES': '0,1',
      'JAX_LOCAL_DEVICE_IDS': '1'}, '1'),
])
def test_slurm_task_chooses_local_devices(env, expected):
  base = {k: v for k, v in os.environ.items()
          if not k.startswith('SLURM_') and k not in ('CUDA_VISIBLE_DEVICES',
                                                      'JAX_LOCAL_DEVICE_IDS')}
  result = subprocess.run(
      [os.path.join(REPO, 'launch', 'slurm_task.sh'), '--config=c.py', '--workdir=w'],
      env=dict(base, PIKFIX_DRY_RUN='1', **env), capture_output=True, text=True, check=True)
  lines = result.stdout.splitlines()
  assert lines[0] == f'JAX_LOCAL_DEVICE_IDS={expected}'
  assert lines[1].endswith('-m pikfix_jax.main --config=c.py --workdir=w')


def _local(workdir, steps: int, cwd: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PIKFIX_CPU_DEVICES='2',
             JAX_COMPILATION_CACHE_DIR=os.environ.get('PIKFIX_TEST_CACHE',
                                                      '/tmp/pikfix_jax_test_xla_cache'))
  # conftest's XLA options (not a device count: local.sh sets that from PIKFIX_CPU_DEVICES).
  env['XLA_FLAGS'] = ' '.join(f for f in os.environ.get('XLA_FLAGS', '').split()
                              if 'device_count' not in f)
  return subprocess.run(
      [os.path.join(REPO, 'launch', 'local.sh'), f'--config={REPO}/configs/demo.py',
       f'--workdir={workdir}', f'--config.train.num_train_steps={steps}', *TINY],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_local_sh_trains_demo_on_two_cpu_devices(tmp_path):
  # Resuming is train.train_and_evaluate's (tests/test_train.py); a second launch that resumes
  # here cost ~70 s of the suite for no other code path.
  workdir = tmp_path / 'run'
  # From another directory: the script finds the package itself.
  first = _local(workdir, 2, cwd=str(tmp_path))
  assert first.returncode == 0, first.stderr[-4000:]
  assert '2 local / 2 global devices' in first.stderr
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2']
  assert os.path.exists(workdir / 'validation_grid.png')


def test_local_sh_rejects_bad_cpu_device_count(tmp_path):
  result = subprocess.run([os.path.join(REPO, 'launch', 'local.sh'), '--config=x'],
                          env=dict(os.environ, PIKFIX_CPU_DEVICES='two'),
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and 'PIKFIX_CPU_DEVICES' in result.stderr
