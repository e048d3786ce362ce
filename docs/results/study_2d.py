"""The 2-D study of docs/results.md: does the old-generator regularizer
(eq. 26) make GAN training on 2-D mixtures more stable than reg_weight=0?

  PYTHONPATH=. nice -n 10 python -m vi_gen.sweep \
      --sweep=docs/results/study_2d.py --parallel 1

Sized to about 75 minutes on one core of the 2-core CPU machine (about 43 s
per run of 10,000 iterations): the central pair (weight 0 vs phase weight 5)
on both mixtures at both learning rates with 10 seeds, first and seed by
seed, so that a cut-short study still has balanced cells; then the other
arms ({phase, lagged} x {1, 5, 50} minus phase 5) with 5 seeds on ring8 at
lr 1e-4 only (the full design, 180 runs, would take about 2 hours 10 min).
"""

CENTRAL_SEEDS = range(10)
OTHER_SEEDS = range(5)
DATA = ('ring8', 'grid25')
LRS = (1e-3, 1e-4)
CENTRAL = ({'reg_weight': 0.0}, {'reg_weight': 5.0, 'old_generator': 'phase'})
OTHERS = [
  {'reg_weight': w, 'old_generator': g}
  for g in ('phase', 'lagged')
  for w in (1.0, 5.0, 50.0)
  if (g, w) != ('phase', 5.0)
]


def get_sweep() -> dict:
  arms = []
  for seed in CENTRAL_SEEDS:
    for name in DATA:
      for lr in LRS:
        for arm in CENTRAL:
          arms.append({'data.name': name, 'optim.lr': lr, **arm, 'seed': seed})
  for seed in OTHER_SEEDS:
    for arm in OTHERS:
      arms.append({'data.name': 'ring8', 'optim.lr': 1e-4, **arm, 'seed': seed})
  return {
    'name': 'study_2d',
    'config': 'configs/gan.py:toy',
    'root': 'runs/sweeps',
    'set': {'run.num_steps': 10_000, 'run.eval_every_steps': 1000},
    'arms': arms,
  }
