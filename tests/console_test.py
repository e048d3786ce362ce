"""What the command line prints, read as a newcomer reads it: no library
noise at startup, the config one field per line, one line per log step."""

import logging
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import gan as gan_config
from vi_gen import checkpoint, console, experiment, guards, inference, train
from vi_gen.evaluation import run as eval_run

# Restoring a checkpoint leaves some of Orbax's reads to the garbage
# collector, which reports them as unraisable exceptions.
pytestmark = pytest.mark.filterwarnings(
  'ignore::pytest.PytestUnraisableExceptionWarning'
)

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


@pytest.mark.slow
def test_each_log_step_is_one_line_and_the_config_one_field_per_line(
  test_run,
):
  lines = test_run.splitlines()
  for step in (2, 4):
    logged = [line for line in lines if f'({step}/4)' in line]
    assert len(logged) == 1, test_run
    assert 'it/s, ETA ' in logged[0] and 'd_loss ' in logged[0]
  for noise in ('steps_per_sec', 'work unit notes', 'Hyperparameters'):
    assert noise not in test_run
  assert '  run.num_steps = 4' in lines
  assert max(map(len, lines)) < 500  # The config was one 1,700-char line.


def config_text(config) -> str:
  return '\n'.join(console.config_lines(config))


def test_the_config_shows_only_the_data_fields_that_apply():
  mnist = config_text(gan_config.get_config('mnist'))
  assert 'run.num_steps = 3000' in mnist.splitlines()
  assert f'data.split: {console.BUNDLED_SPLIT}' in mnist
  for field in ('crop_size', 'resize', 'shuffle_buffer'):
    assert f'data.{field}' not in mnist
  toy = config_text(gan_config.get_config('toy'))
  assert "data.name = 'ring8'" in toy
  for field in ('split', 'image_size', 'crop_size', 'source'):
    assert f'data.{field}' not in toy
  celeba = config_text(gan_config.get_config())
  for field in ('split', 'crop_size', 'resize', 'shuffle_buffer'):
    assert f'data.{field} = ' in celeba
  assert 'data.source' not in celeba
  # The top-level fields first, then section by section.
  keys = [line.split(' ')[0].rstrip(':') for line in celeba.splitlines()]
  assert (
    keys.index('seed') < keys.index('data.name') < keys.index('run.num_steps')
  )


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now


def test_the_eta_leaves_out_compilation_checkpoints_and_evaluations():
  clock = FakeClock()
  progress = console.Progress(num_steps=3000, step=0, clock=clock)
  with progress.timed():  # The first iteration compiles for 20 s.
    clock.now += 20.0
  clock.now += 100 * 0.25  # 100 iterations at 4 it/s.
  rate, text = progress.report(100)
  assert rate == pytest.approx(4.0)
  assert text == '3.3% (100/3000), 4 it/s, ETA 12m 05s'
  clock.now += 400 * 0.25
  with progress.timed():  # A checkpoint and an evaluation: 90 s.
    clock.now += 90.0
  clock.now += 500 * 0.25
  rate, text = progress.report(1000)
  assert rate == pytest.approx(4.0)
  assert text == '33.3% (1000/3000), 4 it/s, ETA 8m 20s'


def test_a_progress_line_holds_the_metrics_without_the_norms():
  line = console.progress_line(
    '50.0% (2/4), 4 it/s, ETA 1s',
    {'g_loss': 0.70374, 'd_loss': 1.4223, 'generator_param_norm': 5.3},
  )
  assert line == '50.0% (2/4), 4 it/s, ETA 1s; d_loss 1.422, g_loss 0.7037'


class FixedEvaluator:
  """Stands in for eval_run.Evaluator: fixed metrics, no computation."""

  def __init__(self, config, workdir, method):
    del config, workdir, method

  def __call__(self, state, step: int) -> dict:
    del state
    return {'step': step, 'metrics': {'fid': 1.5, 'kid': float('nan')}}


def test_sample_and_eval_name_the_step_and_eval_keeps_one_events_file(
  tmp_path, caplog, monkeypatch
):
  config = gan_config.get_config('test')
  workdir = str(tmp_path)
  state = experiment.Experiment(config).init().replace(step=jnp.asarray(3))
  manager = checkpoint.create_manager(workdir, 3, True)
  checkpoint.save(manager, state, config)
  manager.wait_until_finished()
  manager.close()
  with caplog.at_level(logging.INFO):
    inference.sample(config, workdir, 4)
  assert '--mode=sample on the checkpoint at step 3' in caplog.text
  monkeypatch.setattr(eval_run, 'Evaluator', FixedEvaluator)
  for _ in range(2):
    assert inference.evaluate(config, workdir)['step'] == 3
  # Nothing new in the training's TensorBoard run; one file in eval/.
  assert not [f for f in os.listdir(workdir) if 'tfevents' in f]
  assert os.listdir(tmp_path / 'eval') == [
    os.path.basename(inference.EVAL_EVENTS)
  ]
  events = event_accumulator.EventAccumulator(str(tmp_path / 'eval'))
  events.Reload()
  assert events.Tags()['scalars'] == ['eval/fid']  # NaN is left out.
  assert [(e.step, e.value) for e in events.Scalars('eval/fid')] == [
    (3, 1.5),
    (3, 1.5),
  ]


def test_a_stopped_run_names_the_checkpoint_it_saved(
  tmp_path, caplog, monkeypatch
):
  def requested(self, step, manager):
    del manager
    self.reason = 'SIGTERM'
    return step == 3

  monkeypatch.setattr(guards.StopRequest, 'requested', requested)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(gan_config.get_config('test'), str(tmp_path))
  assert 'Run stopped early: step 3 of 4 (last checkpoint: step 3)' in (
    caplog.text
  )
