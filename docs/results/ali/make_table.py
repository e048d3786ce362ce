r"""The tables of docs/results/ali.md from the ALI sweeps' result files.

  # Copy a finished (or partial) sweep's table and pictures, then render:
  python docs/results/ali/make_table.py --sweep_dir=runs/sweeps/ali_ring8
  python docs/results/ali/make_table.py --study=mnist \
      --sweep_dir=runs/sweeps/ali_mnist
  # Only render, from the committed result files:
  python docs/results/ali/make_table.py [--study=mnist]

Each study's tables replace the text between its markers in
docs/results/ali.md (`<!-- ali-tables:begin -->` ... for ring8,
`<!-- ali-mnist-tables:begin -->` ... for MNIST), so every number there
comes from the committed copy of the sweep's own table
(`results.json` resp. `mnist_results.json`: mean, s.e. and n per cell,
evaluation step and metric).
"""

import argparse
import dataclasses
import glob
import json
import math
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(os.path.dirname(HERE), 'ali.md')


@dataclasses.dataclass(frozen=True)
class Study:
  """Where one sweep's files go and what its tables show."""

  prefix: str  # Of the committed files: '' or 'mnist_'.
  markers: str  # '<!-- {markers}-tables:begin -->' and ...-figures...
  columns: tuple[str, ...]  # In order (the evaluation writes more).
  curve: str  # The metric shown over training.
  curve_title: str
  pictures: tuple[str, ...]  # Copied from seed 0 of each cell, last step.

  def file(self, name: str) -> str:
    return os.path.join(HERE, self.prefix + name)

  def marker(self, kind: str, end: str) -> str:
    return f'<!-- {self.markers}-{kind}:{end} -->'


STUDIES = {
  'ring8': Study(
    prefix='',
    markers='ali',
    columns=(
      'modes',
      'high_quality',
      'reverse_kl',
      'reconstruction_mse',
      'latent_mmd2',
    ),
    curve='modes',
    curve_title='Modes captured (of 8)',
    pictures=('samples', 'latents'),
  ),
  'mnist': Study(
    prefix='mnist_',
    markers='ali-mnist',
    columns=('mnist_fid', 'mnist_kid', 'reconstruction_mse', 'latent_mmd2'),
    curve='mnist_fid',
    curve_title='MNIST-FID',
    pictures=('samples', 'reconstructions'),
  ),
}


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


def metric_names(cells: list[dict], columns: tuple[str, ...]) -> list[str]:
  names = set()
  for cell in cells:
    for metrics in cell['steps'].values():
      names.update(metrics)
  return [m for m in columns if m in names]


def table(results: dict, study: Study) -> str:
  cells = results['cells']
  names = metric_names(cells, study.columns)
  lines = [
    '| arm | step | ' + ' | '.join(names) + ' |',
    '|---|---|' + '---|' * len(names),
  ]
  for cell in cells:
    steps = sorted(cell['steps'], key=int)
    if not steps:
      lines.append(f'| {arm_label(cell["overrides"])} | (no run done) |')
      continue
    at = steps[-1]
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


def render(results: dict, study: Study) -> str:
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
    table(results, study),
    '',
    f'**{study.curve_title} over training** (means):',
    '',
    curve_table(results, study.curve),
  ]
  return '\n'.join(parts)


def collect(sweep_dir: str, study: Study) -> None:
  for name in ('results.json', 'results.csv'):
    shutil.copy(os.path.join(sweep_dir, name), study.file(name))
  progress = os.path.normpath(sweep_dir) + '.out'
  if os.path.exists(progress):
    shutil.copy(progress, study.file('sweep.out'))
  with open(study.file('results.json')) as f:
    results = json.load(f)
  for cell in results['cells']:
    if 0 not in cell['seeds']:
      continue
    run = os.path.join(sweep_dir, cell['cell'] + ',seed=0')
    if not cell['cell']:
      run = os.path.join(sweep_dir, 'seed=0')
    for picture in study.pictures:
      files = sorted(glob.glob(os.path.join(run, picture, 'step_*.png')))
      if files:
        shutil.copy(files[-1], picture_path(study, picture, cell))


def picture_path(study: Study, picture: str, cell: dict) -> str:
  return study.file(f'{picture}_{slug(cell["overrides"])}.png')


def figures(results: dict, study: Study) -> str:
  """A Markdown table of the committed pictures, one row per cell."""
  header = '| arm | ' + ' | '.join(study.pictures) + ' |'
  lines = [header, '|---|' + '---|' * len(study.pictures)]
  for cell in results['cells']:
    row = [arm_label(cell['overrides'])]
    for picture in study.pictures:
      path = picture_path(study, picture, cell)
      name = os.path.basename(path)
      exists = os.path.exists(path)
      row.append(f'![{picture}](ali/{name})' if exists else '(none)')
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


def replace(page: str, begin: str, end: str, text: str) -> str:
  head, _, rest = page.partition(begin)
  _, _, tail = rest.partition(end)
  return f'{head}{begin}\n{text}\n{end}{tail}'


def write_page(results: dict, study: Study) -> None:
  with open(PAGE) as f:
    page = f.read()
  for kind, text in (
    ('tables', render(results, study)),
    ('figures', figures(results, study)),
  ):
    begin, end = study.marker(kind, 'begin'), study.marker(kind, 'end')
    if begin not in page or end not in page:
      raise SystemExit(f'{PAGE} has no {begin} ... {end} section.')
    page = replace(page, begin, end, text)
  with open(PAGE, 'w') as f:
    f.write(page)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sweep_dir', help='runs/sweeps/<name> to copy from')
  parser.add_argument('--study', choices=sorted(STUDIES), default='ring8')
  args = parser.parse_args()
  study = STUDIES[args.study]
  if args.sweep_dir:
    collect(args.sweep_dir, study)
  with open(study.file('results.json')) as f:
    results = json.load(f)
  write_page(results, study)
  print(render(results, study))


if __name__ == '__main__':
  main()
