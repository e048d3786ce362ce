"""A model added from outside the package trains and evaluates through the
command line's code path, with nothing in `vi_gen/` changed.

The model is a least-squares GAN (Mao et al. 2017, arXiv:1611.04076): the
GAN's networks and schedule with the losses below. Run as a script, this
file registers it and hands over to `vi_gen.main`, exactly as a research
script of a user would.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from vi_gen import methods
from vi_gen.methods.gan import GAN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LeastSquaresGAN(GAN):
  """D regresses real -> 1, fake -> 0; G pushes D(G(z)) -> 1. The GAN's
  networks, schedule and old-generator regularizer stay."""

  def discriminator_objective(self, real_out, fake_out):
    return 0.5 * jnp.mean((real_out - 1.0) ** 2) + 0.5 * jnp.mean(fake_out**2)

  def generator_objective(self, fake_out):
    return 0.5 * jnp.mean((fake_out - 1.0) ** 2)


def test_one_iteration_trains_on_the_least_squares_losses():
  """The registered model runs its own losses, not the GAN's."""
  from configs import gan as gan_config
  from vi_gen import data

  config = gan_config.get_config('test')
  shape = data.example_shape(config.data)
  ls, gan = LeastSquaresGAN(config, shape), GAN(config, shape)
  state = gan.init(jax.random.key(0))
  batch = jnp.asarray(
    np.random.default_rng(0).uniform(-1, 1, (1, 8, *shape)), jnp.float32
  )
  ls_state, ls_metrics = jax.jit(ls.iteration)(state, batch, jax.random.key(1))
  gan_state, gan_metrics = jax.jit(gan.iteration)(
    state, batch, jax.random.key(1)
  )
  assert float(ls_metrics['d_loss']) != float(gan_metrics['d_loss'])
  diff = jax.tree.map(
    lambda a, b: float(jnp.max(jnp.abs(a - b))),
    ls_state.params,
    gan_state.params,
  )
  assert max(jax.tree.leaves(diff)) > 1e-6


def test_trains_and_evaluates_through_the_command_line(tmp_path):
  workdir = str(tmp_path / 'lsgan')
  common = [
    sys.executable,
    os.path.abspath(__file__),
    '--config=configs/gan.py:test',
    '--config.model=lsgan',
    f'--workdir={workdir}',
  ]
  env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'}
  train = subprocess.run(
    [*common, '--config.run.eval_every_steps=4'],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert train.returncode == 0, train.stderr[-3000:]
  with open(os.path.join(workdir, 'eval_4.json')) as f:
    results = json.load(f)
  assert results['model'] == 'lsgan'
  assert np.isfinite(results['metrics']['mnist_fid'])
  assert sorted(os.listdir(os.path.join(workdir, 'samples')))[-1] == (
    'step_0000004.png'
  )
  evaluate = subprocess.run(
    [*common, '--mode=eval'],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  assert json.loads(evaluate.stdout)['step'] == 4


if __name__ == '__main__':
  from absl import app

  from vi_gen import main

  methods.register('lsgan', LeastSquaresGAN)
  app.run(main.main, flags_parser=main.parse_flags)
