"""Times DCGAN conv stacks with flax's stride-2 layers vs `vi_gen.layers`.

For the MNIST-size DCGAN (28x28) and the reference 64x64 DCGAN, times one
jitted forward and backward pass (value and gradient with respect to the
parameters and the input) of the generator and of the discriminator, built
once with `flax.linen.ConvTranspose` / `flax.linen.Conv` and once with
`ConvTranspose2x` / `Conv2x`, on the same parameters. Prints the times, the
speed-ups and the largest difference between the two results (loss and
gradients), relative to the largest entry of the flax results.

Then, for the transposed convolution of each generator layer, times the
two forms `vi_gen.layers` chooses between (four stride-1 convolutions, or
one matrix product and shifted sums, "col2im") side by side.

Usage, from the repository root:
  python -m benchmarks.conv_bench [--batch 64] [--repeats 3] [--quick]
"""

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vi_gen import compiler, layers

LATENT_DIM = 100


class Generator(nn.Module):
  """Dense to a `base` feature map, then 5x5 stride-2 upsamplings."""

  base: tuple[int, int, int]
  features: Sequence[int]
  fast: bool

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(int(np.prod(self.base)), name='dense')(z))
    h = h.reshape(-1, *self.base)
    for i, f in enumerate(self.features):
      name = f'up{i}'
      if self.fast:
        up = layers.ConvTranspose2x(f, 5, name=name)
      else:
        up = nn.ConvTranspose(f, (5, 5), (2, 2), 'SAME', name=name)
      h = up(h)
      h = jnp.tanh(h) if i == len(self.features) - 1 else nn.relu(h)
    return h


class Discriminator(nn.Module):
  """5x5 stride-2 convolutions, then Dense to one logit."""

  features: Sequence[int]
  fast: bool

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for i, f in enumerate(self.features):
      name = f'down{i}'
      if self.fast:
        down = layers.Conv2x(f, 5, name=name)
      else:
        down = nn.Conv(f, (5, 5), (2, 2), 'SAME', name=name)
      h = nn.leaky_relu(down(h), 0.2)
    return nn.Dense(1, name='logit')(h.reshape(h.shape[0], -1))


# name: (generator kwargs, discriminator kwargs, image shape).
STACKS = {
  'mnist 28x28': (
    {'base': (7, 7, 128), 'features': (64, 1)},
    {'features': (64, 128)},
    (28, 28, 1),
  ),
  'reference 64x64': (
    {'base': (4, 4, 512), 'features': (256, 128, 64, 3)},
    {'features': (64, 128, 256, 512)},
    (64, 64, 3),
  ),
}


def _step(model: nn.Module) -> Callable:
  """Jitted value and gradient w.r.t. (params, input) of a scalar loss."""

  def loss(params, x):
    return jnp.mean(jnp.square(model.apply(params, x)))

  return compiler.jit(
    jax.value_and_grad(loss, argnums=(0, 1)), compiler.CONVOLUTIONAL
  )


def _time(fn: Callable, *args, repeats: int) -> tuple[float, object]:
  """Median wall time of `fn(*args)` after a compiling call, and its result."""
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times), out


def _max_rel_diff(a, b) -> float:
  """Largest |a - b| over all leaves, relative to the largest |b|."""
  diffs = jax.tree.leaves(
    jax.tree.map(lambda u, v: jnp.max(jnp.abs(u - v)), a, b)
  )
  scale = jax.tree.leaves(jax.tree.map(lambda v: jnp.max(jnp.abs(v)), b))
  return float(max(diffs) / max(scale))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, help='batch size (default 64)')
  parser.add_argument('--repeats', type=int, default=3, help='timed runs')
  parser.add_argument(
    '--quick',
    action='store_true',
    help='batch 8 (unless --batch is given) and one timed run',
  )
  args = parser.parse_args()
  batch = args.batch or (8 if args.quick else 64)
  repeats = 1 if args.quick else args.repeats
  print(
    f'{jax.devices()[0].device_kind} x{jax.device_count()}, batch {batch}, '
    f'median of {repeats} run(s) after compilation; forward+backward (s)'
  )
  print(
    f'{"stack":<18}{"net":<5}{"flax":>10}{"vi_gen":>10}{"speed-up":>10}'
    f'{"rel diff":>12}'
  )
  rng = np.random.default_rng(0)
  for name, (g_kwargs, d_kwargs, image_shape) in STACKS.items():
    nets = {
      'G': (
        functools.partial(Generator, **g_kwargs),
        rng.normal(size=(batch, LATENT_DIM)),
      ),
      'D': (
        functools.partial(Discriminator, **d_kwargs),
        rng.uniform(-1, 1, size=(batch, *image_shape)),
      ),
    }
    for net, (make, x) in nets.items():
      x = jnp.asarray(x, jnp.float32)
      params = make(fast=False).init(jax.random.key(0), x)
      naive_time, naive_out = _time(
        _step(make(fast=False)), params, x, repeats=repeats
      )
      fast_time, fast_out = _time(
        _step(make(fast=True)), params, x, repeats=repeats
      )
      diff = _max_rel_diff(fast_out, naive_out)
      print(
        f'{name:<18}{net:<5}{naive_time:>10.4f}{fast_time:>10.4f}'
        f'{naive_time / fast_time:>9.1f}x{diff:>12.1e}',
        flush=True,
      )
  compare_transposed_forms(batch, repeats)


def compare_transposed_forms(batch: int, repeats: int) -> None:
  """Forward + backward time of `_phase_conv` and `_col2im_conv` on each
  generator layer's shapes ([N, H, W, C] -> [N, 2H, 2W, F], 5x5)."""
  print(
    f'{"transposed conv":<26}{"phase":>10}{"col2im":>10}{"col2im/phase":>14}'
  )
  rng = np.random.default_rng(1)
  for g_kwargs, _, _ in STACKS.values():
    size = g_kwargs['base'][0]
    channels = (g_kwargs['base'][2], *g_kwargs['features'])
    for c, f in zip(channels[:-1], channels[1:], strict=True):
      x = jnp.asarray(rng.normal(size=(batch, size, size, c)), jnp.float32)
      kernel = jnp.asarray(rng.normal(size=(5, 5, c, f)), jnp.float32)
      probe = jnp.asarray(
        rng.normal(size=(batch, 2 * size, 2 * size, f)), jnp.float32
      )
      times = []
      for form in (layers._phase_conv, layers._col2im_conv):

        def loss(x, kernel, probe, form=form):
          out_size = probe.shape[1:3]
          return jnp.sum(form(x, kernel, (3, 3), out_size) * probe)

        step = compiler.jit(
          jax.value_and_grad(loss, argnums=(0, 1)), compiler.CONVOLUTIONAL
        )
        times.append(_time(step, x, kernel, probe, repeats=repeats)[0])
      shape = f'{size}x{size}x{c}->{2 * size}x{2 * size}x{f}'
      print(
        f'{shape:<26}{times[0]:>10.4f}{times[1]:>10.4f}'
        f'{times[1] / times[0]:>14.2f}',
        flush=True,
      )
      size *= 2


if __name__ == '__main__':
  main()
