"""Times one GAN training iteration with each `run.conv_lowering`.

One iteration of the reference schedule (1 D step, the old-generator
snapshot, 2 G steps with the regularizer), jitted and donated as in the loop,
for the MNIST preset and the reference 64x64 CelebA networks, side by side in
one run. Prints the median seconds per iteration and the speed-up.

Usage, from the repository root:
  python -m benchmarks.iteration_bench [--repeats 3] [--skip_celeba]
"""

import argparse
import statistics
import time

import jax
import numpy as np

from configs import gan as gan_config
from vi_gen import compiler
from vi_gen.methods.gan import GAN


def time_iteration(preset: str, lowering: str, repeats: int) -> float:
  config = gan_config.get_config(preset)
  config.run.conv_lowering = lowering
  shape = (28, 28, 1) if preset == 'mnist' else (64, 64, 3)
  gan = GAN(config, shape)
  state = gan.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = rng.uniform(-1, 1, (config.d_steps, config.batch_size, *shape))
  batch = jax.numpy.asarray(batch, jax.numpy.float32)
  iteration = compiler.jit(
    gan.iteration, compiler.CONVOLUTIONAL, donate_argnums=0
  )
  state, metrics = iteration(state, batch, jax.random.key(0))  # compile
  jax.block_until_ready(metrics)
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    state, metrics = iteration(state, batch, jax.random.key(i + 1))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--skip_celeba', action='store_true')
  args = parser.parse_args()
  presets = ['mnist'] + ([] if args.skip_celeba else ['celeba'])
  print(f'{jax.devices()[0].platform}, batch 64, median of {args.repeats}')
  print(f'{"preset":8} {"native (s)":>16} {"phase (s)":>14} {"speed-up":>9}')
  for preset in presets:
    slow = time_iteration(preset, 'native', args.repeats)
    fast = time_iteration(preset, 'phase', args.repeats)
    print(f'{preset:8} {slow:16.3f} {fast:14.3f} {slow / fast:8.1f}x')


if __name__ == '__main__':
  main()
