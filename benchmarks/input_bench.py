"""The celeb_a input pipeline's images/s next to the training step's.

The celeba preset's pipeline (`vi_gen.data.celeba_batches`: undecoded
records, per-epoch shuffle, decode of the crop window, resize, batch) reads a
local TFDS celeb_a; without --data_dir a synthetic one is built first in a
temporary folder (218x178 JPEGs of smooth random colour fields with a little
noise; their mean size is printed next to CelebA's 7.1 KB). Reports, on this
machine:

  pipeline  images/s of the pipeline alone, after a warm-up;
  step      images/s of one jitted, donated GAN iteration of the celeba
            preset (the reference networks) on a fixed batch: real images
            per iteration (batch_size x d_steps) / seconds per iteration;
  fed step  the same iteration fed by the pipeline, as train.py feeds it;
  resume    seconds to the first batch at batch 0 and at the last batch of
            an epoch (almost an epoch of undecoded records skipped), the
            rate at which the pipeline reads undecoded records, and from it
            the worst resume on CelebA's train split next to the cost of
            replaying (decoding) every batch up to the end of experiment 1.

The pipeline is not the bottleneck when `pipeline` is well above `step` and
`fed step` matches `step`.

Usage, from the repository root:
  python -m benchmarks.input_bench [--num_examples 4096] [--steps 5]
      [--batch_size 64] [--data_dir DIR]
"""

import argparse
import io
import itertools
import os
import statistics
import tempfile
import time

import jax
import numpy as np
import tensorflow as tf
from PIL import Image

from configs import gan as gan_config
from vi_gen import data, parallel, testing
from vi_gen.methods.gan import GAN

CELEBA_MEAN_JPEG_BYTES = 1_443_490_838 / 202_599  # img_align_celeba.zip
CELEBA_TRAIN = 162_770  # examples in TFDS celeb_a's train split
CELEBA_TRAIN_ITERATIONS = 158_250  # the paper's experiment 1


def synthetic_jpeg(index: int) -> bytes:
  """A smooth random colour field with noise, JPEG quality 90."""
  rng = np.random.default_rng(index)
  coarse = Image.fromarray(rng.uniform(0, 255, (6, 5, 3)).astype(np.uint8))
  field = np.asarray(coarse.resize((178, 218), Image.BICUBIC), np.float32)
  noisy = np.clip(field + rng.normal(0, 3, field.shape), 0, 255)
  buffer = io.BytesIO()
  Image.fromarray(noisy.astype(np.uint8)).save(buffer, 'JPEG', quality=90)
  return buffer.getvalue()


def build_synthetic_celeba(data_dir: str, num_examples: int) -> float:
  """A prepared TFDS celeb_a of synthetic JPEGs; returns their mean size."""
  jpegs = [synthetic_jpeg(i) for i in range(num_examples)]
  testing.store_celeba(data_dir, {'train': jpegs})
  return float(np.mean([len(jpeg) for jpeg in jpegs]))


def pipeline_rate(config, batches: int) -> float:
  """Images/s of celeba_batches after 5 warm-up batches."""
  stream = data.celeba_batches(config, config.batch_size, config.seed, 0)
  for _ in itertools.islice(stream, 5):
    pass
  start = time.perf_counter()
  for _ in itertools.islice(stream, batches):
    pass
  return batches * config.batch_size / (time.perf_counter() - start)


def resume_seconds(config, start: int) -> float:
  """Seconds from a fresh pipeline to its first batch, resuming at `start`."""
  begin = time.perf_counter()
  next(data.celeba_batches(config, config.batch_size, config.seed, start))
  return time.perf_counter() - begin


def record_rate(config) -> float:
  """Undecoded records/s, read and counted inside tf.data."""
  records = data.celeba_records(config)
  begin = time.perf_counter()
  count = int(records.reduce(np.int64(0), lambda n, _: n + 1))
  return count / (time.perf_counter() - begin)


def step_rates(config, steps: int) -> tuple[float, float]:
  """Images/s of the GAN iteration on a fixed batch and fed by the pipeline
  as train.py feeds it; the two alternate, so that other load on the
  machine slows both alike."""
  gan = GAN(config, data.example_shape(config.data))
  mesh = parallel.create_mesh()
  replicated = parallel.replicated(mesh)
  sharding = parallel.batch_sharding(mesh, batch_axis=1)
  iteration = jax.jit(
    gan.iteration, donate_argnums=0, out_shardings=(replicated, replicated)
  )
  state = jax.jit(gan.init, out_shardings=replicated)(jax.random.key(0))
  k = gan.batches_per_iteration
  stream = data.celeba_batches(config, config.batch_size, config.seed, 0)

  def fetch():
    return parallel.to_global(
      np.stack([next(stream) for _ in range(k)]), sharding
    )

  fixed = fetch()
  state, metrics = iteration(state, fixed, jax.random.key(0))  # compiles
  jax.block_until_ready(metrics)
  times = {'fixed': [], 'fed': []}
  for i in range(steps):
    for name, feed in (('fixed', lambda: fixed), ('fed', fetch)):
      begin = time.perf_counter()
      state, metrics = iteration(state, feed(), jax.random.key(i))
      jax.block_until_ready(metrics)
      times[name].append(time.perf_counter() - begin)
  images = k * config.batch_size
  return tuple(images / statistics.median(times[n]) for n in ('fixed', 'fed'))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_examples', type=int, default=4096)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--data_dir', default='')
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  config = gan_config.get_config('celeba')
  config.batch_size = args.batch_size
  with tempfile.TemporaryDirectory() as scratch:
    config.run.data_dir = args.data_dir or scratch
    if not args.data_dir:
      mean_bytes = build_synthetic_celeba(scratch, args.num_examples)
      print(
        f'synthetic celeb_a: {args.num_examples} JPEGs of {mean_bytes / 1e3:.1f}'
        f' KB on average (CelebA: {CELEBA_MEAN_JPEG_BYTES / 1e3:.1f} KB)'
      )
    per_epoch = data.celeba_batches_per_epoch(config, config.batch_size)
    print(
      f'{os.cpu_count()} CPU cores, JAX on {jax.device_count()}'
      f' {jax.devices()[0].platform} device(s), batch {config.batch_size},'
      f' crop {config.data.crop_size} -> {config.data.image_size}'
      f' ({config.data.resize}), shuffle buffer {config.data.shuffle_buffer}'
    )
    pipeline = pipeline_rate(config, min(per_epoch, 50))
    records = record_rate(config)
    fresh = resume_seconds(config, 0)
    late = resume_seconds(config, per_epoch - 1)
    step, fed = step_rates(config, args.steps)
  print(f'pipeline   {pipeline:10.1f} images/s')
  print(f'step       {step:10.1f} images/s (median of {args.steps})')
  print(f'fed step   {fed:10.1f} images/s ({fed / step:.2f} of step)')
  print(f'pipeline / step: {pipeline / step:.0f}x')
  print(
    f'resume     first batch {fresh:.2f} s at batch 0, {late:.2f} s at batch'
    f' {per_epoch - 1} (after skipping {(per_epoch - 1) * config.batch_size:,}'
    f' undecoded records); undecoded records read at {records:,.0f}/s'
  )
  # Extrapolated to CelebA's train split on one host and experiment 1.
  worst = (CELEBA_TRAIN + config.data.shuffle_buffer) / records
  replay = CELEBA_TRAIN_ITERATIONS * config.batch_size / pipeline
  print(
    f'           CelebA train ({CELEBA_TRAIN:,} records, one host): a resume'
    f' reads at most an epoch plus the shuffle buffer, {worst:.0f} s at this'
    f' rate; replaying and decoding every batch up to iteration'
    f' {CELEBA_TRAIN_ITERATIONS:,} (the previous pipeline) would take'
    f' {replay:,.0f} s at the pipeline rate'
  )


if __name__ == '__main__':
  main()
