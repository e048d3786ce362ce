"""A full disk: one line that says so, the last good checkpoint kept, no
partly written step left, and the same command resumes once there is room.

On a real 4 MB tmpfs where the machine allows mounting one (root), else on
an injected ENOSPC: the space check before each save, and a write that
runs out of space anyway (another process filled the disk meanwhile).
"""

import errno
import os
import subprocess

import numpy as np
import pytest

from configs import gan as gan_config
from vi_gen import checkpoint, errors, train

SMALL_DISK_BYTES = 4 << 20
# A rerun restores a checkpoint; Orbax leaves some of its reads to the
# garbage collector, which reports them as unraisable exceptions.
pytestmark = pytest.mark.filterwarnings(
  'ignore::pytest.PytestUnraisableExceptionWarning'
)


def config(num_steps: int):
  """The GAN test preset (checkpoints of about 0.2 MB every 2 steps)."""
  config = gan_config.get_config('test')
  config.run.num_steps = num_steps
  return config


def checkpoint_dirs(workdir) -> list[str]:
  return sorted(os.listdir(checkpoint.checkpoint_dir(str(workdir))))


@pytest.fixture
def small_disk(tmp_path):
  """A 4 MB tmpfs at tmp_path/disk, unmounted afterwards."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  mount = ['mount', '-t', 'tmpfs', '-o', f'size={SMALL_DISK_BYTES}']
  done = subprocess.run([*mount, 'tmpfs', str(disk)], capture_output=True)
  if done.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {done.stderr.decode().strip()}')
  yield disk
  subprocess.run(['umount', '-l', str(disk)], check=True)


def fill(disk, leave_bytes: int):
  """Fills `disk` up to `leave_bytes` free; returns the filling file."""
  free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
  path = disk / 'fill'
  with open(path, 'wb') as f:
    f.write(np.zeros(max(free - leave_bytes, 0), np.uint8).tobytes())
  return path


def test_space_check_refuses_before_writing(small_disk):
  fill(small_disk, 400 << 10)
  workdir = small_disk / 'run'
  with pytest.raises(errors.DiskFullError) as raised:
    train.train_and_evaluate(config(4), str(workdir))
  message = str(raised.value)
  assert '\n' not in message
  assert 'Disk full: no room for the checkpoint of step 2' in message
  assert 'MB free, a checkpoint needs about' in message
  assert checkpoint_dirs(workdir) == []


def test_a_write_that_runs_out_keeps_the_last_good_step(
  small_disk, monkeypatch
):
  """The space check passes (the disk fills during the write): the step
  being written is removed, step 2 stays, and once there is room the same
  command resumes from step 2 and finishes."""
  workdir = small_disk / 'run'
  train.train_and_evaluate(config(2), str(workdir))
  filling = fill(small_disk, 100 << 10)  # Less than one checkpoint.
  monkeypatch.setattr(checkpoint, 'DISK_MARGIN_BYTES', -(1 << 30))
  with pytest.raises(errors.DiskFullError) as raised:
    train.train_and_evaluate(config(8), str(workdir))
  assert 'the last good checkpoint (step 2) is kept' in str(raised.value)
  assert checkpoint_dirs(workdir) == ['2']
  monkeypatch.undo()
  filling.unlink()
  state = train.train_and_evaluate(config(8), str(workdir))
  assert int(state.step) == 8
  assert checkpoint_dirs(workdir)[-1] == '8'


def test_enospc_from_any_layer_is_recognised():
  nested = ValueError('wrapped')
  nested.__cause__ = OSError(errno.ENOSPC, 'No space left on device')
  assert checkpoint.is_disk_full(nested)
  assert checkpoint.is_disk_full(
    ValueError('RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database')
  )
  assert not checkpoint.is_disk_full(OSError(errno.EACCES, 'Permission'))


def test_space_check_without_a_small_disk(tmp_path, monkeypatch):
  """Where no tmpfs can be mounted: the disk reports 1 kB free."""
  usage = checkpoint.shutil.disk_usage(tmp_path)
  monkeypatch.setattr(
    checkpoint.shutil,
    'disk_usage',
    lambda path: usage._replace(free=1024),
  )
  with pytest.raises(errors.DiskFullError, match='0.0 MB free'):
    train.train_and_evaluate(config(2), str(tmp_path / 'run'))
  assert checkpoint_dirs(tmp_path / 'run') == []
