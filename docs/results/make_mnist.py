r"""Tables and figures of the MNIST sections of docs/results.md: the GAN
regularizer study and the VAE reference point.

  python docs/results/make_mnist.py --sweep_dir=runs/sweeps/study_mnist \
      --vae_dir=runs/vae_mnist
  python docs/results/make_mnist.py    # the tables from the committed files

Copies the sweep's results.json/.csv into docs/results/study_mnist/, draws
MNIST-FID over training per arm (mean +- s.e. over seeds, x axis in D
steps, so that both schedules share it) and the last sample grid of each
arm's first seed, and writes the table between `<!-- mnist:begin -->` and
`<!-- mnist:end -->` in docs/results.md. Copies the VAE run's eval_<step>.json
into docs/results/vae_mnist/ and tabulates them between `<!-- vae:begin -->`
and `<!-- vae:end -->`. Figures need matplotlib.
"""

import argparse
import glob
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'study_mnist')
PAGE = os.path.join(os.path.dirname(HERE), 'results.md')
VAE_OUT = os.path.join(HERE, 'vae_mnist')
BEGIN, END = '<!-- mnist:begin -->', '<!-- mnist:end -->'
VAE_BEGIN, VAE_END = '<!-- vae:begin -->', '<!-- vae:end -->'
METRICS = ('mnist_fid', 'mnist_kid')


def arm(overrides: dict) -> tuple[str, float, int]:
  """(schedule, reg_weight, D steps per iteration) of a cell."""
  d_steps = int(overrides.get('d_steps', 1))
  schedule = (
    'Exp. 2 (no BN, 5 D : 5x2 G)' if d_steps == 5 else 'Exp. 1 (BN, 1 D : 2 G)'
  )
  return schedule, float(overrides['reg_weight']), d_steps


def cells(results: dict) -> list[tuple[tuple, dict]]:
  """(arm, cell) of the cells with a finished run, in table order."""
  return sorted(
    (
      (arm(cell['overrides']), cell)
      for cell in results['cells']
      if cell['n_runs']
    ),
    key=lambda item: item[0][:2],
  )


def table(results: dict) -> str:
  """One row per arm and evaluation: seeds, MNIST-FID and KID."""
  lines = [
    '| schedule | reg_weight | seeds | D steps | MNIST-FID | MNIST-KID |',
    '|---|---|---|---|---|---|',
  ]
  for (schedule, weight, d_steps), cell in cells(results):
    for step in sorted(cell['steps'], key=int):
      values = cell['steps'][step]
      fid, kid = (values.get(m, {}) for m in METRICS)

      def show(v, scale=1.0):
        if not v or v.get('mean') is None:
          return 'n/a'
        se = v.get('se')
        se_text = '' if se is None else f' +- {scale * se:.2f}'
        return f'{scale * v["mean"]:.2f}{se_text}'

      lines.append(
        f'| {schedule} | {weight:g} | {cell["n_runs"]} |'
        f' {int(step) * d_steps} | {show(fid)} | {show(kid)} |'
      )
  return '\n'.join(lines)


def vae_table() -> str:
  """One row per evaluation of the VAE run: IWAE and ELBO NLL (nats, +-
  s.e. over the held-out digits) and MNIST-FID of its samples."""
  lines = [
    '| step | IWAE NLL (nats) | ELBO NLL (nats) | bits/dim (IWAE) | MNIST-FID |',
    '|---|---|---|---|---|',
  ]
  paths = glob.glob(os.path.join(VAE_OUT, 'eval_*.json'))
  for path in sorted(paths, key=lambda p: int(p.split('_')[-1][:-5])):
    with open(path) as f:
      result = json.load(f)
    m = result['metrics']
    lines.append(
      f'| {result["step"]} | {m["iwae_nll_nats"]:.2f} +-'
      f' {m["iwae_nll_nats_se"]:.2f} | {m["elbo_nll_nats"]:.2f} +-'
      f' {m["elbo_nll_nats_se"]:.2f} | {m["iwae_bits_per_dim"]:.4f} |'
      f' {m["mnist_fid"]:.1f} |'
    )
  return '\n'.join(lines)


def replace_between(page: str, begin: str, end: str, text: str) -> str:
  head, rest = page.split(begin)
  _, tail = rest.split(end)
  return f'{head}{begin}\n{text}\n{end}{tail}'


def figures(results: dict, sweep_dir: str) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, metric in zip(axes, METRICS, strict=True):
    for (schedule, weight, d_steps), cell in cells(results):
      steps = sorted(cell['steps'], key=int)
      x = [int(s) * d_steps for s in steps]
      mean = [cell['steps'][s][metric]['mean'] for s in steps]
      se = [cell['steps'][s][metric]['se'] or 0.0 for s in steps]
      style = '-' if weight else '--'
      label = f'{schedule}, w={weight:g}'
      ax.errorbar(x, mean, yerr=se, fmt=style, capsize=3, label=label)
    ax.set_xlabel('D steps')
    ax.set_ylabel(metric.replace('_', ' '))
    ax.set_yscale('log')
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(OUT, 'curves.png'), dpi=100)
  for (_, weight, d_steps), cell in cells(results):
    run = next(
      (
        d
        for d in sorted(glob.glob(os.path.join(sweep_dir, '*', '')))
        if f'reg_weight={weight:g},' in d
        and ((d_steps == 5) == ('d_steps=5' in d))
        and d.rstrip('/').endswith(f'seed={cell["seeds"][0]}')
      ),
      None,
    )
    if run is None:
      continue
    pngs = sorted(glob.glob(os.path.join(run, 'samples', '*.png')))
    name = f'samples_{"exp2" if d_steps == 5 else "exp1"}_w{weight:g}.png'
    shutil.copy(pngs[-1], os.path.join(OUT, name))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sweep_dir', default='')
  parser.add_argument('--vae_dir', default='')
  args = parser.parse_args()
  if args.vae_dir:
    os.makedirs(VAE_OUT, exist_ok=True)
    for path in glob.glob(os.path.join(args.vae_dir, 'eval_*.json')):
      shutil.copy(path, VAE_OUT)
  os.makedirs(OUT, exist_ok=True)
  if args.sweep_dir:
    for name in ('results.json', 'results.csv'):
      shutil.copy(os.path.join(args.sweep_dir, name), os.path.join(OUT, name))
  with open(os.path.join(OUT, 'results.json')) as f:
    results = json.load(f)
  if args.sweep_dir:
    figures(results, args.sweep_dir)
  with open(PAGE) as f:
    page = f.read()
  page = replace_between(page, BEGIN, END, table(results))
  page = replace_between(page, VAE_BEGIN, VAE_END, vae_table())
  with open(PAGE, 'w') as f:
    f.write(page)


if __name__ == '__main__':
  main()
