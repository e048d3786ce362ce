"""vi_gen.sweep: validation before anything runs, the results table against
numpy, no rerun of finished runs, resume of an interrupted one, failures
recorded and left out of the means.

The end-to-end test trains real runs of the `test` preset (4 steps each)
through the command line, in subprocesses.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from vi_gen import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/gan.py:test'


def run_sweep(*args: str) -> subprocess.CompletedProcess:
  """`python -m vi_gen.sweep ARGS` from the repository root, as a user runs
  it (the config path is relative to it)."""
  env = dict(os.environ)
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  return subprocess.run(
    [sys.executable, '-m', 'vi_gen.sweep', *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def in_process(capsys, *args: str) -> tuple[int, str, str]:
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    code = sweep.main(list(args))
  finally:
    os.chdir(cwd)
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize(
  'args, named',
  [
    (['--axis', 'no_such_field=1,2'], 'no_such_field'),
    (['--axis', 'seed=0,1', '--set', 'data.nope=3'], 'data.nope'),
    (['--axis', 'reg_weight=0,abc'], 'reg_weight'),
    (['--axis', 'seed=0,1.5'], 'seed'),
    (['--set', 'network.batch_norm=maybe'], 'network.batch_norm'),
    (['--arms', '[{"reg_weight": "heavy"}]'], 'reg_weight'),
    (['--arms', '[{"optim": 1}]'], 'optim'),
  ],
)
def test_refuses_bad_overrides_before_any_run(capsys, tmp_path, args, named):
  code, out, err = in_process(
    capsys, f'--config={CONFIG}', f'--root={tmp_path}', *args
  )
  assert code == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert lines[0].startswith('vi_gen.sweep: error:')
  assert repr(named) in lines[0]
  assert os.listdir(tmp_path) == []  # Nothing started, nothing written.


def test_values_take_the_type_of_the_field():
  config = sweep.load_config(os.path.join(ROOT, CONFIG))
  new = sweep.apply_overrides(
    config,
    {
      'reg_weight': '7',
      'seed': '3',
      'network.batch_norm': 'false',
      'network.g_widths': '(4,2)',
      'data.name': 'ring8',
      'optim.lr': 1,
    },
  )
  assert new.reg_weight == 7.0 and isinstance(new.reg_weight, float)
  assert new.seed == 3 and isinstance(new.seed, int)
  assert new.network.batch_norm is False
  assert new.network.g_widths == (4, 2)
  assert new.data.name == 'ring8'
  assert new.optim.lr == 1.0 and isinstance(new.optim.lr, float)
  assert config.reg_weight != 7.0  # A copy: the original is unchanged.
  assert sweep.format_value(1e-4) == '0.0001'
  assert sweep.format_value(5.0) == '5'
  assert sweep.format_value((4, 2)) == '(4,2)'


def test_arms_are_crossed_with_the_axes_they_do_not_fix(tmp_path):
  s = sweep.Sweep(
    config=os.path.join(ROOT, CONFIG),
    name='arms',
    root=str(tmp_path),
    fixed={'run.num_steps': '2'},
    axes={'seed': ['0', '1']},
    arms=[
      {'reg_weight': 0},
      {'reg_weight': 5, 'old_generator': 'lagged'},
      {'reg_weight': 50, 'seed': 7},  # Fixes the seed: one run.
    ],
  )
  runs = sweep.expand(s)
  assert [r.name for r in runs] == [
    'reg_weight=0,seed=0',
    'reg_weight=0,seed=1',
    'reg_weight=5,old_generator=lagged,seed=0',
    'reg_weight=5,old_generator=lagged,seed=1',
    'reg_weight=50,seed=7',
  ]
  assert [r.cell for r in runs] == [
    'reg_weight=0',
    'reg_weight=0',
    'reg_weight=5,old_generator=lagged',
    'reg_weight=5,old_generator=lagged',
    'reg_weight=50',
  ]
  command = runs[3].command
  assert command[1:3] == ['-m', 'vi_gen.main']
  assert f'--workdir={tmp_path}/arms/{runs[3].name}' in command
  for flag in (
    '--config.run.num_steps=2',
    '--config.seed=1',
    '--config.reg_weight=5',
    '--config.old_generator=lagged',
  ):
    assert flag in command
  assert runs[3].num_steps == 2


def _fake_finished_run(directory: str, name: str, fid: float) -> None:
  """A run's workdir as a finished run leaves it: DONE and its last eval."""
  os.makedirs(os.path.join(directory, name))
  with open(os.path.join(directory, name, sweep.DONE), 'w') as f:
    f.write('{}\n')
  with open(os.path.join(directory, name, 'eval_2.json'), 'w') as f:
    json.dump({'metrics': {'fid': fid}}, f)


def test_a_later_command_with_fewer_arms_adds_to_the_table(capsys, tmp_path):
  """The table keeps the finished runs of earlier commands in the same
  directory (runs.json), instead of holding only the last command's."""
  args = [f'--config={CONFIG}', f'--root={tmp_path}', '--name=s']
  args += ['--set', 'run.num_steps=2', '--axis', 'seed=0,1']
  directory = str(tmp_path / 's')
  values = {'reg_weight=0': (3.0, 5.0), 'reg_weight=5': (2.0, 8.0)}
  for cell, fids in values.items():
    for seed, fid in enumerate(fids):
      _fake_finished_run(directory, f'{cell},seed={seed}', fid)

  for arms in ('[{"reg_weight": 0}]', '[{"reg_weight": 5}]'):
    code, out, err = in_process(capsys, *args, '--arms', arms, '--collect_only')
    assert code == 0, out + err
  assert '4/4 runs done (2 from earlier commands)' in out, out
  with open(os.path.join(directory, 'results.json')) as f:
    table = json.load(f)
  got = {c['cell']: c['steps']['2']['fid'] for c in table['cells']}
  assert set(got) == set(values)
  for cell, fids in values.items():
    assert got[cell]['mean'] == pytest.approx(np.mean(fids))
    assert got[cell]['n'] == 2

  # A damaged index is refused with its path and what to do.
  with open(os.path.join(directory, sweep.RUNS_INDEX), 'w') as f:
    f.write('{"runs": [')
  code, out, err = in_process(capsys, *args, '--collect_only')
  assert code == 2
  assert sweep.RUNS_INDEX in err and 'delete it' in err, err


def test_summarize():
  s = sweep.summarize([1.0, 2.0, 4.0])
  assert s['n'] == 3
  assert s['mean'] == pytest.approx(7 / 3)
  assert s['se'] == pytest.approx(np.std([1, 2, 4], ddof=1) / math.sqrt(3))
  one = sweep.summarize([2.0])
  assert one['n'] == 1 and one['mean'] == 2.0 and math.isnan(one['se'])
  assert sweep.summarize([math.nan, 3.0])['n'] == 1


def test_last_error_line(tmp_path):
  log = tmp_path / 'log.txt'
  log.write_text(
    'I step 1\nTraceback (most recent call last):\n  File "x"\n'
    'vi_gen: error: NaN in d_loss at steps 3..4\nI1130 flushed\n'
  )
  assert sweep.last_error_line(str(log)) == (
    'vi_gen: error: NaN in d_loss at steps 3..4'
  )
  assert sweep.last_error_line(str(tmp_path / 'none.txt')) == ''


def test_commands_for_other_machines(capsys, tmp_path):
  base = [f'--config={CONFIG}', f'--root={tmp_path}', '--name=s']
  base += ['--axis', 'seed=0,1,2', '--set', 'run.num_steps=8']
  code, out, _ = in_process(capsys, *base, '--print_commands')
  assert code == 0
  lines = [line for line in out.splitlines() if not line.startswith('#')]
  assert len(lines) == 3
  assert lines[2].endswith('--run_index=2')
  assert 'sbatch --array=0-2' in out
  code, out, _ = in_process(capsys, *base, '--print_commands', '--engine=gpu')
  assert code == 0
  assert f'WORKDIR={tmp_path}/s/seed=1 launch/gpu.sh train' in out
  assert '--config.seed=1' in out
  commands = tmp_path / 'commands.txt'
  code, _, _ = in_process(capsys, *base, f'--write_commands={commands}')
  assert code == 0
  assert len(commands.read_text().splitlines()) == 3
  assert not os.path.exists(tmp_path / 's')  # Nothing ran.


def _recompute(directory: str, runs: dict[str, list[str]]) -> dict:
  """{(cell, step, metric): (mean, se, n)} straight from eval_<step>.json."""
  expected = {}
  for cell, names in runs.items():
    values = {}
    for name in names:
      workdir = os.path.join(directory, name)
      for file in os.listdir(workdir):
        if file.startswith('eval_') and file.endswith('.json'):
          with open(os.path.join(workdir, file)) as f:
            result = json.load(f)
          for metric, value in result['metrics'].items():
            values.setdefault((result['step'], metric), []).append(value)
    for (step, metric), v in values.items():
      v = np.asarray(v, np.float64)
      se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else math.nan
      expected[cell, step, metric] = (v.mean(), se, len(v))
  return expected


def _check_table(directory: str, expected: dict) -> None:
  with open(os.path.join(directory, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  got = {
    (r['cell'], int(r['step']), r['metric']): (
      float(r['mean']),
      float(r['se']) if r['se'] else math.nan,
      int(r['n']),
    )
    for r in rows
  }
  assert set(got) == set(expected)
  for key, (mean, se, n) in expected.items():
    assert got[key][0] == pytest.approx(mean, rel=1e-9), key
    if math.isnan(se):
      assert math.isnan(got[key][1]), key
    else:
      assert got[key][1] == pytest.approx(se, rel=1e-9), key
    assert got[key][2] == n, key
  with open(os.path.join(directory, 'results.json')) as f:
    table = json.load(f)
  for cell in table['cells']:
    for step, metrics in cell['steps'].items():
      for metric, s in metrics.items():
        assert s['n'] == expected[cell['cell'], int(step), metric][2]


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def _mtimes(directory: str) -> dict[str, float]:
  return {
    name: os.path.getmtime(os.path.join(directory, name, sweep.LOG))
    for name in os.listdir(directory)
    if os.path.isdir(os.path.join(directory, name))
  }


@pytest.mark.slow
def test_sweep_runs_resumes_and_records_failures(tmp_path):
  args = [f'--config={CONFIG}', f'--root={tmp_path}', '--name=s']
  args += ['--axis', 'seed=0,1', '--axis', 'reg_weight=0,5']
  args += ['--set', 'run.eval_every_steps=2']
  directory = str(tmp_path / 's')
  cells = {
    'reg_weight=0': ['reg_weight=0,seed=0', 'reg_weight=0,seed=1'],
    'reg_weight=5': ['reg_weight=5,seed=0', 'reg_weight=5,seed=1'],
  }

  # 1. Four runs, two at a time; the table matches numpy on the eval files.
  first = run_sweep(*args, '--parallel=2')
  assert first.returncode == 0, first.stdout + first.stderr
  assert first.stdout.count(': done in ') == 4, first.stdout
  for names in cells.values():
    for name in names:
      workdir = os.path.join(directory, name)
      assert os.path.exists(os.path.join(workdir, sweep.DONE))
      assert os.path.exists(os.path.join(workdir, 'eval_2.json'))
      assert os.path.exists(os.path.join(workdir, 'eval_4.json'))
      assert _read(os.path.join(workdir, sweep.LOG)).startswith('### ')
  _check_table(directory, _recompute(directory, cells))
  # The two cells really differ in the runs' configs (not one run twice).
  log = _read(os.path.join(directory, 'reg_weight=5,seed=1', sweep.LOG))
  assert '--config.reg_weight=5 ' in log or '--config.reg_weight=5\n' in log

  # 2. Again: nothing runs, nothing is touched.
  mtimes = _mtimes(directory)
  again = run_sweep(*args)
  assert again.returncode == 0, again.stdout + again.stderr
  assert 'started' not in again.stdout
  assert again.stdout.count(': done\n') == 4, again.stdout
  assert _mtimes(directory) == mtimes

  # 3. An interrupted run (no DONE, no last checkpoint, no final eval)
  # resumes from its checkpoint at step 2; only it runs.
  victim = os.path.join(directory, 'reg_weight=5,seed=1')
  os.remove(os.path.join(victim, sweep.DONE))
  os.remove(os.path.join(victim, 'eval_4.json'))
  subprocess.run(['rm', '-r', os.path.join(victim, 'checkpoints', '4')])
  resumed = run_sweep(*args)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert resumed.stdout.count('started') == 1, resumed.stdout
  assert '[4/4] reg_weight=5,seed=1: started' in resumed.stdout
  log = _read(os.path.join(victim, sweep.LOG))
  assert log.count('### ') == 2  # One line per attempt, appended.
  assert re.search(r'[Rr]esum\w* .*step 2\b', log.split('### ')[-1])
  assert os.path.exists(os.path.join(victim, 'eval_4.json'))
  changed = {k for k, v in _mtimes(directory).items() if mtimes[k] != v}
  assert changed == {'reg_weight=5,seed=1'}
  _check_table(directory, _recompute(directory, cells))

  # 4. A run that diverges (NaN batch at step 3, after eval_2.json was
  # written) is recorded as failed with its error line; the sweep goes on
  # and its evaluations are not averaged in: cell reg_weight=0 has n = 1.
  victim = os.path.join(directory, 'reg_weight=0,seed=1')
  os.remove(os.path.join(victim, sweep.DONE))
  os.remove(os.path.join(victim, 'eval_4.json'))
  subprocess.run(['rm', '-r', os.path.join(victim, 'checkpoints', '4')])
  failing = run_sweep(*args, '--set', 'debug.nan_at_step=3')
  assert failing.returncode == 1, failing.stdout + failing.stderr
  assert 'reg_weight=0,seed=1: failed in' in failing.stdout
  with open(os.path.join(victim, sweep.FAILED)) as f:
    error = json.load(f)['error']
  assert error.startswith('vi_gen: error:'), error
  assert 'NaN' in error or 'nan' in error, error
  with open(os.path.join(directory, 'results.json')) as f:
    table = json.load(f)
  assert [f['run'] for f in table['failed']] == ['reg_weight=0,seed=1']
  assert table['failed'][0]['error'] == error
  cell = next(c for c in table['cells'] if c['cell'] == 'reg_weight=0')
  assert cell['seeds'] == [0] and cell['failed_seeds'] == [1]
  assert cell['n_runs'] == 1
  cells['reg_weight=0'] = ['reg_weight=0,seed=0']
  _check_table(directory, _recompute(directory, cells))
  for metrics in cell['steps'].values():
    for s in metrics.values():
      assert s['n'] == 1 and s['se'] is None

  # 5. A failed run is not retried unless asked: nothing starts.
  later = run_sweep(*args)
  assert later.returncode == 1
  assert 'started' not in later.stdout
  assert 'reg_weight=0,seed=1: failed: vi_gen: error:' in later.stdout
