"""The ALI ring8 sweep of docs/results/ali.md (issue 12).

  cd <a checkout> && python -m vi_gen.sweep \
      --sweep=docs/results/ali/sweep_ring8.py --parallel 1

configs/ali.py:toy (ring8, 2-D latent, MLPs 128x3, batch 256, Adam 1e-3,
b1 0.5), evaluated every 1000 steps. Arms: eq. (41) ('vi') as the paper
gives it; with small steps (lr 1e-4) and with 5 D steps per iteration (the
paper's "optimizing carefully") and both; eq. (40) complete (the DERIVED terms, which
need Gaussian sides and 2 E/G steps) and, as its control, eq. (41) on the
same Gaussian sides and 2 E/G steps; and eqs. (42) and (43), (43) also at
lr 1e-4 (does 5000 steps suffice at that rate?).
"""

GAUSSIAN = {
  'ali.encoder_sigma': 0.1,
  'ali.generator_sigma': 0.1,
  'g_steps': 2,
}

SWEEP = {
  'config': 'configs/ali.py:toy',
  'name': 'ali_ring8',
  'set': {'run.eval_every_steps': 1000},
  # Run first with seeds 0-2, then 0-4 (finished runs are not rerun).
  'axes': {'seed': [0, 1, 2, 3, 4]},
  'arms': [
    {'ali.variant': 'vi'},
    {'ali.variant': 'minmax'},
    {'ali.variant': 'nonsaturating'},
    {'ali.variant': 'vi', 'optim.lr': 1e-4},
    {'ali.variant': 'nonsaturating', 'optim.lr': 1e-4},
    {'ali.variant': 'vi', 'd_steps': 5},
    {'ali.variant': 'vi', 'optim.lr': 1e-4, 'd_steps': 5},
    {'ali.variant': 'vi', **GAUSSIAN},
    {'ali.variant': 'vi', 'ali.complete': True, **GAUSSIAN},
  ],
}
