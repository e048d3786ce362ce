"""Reliability, proved by breaking runs on purpose (issue #7).

Real `python -m vi_gen.main` processes are killed (SIGKILL), preempted
(SIGTERM), fed NaNs, given corrupt checkpoints and bad input; a restarted
run must end bit for bit where an uninterrupted run ends.

The subprocess scenarios run once, in the module fixture `runs`, in two lanes
at a time: CI has two cores and each process is mostly single-threaded
imports and compiles. Each lane keeps its own JAX compilation cache, so a
restart costs its imports rather than another compile; the determinism rerun
compiles afresh, which also shows that the cache hides nothing.
"""

import concurrent.futures
import dataclasses
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import aae, ali, em, gan, vae
from vi_gen import errors, guards, inference, train, validation
from vi_gen.state import TrainState

# When a restore fails on a truncated file, Orbax leaves its other reads to
# the garbage collector, which reports them as unraisable exceptions.
pytestmark = pytest.mark.filterwarnings(
  'ignore::pytest.PytestUnraisableExceptionWarning'
)
REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = {'gan': gan, 'vae': vae, 'aae': aae, 'ali': ali, 'em': em}
TIMEOUT_S = 300
# SIGTERM to exit: the iteration under way, then one checkpoint write.
STOP_WITHIN_S = 20


def run_control(checkpoint_every: int = 1, log_every: int = 4) -> dict:
  """16 iterations; pictures only at the end. A checkpoint after every
  iteration puts a kill inside an iteration, an async save or Orbax's
  garbage collection, wherever the run happens to be."""
  return {
    'run.num_steps': 16,
    'run.checkpoint_every_steps': checkpoint_every,
    'run.log_every_steps': log_every,
    'run.sample_every_steps': 100,
    'run.keep_checkpoints': 3,
  }


@dataclasses.dataclass(frozen=True)
class Chain:
  """A run interrupted in turn by each (signal, step), then run to the end.

  SIGKILL comes once the workdir holds a checkpoint of that step or later;
  SIGTERM once the log reports that step or a later one (so that it lands
  between the checkpoint steps).
  """

  model: str
  experiment: dict
  control: dict
  interruptions: tuple[tuple[signal.Signals, int], ...]

  def args(self, **control) -> tuple[str, ...]:
    fields = {**self.experiment, **self.control, **control}
    return (
      f'--config=configs/{self.model}.py:test',
      *(f'--config.{k}={v}' for k, v in fields.items()),
    )

  def config(self):
    config = CONFIGS[self.model].get_config('test')
    for name, value in {**self.experiment, **self.control}.items():
      set_field(config, name, value)
    return config


KILL, TERM, INT = signal.SIGKILL, signal.SIGTERM, signal.SIGINT
CHAINS = {
  'gan_phase': Chain(
    'gan',
    {'old_generator': 'phase', 'ema_decay': 0.9},
    run_control(),
    ((KILL, 3), (KILL, 9)),
  ),
  'gan_lagged': Chain(
    'gan',
    {'old_generator': 'lagged', 'ema_decay': 0.9},
    run_control(checkpoint_every=3, log_every=1),
    ((KILL, 3), (INT, 7), (TERM, 10)),
  ),
  'vae': Chain(
    'vae',
    {'vae.learn_variance': True, 'ema_decay': 0.9},
    run_control(),
    ((KILL, 4), (KILL, 10)),
  ),
  'ali': Chain(
    'ali',
    {
      'ali.complete': True,
      'ali.encoder_sigma': 0.1,
      'ali.generator_sigma': 0.1,
      'g_steps': 2,
    },
    run_control(),
    ((KILL, 4), (KILL, 10)),
  ),
}


def set_field(config, name: str, value) -> None:
  *parents, leaf = name.split('.')
  for parent in parents:
    config = config[parent]
  config[leaf] = value


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  path = workdir / 'checkpoints'
  names = os.listdir(path) if path.is_dir() else []
  return sorted(int(n) for n in names if n.isdigit())


def latest_state(workdir: pathlib.Path) -> tuple[int, dict]:
  step = max(checkpoint_steps(workdir))
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.restore(workdir / 'checkpoints' / str(step) / 'state')
  return step, jax.device_get(tree)


def assert_same_state(expected: dict, actual: dict) -> None:
  """Every array of the train state, bit for bit."""
  flat_e, tree_e = jax.tree_util.tree_flatten_with_path(expected)
  flat_a, tree_a = jax.tree_util.tree_flatten_with_path(actual)
  assert tree_e == tree_a
  for (path, e), (_, a) in zip(flat_e, flat_a, strict=True):
    np.testing.assert_array_equal(e, a, err_msg=jax.tree_util.keystr(path))


def snapshot(path: pathlib.Path) -> dict[str, float]:
  return {
    os.path.join(root, f): os.path.getmtime(os.path.join(root, f))
    for root, _, files in os.walk(path)
    for f in files
  }


def truncate_largest_file(step_dir: pathlib.Path) -> None:
  files = [p for p in step_dir.rglob('*') if p.is_file()]
  largest = max(files, key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)


@dataclasses.dataclass
class Result:
  workdir: pathlib.Path
  returncode: int
  log: str
  checkpoints: list[int]  # Step directories once the process had exited.
  seconds: float = 0.0  # From the signal to the exit.

  def tail(self) -> str:
    return self.log[-4000:]


class Lab:
  """Runs `python -m vi_gen.main` as a user, or a scheduler, would."""

  def __init__(self, root: pathlib.Path, name: str):
    self.root = root
    self.name = name
    self.cache = root / f'jax_cache_{name}'
    self.count = 0

  def _start(
    self, args, workdir, cache: bool
  ) -> tuple[subprocess.Popen, pathlib.Path]:
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'}
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
    if cache:
      env['JAX_COMPILATION_CACHE_DIR'] = str(self.cache)
      env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
    self.count += 1
    log_path = self.root / f'{self.name}_{self.count}.log'
    with open(log_path, 'w') as log:
      process = subprocess.Popen(
        [sys.executable, '-m', 'vi_gen.main', *args, f'--workdir={workdir}'],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # As in a terminal: SIGINT (Ctrl-C) not ignored, whatever the test
        # runner's worker does with it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
      )
    return process, log_path

  def run(self, args, workdir, cache: bool = True) -> Result:
    process, log_path = self._start(args, workdir, cache)
    process.wait(timeout=TIMEOUT_S)
    return Result(
      workdir,
      process.returncode,
      log_path.read_text(),
      checkpoint_steps(workdir),
    )

  def interrupt(self, args, workdir, sig: signal.Signals, step: int) -> Result:
    """Sends `sig` once the run has reached `step` (see `Chain`)."""
    process, log_path = self._start(args, workdir, cache=True)

    def reached() -> bool:
      if sig == signal.SIGKILL:
        return max(checkpoint_steps(workdir), default=-1) >= step
      # clu's ReportProgress: '..., 50.0% (8/16), ETA: ...'.
      logged = re.findall(r'\((\d+)/\d+\)', log_path.read_text())
      return max(map(int, logged), default=-1) >= step

    deadline = time.time() + TIMEOUT_S
    while process.poll() is None and not reached():
      if time.time() > deadline:
        process.kill()
        raise TimeoutError(f'{args} never reached step {step}.')
      time.sleep(0.01)
    sent = time.time()
    if process.poll() is None:
      process.send_signal(sig)
    process.wait(timeout=TIMEOUT_S)
    return Result(
      workdir,
      process.returncode,
      log_path.read_text(),
      checkpoint_steps(workdir),
      time.time() - sent,
    )


@dataclasses.dataclass
class ChainRun:
  reference: Result
  interrupted: list[Result]
  final: Result


def run_chain(lab: Lab, name: str) -> ChainRun:
  args = CHAINS[name].args()
  reference = lab.run(args, lab.root / f'{name}_ref')
  interrupted = [
    lab.interrupt(args, lab.root / name, sig, step)
    for sig, step in CHAINS[name].interruptions
  ]
  return ChainRun(reference, interrupted, lab.run(args, lab.root / name))


def run_determinism(lab: Lab) -> tuple[Result, Result]:
  """The GAN reference again, compiled afresh; and with another seed."""
  args = CHAINS['gan_phase'].args()
  again = lab.run(args, lab.root / 'again', cache=False)
  seed_1 = lab.run((*args, '--config.seed=1'), lab.root / 'seed_1')
  return again, seed_1


def run_divergence(lab: Lab) -> Result:
  """NaN batch at iteration 7; checked every 2, saved every 4 iterations."""
  args = CHAINS['gan_phase'].args(
    **{
      'run.checkpoint_every_steps': 4,
      'run.log_every_steps': 2,
      'debug.nan_at_step': 7,
    }
  )
  return lab.run(args, lab.root / 'divergence')


def run_corrupt(lab: Lab) -> Result:
  """The GAN reference with its last two checkpoints (15, 16) unreadable."""
  workdir = lab.root / 'corrupt'
  shutil.copytree(lab.root / 'gan_phase_ref', workdir)
  truncate_largest_file(workdir / 'checkpoints' / '16')
  os.remove(workdir / 'checkpoints' / '15' / 'commit_success.txt')
  return lab.run(CHAINS['gan_phase'].args(), workdir)


def run_other_model(lab: Lab) -> tuple[Result, bool]:
  """The VAE pointed at the GAN reference's workdir; was anything changed?"""
  workdir = lab.root / 'gan_phase_ref'
  before = snapshot(workdir)
  result = lab.run(('--config=configs/vae.py:test',), workdir)
  return result, snapshot(workdir) != before


def run_unwritable(lab: Lab) -> Result:
  in_the_way = lab.root / 'a_file'
  in_the_way.write_text('')
  return lab.run(('--config=configs/gan.py:test',), in_the_way / 'run')


LANES = {
  'a': (
    ('gan_phase', lambda lab: run_chain(lab, 'gan_phase')),
    ('determinism', run_determinism),
    ('divergence', run_divergence),
    ('corrupt', run_corrupt),
    ('other_model', run_other_model),
    ('vae', lambda lab: run_chain(lab, 'vae')),
  ),
  'b': (
    ('ali', lambda lab: run_chain(lab, 'ali')),
    ('gan_lagged', lambda lab: run_chain(lab, 'gan_lagged')),
    ('unwritable', run_unwritable),
  ),
}


class Outcomes(dict):
  """Scenario name -> its result, or the exception it raised."""

  def result(self, name: str):
    """The scenario's result; its exception is raised in the test."""
    outcome = self[name]
    if isinstance(outcome, Exception):
      raise outcome
    return outcome


def run_lane(lab: Lab, scenarios) -> dict:
  outcomes = {}
  for name, scenario in scenarios:
    try:
      outcomes[name] = scenario(lab)
    except Exception as e:  # Reported by the tests that use it.
      outcomes[name] = e
  return outcomes


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> Outcomes:
  root = tmp_path_factory.mktemp('reliability')
  outcomes = Outcomes()
  with concurrent.futures.ThreadPoolExecutor(len(LANES)) as pool:
    lanes = [
      pool.submit(run_lane, Lab(root, name), scenarios)
      for name, scenarios in LANES.items()
    ]
    for lane in lanes:
      outcomes.update(lane.result())
  return outcomes


@pytest.mark.slow
@pytest.mark.parametrize('name', CHAINS)
def test_killed_and_restarted_run_ends_bit_for_bit_as_uninterrupted(runs, name):
  run = runs.result(name)
  assert run.reference.returncode == 0, run.reference.tail()
  for (sig, _), result in zip(
    CHAINS[name].interruptions, run.interrupted, strict=True
  ):
    # Killed mid-run, or (SIGTERM) stopped cleanly: not finished early.
    assert result.returncode == (-sig if sig == KILL else 0), result.tail()
  assert run.final.returncode == 0, run.final.tail()
  assert 'Resumed from the checkpoint at step' in run.final.log
  # Saves cut short by a kill left no temporary directories behind.
  names = os.listdir(run.final.workdir / 'checkpoints')
  assert all(n.isdigit() for n in names), names
  step, expected = latest_state(run.reference.workdir)
  resumed_step, resumed = latest_state(run.final.workdir)
  assert step == resumed_step == 16
  assert_same_state(expected, resumed)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_exits_0(runs):
  run = runs.result('gan_lagged')
  term = run.interrupted[-1]
  assert term.returncode == 0, term.tail()
  assert term.seconds < STOP_WITHIN_S, term.seconds
  stopped = int(re.search(r'Stopped by SIGTERM at step (\d+)', term.log)[1])
  # Between the 3-step checkpoints, wherever SIGTERM came: saved there.
  assert stopped >= 10 and max(term.checkpoints) == stopped, term.checkpoints
  assert f'Resumed from the checkpoint at step {stopped}.' in run.final.log


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_exits_0_as_sigterm_does(runs):
  run = runs.result('gan_lagged')
  interrupt = run.interrupted[1]
  assert interrupt.returncode == 0, interrupt.tail()
  assert 'KeyboardInterrupt' not in interrupt.log
  stopped = int(re.search(r'Stopped by SIGINT at step (\d+)', interrupt.log)[1])
  # Between the 3-step checkpoints: saved where Ctrl-C came.
  assert stopped >= 7 and max(interrupt.checkpoints) == stopped
  assert (
    f'Resumed from the checkpoint at step {stopped}.' in run.interrupted[2].log
  )


@pytest.mark.slow
def test_same_seed_is_bit_identical_and_another_seed_is_not(runs):
  again, seed_1 = runs.result('determinism')
  assert again.returncode == 0, again.tail()
  assert seed_1.returncode == 0, seed_1.tail()
  _, reference = latest_state(runs.result('gan_phase').reference.workdir)
  assert_same_state(reference, latest_state(again.workdir)[1])
  other = latest_state(seed_1.workdir)[1]
  for a, b in zip(
    jax.tree.leaves(reference['params']),
    jax.tree.leaves(other['params']),
    strict=True,
  ):
    assert not np.array_equal(a, b)


@pytest.mark.slow
def test_nan_stops_the_run_with_the_step_range_and_keeps_the_checkpoint(
  runs,
):
  result = runs.result('divergence')
  assert result.returncode == 1, result.tail()
  # Checked at step 6 (fine) and 8: the range is [7, 8], the checkpoint
  # of step 4 is the last one, and nothing of steps 7-8 was saved.
  assert re.search(
    r'vi_gen: error: NaN or inf within steps \[7, 8\] in .*d_loss.*'
    r'the last checkpoint, of step 4, is intact',
    result.log,
  ), result.tail()
  assert 'Traceback' not in result.log
  assert result.checkpoints == [4]
  _, state = latest_state(result.workdir)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


@pytest.mark.slow
def test_unreadable_checkpoints_are_set_aside_and_training_goes_on(runs):
  result = runs.result('corrupt')
  assert result.returncode == 0, result.tail()
  workdir = result.workdir
  for step in (16, 15):
    moved = workdir / 'checkpoints_unreadable' / str(step)
    assert f'Moved the unreadable checkpoint of step {step} to {moved}' in (
      result.log
    )
    assert (moved / 'state').is_dir()  # Moved whole, not deleted.
  assert 'Resumed from the checkpoint at step 14.' in result.log
  # 15 and 16 were saved again; 14, the good one, was kept.
  assert result.checkpoints == [14, 15, 16]
  _, expected = latest_state(runs.result('gan_phase').reference.workdir)
  assert_same_state(expected, latest_state(workdir)[1])


@pytest.mark.slow
@pytest.mark.parametrize(
  'scenario,message',
  [
    ('other_model', "is a checkpoint of model 'gan', but this config trains"),
    ('unwritable', 'a_file exists and is not a directory'),
  ],
)
def test_bad_input_on_the_command_line_is_one_clear_line(
  runs, scenario, message
):
  result = runs.result(scenario)
  if scenario == 'other_model':
    result, changed = result
    assert not changed
  else:
    assert not result.workdir.exists()
  assert result.returncode == 1, result.tail()
  lines = [
    line for line in result.log.splitlines() if line.startswith('vi_gen: error')
  ]
  assert len(lines) == 1 and message in lines[0], result.tail()
  assert str(result.workdir) in lines[0]  # Names the path.
  assert 'Traceback' not in result.log


def damaged_copy(runs, tmp_path, damage: dict) -> pathlib.Path:
  """A copy of the GAN reference with damage[step](step_dir) applied."""
  workdir = tmp_path / 'run'
  shutil.copytree(runs.result('gan_phase').reference.workdir, workdir)
  for step, damage_fn in damage.items():
    damage_fn(workdir / 'checkpoints' / str(step))
  return workdir


def empty_directory(step_dir: pathlib.Path) -> None:
  shutil.rmtree(step_dir)
  step_dir.mkdir()


@pytest.mark.slow
def test_no_readable_checkpoint_stops_and_changes_nothing(runs, tmp_path):
  workdir = damaged_copy(
    runs,
    tmp_path,
    {
      14: empty_directory,
      15: lambda d: os.remove(d / 'commit_success.txt'),
      16: truncate_largest_file,
    },
  )
  before = snapshot(workdir)
  with pytest.raises(errors.CheckpointError) as raised:
    train.train_and_evaluate(CHAINS['gan_phase'].config(), str(workdir))
  message = str(raised.value)
  assert 'can be read' in message and 'does not train from scratch' in message
  for step in (14, 15, 16):
    assert f'step {step}: ' in message
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_another_experiment_behind_an_unreadable_checkpoint_is_refused(
  runs, tmp_path
):
  """A config mismatch is not corruption: nothing is moved aside."""
  workdir = damaged_copy(runs, tmp_path, {16: truncate_largest_file})
  before = snapshot(workdir)
  config = CHAINS['gan_phase'].config()
  config.latent_dim = 4
  with pytest.raises(errors.CheckpointError, match='different experiment'):
    train.train_and_evaluate(config, str(workdir))
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_sampling_skips_an_unreadable_checkpoint_and_changes_nothing(
  runs, tmp_path
):
  workdir = damaged_copy(runs, tmp_path, {16: truncate_largest_file})
  before = snapshot(workdir)
  samples = inference.sample(CHAINS['gan_phase'].config(), str(workdir), 4)
  assert samples.shape == (4, 28, 28, 1) and np.isfinite(samples).all()
  assert snapshot(workdir) == before


def _test(model: str):
  return CONFIGS[model].get_config('test')


BAD_VALUES = [
  ('gan', 'seed', -1, r'seed must be an integer in \[0, 2\*\*63\)'),
  ('gan', 'seed', None, 'seed must be set'),
  ('gan', 'run.num_steps', True, r'num_steps must be >= 1 \(an integer\)'),
  ('gan', 'batch_size', 0, 'batch_size must be >= 1'),
  ('gan', 'batch_size', 10_004, 'larger than the dataset'),
  ('gan', 'run.checkpoint_every_steps', 0, 'checkpoint_every_steps must be'),
  ('gan', 'run.sample_every_steps', -5, 'sample_every_steps must be'),
  ('gan', 'run.keep_checkpoints', 0, 'keep_checkpoints must be >= 1'),
  ('gan', 'run.num_grid_samples', 0, 'num_grid_samples must be >= 1'),
  ('gan', 'optim.lr', math.nan, 'optim.lr must be finite'),
  ('gan', 'optim.lr', math.inf, 'optim.lr must be finite'),
  ('gan', 'optim.b2', -0.1, r'optim.b2 must be in \[0, 1\)'),
  ('gan', 'optim.eps', 0.0, 'optim.eps must be > 0'),
  ('gan', 'data.image_size', 0, 'data.image_size must be >= 1'),
  ('gan', 'data.shuffle_buffer', 0, 'data.shuffle_buffer must be >= 1'),
  ('gan', 'data.resize', 'cubic', 'data.resize must be one of'),
  ('gan', 'data.split', '', 'data.split must name a TFDS split'),
  ('gan', 'data.crop_size', 0, r'data.crop_size must be in \(0, 178\]'),
  ('gan', 'data.name', 'ring8', 'Only mnist is bundled'),
  ('gan', 'run.data_dir', None, 'run.data_dir must be set'),
  ('gan', 'ema_decay', math.nan, 'ema_decay must be finite'),
  ('gan', 'debug.nan_at_step', -1, 'debug.nan_at_step must be'),
  ('gan', 'model', 'vae', "model 'vae' needs"),
  ('gan', 'latent_dim', 0, r'latent_dim must be >= 1 \(an integer\)'),
  ('gan', 'latent_dim', True, r'latent_dim must be >= 1 \(an integer\)'),
  ('gan', 'network.g_widths', (16, 0), 'network.g_widths must be a tuple'),
  # The command line lets any text into a tuple: --config.network.g_widths=a
  ('gan', 'network.g_widths', ('a',), 'network.g_widths must be a tuple'),
  ('gan', 'network.d_widths', (8, None), 'network.d_widths must be set'),
  ('gan', 'network.kernel_size', 0, 'network.kernel_size must be'),
  ('ali', 'network.compute_dtype', 'float16', 'network.compute_dtype must be'),
  ('gan', 'network.g_widths', (16, 8, 8), r'divisible by 2\*\*len'),
  ('gan', 'reg_weight', -1.0, 'reg_weight must be >= 0'),
  ('gan', 'reg_weight', math.inf, 'reg_weight must be finite'),
  ('gan', 'd_steps', 0, 'd_steps and g_steps must be >= 1'),
  ('gan', 'g_steps', 1, "old_generator='phase' with g_steps=1"),
  ('vae', 'vae.likelihood', 'poisson', 'vae.likelihood must be one of'),
  ('vae', 'vae.recon_logvar', math.nan, 'vae.recon_logvar must be finite'),
  ('vae', 'network.e_widths', (8, -16), 'network.e_widths must be a tuple'),
  ('aae', 'aae.mode', 'both', 'aae.mode must be one of'),
  ('aae', 'aae.recon_weight', 0.0, 'aae.recon_weight must be > 0'),
  ('ali', 'ali.variant', 'wgan', 'ali.variant must be one of'),
  ('ali', 'ali.encoder_sigma', -0.1, 'must be >= 0'),
  ('ali', 'ali.complete', True, 'ali.complete needs Gaussian sides'),
  ('em', 'covariance_type', 'tied', 'covariance_type'),
  ('em', 'num_components', -1, 'num_components must be >= 1'),
  ('em', 'ridge', -1.0, 'ridge must be >= 0'),
  ('gan', 'run.eval_every_steps', -1, 'run.eval_every_steps must be an int'),
  ('gan', 'run.conv_lowering', 'cudnn', 'run.conv_lowering must be one of'),
  ('gan', 'eval.num_samples', 0, 'eval.num_samples must be >= 1'),
  ('gan', 'eval.kid_subset_size', 1, 'eval.kid_subset_size must be >= 2'),
  ('gan', 'eval.is_splits', 10_001, 'eval.is_splits=10001 must be at most'),
  ('gan', 'eval.iwae_samples', True, 'eval.iwae_samples must be >= 1'),
  ('gan', 'eval.mmd_bandwidth', -1.0, 'eval.mmd_bandwidth must be >= 0'),
  ('gan', 'eval.metrics', ('fid',), "Unknown eval.metrics entry 'fid'"),
  ('gan', 'eval.metrics', ('modes',), "'modes' does not apply"),
  ('gan', 'eval.metrics', ('inception',), 'inception_weights is empty'),
]


@pytest.mark.parametrize('model,name,value,message', BAD_VALUES)
def test_bad_values_are_refused_before_anything_is_written(
  tmp_path, model, name, value, message
):
  config = _test(model)
  set_field(config, name, value)
  with pytest.raises(errors.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
  'preset', ['', 'mnist', 'celeba', 'toy', 'test', 'mnist_exp2', 'celeba_exp2']
)
def test_every_gan_preset_passes_the_checks(preset):
  """The other models' presets are checked in their own tests."""
  validation.check_config(gan.get_config(preset))


def _parent_is_a_file(tmp_path, monkeypatch):
  (tmp_path / 'file').write_text('')
  return tmp_path / 'file' / 'run', tmp_path / 'file'


def _workdir_is_a_file(tmp_path, monkeypatch):
  (tmp_path / 'run').write_text('')
  return tmp_path / 'run', tmp_path / 'run'


def _checkpoints_is_a_file(tmp_path, monkeypatch):
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'checkpoints').write_text('')
  return tmp_path / 'run', tmp_path / 'run' / 'checkpoints'


def _read_only(tmp_path, monkeypatch):
  locked = tmp_path / 'locked'
  locked.mkdir(mode=0o555)
  if os.access(locked, os.W_OK):
    # root may write anywhere, so os.access says yes: answer for the
    # read-only folder as it does for any other user.
    access = os.access
    monkeypatch.setattr(
      os,
      'access',
      lambda path, mode: access(path, mode) and str(path) != str(locked),
    )
  return locked / 'run', locked


@pytest.mark.parametrize(
  'make',
  [_parent_is_a_file, _workdir_is_a_file, _checkpoints_is_a_file, _read_only],
)
def test_unwritable_workdir_is_refused_before_compiling(
  tmp_path, monkeypatch, make
):
  workdir, culprit = make(tmp_path, monkeypatch)

  def compile_nothing(*args):
    raise AssertionError('built the networks before checking the workdir')

  monkeypatch.setattr(train, 'Experiment', compile_nothing)
  before = snapshot(tmp_path)
  with pytest.raises(errors.WorkdirError, match=re.escape(str(culprit))):
    train.train_and_evaluate(_test('gan'), str(workdir))
  assert snapshot(tmp_path) == before


def test_divergence_check_names_metrics_and_arrays_that_no_metric_covers():
  def state(stats, ema) -> TrainState:
    return TrainState(
      step=jnp.asarray(6),
      params={'g': {'w': jnp.ones(2)}},
      batch_stats={'g': {'mean': jnp.asarray(stats)}},
      opt_states={},
      ema_params={'g': {'w': jnp.asarray(ema)}},
      # NaN on purpose, as in EM's curve: not checked.
      extras={'curve': jnp.asarray([jnp.nan])},
    )

  good = {'loss': jnp.asarray(1.0), 'grad_norm': jnp.asarray(2.0)}
  bad = {'loss': jnp.asarray(3.0), 'grad_norm': jnp.asarray(jnp.inf)}
  summary = guards.check_finite([good, good], 5, 6, state([0.0], [1.0]), 4)
  assert summary == {'loss': 1.0, 'grad_norm': 2.0}
  with pytest.raises(
    errors.DivergenceError,
    match=r'within steps \[5, 6\] in grad_norm, state.batch_stats.g.mean,'
    r' state.ema_params.g.w\. Training stopped and the last checkpoint, of'
    r' step 4, is intact',
  ):
    guards.check_finite([good, bad], 5, 6, state([jnp.inf], [jnp.nan]), 4)


class _FakeManager:
  """Orbax's multi-host preemption notice, at step `at`."""

  def __init__(self, at: int | None):
    self.at = at

  def reached_preemption(self, step: int) -> bool:
    return step == self.at


def test_sigterm_only_sets_a_flag_and_the_handler_is_restored():
  before = signal.getsignal(signal.SIGTERM)
  manager = _FakeManager(at=None)
  with guards.StopRequest() as stop:
    # Sent only once our handler is in place, or it would end pytest.
    assert signal.getsignal(signal.SIGTERM) == stop.handle
    assert not stop.requested(1, manager)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested(2, manager) and stop.reason == 'SIGTERM'
  assert signal.getsignal(signal.SIGTERM) == before


def test_first_ctrl_c_sets_the_flag_and_a_second_one_stops_at_once():
  before = signal.getsignal(signal.SIGINT)
  signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with guards.StopRequest() as stop:
      assert signal.getsignal(signal.SIGINT) == stop.handle
      signal.raise_signal(signal.SIGINT)
      assert stop.requested(2, _FakeManager(at=None))
      assert stop.reason == 'SIGINT'
      with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, before)


def test_a_second_ctrl_c_ends_the_command_in_one_line(monkeypatch):
  from vi_gen import main

  def interrupted(argv):
    raise KeyboardInterrupt

  monkeypatch.setattr(main, '_run', interrupted)
  with pytest.raises(SystemExit, match='stopped at once by a second Ctrl-C'):
    main.main(['vi_gen'])


def test_an_ignored_ctrl_c_stays_ignored():
  before = signal.getsignal(signal.SIGINT)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with guards.StopRequest():
      assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, before)


def test_orbax_preemption_notice_stops_at_its_step():
  manager = _FakeManager(at=3)
  with guards.StopRequest() as stop:
    assert not stop.requested(2, manager)
    assert stop.requested(3, manager) and stop.reason == 'a preemption notice'
