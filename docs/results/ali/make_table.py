r"""The tables of docs/results/ali.md from the ALI sweep's result files.

  # Copy the finished (or partial) sweep's table and pictures, then render:
  python docs/results/ali/make_table.py --sweep_dir=runs/sweeps/ali_ring8
  # Only render, from the committed docs/results/ali/results.json:
  python docs/results/ali/make_table.py

The tables replace the text between `<!-- ali-tables:begin -->` and
`<!-- ali-tables:end -->` in docs/results/ali.md, so every number there
comes from `docs/results/ali/results.json` (the sweep's own table: mean,
s.e. and n per cell, evaluation step and metric).
"""

import argparse
import glob
import json
import math
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(os.path.dirname(HERE), 'ali.md')
BEGIN, END = '<!-- ali-tables:begin -->', '<!-- ali-tables:end -->'
# The columns, in order (the evaluation also writes s.e.s and bandwidths).
ORDER = (
  'modes',
  'high_quality',
  'reverse_kl',
  'reconstruction_mse',
  'latent_mmd2',
)
# Pictures copied from seed 0 of each cell at its last step.
PICTURES = ('samples', 'latents')
FIG_BEGIN, FIG_END = '<!-- ali-figures:begin -->', '<!-- ali-figures:end -->'


def arm_label(overrides: dict) -> str:
  variant = overrides.get('ali.variant', 'vi')
  eq = {'vi': '(41)', 'minmax': '(42)', 'nonsaturating': '(43)'}[variant]
  if overrides.get('ali.complete'):
    eq = '(40) complete'
  parts = [f'{variant} {eq}']
  for key, short in (
    ('optim.lr', 'lr'),
    ('d_steps', 'd_steps'),
    ('g_steps', 'g_steps'),
    ('ali.encoder_sigma', 'sE'),
    ('ali.generator_sigma', 'sG'),
  ):
    if key in overrides:
      parts.append(f'{short}={overrides[key]:g}')
  return ', '.join(parts)


def slug(overrides: dict) -> str:
  return (
    arm_label(overrides)
    .replace(' ', '')
    .replace(',', '_')
    .replace('(', '')
    .replace(')', '')
    .replace('=', '')
  )


def fmt(summary: dict | None) -> str:
  if not summary or summary.get('mean') is None:
    return 'n/a'
  mean, se, n = summary['mean'], summary.get('se'), summary['n']
  if se is None or (isinstance(se, float) and math.isnan(se)):
    return f'{mean:.3g} (n={n})'
  return f'{mean:.3g} ± {se:.2g} (n={n})'


def metric_names(cells: list[dict]) -> list[str]:
  names = set()
  for cell in cells:
    for metrics in cell['steps'].values():
      names.update(metrics)
  return [m for m in ORDER if m in names]


def table(results: dict, step: str | None = None) -> str:
  cells = results['cells']
  names = metric_names(cells)
  lines = [
    '| arm | step | ' + ' | '.join(names) + ' |',
    '|---|---|' + '---|' * len(names),
  ]
  for cell in cells:
    steps = sorted(cell['steps'], key=int)
    if not steps:
      lines.append(f'| {arm_label(cell["overrides"])} | (no run done) |')
      continue
    at = step if step in cell['steps'] else steps[-1]
    metrics = cell['steps'][at]
    row = [arm_label(cell['overrides']), at]
    row += [fmt(metrics.get(m)) for m in names]
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


def curve_table(results: dict, metric: str) -> str:
  cells = results['cells']
  steps = sorted({s for c in cells for s in c['steps']}, key=int)
  lines = [
    f'| arm | {metric} at step ' + ' | '.join(steps) + ' |',
    '|---|' + '---|' * len(steps),
  ]
  for cell in cells:
    row = [arm_label(cell['overrides'])]
    for s in steps:
      summary = cell['steps'].get(s, {}).get(metric)
      row.append(
        'n/a'
        if not summary or summary.get('mean') is None
        else f'{summary["mean"]:.3g}'
      )
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


def render(results: dict) -> str:
  done, total = results['num_done'], results['num_runs']
  parts = [
    f'Runs finished: {done} of {total}'
    + (
      f' (pending: {", ".join(results["pending"])})'
      if results['pending']
      else ''
    )
    + (f'; failed: {results["failed"]}' if results['failed'] else '')
    + '.',
    '',
    '**At the last evaluation** (mean ± s.e. over seeds, n = seeds):',
    '',
    table(results),
    '',
    '**Modes captured (of 8) over training** (means):',
    '',
    curve_table(results, 'modes'),
  ]
  return '\n'.join(parts)


def collect(sweep_dir: str) -> None:
  for name in ('results.json', 'results.csv'):
    shutil.copy(os.path.join(sweep_dir, name), os.path.join(HERE, name))
  progress = os.path.normpath(sweep_dir) + '.out'
  if os.path.exists(progress):
    shutil.copy(progress, os.path.join(HERE, 'sweep.out'))
  with open(os.path.join(HERE, 'results.json')) as f:
    results = json.load(f)
  for cell in results['cells']:
    if 0 not in cell['seeds']:
      continue
    run = os.path.join(sweep_dir, cell['cell'] + ',seed=0')
    if not cell['cell']:
      run = os.path.join(sweep_dir, 'seed=0')
    for picture in PICTURES:
      files = sorted(glob.glob(os.path.join(run, picture, 'step_*.png')))
      if files:
        out = f'{picture}_{slug(cell["overrides"])}.png'
        shutil.copy(files[-1], os.path.join(HERE, out))


def figures(results: dict) -> str:
  """A Markdown table of the committed pictures, one row per cell."""
  lines = ['| arm | ' + ' | '.join(PICTURES) + ' |', '|---|' + '---|' * 2]
  for cell in results['cells']:
    row = [arm_label(cell['overrides'])]
    for picture in PICTURES:
      name = f'{picture}_{slug(cell["overrides"])}.png'
      exists = os.path.exists(os.path.join(HERE, name))
      row.append(f'![{picture}](ali/{name})' if exists else '(none)')
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


def replace(page: str, begin: str, end: str, text: str) -> str:
  head, _, rest = page.partition(begin)
  _, _, tail = rest.partition(end)
  return f'{head}{begin}\n{text}\n{end}{tail}'


def write_page(results: dict) -> None:
  with open(PAGE) as f:
    page = f.read()
  page = replace(page, BEGIN, END, render(results))
  page = replace(page, FIG_BEGIN, FIG_END, figures(results))
  with open(PAGE, 'w') as f:
    f.write(page)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sweep_dir', help='runs/sweeps/<name> to copy from')
  args = parser.parse_args()
  if args.sweep_dir:
    collect(args.sweep_dir)
  with open(os.path.join(HERE, 'results.json')) as f:
    results = json.load(f)
  write_page(results)
  print(render(results))


if __name__ == '__main__':
  main()
