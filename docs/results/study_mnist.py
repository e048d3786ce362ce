"""The MNIST study of docs/results.md: does the old-generator regularizer
(eq. 26, weight 5) change MNIST-FID/KID against the standard GAN (weight 0),
with BatchNorm (the reference's Experiment 1 schedule: 1 D step : 2 G steps
on one z) and without (Experiment 2: no BatchNorm, no hidden biases, 5 D
steps : 5 z batches x 2 G steps against one G^o snapshot)?

  PYTHONPATH=. python -m vi_gen.sweep --sweep=docs/results/study_mnist.py \
      --parallel 1

Much smaller than issue 12 asks (10k iterations): both arms get the same
number of gradient steps, 1000 D steps and 2000 G steps (1000 iterations
of the `mnist` preset, 200 of `mnist_exp2`), evaluated every 250 D steps,
3 seeds each, seed by seed so that a cut-short study still has balanced
cells. That is what fitted in one session on the 2-core CPU machine,
shared with other work.
"""

SEEDS = range(3)
WEIGHTS = (0.0, 5.0)
# The `mnist_exp2` preset, as overrides of `mnist` (a sweep has one config).
EXPERIMENT_2 = {
  'd_steps': 5,
  'g_batches': 5,
  'network.batch_norm': False,
  'network.hidden_bias': False,
}
SCHEDULES = (
  ({}, {'run.num_steps': 1000, 'run.eval_every_steps': 250}),
  (EXPERIMENT_2, {'run.num_steps': 200, 'run.eval_every_steps': 50}),
)


def get_sweep() -> dict:
  arms = [
    {**schedule, **length, 'reg_weight': weight, 'seed': seed}
    for seed in SEEDS
    for schedule, length in SCHEDULES
    for weight in WEIGHTS
  ]
  return {
    'name': 'study_mnist',
    'config': 'configs/gan.py:mnist',
    'root': 'runs/sweeps',
    'set': {'run.checkpoint_every_steps': 250},
    'arms': arms,
  }
