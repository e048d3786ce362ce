"""What the old-generator regularizer costs per GAN iteration, and what
reusing the first G step's samples as G^o(z) saves (#14).

In 'phase' mode G^o is the generator at the start of the G phase, so on the
first z batch G^o(z) is the first G step's own forward output; the iteration
reuses it instead of running G once more. This times, for the `mnist` GAN
preset (1 D step, 2 regularized G steps, batch 64), jitted and donated as in
the loop, alternating the variants side by side in every repeat:

* reuse: the iteration as it is;
* no reuse: the same with G^o(z_0) run on its own (the code before #14);
* reg_weight=0: no regularizer at all.

It prints the median ms per iteration of each, and the paired ratios
(no reuse / reuse, reg_weight=5 / reg_weight=0) as medians over repeats,
in wall time and in this process's CPU time (all threads): on a machine
shared with other jobs the CPU time is the steadier of the two. Not part of
the tests.

Usage, from the repository root:
  python -m benchmarks.regularizer_bench [--repeats 7] [--iterations 10]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import gan as gan_config
from vi_gen import compiler, players
from vi_gen.methods.gan import GAN


class WithoutReuse(GAN):
  """The GAN with G^o(z_0) computed by its own generator run, as before."""

  def _generator_inputs(self, ctx: players.Context):
    (z, old_fakes), index = super()._generator_inputs(ctx)
    if old_fakes and old_fakes[0] is None:
      old, _ = self.run('generator', ctx.params, ctx.batch_stats, z[0])
      old_fakes = (old, *old_fakes[1:])
    return (z, old_fakes), index


def make_timer(model: type[GAN], reg_weight: float, preset: str):
  """A function that runs `n` iterations and returns ms per iteration,
  (wall, CPU)."""
  config = gan_config.get_config(preset)
  config.reg_weight = reg_weight
  shape = (28, 28, 1)
  gan = model(config, shape)
  rng = np.random.default_rng(0)
  batch = rng.uniform(-1, 1, (config.d_steps, config.batch_size, *shape))
  batch = jnp.asarray(batch, jnp.float32)
  iteration = compiler.jit(
    gan.iteration, compiler.CONVOLUTIONAL, donate_argnums=0
  )
  state = [gan.init(jax.random.key(0))]
  state[0], metrics = iteration(state[0], batch, jax.random.key(0))
  jax.block_until_ready(metrics)  # Compiled.

  def run(n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
      state[0], metrics = iteration(state[0], batch, jax.random.key(i))
    jax.block_until_ready((state[0], metrics))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / n * 1e3, cpu / n * 1e3

  return run


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--iterations', type=int, default=10)
  parser.add_argument('--preset', default='mnist')
  args = parser.parse_args()
  timers = {
    'reuse': make_timer(GAN, 5.0, args.preset),
    'no reuse': make_timer(WithoutReuse, 5.0, args.preset),
    'reg_weight=0': make_timer(GAN, 0.0, args.preset),
  }
  ms = {name: [] for name in timers}
  for _ in range(args.repeats):
    for name, run in timers.items():
      ms[name].append(run(args.iterations))
  print(
    f'{jax.devices()[0].platform}, {args.preset} GAN preset, median of'
    f' {args.repeats} repeats x {args.iterations} iterations'
  )
  for clock, c in (('wall', 0), ('CPU', 1)):
    times = {name: [v[c] for v in values] for name, values in ms.items()}

    def paired(f, a, b, times=times):
      return statistics.median(map(f, times[a], times[b]))

    print(f'{clock} time')
    for name, values in times.items():
      print(f'  {name:14} {statistics.median(values):8.1f} ms/iteration')
    saved = paired(lambda x, y: x - y, 'no reuse', 'reuse')
    ratio = paired(lambda x, y: x / y, 'no reuse', 'reuse')
    print(
      f'  reuse saves {saved:.1f} ms/iteration (no reuse / reuse {ratio:.3f})'
    )
    ratio = paired(lambda x, y: x / y, 'reuse', 'reg_weight=0')
    print(f'  regularizer: reg_weight=5 / 0 {ratio:.3f}')


if __name__ == '__main__':
  main()
