"""What a run says and refuses: the end-of-run block, a second run in the
same workdir, a stale lock, and a cross-field eval rule checked up front."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from configs import gan as gan_config
from configs import vae as vae_config
from vi_gen import errors, guards, train, validation

# A rerun restores a checkpoint; Orbax leaves some of its reads to the
# garbage collector, which reports them as unraisable exceptions.
pytestmark = pytest.mark.filterwarnings(
  'ignore::pytest.PytestUnraisableExceptionWarning'
)


def test_a_run_ends_with_where_everything_went_and_a_rerun_says_complete(
  tmp_path, caplog
):
  config = gan_config.get_config('test')
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, str(tmp_path))
  end = [r.getMessage() for r in caplog.records if 'Run complete' in r.message]
  assert len(end) == 1, caplog.text
  assert 'step 4 of 4 (last checkpoint: step 4)' in end[0]
  assert f'workdir: {tmp_path}' in end[0]
  assert 'samples/step_*.png' in end[0]
  assert 'Last metrics: ' in end[0] and 'd_loss' in end[0]
  assert not os.path.exists(tmp_path / guards.WorkdirLock.NAME)
  caplog.clear()
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, str(tmp_path))
  assert 'Run complete: step 4 of 4' in caplog.text


def write_lock(workdir, host, pid):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, guards.WorkdirLock.NAME), 'w') as f:
    json.dump({'host': host, 'pid': pid, 'started': 'earlier'}, f)


def test_a_second_run_in_the_workdir_is_refused_naming_the_first(tmp_path):
  # A live process on this host holds the lock.
  holder = subprocess.Popen(
    [sys.executable, '-c', 'import time; time.sleep(60)']
  )
  try:
    write_lock(tmp_path, socket.gethostname(), holder.pid)
    with pytest.raises(errors.WorkdirError) as refused:
      train.train_and_evaluate(gan_config.get_config('test'), str(tmp_path))
    message = str(refused.value)
    assert f'process {holder.pid} on host {socket.gethostname()}' in message
    assert 'delete' in message and guards.WorkdirLock.NAME in message
    assert not os.path.exists(tmp_path / 'checkpoints')
  finally:
    holder.kill()
    holder.wait()
  # The same lock once its process is gone: taken over, the run trains.
  state = train.train_and_evaluate(gan_config.get_config('test'), str(tmp_path))
  assert int(state.step) == 4


def test_a_lock_of_another_host_is_refused(tmp_path):
  write_lock(tmp_path, 'another-host', 1)
  lock = guards.WorkdirLock(str(tmp_path))
  with pytest.raises(errors.WorkdirError, match='on host another-host'):
    lock.__enter__()


def test_iwae_samples_that_the_chunks_do_not_divide_are_refused_up_front():
  config = vae_config.get_config('test')
  config.run.eval_every_steps = 2
  config.eval.iwae_samples = 12  # The test preset's chunk is 8.
  with pytest.raises(errors.ConfigError, match='multiple of eval.iwae_chunk'):
    validation.check_config(config)
  config.eval.iwae_samples = 16
  validation.check_config(config)
  config.eval.iwae_samples = 4  # Fewer than a chunk: one chunk of 4.
  validation.check_config(config)
