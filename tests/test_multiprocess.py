"""Multi-process training: two JAX processes on localhost (jax.distributed, CPU collectives over
gloo) run the real training loop on a shared workdir. They must end where one process ends on
the same global batches, and their checkpoints must restore in a one-process run.

The comparison runs in the well-conditioned STRICT setting (similarity temperature 0.1, Adam eps
1e-6) for the reasons given in tests/test_parallel.py: with the paper's temperature 0.005 and
eps 1e-8, float32 summation-order noise alone moves parameters by ~1e-4 in three steps.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from test_parallel import REPO, STRICT, WORKER, params, run_worker

TIMEOUT_S = 1200


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def run_processes(tmp_path, out, num_processes: int, *args, timeout=TIMEOUT_S) -> dict:
  """Starts the worker as `num_processes` processes of one jax.distributed job; waits for all
  (failing fast, and killing the rest, as soon as one fails); returns process 0's result."""
  coordinator = f'localhost:{free_port()}'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('XLA_FLAGS', None)
  logs, procs = [], []
  try:
    for i in range(num_processes):
      logs.append(open(tmp_path / f'process{i}.log', 'w'))
      procs.append(subprocess.Popen(
          [sys.executable, WORKER, f'--out={out}', f'--process_id={i}',
           f'--num_processes={num_processes}', f'--coordinator={coordinator}', *args],
          cwd=REPO, env=env, stdout=logs[-1], stderr=subprocess.STDOUT,
          start_new_session=True))
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
      failed = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
      if failed or time.monotonic() > deadline:
        break
      time.sleep(1)
  finally:
    for p in procs:  # the training loop handles SIGTERM (checkpoint and exit): use SIGKILL
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    for f in logs:
      f.close()
  codes = [p.returncode for p in procs]
  if codes != [0] * num_processes:
    tails = '\n'.join(f'--- process {i} (exit {c}):\n' +
                      (tmp_path / f'process{i}.log').read_text()[-3000:]
                      for i, c in enumerate(codes))
    pytest.fail(f'multi-process run failed or timed out: exit codes {codes}\n{tails}')
  with np.load(out) as f:
    return dict(f)


def test_two_processes_train_like_one_and_checkpoint_restores_in_one(tmp_path):
  shared = tmp_path / 'two_process_workdir'
  two = run_processes(tmp_path, tmp_path / 'two.npz', 2, f'--loop={shared}', *STRICT)
  assert int(two['processes']) == 2 and int(two['devices']) == 2 and int(two['step']) == 3

  one = run_worker(tmp_path / 'one.npz', f'--loop={tmp_path / "one_process_workdir"}',
                   *STRICT, timeout=TIMEOUT_S)
  assert int(one['processes']) == 1 and int(one['step']) == 3
  p1, p2 = params(one), params(two)
  assert p1.keys() == p2.keys()
  for k in p1:
    np.testing.assert_allclose(p2[k], p1[k], rtol=0, atol=1e-5, err_msg=k)

  # Process 0 alone wrote the summaries; both wrote the checkpoints together.
  files = os.listdir(shared)
  assert sum(f.startswith('events.out.tfevents') for f in files) == 1
  assert 'validation_grid.png' in files
  assert sorted(os.listdir(shared / 'checkpoints')) == ['2', '3']
  restored = run_worker(tmp_path / 'restored.npz', f'--restore_from={shared}',
                        timeout=TIMEOUT_S)
  assert int(restored['restored_step']) == 3 and int(restored['step']) == 3
  pr = params(restored)
  for k in p2:
    np.testing.assert_array_equal(pr[k], p2[k], err_msg=k)
