"""What the training loop adds per step to the bare jitted iteration (#14).

For each GAN preset given, alternating in every repeat:

* the loop: `train.train_and_evaluate` for N and for 2N steps in fresh
  workdirs, each timed from the loop's second batch request (the first
  step compiled and dispatched) to its return. The difference over N steps
  is the loop's time per step: setup, compilation and the final checkpoint
  and pictures cancel out; logging every `--log_every` steps stays in;
* the bare iteration: the same model's jitted, donated iteration on one
  device batch, N times, blocked on at the end.

It prints both in ms per step, iterations/s, and the loop's overhead per
step (median of the paired differences), in wall time and in this
process's CPU time (all threads): on a machine shared with other jobs the
CPU time is the steadier of the two. Not part of the tests.

Usage, from the repository root:
  python -m benchmarks.loop_bench [--presets test,mnist] [--repeats 3]
"""

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from configs import gan as gan_config
from vi_gen import compiler, train
from vi_gen.experiment import Experiment

# Steps N per preset: long enough that N steps dwarf the timing noise.
STEPS = {'test': 400, 'mnist': 40}


def clocks() -> np.ndarray:
  """(wall, CPU) seconds."""
  return np.array([time.perf_counter(), time.process_time()])


def loop_seconds(config, steps: int) -> np.ndarray:
  """(wall, CPU) seconds from the first step's dispatch to the end of a
  `steps` run."""
  config = config.copy_and_resolve_references()
  config.run.num_steps = steps
  feed, started = train.device_batches, []

  def timed_feed(*args, **kwargs):
    for i, batch in enumerate(feed(*args, **kwargs)):
      if i == 1:
        started.append(clocks())
      yield batch

  train.device_batches = timed_feed
  try:
    with tempfile.TemporaryDirectory() as workdir:
      train.train_and_evaluate(config, workdir)
      return clocks() - started[0]
  finally:
    train.device_batches = feed


def bare_seconds(config, steps: int) -> np.ndarray:
  """(wall, CPU) seconds for `steps` jitted iterations (compiled
  beforehand)."""
  method = Experiment(config).method
  shape = (method.batches_per_iteration, config.batch_size)
  rng = np.random.default_rng(0)
  batch = rng.uniform(-1, 1, shape + method.example_shape)
  batch = jnp.asarray(batch, jnp.float32)
  iteration = compiler.jit(
    method.iteration, compiler.CONVOLUTIONAL, donate_argnums=0
  )
  state, metrics = iteration(
    method.init(jax.random.key(0)), batch, jax.random.key(0)
  )
  jax.block_until_ready(metrics)
  start = clocks()
  for i in range(steps):
    state, metrics = iteration(state, batch, jax.random.key(i))
  jax.block_until_ready((state, metrics))
  return clocks() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--presets', default='test,mnist')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--log_every', type=int, default=100)
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  print(f'{jax.devices()[0].platform}, median of {args.repeats} repeats')
  print(
    f'{"preset":7} {"clock":5} {"N":>4} {"loop ms/step":>13} {"it/s":>7}'
    f' {"bare ms/step":>13} {"it/s":>7} {"overhead ms":>12} {"overhead":>9}'
  )
  for preset in args.presets.split(','):
    config = gan_config.get_config(preset)
    n = STEPS[preset]
    config.run.log_every_steps = args.log_every
    config.run.checkpoint_every_steps = config.run.sample_every_steps = 10**6
    loop, bare = [], []
    for _ in range(args.repeats):
      long, short = loop_seconds(config, 2 * n), loop_seconds(config, n)
      loop.append((long - short) / n * 1e3)
      bare.append(bare_seconds(config, n) / n * 1e3)
    for clock, c in (('wall', 0), ('CPU', 1)):
      ls, bs = [x[c] for x in loop], [x[c] for x in bare]
      over = statistics.median(a - b for a, b in zip(ls, bs, strict=True))
      loop_ms, bare_ms = statistics.median(ls), statistics.median(bs)
      print(
        f'{preset:7} {clock:5} {n:4d} {loop_ms:13.2f} {1e3 / loop_ms:7.1f}'
        f' {bare_ms:13.2f} {1e3 / bare_ms:7.1f} {over:12.3f}'
        f' {over / bare_ms:9.1%}'
      )


if __name__ == '__main__':
  main()
