"""The loop end to end: outputs, exact resume, sampling and bad input."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import gan as gan_config
from vi_gen import (
  checkpoint,
  compiler,
  errors,
  experiment,
  inference,
  train,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(num_steps: int = 4, **overrides):
  """The GAN's test preset, `num_steps` long, with top-level `overrides`."""
  config = gan_config.get_config('test')
  config.run.num_steps = num_steps
  config.update(overrides)
  return config


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def assert_trees_equal(a, b):
  for x, y in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_writes_checkpoints_events_and_sample_grids(tmp_path):
  state = train.train_and_evaluate(make_config(), str(tmp_path))
  assert int(state.step) == 4
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '4']
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  pngs = sorted(os.listdir(tmp_path / 'samples'))
  assert pngs == ['step_0000002.png', 'step_0000004.png']
  with open(tmp_path / 'samples' / pngs[-1], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('mode', ['phase', 'lagged'])
def test_resume_gives_the_uninterrupted_result(tmp_path, mode):
  """4 steps straight == 2 steps, stop, the same command for 4 steps.

  Bit-exact on CPU: data, keys and the old generator all come back.
  """
  straight = train.train_and_evaluate(
    make_config(old_generator=mode, ema_decay=0.9), str(tmp_path / 'a')
  )
  train.train_and_evaluate(
    make_config(old_generator=mode, ema_decay=0.9, num_steps=2),
    str(tmp_path / 'b'),
  )
  resumed = train.train_and_evaluate(
    make_config(old_generator=mode, ema_decay=0.9), str(tmp_path / 'b')
  )
  assert int(resumed.step) == 4
  assert_trees_equal(straight, resumed)


def test_checkpoint_round_trip_keeps_the_old_generator(tmp_path):
  config = make_config(num_steps=2)
  state = train.train_and_evaluate(config, str(tmp_path))
  setup = experiment.Experiment(config)
  restored = setup.restore_or_none(str(tmp_path))
  assert_trees_equal(state, restored)
  assert_trees_equal(state.old_params, restored.old_params)
  assert leaves(restored.old_params)  # non-empty


def test_finished_run_is_not_extended_or_repeated(tmp_path):
  config = make_config()
  first = train.train_and_evaluate(config, str(tmp_path))
  mtime = os.path.getmtime(tmp_path / 'checkpoints' / '4')
  again = train.train_and_evaluate(config, str(tmp_path))
  assert int(again.step) == 4
  assert_trees_equal(first, again)
  assert os.path.getmtime(tmp_path / 'checkpoints' / '4') == mtime


def test_sample_mode_is_deterministic_and_in_range(tmp_path):
  config = make_config()
  train.train_and_evaluate(config, str(tmp_path))
  samples = inference.sample(config, str(tmp_path), 20, seed=0)
  assert samples.shape == (20, 28, 28, 1) and samples.dtype == np.float32
  assert samples.min() >= -1 and samples.max() <= 1
  np.testing.assert_array_equal(
    samples, inference.sample(config, str(tmp_path), 20)
  )
  other = inference.sample(config, str(tmp_path), 20, seed=1)
  assert not np.array_equal(samples, other)


def test_sample_mode_without_checkpoint_says_train_first(tmp_path):
  with pytest.raises(errors.CheckpointError, match='train first'):
    inference.sample(make_config(), str(tmp_path), 4)


def snapshot(path):
  return {
    os.path.join(root, f): os.path.getmtime(os.path.join(root, f))
    for root, _, files in os.walk(path)
    for f in files
  }


@pytest.mark.parametrize(
  'overrides,message',
  [
    (dict(reg_weight=0.0), 'reg_weight: checkpoint 5.0, now 0.0'),
    (dict(latent_dim=4), 'latent_dim'),
    (dict(model='vae'), "checkpoint of model 'gan'"),
  ],
)
def test_checkpoint_of_another_experiment_is_refused_untouched(
  tmp_path, overrides, message
):
  train.train_and_evaluate(make_config(num_steps=2), str(tmp_path))
  before = snapshot(tmp_path)
  config = make_config()
  for name, value in overrides.items():
    config[name] = value
  with pytest.raises(errors.VIGenError, match=message):
    checkpoint.restore_latest(str(tmp_path), config, None)
  assert snapshot(tmp_path) == before


def test_incompatible_shapes_are_refused_untouched(tmp_path):
  train.train_and_evaluate(make_config(num_steps=2), str(tmp_path))
  before = snapshot(tmp_path)
  config = make_config()
  setup = experiment.Experiment(config)
  abstract = checkpoint.abstract_like(
    jax.eval_shape(setup.method.init, setup.init_key), setup.replicated
  )
  # Same config, but a target whose generator is wider (as after a code change).
  abstract = abstract.replace(
    params={
      **abstract.params,
      'generator': jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
          (*x.shape[:-1], x.shape[-1] + 1), x.dtype, sharding=x.sharding
        ),
        abstract.params['generator'],
      ),
    }
  )
  with pytest.raises(errors.CheckpointError, match='Cannot restore'):
    checkpoint.restore_latest(str(tmp_path), config, abstract)
  assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
  'name,value,message',
  [
    ('run.num_steps', 0, 'run.num_steps must be >= 1'),
    ('batch_size', 6, 'not divisible by the 4 devices'),
    ('run.log_every_steps', -1, 'run.log_every_steps must be >= 1'),
    ('ema_decay', 1.0, 'ema_decay must be in'),
    ('model', 'nope', "Unknown model 'nope'"),
    ('g_steps', 0, 'g_steps must be >= 1'),
    ('old_generator', 'old', 'old_generator must be one of'),
  ],
)
def test_invalid_values_fail_before_anything_is_written(
  tmp_path, name, value, message
):
  config = make_config()
  config.update_from_flattened_dict({name: value})
  with pytest.raises(errors.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
  'name,value,message',
  [
    ('lr', -1e-3, 'optim.lr must be > 0'),
    ('b1', 1.0, r'optim.b1 must be in \[0, 1\)'),
  ],
)
def test_invalid_optimizer_values(tmp_path, name, value, message):
  config = make_config()
  config.optim[name] = value
  with pytest.raises(errors.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
  'name,value,message',
  [
    ('name', 'cifar', "Unknown data.name 'cifar'"),
    ('source', 'web', "data.source must be 'bundled' or 'tfds'"),
    ('crop_size', 200, 'data.crop_size must be in'),
  ],
)
def test_invalid_data_values(tmp_path, name, value, message):
  config = make_config()
  config.data[name] = value
  with pytest.raises(errors.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def run_main(*args, cwd=REPO):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run(
    [sys.executable, '-m', 'vi_gen.main', *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_cli_errors_name_the_problem(tmp_path):
  """Bad input from the command line: a message, no traceback, no files."""
  cases = [
    (['--config=configs/gan.py:test', '--config.lrr=1'], 'lrr'),
    (['--config=configs/gan.py:test', '--config.batch_size=abc'], 'batch_size'),
    (['--config=configs/gan.py:test', '--config.g_steps=0'], 'g_steps must be'),
    (
      ['--config=configs/gan.py', f'--config.run.data_dir={tmp_path}'],
      'celeb_a',
    ),
  ]
  for args, message in cases:
    result = run_main(*args, f'--workdir={tmp_path}/run')
    assert result.returncode != 0, args
    assert message in result.stderr, (args, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr, (args, result.stderr[-2000:])
    assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_cli_trains_then_samples(tmp_path):
  workdir, output = tmp_path / 'run', tmp_path / 'out' / 's.npy'
  result = run_main('--config=configs/gan.py:test', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  result = run_main(
    '--config=configs/gan.py:test',
    f'--workdir={workdir}',
    '--mode=sample',
    '--num_samples=10',
    f'--output={output}',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  samples = np.load(output)
  assert samples.shape == (10, 28, 28, 1) and samples.dtype == np.float32


def test_default_workdir_is_named_after_model_and_preset():
  assert (
    experiment.default_workdir(gan_config.get_config('mnist'))
    == 'runs/gan_mnist'
  )
  assert experiment.default_workdir(gan_config.get_config()) == 'runs/gan'


def test_the_iteration_compiles_once_per_run(tmp_path, monkeypatch):
  """No retrace after the first step (a changed shape, dtype or a Python
  value in the step would compile again, costing seconds per step)."""
  import chex

  from vi_gen.methods.gan import GAN

  monkeypatch.setattr(
    GAN, 'iteration', chex.assert_max_traces(GAN.iteration, n=1)
  )
  config = make_config(num_steps=6)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 6


def test_the_iteration_is_compiled_with_the_platform_options(
  tmp_path, monkeypatch
):
  """The loop passes the options for the method's `cpu_library_fusions`
  (the GAN's: `compiler.CONVOLUTIONAL`) to XLA: an option value that XLA
  does not know fails the compilation of the first step."""
  bad = {'xla_cpu_experimental_ynn_fusion_type': 'NO_SUCH_TYPE'}
  monkeypatch.setattr(
    compiler,
    'options',
    lambda fusions: bad if fusions == compiler.CONVOLUTIONAL else None,
  )
  with pytest.raises(jax.errors.JaxRuntimeError, match='NO_SUCH_TYPE'):
    train.train_and_evaluate(make_config(num_steps=1), str(tmp_path))


def test_resume_under_the_other_conv_lowering(tmp_path):
  """run.conv_lowering may change on resume (say a run started on a CPU
  continues on a GPU): the parameters sit at the same paths under both, and
  the layers compute the same function."""
  straight = train.train_and_evaluate(make_config(), str(tmp_path / 'a'))
  config = make_config(num_steps=2)
  config.run.conv_lowering = 'phase'
  train.train_and_evaluate(config, str(tmp_path / 'b'))
  config = make_config()
  config.run.conv_lowering = 'native'
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))
  assert int(resumed.step) == 4
  for x, y in zip(leaves(straight), leaves(resumed), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_a_workdir_that_cannot_be_created_is_one_error():
  """os.access says yes to root even where nothing can be created (/proc):
  the failing mkdir is a WorkdirError, not a traceback."""
  with pytest.raises(errors.WorkdirError, match='Choose another --workdir'):
    train.train_and_evaluate(make_config(), '/proc/vi_gen_no_such_workdir')
