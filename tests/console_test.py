"""What the command line prints, read as a newcomer reads it: no library
noise at startup, the config one field per line, one line per log step."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_SET_BY_TESTS = (
  'JAX_PLATFORMS',
  'TF_CPP_MIN_LOG_LEVEL',
  'TF_ENABLE_ONEDNN_OPTS',
  'XLA_FLAGS',
)


def clean_env() -> dict[str, str]:
  """The environment of a user's shell: none of what conftest sets."""
  env = {k: v for k, v in os.environ.items() if k not in ENV_SET_BY_TESTS}
  return {**env, 'PYTHONUNBUFFERED': '1'}


@pytest.fixture(scope='module')
def test_run(tmp_path_factory) -> str:
  """stderr and stdout of the GAN's test preset, run as a user runs it."""
  workdir = tmp_path_factory.mktemp('run')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'vi_gen.main',
      '--config=configs/gan.py:test',
      f'--workdir={workdir}',
    ],
    cwd=REPO,
    env=clean_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  return result.stdout + result.stderr


@pytest.mark.slow
def test_startup_prints_no_library_noise(test_run):
  assert 'InitializeLog' not in test_run
  assert 'oneDNN' not in test_run
  assert 'libtpu' not in test_run
  assert 'JAX process 0/1, local devices' in test_run


PREPROCESS_HASH = """
import hashlib
import ml_collections
import numpy as np
import tensorflow as tf
from vi_gen import data

rng = np.random.default_rng(0)
digest = hashlib.sha256()
for i in range(4):
  image = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
  jpeg = tf.io.encode_jpeg(image, quality=90)
  for resize in data.RESIZE_METHODS:
    for crop in (108, 160):
      config = ml_collections.ConfigDict(
        dict(image_size=64, crop_size=crop, resize=resize)
      )
      digest.update(np.asarray(data.celeba_preprocess(config)(jpeg)).tobytes())
print(digest.hexdigest())
"""


@pytest.mark.slow
def test_turning_onednn_off_changes_no_input_pixel():
  """main.py turns TensorFlow's oneDNN ops off to silence their notice:
  that is only right while TF computes the same data without them."""
  digests = [
    subprocess.run(
      [sys.executable, '-c', PREPROCESS_HASH],
      cwd=REPO,
      env={**clean_env(), 'TF_ENABLE_ONEDNN_OPTS': flag},
      capture_output=True,
      text=True,
      timeout=300,
      check=True,
    ).stdout
    for flag in ('0', '1')
  ]
  assert digests[0] == digests[1] and len(digests[0]) == 65
