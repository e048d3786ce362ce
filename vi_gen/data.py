"""Input pipelines: bundled MNIST, TFDS mnist / celeb_a, 2-D Gaussian mixtures.

Every dataset yields host-local batches as float32 numpy arrays, and batch `i`
is a pure function of (seed, i): a resumed run starting at batch `i` sees
exactly the batches that an uninterrupted run would have seen.
"""

import dataclasses
import functools
import gzip
import os
import pathlib
from collections.abc import Callable, Iterator

import jax
import numpy as np

from vi_gen import errors

BUNDLED_MNIST_DIR = pathlib.Path(__file__).parent / 'assets' / 'mnist'
IMAGE_DATASETS = ('mnist', 'celeb_a')
MIXTURES = ('ring8', 'grid25')
NAMES = IMAGE_DATASETS + MIXTURES

CELEBA_FILES = (
  'img_align_celeba.zip',
  'list_eval_partition.txt',
  'list_attr_celeba.txt',
  'list_landmarks_align_celeba.txt',
  'identity_CelebA.txt',
)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A stream of batches of examples of shape `example_shape`.

  `host_batches(start)` yields this host's share of global batches start,
  start + 1, ...; `global_batch_size` rows are split evenly over processes.
  """

  name: str
  example_shape: tuple[int, ...]
  host_batches: Callable[[int], Iterator[np.ndarray]]


def _host_rows(global_batch_size: int) -> slice:
  per_host = global_batch_size // jax.process_count()
  start = jax.process_index() * per_host
  return slice(start, start + per_host)


def read_idx_images(path: os.PathLike) -> np.ndarray:
  """Reads a gzipped IDX image file (the MNIST format) as uint8 [N, H, W]."""
  with gzip.open(path, 'rb') as f:
    data = f.read()
  magic = int.from_bytes(data[0:4], 'big')
  if magic != 2051:
    raise errors.DataError(
      f'{path} is not an IDX image file (magic {magic}, expected 2051).'
    )
  n, h, w = (int.from_bytes(data[i : i + 4], 'big') for i in (4, 8, 12))
  pixels = np.frombuffer(data, dtype=np.uint8, offset=16)
  if pixels.size != n * h * w:
    raise errors.DataError(f'{path} is truncated: {pixels.size} != {n}*{h}*{w}')
  return pixels.reshape(n, h, w)


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1], the range of the generator's tanh."""
  return images.astype(np.float32) / 127.5 - 1.0


def in_memory_batches(
  examples: np.ndarray, batch_size: int, seed: int, start: int
) -> Iterator[np.ndarray]:
  """Shuffled epochs without replacement, each epoch's order from (seed, epoch).

  The last incomplete batch of each epoch is dropped so shapes stay static.
  """
  n = len(examples)
  per_epoch = n // batch_size
  if per_epoch == 0:
    raise errors.ConfigError(
      f'batch_size {batch_size} is larger than the dataset ({n} examples).'
    )
  rows = _host_rows(batch_size)
  index = start
  while True:
    epoch, offset = divmod(index, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    ids = order[offset * batch_size : (offset + 1) * batch_size][rows]
    yield examples[np.sort(ids)]
    index += 1


def mixture_centers(name: str) -> tuple[np.ndarray, float]:
  """Mode centres and std: ring8 (radius 2, std 0.02), grid25 (std 0.05)."""
  if name == 'ring8':
    angles = 2 * np.pi * np.arange(8) / 8
    return 2.0 * np.stack([np.cos(angles), np.sin(angles)], -1), 0.02
  if name == 'grid25':
    axis = np.arange(-4.0, 5.0, 2.0)
    return np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2), 0.05
  raise errors.ConfigError(f'Unknown mixture {name!r}; known: {MIXTURES}.')


def mixture_batches(
  name: str, batch_size: int, seed: int, start: int
) -> Iterator[np.ndarray]:
  """Equal-weight Gaussian mixture samples; batch i drawn from rng(seed, i)."""
  centers, std = mixture_centers(name)
  rows = _host_rows(batch_size)
  index = start
  while True:
    rng = np.random.default_rng([seed, index])
    modes = rng.integers(len(centers), size=batch_size)
    noise = rng.normal(size=(batch_size, 2))
    yield (centers[modes] + std * noise).astype(np.float32)[rows]
    index += 1


def _tfds_builder(name: str, data_config):
  import tensorflow_datasets as tfds

  return tfds.builder(
    name,
    data_dir=data_config.data_dir or None,
    try_gcs=data_config.try_gcs,
  )


def _celeba_missing_message(data_config) -> str:
  data_dir = data_config.data_dir or '~/tensorflow_datasets'
  files = '\n'.join(f'      {name}' for name in CELEBA_FILES)
  return (
    f'TFDS celeb_a is not prepared in {data_dir}. Google Drive quotas make'
    ' the automatic download unreliable, so prepare it by hand:\n'
    '  1. Download these five files from the CelebA page'
    ' (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, "Align&Cropped'
    ' Images" and the annotation files):\n'
    f'{files}\n'
    f'  2. Put them, with exactly these names, in'
    f' {data_dir}/downloads/manual/\n'
    '  3. Prepare the dataset once:\n'
    f'      tfds build celeb_a --data_dir={data_dir}\n'
    '  4. Run again with --config.data.data_dir pointing at that folder.\n'
    'To train without CelebA, use the bundled MNIST:'
    ' --config=configs/gan.py:mnist'
  )


def load_mnist(data_config) -> np.ndarray:
  """MNIST as float32 [N, 28, 28, 1] in [-1, 1].

  `source='bundled'` reads the 10k test images shipped in the package (works
  offline); `source='tfds'` reads TFDS mnist (`data.split`), which must be
  prepared.
  """
  if data_config.source == 'bundled':
    images = read_idx_images(BUNDLED_MNIST_DIR / 't10k-images-idx3-ubyte.gz')
    return to_unit_range(images)[..., None]
  import tensorflow_datasets as tfds

  builder = _tfds_builder('mnist', data_config)
  if not builder.is_prepared():
    raise errors.DataError(
      'TFDS mnist is not prepared in'
      f' {data_config.data_dir or "~/tensorflow_datasets"}. Prepare it'
      ' with `tfds build mnist` (needs network), or use the bundled copy'
      ' with --config.data.source=bundled.'
    )
  ds = builder.as_dataset(split=data_config.split, batch_size=-1)
  return to_unit_range(tfds.as_numpy(ds)['image'])


def celeba_batches(
  data_config, batch_size: int, seed: int, start: int
) -> Iterator[np.ndarray]:
  """TFDS celeb_a with the reference preprocessing (paper.md §4.2).

  Centre crop `crop_size` at the reference offsets, resize to `image_size`
  (bicubic), scale to [-1, 1]; shuffled with `seed`, repeated, batched per
  host. Resuming at batch `start` replays the same shuffled stream and skips
  `start` batches, so the position is restored exactly.
  """
  import tensorflow as tf
  import tensorflow_datasets as tfds

  builder = _tfds_builder('celeb_a', data_config)
  host_batch = batch_size // jax.process_count()
  size, crop = data_config.image_size, data_config.crop_size
  top, left = (218 - crop) // 2, (178 - crop) // 2

  def preprocess(example):
    image = tf.image.crop_to_bounding_box(
      example['image'], top, left, crop, crop
    )
    image = tf.image.resize(image, (size, size), method=data_config.resize)
    return tf.cast(image, tf.float32) / 127.5 - 1.0

  ds = builder.as_dataset(
    split=tfds.split_for_jax_process(data_config.split, drop_remainder=True),
    shuffle_files=False,
  )
  ds = ds.map(
    preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  ds = ds.repeat().shuffle(data_config.shuffle_buffer, seed=seed)
  ds = ds.batch(host_batch, drop_remainder=True).skip(start)
  yield from ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def example_shape(data_config) -> tuple[int, ...]:
  """The shape of one example, known without touching the data."""
  if data_config.name in MIXTURES:
    return (2,)
  if data_config.name == 'mnist':
    return (28, 28, 1)
  return (data_config.image_size, data_config.image_size, 3)


def create_dataset(config) -> Dataset:
  """The dataset named by `config.data.name`, checked before training starts.

  Raises:
    errors.DataError: the dataset is not available, with the steps to get it.
  """
  data_config = config.data
  name, batch_size, seed = data_config.name, config.batch_size, config.seed
  if name == 'mnist':
    images = load_mnist(data_config)
    return Dataset(
      name,
      images.shape[1:],
      functools.partial(in_memory_batches, images, batch_size, seed),
    )
  if name in MIXTURES:
    return Dataset(
      name,
      (2,),
      functools.partial(mixture_batches, name, batch_size, seed),
    )
  if name == 'celeb_a':
    if not _tfds_builder('celeb_a', data_config).is_prepared():
      raise errors.DataError(_celeba_missing_message(data_config))
    return Dataset(
      name,
      example_shape(data_config),
      functools.partial(celeba_batches, data_config, batch_size, seed),
    )
  raise errors.ConfigError(
    f'Unknown data.name {name!r}; known: {", ".join(NAMES)}.'
  )
