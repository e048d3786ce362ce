r"""Sweeps: many training runs of one config, and one table of their results.

  python -m vi_gen.sweep --config=configs/gan.py:toy --name=ring \
      --axis seed=0,1,2 --axis reg_weight=0,5 --set run.num_steps=10000 \
      --set run.eval_every_steps=1000 [--parallel 2]
  python -m vi_gen.sweep --sweep=study.py        # axes, arms, sets in a file
  python -m vi_gen.sweep ... --print_commands    # for Slurm / TPU VMs
  python -m vi_gen.sweep ... --collect_only      # only rewrite the table

A sweep is a config, fixed overrides (`--set`), axes (`--axis key=v1,v2`,
crossed) and optionally a list of arms (dicts of overrides; each arm is
crossed with the axes it does not fix itself), so that a study such as
"weight 0 vs {phase, lagged} x {1, 5, 50}" need not be a full product. Each
run trains in its own workdir `<root>/<name>/<k=v,...,seed=s>` through the
command line, `python -m vi_gen.main`, with its output in `log.txt` there.

Before any run starts, every run's overrides are applied to a copy of the
config: an unknown field or a value of the wrong type stops the sweep with
one line naming it (exit code 2). A run that ends well leaves `DONE` in its
workdir and is not run again; one that exits non-zero leaves `FAILED` with
the last error line of its log and the sweep goes on (a rerun with
`--retry_failed` tries it again); a killed run has neither and is rerun
with the same command, which resumes from its checkpoint. Run names hold
the axes' and arms' values only, not the `--set` ones: a changed `--set`
applies to the runs that start afterwards (the training command line
refuses to resume a workdir whose experiment fields changed). The table,
`results.json` and `results.csv` under `<root>/<name>`, holds per cell (the
overrides minus the seed), evaluation step and metric the mean, standard
error (std with ddof=1 over sqrt(n); n = 1 gives NaN) and n over the
finished runs only; failed runs are listed, never averaged. It covers
every run the directory has held (`runs.json` lists them), so a later
command with fewer arms or seeds (`--arms`, a narrower `--axis`) adds to
the table instead of replacing it; delete the directory to start afresh.

This module knows the command line of `vi_gen.main`, the config files (to
validate overrides) and the `eval_<step>.json` files; it must not import
JAX, the models or the training loop, so that it starts in a second and can
schedule runs on a machine that trains nothing itself.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import dataclasses
import glob
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

SEED = 'seed'  # The axis that results are averaged over.
DONE = 'DONE'
FAILED = 'FAILED'
LOG = 'log.txt'
RUNS_INDEX = 'runs.json'  # Every run the sweep directory has held.


class SweepError(ValueError):
  """A sweep that cannot start: the message names the bad field or value."""


# --------------------------------------------------------------- the config


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The config of `path.py[:arg]`, as `ml_collections.config_flags` loads
  it: the file's `get_config(arg)` (or `get_config()` without an arg).

  Raises:
    SweepError: the file does not exist or its get_config fails.
  """
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise SweepError(f'config file {path!r} not found (from {spec!r}).')
  module_spec = importlib.util.spec_from_file_location('_sweep_config', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # noqa: BLE001 (any error of the user's file)
    raise SweepError(f'config {spec!r}: {type(e).__name__}: {e}') from e


def _field(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise SweepError(f'unknown config field {key!r}.')
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    raise SweepError(f'{key!r} is a group of fields, not a field.')
  return node


def _typed(existing: Any, value: Any, key: str) -> Any:
  """`value` (a string from the command line, or a JSON/Python value) as
  the type of the config's current `existing` value of field `key`."""

  def wrong(why: str = '') -> SweepError:
    kind = type(existing).__name__
    return SweepError(
      f'config field {key!r} is of type {kind} (now {existing!r}); cannot set it to'
      f' {value!r}{why}.'
    )

  if isinstance(value, str) and not isinstance(existing, str):
    text = value.strip()
    if isinstance(existing, bool):
      lowered = text.lower()
      if lowered in ('true', '1', 'yes'):
        return True
      if lowered in ('false', '0', 'no'):
        return False
      raise wrong()
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
      raise wrong() from e
  if existing is None:
    return value
  if isinstance(existing, bool):
    if isinstance(value, bool):
      return value
    raise wrong()
  if isinstance(existing, int):
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise wrong()
  if isinstance(existing, float):
    if isinstance(value, int | float) and not isinstance(value, bool):
      return float(value)
    raise wrong()
  if isinstance(existing, str):
    if isinstance(value, str):
      return value
    raise wrong()
  if isinstance(existing, tuple | list):
    if not isinstance(value, tuple | list):
      raise wrong()
    if existing:
      value = [_typed(existing[0], v, key) for v in value]
    return tuple(value)
  if type(value) is not type(existing):
    raise wrong()
  return value


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
  """A copy of `config` with `overrides` ({'a.b': value}) set, each value
  converted to the type of the field it replaces.

  Raises:
    SweepError: an unknown field, or a value of the wrong type, named.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    existing = _field(config, key)
    typed = _typed(existing, value, key)
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    try:
      node[leaf] = typed
    except (TypeError, ValueError, KeyError, AttributeError) as e:
      raise SweepError(
        f'config field {key!r}: cannot set {value!r}: {e}'
      ) from e
  return config


def format_value(value: Any) -> str:
  """`value` as `--config.key=` takes it back (and as run names show it)."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    if value.is_integer() and abs(value) < 1e15:
      return str(int(value))
    return repr(value)
  if isinstance(value, tuple | list):
    inner = ','.join(format_value(v) for v in value)
    return f'({inner},)' if len(value) == 1 else f'({inner})'
  return str(value)


# ---------------------------------------------------------------- the sweep


@dataclasses.dataclass
class Run:
  """One training run: its overrides (axes and arm; fixed ones are in the
  sweep), its workdir and the command that trains it."""

  index: int
  name: str  # 'k=v,...,seed=s': the workdir's name under the sweep root.
  overrides: dict[str, Any]
  workdir: str
  command: list[str]
  num_steps: int
  eval_every_steps: int

  @property
  def cell(self) -> str:
    """The run's name without the seed: runs of one cell are averaged."""
    return cell_name(self.overrides)

  def final_eval(self) -> str:
    return os.path.join(self.workdir, f'eval_{self.num_steps}.json')


@dataclasses.dataclass
class Sweep:
  """A config, fixed overrides, axes (crossed) and arms; see the module."""

  config: str
  name: str
  root: str = 'runs/sweeps'
  fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
  axes: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
  arms: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  python: str = sys.executable
  # Where it came from, to print commands that rebuild it: the sweep file
  # and what the command line added to it.
  source: str = ''
  cli_sets: list[str] = dataclasses.field(default_factory=list)
  cli_axes: list[str] = dataclasses.field(default_factory=list)
  cli_arms: str = ''

  @property
  def directory(self) -> str:
    return os.path.join(self.root, self.name)


def cell_name(overrides: dict[str, Any]) -> str:
  """'k=v,...' of the overrides minus the seed ('' for a single cell)."""
  return run_name({k: v for k, v in overrides.items() if k != SEED})


def run_name(overrides: dict[str, Any]) -> str:
  """'k=v,...,seed=s': the overrides in their order, the seed last, with
  '/' (not allowed in a directory name) replaced by '_'."""
  keys = [k for k in overrides if k != SEED] + (
    [SEED] if SEED in overrides else []
  )
  parts = [f'{k}={format_value(overrides[k])}' for k in keys]
  return ','.join(parts).replace('/', '_').replace(' ', '')


def expand(sweep: Sweep) -> list[Run]:
  """Every run of `sweep`, validated, in order: arm by arm (given order),
  within an arm the product of the axes the arm does not fix (the last axis
  varies fastest).

  Raises:
    SweepError: unknown field, wrong-typed value, two runs with one name,
      or an empty axis; before anything runs.
  """
  base = load_config(sweep.config)
  for key, values in sweep.axes.items():
    if not values:
      raise SweepError(f'axis {key!r} has no values.')
  fixed = dict(sweep.fixed)
  apply_overrides(base, fixed)
  runs, names = [], set()
  for arm in sweep.arms or [{}]:
    free = [k for k in sweep.axes if k not in arm]
    for combo in itertools.product(*(sweep.axes[k] for k in free)):
      overrides = dict(arm)
      overrides.update(zip(free, combo, strict=True))
      # In the axis order first, then the arm's own keys.
      ordered = {k: overrides[k] for k in sweep.axes if k in overrides}
      ordered.update({k: v for k, v in overrides.items() if k not in ordered})
      config = apply_overrides(base, {**fixed, **ordered})
      typed = {k: _field(config, k) for k in ordered}
      name = run_name(typed) or 'run'
      if name in names:
        raise SweepError(f'two runs are both named {name!r}.')
      names.add(name)
      workdir = os.path.join(sweep.directory, name)
      runs.append(
        Run(
          index=len(runs),
          name=name,
          overrides=typed,
          workdir=workdir,
          command=train_command(sweep, {**fixed, **typed}, workdir, config),
          num_steps=int(config.run.num_steps),
          eval_every_steps=int(config.run.eval_every_steps),
        )
      )
  return runs


def train_command(
  sweep: Sweep,
  overrides: dict[str, Any],
  workdir: str,
  config: ml_collections.ConfigDict,
) -> list[str]:
  """argv of `python -m vi_gen.main` for one run."""
  args = [sweep.python, '-m', 'vi_gen.main', f'--config={sweep.config}']
  args.append(f'--workdir={workdir}')
  for key in overrides:
    args.append(f'--config.{key}={format_value(_field(config, key))}')
  return args


# ------------------------------------------------------------------ running


def status(run: Run) -> str:
  """'done' (DONE marker or final eval file), 'failed' (FAILED marker) or
  'pending' (never run, or killed: rerun it)."""
  if os.path.exists(os.path.join(run.workdir, DONE)):
    return 'done'
  if run.eval_every_steps and os.path.exists(run.final_eval()):
    return 'done'
  if os.path.exists(os.path.join(run.workdir, FAILED)):
    return 'failed'
  return 'pending'


def last_error_line(log_path: str) -> str:
  """The last line of the log that reports an error (`vi_gen: error: ...`,
  `SomeError: ...`), else its last non-empty line; '' without a log."""
  try:
    with open(log_path, errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return ''
  pattern = re.compile(r'(^vi_gen: error|^\w*(Error|Exception)\b|^Killed)')
  for line in reversed(lines):
    if pattern.search(line):
      return line
  return lines[-1] if lines else ''


def _write_marker(path: str, content: dict) -> None:
  with open(path, 'w') as f:
    json.dump(content, f, indent=1)
    f.write('\n')


def _start(run: Run, env: dict[str, str]) -> tuple[subprocess.Popen, Any]:
  os.makedirs(run.workdir, exist_ok=True)
  for marker in (DONE, FAILED):
    if os.path.exists(os.path.join(run.workdir, marker)):
      os.remove(os.path.join(run.workdir, marker))
  log = open(os.path.join(run.workdir, LOG), 'a')  # noqa: SIM115
  log.write(
    f'### {time.strftime("%Y-%m-%d %H:%M:%S")} {shlex.join(run.command)}\n'
  )
  log.flush()
  process = subprocess.Popen(
    run.command, stdout=log, stderr=subprocess.STDOUT, env=env
  )
  return process, log


def _finish(run: Run, returncode: int, elapsed: float, env) -> tuple[str, str]:
  """Writes DONE or FAILED; returns (status, error line)."""
  log_path = os.path.join(run.workdir, LOG)
  with open(log_path, errors='replace') as f:
    tail = f.read()[-20000:]
  record = {'command': run.command, 'returncode': returncode}
  record['elapsed_s'] = round(elapsed, 1)
  attempt = tail.rsplit('### ', 1)[-1]
  if returncode == 0 and re.search(r'Stopped by|Run stopped early', attempt):
    # SIGTERM: the run saved a checkpoint and exited 0; it is not finished.
    return 'stopped', 'stopped by a signal; rerun to resume'
  if returncode == 0:
    if run.eval_every_steps and not os.path.exists(run.final_eval()):
      # Finished training but not its last evaluation (killed in between):
      # evaluate the final checkpoint.
      with open(log_path, 'a') as log:
        subprocess.run(
          [*run.command, '--mode=eval'],
          stdout=log,
          stderr=subprocess.STDOUT,
          env=env,
          check=False,
        )
    _write_marker(os.path.join(run.workdir, DONE), record)
    return 'done', ''
  error = last_error_line(log_path) or f'exit code {returncode}'
  record['error'] = error
  _write_marker(os.path.join(run.workdir, FAILED), record)
  return 'failed', error


def _clock(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  return f'{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def run_all(
  runs: Sequence[Run],
  parallel: int = 1,
  retry_failed: bool = False,
  env: dict[str, str] | None = None,
  out=sys.stdout,
) -> dict[str, str]:
  """Runs every unfinished run, `parallel` subprocesses at a time.

  Prints one line per run (i/N, name, status, elapsed, the sweep's ETA).
  SIGTERM or Ctrl-C stop the runs in flight (they save a checkpoint) and
  return; the same command resumes.

  Returns:
    {run name: 'done' | 'failed' | 'stopped' | 'pending'}.
  """
  env = dict(os.environ if env is None else env)
  total = len(runs)
  outcome, todo = {}, []
  for run in runs:
    state = status(run)
    if state == 'failed' and retry_failed:
      state = 'pending'
    outcome[run.name] = state
    if state == 'pending':
      todo.append(run)
    else:
      note = ''
      if state == 'failed':
        with open(os.path.join(run.workdir, FAILED)) as f:
          note = ': ' + json.load(f).get('error', '')
      print(f'[{run.index + 1}/{total}] {run.name}: {state}{note}', file=out)
  out.flush()
  start, durations = time.time(), []
  running: dict[int, tuple[Run, subprocess.Popen, Any, float]] = {}
  stop = {'signal': None}

  def on_signal(signum, frame):  # noqa: ARG001
    stop['signal'] = signum
    for _, process, _, _ in running.values():
      if process.poll() is None:
        process.send_signal(signal.SIGTERM)

  handlers = {}
  for signum in (signal.SIGTERM, signal.SIGINT):
    with contextlib.suppress(ValueError):  # Not the main thread.
      handlers[signum] = signal.signal(signum, on_signal)
  queue = list(todo)
  try:
    while queue or running:
      while queue and len(running) < parallel and stop['signal'] is None:
        run = queue.pop(0)
        process, log = _start(run, env)
        running[run.index] = (run, process, log, time.time())
        print(
          f'[{run.index + 1}/{total}] {run.name}: started', file=out, flush=True
        )
      if stop['signal'] is not None and not running:
        break
      time.sleep(0.2)
      for index, (run, process, log, t0) in list(running.items()):
        if process.poll() is None:
          continue
        log.close()
        del running[index]
        elapsed = time.time() - t0
        state, error = _finish(run, process.returncode, elapsed, env)
        outcome[run.name] = state
        durations.append(elapsed)
        left = len(queue) + len(running)
        eta = sum(durations) / len(durations) * left / parallel
        print(
          f'[{run.index + 1}/{total}] {run.name}: {state} in {_clock(elapsed)}'
          f'{" (" + error + ")" if error else ""}; sweep'
          f' {_clock(time.time() - start)} elapsed, {left} to go, ETA'
          f' {_clock(eta)}',
          file=out,
          flush=True,
        )
  finally:
    for signum, handler in handlers.items():
      signal.signal(signum, handler)
  return outcome


# ------------------------------------------------------------------ results


def with_earlier_runs(sweep: Sweep, runs: Sequence[Run]) -> list[Run]:
  """`runs` followed by the runs of earlier commands in the same sweep
  directory that `runs` does not hold; records the union in `runs.json`.

  Raises:
    SweepError: `runs.json` exists but cannot be read (the message names
      it and says what to do).
  """
  path = os.path.join(sweep.directory, RUNS_INDEX)
  known: dict[str, dict] = {}
  if os.path.exists(path):
    try:
      with open(path) as f:
        known = {entry['name']: entry for entry in json.load(f)['runs']}
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise SweepError(
        f'cannot read {path} ({e}): it lists the runs of earlier commands'
        ' for the table; restore it, or delete it to tabulate only this'
        " command's runs."
      ) from e
  current = {run.name for run in runs}
  earlier = [
    Run(
      index=-1,
      name=entry['name'],
      overrides=entry['overrides'],
      workdir=os.path.join(sweep.directory, entry['name']),
      command=[],
      num_steps=entry['num_steps'],
      eval_every_steps=entry['eval_every_steps'],
    )
    for name, entry in known.items()
    if name not in current
  ]
  for run in runs:
    known[run.name] = {
      'name': run.name,
      'overrides': run.overrides,
      'num_steps': run.num_steps,
      'eval_every_steps': run.eval_every_steps,
    }
  os.makedirs(sweep.directory, exist_ok=True)
  temporary = f'{path}.{os.getpid()}'  # Array tasks write it concurrently.
  with open(temporary, 'w') as f:
    json.dump({'runs': list(known.values())}, f, indent=1)
    f.write('\n')
  os.replace(temporary, path)
  return [*runs, *earlier]


def _eval_files(workdir: str) -> dict[int, dict[str, float]]:
  """{step: {metric: value}} of the run's eval_<step>.json files; null
  (JSON's NaN) becomes NaN."""
  found = {}
  for path in glob.glob(os.path.join(workdir, 'eval_*.json')):
    match = re.fullmatch(r'eval_(\d+)\.json', os.path.basename(path))
    if not match:
      continue
    with open(path) as f:
      metrics = json.load(f).get('metrics', {})
    found[int(match.group(1))] = {
      k: math.nan if v is None else float(v)
      for k, v in metrics.items()
      if v is None or isinstance(v, int | float)
    }
  return found


def summarize(values: Sequence[float]) -> dict[str, float | int]:
  """{'mean', 'se', 'n'} over the finite `values`; se = std (ddof=1) /
  sqrt(n), NaN for n < 2; mean NaN for n = 0."""
  x = np.asarray([v for v in values if math.isfinite(v)], np.float64)
  n = len(x)
  mean = float(x.mean()) if n else math.nan
  se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
  return {'mean': mean, 'se': se, 'n': n}


def collect(sweep: Sweep, runs: Sequence[Run]) -> dict:
  """The sweep's table: per cell, evaluation step and metric the mean,
  s.e. and n over its finished runs, the failed and unfinished runs listed.
  Reads only the workdirs' markers and eval_<step>.json files."""
  cells: dict[str, dict] = {}
  failed, pending = [], []
  for run in runs:
    cell = cells.setdefault(
      run.cell,
      {
        'cell': run.cell,
        'overrides': {k: v for k, v in run.overrides.items() if k != SEED},
        'seeds': [],
        'failed_seeds': [],
        '_values': {},
      },
    )
    state = status(run)
    seed = run.overrides.get(SEED)
    if state == 'failed':
      with open(os.path.join(run.workdir, FAILED)) as f:
        error = json.load(f).get('error', '')
      failed.append({'run': run.name, 'overrides': run.overrides})
      failed[-1]['error'] = error
      cell['failed_seeds'].append(seed)
      continue
    if state != 'done':
      pending.append(run.name)
      continue
    cell['seeds'].append(seed)
    for step, metrics in _eval_files(run.workdir).items():
      for metric, value in metrics.items():
        cell['_values'].setdefault(step, {}).setdefault(metric, []).append(
          value
        )
  table = []
  for cell in cells.values():
    values = cell.pop('_values')
    cell['n_runs'] = len(cell['seeds'])
    cell['steps'] = {
      str(step): {m: summarize(v) for m, v in sorted(metrics.items())}
      for step, metrics in sorted(values.items())
    }
    table.append(cell)
  return {
    'sweep': sweep.name,
    'config': sweep.config,
    'set': sweep.fixed,
    'axes': sweep.axes,
    'arms': sweep.arms,
    'num_runs': len(runs),
    'num_done': len(runs) - len(failed) - len(pending),
    'failed': failed,
    'pending': pending,
    'cells': table,
    'se': 'std (ddof=1) / sqrt(n) over the finished seeds; NaN (null) for'
    ' n < 2; non-finite values (no high-quality sample) are left out of n',
  }


def _json_safe(value):
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_json_safe(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_results(directory: str, results: dict) -> tuple[str, str]:
  """Writes `results.json` and `results.csv` (one row per cell, step and
  metric; s.e. blank when undefined) under `directory`; returns both."""
  os.makedirs(directory, exist_ok=True)
  json_path = os.path.join(directory, 'results.json')
  with open(json_path, 'w') as f:
    json.dump(_json_safe(results), f, indent=1, allow_nan=False)
    f.write('\n')
  keys = []
  for cell in results['cells']:
    keys += [k for k in cell['overrides'] if k not in keys]
  csv_path = os.path.join(directory, 'results.csv')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['cell', *keys, 'step', 'metric', 'mean', 'se', 'n'])
    for cell in results['cells']:
      for step, metrics in cell['steps'].items():
        for metric, s in metrics.items():
          writer.writerow(
            [
              cell['cell'],
              *[format_value(cell['overrides'].get(k, '')) for k in keys],
              step,
              metric,
              '' if not math.isfinite(s['mean']) else repr(s['mean']),
              '' if not math.isfinite(s['se']) else repr(s['se']),
              s['n'],
            ]
          )
  return json_path, csv_path


def markdown_table(
  results: dict,
  step: int | None = None,
  metrics: Sequence[str] | None = None,
  digits: int = 3,
) -> str:
  """A Markdown table of `results` (as `collect` returns it or as read back
  from results.json): one row per cell, 'mean +- s.e. (n)' per metric at
  `step` (default: each cell's last step)."""

  def number(value) -> float:
    return math.nan if value is None else float(value)

  rows = []
  for cell in results['cells']:
    if not cell['steps']:
      rows.append((cell, None, {}))
      continue
    at = str(step) if step is not None else max(cell['steps'], key=int)
    rows.append((cell, at, cell['steps'].get(at, {})))
  names = list(metrics or [])
  if not names:
    for _, _, values in rows:
      names += [m for m in values if m not in names]
  header = ['cell', 'step', 'runs', 'failed', *names]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for cell, at, values in rows:
    entries = []
    for name in names:
      s = values.get(name)
      if not s or not s['n']:
        entries.append('-')
        continue
      mean, se = number(s['mean']), number(s['se'])
      text = f'{mean:.{digits}g}'
      text += f' +- {se:.{digits}g}' if math.isfinite(se) else ''
      entries.append(f'{text} ({s["n"]})')
    failed = len(cell.get('failed_seeds', []))
    lines.append(
      '| '
      + ' | '.join(
        [cell['cell'] or '-', at or '-', str(cell['n_runs']), str(failed)]
        + entries
      )
      + ' |'
    )
  return '\n'.join(lines) + '\n'


# ----------------------------------------------------- other machines' jobs


def engine_command(sweep: Sweep, run: Run, engine: str) -> str:
  """One shell line that trains `run` on `engine`:

  * 'sweep' (default): this runner for that one run (`--run_index`), which
    writes the log and the DONE / FAILED markers; for a Slurm job array;
  * 'gpu': `launch/gpu.sh train` (one machine's GPUs);
  * 'tpu_vm': `launch/tpu_vm.sh train` (a TPU VM; the workdir becomes
    ~/bucket/runs/sweeps/<name>/<run> there).
  """
  flags = [
    a for a in run.command[3:] if not a.startswith(('--config=', '--workdir='))
  ]
  if engine == 'gpu':
    env = (
      f'CONFIG={shlex.quote(sweep.config)} WORKDIR={shlex.quote(run.workdir)}'
    )
    return f'{env} launch/gpu.sh train {shlex.join(flags)}'
  if engine == 'tpu_vm':
    rel = os.path.relpath(run.workdir, 'runs')
    env = f'CONFIG={shlex.quote(sweep.config)} RUN={shlex.quote(rel)}'
    return f'{env} launch/tpu_vm.sh train {shlex.join(flags)}'
  return shlex.join([*_sweep_argv(sweep), f'--run_index={run.index}'])


def _sweep_argv(sweep: Sweep) -> list[str]:
  """The runner's command line that defines `sweep` (its file, if any, and
  what the command line added)."""
  args = ['python', '-m', 'vi_gen.sweep']
  if sweep.source:
    args.append(f'--sweep={sweep.source}')
  args += [f'--config={sweep.config}', f'--name={sweep.name}']
  args.append(f'--root={sweep.root}')
  if not sweep.source:
    for key, value in sweep.fixed.items():
      args.append(f'--set={key}={_spell(value)}')
    for key, values in sweep.axes.items():
      args.append(f'--axis={key}={",".join(_spell(v) for v in values)}')
    if sweep.arms:
      args.append('--arms=' + json.dumps(sweep.arms, separators=(',', ':')))
  else:
    args += [f'--set={text}' for text in sweep.cli_sets]
    args += [f'--axis={text}' for text in sweep.cli_axes]
    if sweep.cli_arms:
      args.append(f'--arms={sweep.cli_arms}')
  return args


def _spell(value: Any) -> str:
  return value if isinstance(value, str) else format_value(value)


def sbatch_example(sweep: Sweep, num_runs: int, commands_file: str) -> str:
  """A Slurm job-array line that runs line i+1 of `commands_file` as task i
  (edit the resources: one GPU per run here)."""
  return (
    f'sbatch --array=0-{num_runs - 1} --gpus=1 --job-name={sweep.name}'
    f' --output={sweep.directory}/slurm_%a.out --wrap="bash -c \\"\\$(sed -n'
    f' \\$((SLURM_ARRAY_TASK_ID + 1))p {commands_file})\\""'
  )


# ------------------------------------------------------------- command line


def _split_values(text: str) -> list[str]:
  """'a,b,(1,2)' -> ['a', 'b', '(1,2)']: commas inside brackets stay."""
  parts, depth, current = [], 0, ''
  for char in text:
    if char in '([':
      depth += 1
    elif char in ')]':
      depth -= 1
    if char == ',' and depth == 0:
      parts.append(current)
      current = ''
    else:
      current += char
  parts.append(current)
  return [p.strip() for p in parts]


def _key_value(text: str, flag: str) -> tuple[str, str]:
  key, sep, value = text.partition('=')
  if not sep or not key.strip():
    raise SweepError(f'{flag} {text!r}: expected key=value.')
  key = key.strip()
  return key.removeprefix('config.'), value


def load_sweep_file(path: str) -> dict:
  """The dict of a sweep file: JSON, or a Python file that defines SWEEP
  (a dict) or get_sweep() -> dict. Keys: config, name, root, set (dict),
  axes (dict of lists), arms (list of dicts)."""
  if not os.path.isfile(path):
    raise SweepError(f'sweep file {path!r} not found.')
  if path.endswith('.py'):
    spec = importlib.util.spec_from_file_location('_sweep_file', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    spec_dict = (
      module.get_sweep() if hasattr(module, 'get_sweep') else module.SWEEP
    )
  else:
    with open(path) as f:
      spec_dict = json.load(f)
  unknown = set(spec_dict) - {'config', 'name', 'root', 'set', 'axes', 'arms'}
  if unknown:
    raise SweepError(f'sweep file {path!r}: unknown keys {sorted(unknown)}.')
  return spec_dict


def parse_args(argv: Sequence[str]) -> tuple[Sweep, argparse.Namespace]:
  """The sweep and the runner's options from the command line.

  Raises:
    SweepError: a malformed --axis/--set/--arms, or a bad sweep file.
  """
  parser = argparse.ArgumentParser(
    prog='python -m vi_gen.sweep',
    description=__doc__.split('\n\n')[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--config', help='configs/<model>.py[:preset]')
  parser.add_argument('--sweep', help='sweep file, .json or .py')
  parser.add_argument('--name', help='sweep name (default: from the file)')
  parser.add_argument('--root', help='parent of sweeps (runs/sweeps)')
  parser.add_argument(
    '--axis', action='append', default=[], help='key=v1,v2,... (crossed)'
  )
  parser.add_argument(
    '--set', action='append', default=[], help='key=value for every run'
  )
  parser.add_argument('--arms', help='JSON list of dicts of overrides')
  parser.add_argument('--parallel', type=int, default=1)
  parser.add_argument('--retry_failed', action='store_true')
  parser.add_argument('--collect_only', action='store_true')
  parser.add_argument('--run_index', type=int, help='run only run I (0-based)')
  parser.add_argument('--print_commands', action='store_true')
  parser.add_argument('--write_commands', metavar='FILE')
  parser.add_argument(
    '--engine', choices=('sweep', 'gpu', 'tpu_vm'), default='sweep'
  )
  parser.add_argument(
    '--markdown', action='store_true', help='print the table as Markdown'
  )
  args = parser.parse_args(argv)
  spec = load_sweep_file(args.sweep) if args.sweep else {}
  config = args.config or spec.get('config')
  if not config:
    raise SweepError('no config: give --config or a sweep file with one.')
  name = args.name or spec.get('name')
  if not name and args.sweep:
    name = os.path.splitext(os.path.basename(args.sweep))[0]
  if not name:
    path, _, preset = config.partition(':')
    name = os.path.splitext(os.path.basename(path))[0]
    name += f'_{preset}' if preset else ''
  fixed = dict(spec.get('set', {}))
  for text in args.set:
    key, value = _key_value(text, '--set')
    fixed[key] = value
  axes = {k: list(v) for k, v in spec.get('axes', {}).items()}
  for text in args.axis:
    key, value = _key_value(text, '--axis')
    axes[key] = _split_values(value)
  arms = list(spec.get('arms', []))
  if args.arms:
    try:
      arms = json.loads(args.arms)
    except json.JSONDecodeError as e:
      raise SweepError(f'--arms is not JSON: {e}') from e
  for arm in arms:
    if not isinstance(arm, dict):
      raise SweepError(f'an arm must be a dict of overrides, got {arm!r}.')
  arms = [{k.removeprefix('config.'): v for k, v in a.items()} for a in arms]
  sweep = Sweep(
    config=config,
    name=name,
    root=args.root or spec.get('root') or 'runs/sweeps',
    fixed=fixed,
    axes=axes,
    arms=arms,
    source=args.sweep or '',
    cli_sets=list(args.set),
    cli_axes=list(args.axis),
    cli_arms=args.arms or '',
  )
  return sweep, args


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit code: 0 all runs done, 1 some
  failed or unfinished, 2 the sweep is invalid (nothing ran)."""
  try:
    sweep, args = parse_args(sys.argv[1:] if argv is None else argv)
    runs = expand(sweep)
    if not (args.print_commands or args.write_commands):
      table_runs = with_earlier_runs(sweep, runs)
  except SweepError as e:
    print(f'vi_gen.sweep: error: {e}', file=sys.stderr)
    return 2
  if args.print_commands or args.write_commands:
    lines = [engine_command(sweep, run, args.engine) for run in runs]
    if args.write_commands:
      with open(args.write_commands, 'w') as f:
        f.write('\n'.join(lines) + '\n')
      print(f'Wrote {len(lines)} commands to {args.write_commands}.')
    if args.print_commands:
      print('\n'.join(lines))
    target = args.write_commands or 'commands.txt'
    print(
      f'# Slurm job array, one run per task:\n# {sbatch_example(sweep, len(runs), target)}'
    )
    print(
      f'# then collect: {shlex.join([*_sweep_argv(sweep), "--collect_only"])}'
    )
    return 0
  if args.run_index is not None:
    if not 0 <= args.run_index < len(runs):
      print(
        f'vi_gen.sweep: error: --run_index {args.run_index} outside 0..'
        f'{len(runs) - 1}.',
        file=sys.stderr,
      )
      return 2
    runs_to_do = [runs[args.run_index]]
  else:
    runs_to_do = runs
  print(
    f'Sweep {sweep.name}: {len(runs)} runs in {sweep.directory}', flush=True
  )
  if not args.collect_only:
    run_all(runs_to_do, max(1, args.parallel), args.retry_failed)
  results = collect(sweep, table_runs)
  json_path, csv_path = write_results(sweep.directory, results)
  earlier = len(table_runs) - len(runs)
  print(
    f'{results["num_done"]}/{len(table_runs)} runs done'
    + (f' ({earlier} from earlier commands)' if earlier else '')
    + f', {len(results["failed"])} failed; table: {json_path}, {csv_path}'
  )
  for failure in results['failed']:
    print(f'  failed: {failure["run"]}: {failure["error"]}')
  if args.markdown:
    print(markdown_table(results))
  if args.run_index is not None:
    return 0 if status(runs[args.run_index]) == 'done' else 1
  return 0 if all(status(run) == 'done' for run in runs) else 1


if __name__ == '__main__':
  sys.exit(main())
