r"""Tables and figures of docs/results.md from the 2-D study's result files.

  # From the finished (or partial) sweep: copy its table, write runs.csv
  # (one row per run and evaluation) and draw the figures; then the tables:
  python docs/results/make_tables.py --sweep_dir=runs/sweeps/study_2d
  # Only the tables, from the committed files in docs/results/study_2d/:
  python docs/results/make_tables.py

The tables replace the text between `<!-- tables:begin -->` and
`<!-- tables:end -->` in docs/results.md, so every number on the page comes
from `docs/results/study_2d/results.json` (the sweep's own table: mean, s.e.
and n per cell, step and metric) and `runs.csv` (per run). The figures need
matplotlib (`pip install matplotlib`).
"""

import argparse
import csv
import glob
import json
import math
import os
import re
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'study_2d')
PAGE = os.path.join(os.path.dirname(HERE), 'results.md')
METRICS = ('modes', 'high_quality', 'reverse_kl')
NUM_MODES = {'ring8': 8, 'grid25': 25}
BEGIN, END = '<!-- tables:begin -->', '<!-- tables:end -->'


def arm_label(overrides: dict) -> str:
  weight = float(overrides.get('reg_weight', 5.0))
  if weight == 0:
    return 'standard GAN (w=0)'
  return f'{overrides.get("old_generator", "phase")} w={weight:g}'


def setting(overrides: dict) -> tuple[str, float]:
  return overrides['data.name'], float(overrides['optim.lr'])


def _float(value) -> float:
  return math.nan if value in (None, '') else float(value)


# ------------------------------------------------------------- from a sweep


def collect(sweep_dir: str) -> None:
  """Copies results.json/.csv of `sweep_dir`, writes runs.csv, draws the
  figures (also the sample scatter plots, read from the runs' PNGs)."""
  os.makedirs(OUT, exist_ok=True)
  for name in ('results.json', 'results.csv'):
    shutil.copy(os.path.join(sweep_dir, name), os.path.join(OUT, name))
  # The runner's progress lines, if it was started as in docs/results.md.
  progress = os.path.normpath(sweep_dir) + '.out'
  if os.path.exists(progress):
    shutil.copy(progress, os.path.join(OUT, 'sweep.out'))
  rows = []
  for workdir in sorted(glob.glob(os.path.join(sweep_dir, '*', ''))):
    run = os.path.basename(os.path.dirname(workdir))
    overrides = dict(part.split('=', 1) for part in run.split(','))
    base = {
      'run': run,
      'data': overrides['data.name'],
      'lr': overrides['optim.lr'],
      'reg_weight': overrides['reg_weight'],
      'old_generator': overrides.get('old_generator', 'phase'),
      'seed': overrides['seed'],
    }
    if os.path.exists(os.path.join(workdir, 'FAILED')):
      with open(os.path.join(workdir, 'FAILED')) as f:
        error = json.load(f).get('error', '')
      rows.append({**base, 'status': 'failed', 'error': error})
      continue
    if not os.path.exists(os.path.join(workdir, 'DONE')):
      continue  # Not finished: neither averaged nor listed here.
    with open(os.path.join(workdir, 'DONE')) as f:
      base['elapsed_s'] = json.load(f).get('elapsed_s', '')
    for path in glob.glob(os.path.join(workdir, 'eval_*.json')):
      with open(path) as f:
        result = json.load(f)
      metrics = result['metrics']
      rows.append(
        {
          **base,
          'status': 'done',
          'step': result['step'],
          **{m: metrics.get(m) for m in METRICS},
        }
      )
  rows.sort(key=lambda r: (r['run'], int(r.get('step') or 0)))
  fields = ['run', 'data', 'lr', 'reg_weight', 'old_generator', 'seed']
  fields += ['status', 'step', *METRICS, 'elapsed_s', 'error']
  with open(os.path.join(OUT, 'runs.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fields)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: ('' if v is None else v) for k, v in row.items()})
  draw_curves()
  draw_samples(sweep_dir)


def _results() -> dict:
  with open(os.path.join(OUT, 'results.json')) as f:
    return json.load(f)


def _runs() -> list[dict]:
  with open(os.path.join(OUT, 'runs.csv')) as f:
    return list(csv.DictReader(f))


def draw_curves() -> None:
  """study_2d/curves.png: mean +- s.e. of each metric over training, one
  row per (data, lr), one line per arm."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  results = _results()
  settings = sorted(
    {setting(c['overrides']) for c in results['cells']},
    key=lambda s: (s[0] != 'ring8', -s[1]),
  )
  fig, axes = plt.subplots(
    len(settings),
    len(METRICS),
    figsize=(4.2 * len(METRICS), 2.8 * len(settings)),
    squeeze=False,
  )
  for row, (data, lr) in enumerate(settings):
    for col, metric in enumerate(METRICS):
      ax = axes[row][col]
      for cell in results['cells']:
        if setting(cell['overrides']) != (data, lr) or not cell['steps']:
          continue
        steps = sorted(cell['steps'], key=int)
        s = [cell['steps'][t].get(metric, {}) for t in steps]
        x = [int(t) for t in steps]
        mean = [_float(v.get('mean')) for v in s]
        se = [0.0 if v.get('se') is None else v['se'] for v in s]
        n = cell['n_runs']
        line = ax.plot(x, mean, label=f'{arm_label(cell["overrides"])} ({n})')
        ax.fill_between(
          x,
          [m - e for m, e in zip(mean, se, strict=True)],
          [m + e for m, e in zip(mean, se, strict=True)],
          color=line[0].get_color(),
          alpha=0.15,
        )
      ax.set_title(f'{data}, lr {lr:g}: {metric}', fontsize=9)
      ax.set_xlabel('iteration', fontsize=8)
      ax.tick_params(labelsize=7)
      if metric == 'modes':
        ax.axhline(NUM_MODES[data], color='grey', lw=0.5, ls=':')
      if col == 0:
        ax.legend(fontsize=6)
  fig.suptitle('mean +- s.e. over seeds (n runs in the legend)', fontsize=9)
  fig.tight_layout()
  fig.savefig(os.path.join(OUT, 'curves.png'), dpi=80)
  plt.close(fig)


def _final_rows() -> dict[str, dict]:
  """{run: its row at its last evaluation step} of the finished runs."""
  final = {}
  for row in _runs():
    if row['status'] != 'done':
      continue
    if row['run'] not in final or int(row['step']) > int(
      final[row['run']]['step']
    ):
      final[row['run']] = row
  return final


def _lost_modes() -> set[str]:
  """The finished runs that had every mode at one evaluation and fewer
  at a later one."""
  history: dict[str, list[tuple[int, float]]] = {}
  data = {}
  for row in _runs():
    if row['status'] == 'done':
      history.setdefault(row['run'], []).append(
        (int(row['step']), float(row['modes']))
      )
      data[row['run']] = row['data']
  lost = set()
  for run, points in history.items():
    modes = [m for _, m in sorted(points)]
    full = NUM_MODES[data[run]]
    if full in modes and min(modes[modes.index(full) :]) < full:
      lost.add(run)
  return lost


def draw_samples(sweep_dir: str) -> None:
  """study_2d/samples_<data>_lr<lr>.png: the last sample grid of the best
  and the worst seed of each arm (by modes, then high-quality share, at the
  last evaluation), from the runs' samples/step_*.png."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.image as mpimg
  import matplotlib.pyplot as plt

  groups: dict[tuple, dict[str, list]] = {}
  for row in _final_rows().values():
    key = (row['data'], float(row['lr']))
    arm = arm_label({k: row[k] for k in ('reg_weight', 'old_generator')})
    groups.setdefault(key, {}).setdefault(arm, []).append(row)
  for (data, lr), arms in groups.items():
    names = sorted(arms, key=lambda a: (a != 'standard GAN (w=0)', a))
    fig, axes = plt.subplots(
      2, len(names), figsize=(2.4 * len(names), 5.0), squeeze=False
    )
    for col, arm in enumerate(names):
      ranked = sorted(
        arms[arm],
        key=lambda r: (float(r['modes']), _float(r['high_quality'])),
      )
      for row, (which, r) in enumerate(
        (('best', ranked[-1]), ('worst', ranked[0]))
      ):
        ax = axes[row][col]
        ax.axis('off')
        pictures = sorted(
          glob.glob(os.path.join(sweep_dir, r['run'], 'samples', '*.png'))
        )
        if pictures:
          ax.imshow(mpimg.imread(pictures[-1]))
        ax.set_title(
          f'{arm}\n{which}: seed {r["seed"]}, {float(r["modes"]):g} modes,'
          f' hq {_float(r["high_quality"]):.2f}',
          fontsize=7,
        )
    fig.suptitle(
      f'{data}, lr {lr:g}: samples at the last step, best and worst seed',
      fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, f'samples_{data}_lr{lr:g}.png'), dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------- tables


def _cell_text(s: dict | None, runs: int, digits: int = 3) -> str:
  """'mean ± se', with '(n=k)' when fewer than `runs` values count (a
  reverse KL is undefined without high-quality samples)."""
  if not s or not s.get('n'):
    return '-'
  text = f'{_float(s["mean"]):.{digits}g}'
  if s.get('se') is not None:
    text += f' ± {s["se"]:.{digits - 1}g}'
  if s['n'] != runs:
    text += f' (n={s["n"]})'
  return text


def tables() -> str:
  """The Markdown of the page's results section, from the result files."""
  results = _results()
  final = _final_rows()
  lost = _lost_modes()
  lines = [
    f'{results["num_done"]} of {results["num_runs"]} runs finished,'
    f' {len(results["failed"])} failed'
    + (
      f', {len(results["pending"])} not finished when this table was made.'
      if results['pending']
      else '.'
    ),
    '',
  ]
  seconds = [float(r['elapsed_s']) for r in final.values() if r['elapsed_s']]
  if seconds:
    lines += [
      f'Training time of the finished runs (each start-up, 10,000'
      f' iterations and 10 evaluations, one process at a time, niced, on'
      f' the shared 2-core machine): {sum(seconds) / 60:.1f} min in all,'
      f' median {sorted(seconds)[len(seconds) // 2]:.0f} s per run (min'
      f' {min(seconds):.0f} s, max {max(seconds):.0f} s).',
      '',
    ]
  for failure in results['failed']:
    lines.append(f'* failed: `{failure["run"]}`: {failure["error"]}')
  if results['failed']:
    lines.append('')
  cells = sorted(
    results['cells'],
    key=lambda c: (
      c['overrides']['data.name'] != 'ring8',
      -float(c['overrides']['optim.lr']),
      arm_label(c['overrides']) != 'standard GAN (w=0)',
      arm_label(c['overrides']),
    ),
  )
  lines += [
    'At the last step (10,000 unless noted): mean ± s.e. over seeds (n in'
    ' "runs"); "all modes" = runs that end with every mode captured; "lost'
    ' modes" = runs that had every mode at one evaluation and fewer at a'
    ' later one (unstable coverage).',
    '',
    '| data | lr | arm | step | runs | modes | high-quality share |'
    ' reverse KL (nats) | all modes | lost modes |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for cell in cells:
    if not cell['steps']:
      continue
    step = max(cell['steps'], key=int)
    s = cell['steps'][step]
    data, lr = setting(cell['overrides'])
    runs = [
      r
      for r in final.values()
      if r['data'] == data
      and float(r['lr']) == lr
      and arm_label(r) == arm_label(cell['overrides'])
    ]
    full = sum(float(r['modes']) == NUM_MODES[data] for r in runs)
    unstable = sum(r['run'] in lost for r in runs)
    lines.append(
      f'| {data} | {lr:g} | {arm_label(cell["overrides"])} | {step} |'
      f' {cell["n_runs"]} | {_cell_text(s.get("modes"), cell["n_runs"])} |'
      f' {_cell_text(s.get("high_quality"), cell["n_runs"])} |'
      f' {_cell_text(s.get("reverse_kl"), cell["n_runs"])} |'
      f' {full}/{len(runs)} | {unstable}/{len(runs)} |'
    )
  lines += [
    '',
    'Central pair, phase w=5 minus standard GAN at the last step (difference'
    ' of the means ± sqrt(se1² + se2²); |diff| < 2 s.e. is read as no'
    ' difference):',
    '',
    '| data | lr | runs (w=0, w=5) | Δ modes | Δ high-quality | Δ reverse KL |',
    '|---|---|---|---|---|---|',
  ]
  by_key = {
    (setting(c['overrides']), arm_label(c['overrides'])): c for c in cells
  }
  for (data, lr), arm in sorted(
    by_key, key=lambda k: (k[0][0] != 'ring8', -k[0][1])
  ):
    if arm != 'standard GAN (w=0)':
      continue
    base, other = by_key[(data, lr), arm], by_key.get(((data, lr), 'phase w=5'))
    if not other or not base['steps'] or not other['steps']:
      continue
    step = str(
      min(int(max(base['steps'], key=int)), int(max(other['steps'], key=int)))
    )
    entries = []
    for metric in METRICS:
      a, b = base['steps'][step][metric], other['steps'][step][metric]
      diff = _float(b['mean']) - _float(a['mean'])
      if a.get('se') is None or b.get('se') is None:
        entries.append(f'{diff:+.3g}')
        continue
      se = math.hypot(a['se'], b['se'])
      flag = ' *' if abs(diff) >= 2 * se else ''
      entries.append(f'{diff:+.3g} ± {se:.2g}{flag}')
    lines.append(
      f'| {data} | {lr:g} | {base["n_runs"]}, {other["n_runs"]} | '
      + ' | '.join(entries)
      + ' |'
    )
  lines += ['', '(* : |diff| ≥ 2 s.e.)']
  return '\n'.join(lines) + '\n'


def update_page(text: str) -> None:
  with open(PAGE) as f:
    page = f.read()
  pattern = re.compile(re.escape(BEGIN) + '.*?' + re.escape(END), re.S)
  if not pattern.search(page):
    raise SystemExit(f'{PAGE} has no {BEGIN} ... {END} section.')
  page = pattern.sub(lambda _: f'{BEGIN}\n{text}{END}', page)
  with open(PAGE, 'w') as f:
    f.write(page)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sweep_dir', help='the sweep root to collect from')
  parser.add_argument(
    '--print', action='store_true', help='print instead of editing the page'
  )
  args = parser.parse_args()
  if args.sweep_dir:
    collect(args.sweep_dir)
  text = tables()
  if args.print:
    print(text)
  else:
    update_page(text)
    print(f'Updated {PAGE}.')


if __name__ == '__main__':
  main()
