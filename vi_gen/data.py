"""Input pipelines: bundled MNIST, TFDS mnist / celeb_a, 2-D Gaussian mixtures.

Every dataset yields host-local batches as float32 numpy arrays, and batch `i`
is a pure function of (seed, i): a resumed run starting at batch `i` sees
exactly the batches that an uninterrupted run would have seen.
"""

import dataclasses
import functools
import gzip
import math
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

CELEBA_HEIGHT, CELEBA_WIDTH = 218, 178  # Aligned & cropped CelebA images.
# 'bicubic_tf1' (the reference's TF1 op) or a tf.image.resize method.
RESIZE_METHODS = (
  'bicubic_tf1',
  'area',
  'bicubic',
  'bilinear',
  'gaussian',
  'lanczos3',
  'lanczos5',
  'mitchellcubic',
  'nearest',
)
CELEBA_FILES = (
  'img_align_celeba.zip',
  'list_eval_partition.txt',
  'list_attr_celeba.txt',
  'list_landmarks_align_celeba.txt',
  'identity_CelebA.txt',
)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A stream of batches.

  `host_batches(start)` yields this host's share of global batches start,
  start + 1, ...; `global_batch_size` rows are split evenly over processes.
  """

  host_batches: Callable[[int], Iterator[np.ndarray]]


def _host_rows(global_batch_size: int) -> slice:
  per_host = global_batch_size // jax.process_count()
  start = jax.process_index() * per_host
  return slice(start, start + per_host)


def _read_idx(path: os.PathLike, magic: int, kind: str) -> np.ndarray:
  """A gzipped IDX file (the MNIST format) as uint8; the magic number's low
  byte is the rank (2049: labels [N], 2051: images [N, H, W])."""
  with gzip.open(path, 'rb') as f:
    raw = f.read()
  found = int.from_bytes(raw[0:4], 'big')
  if found != magic:
    raise errors.DataError(
      f'{path} is not an IDX {kind} file (magic {found}, expected {magic}).'
    )
  rank = magic & 0xFF
  shape = [
    int.from_bytes(raw[i : i + 4], 'big') for i in range(4, 4 + 4 * rank, 4)
  ]
  values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
  if values.size != math.prod(shape):
    sizes = '*'.join(map(str, shape))
    raise errors.DataError(f'{path} is truncated: {values.size} != {sizes}')
  return values.reshape(shape)


def read_idx_images(path: os.PathLike) -> np.ndarray:
  """Reads a gzipped IDX image file as uint8 [N, H, W]."""
  return _read_idx(path, 2051, 'image')


def read_idx_labels(path: os.PathLike) -> np.ndarray:
  """Reads a gzipped IDX label file as uint8 [N]."""
  return _read_idx(path, 2049, 'label')


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
  index, order_epoch = start, None
  while True:
    epoch, offset = divmod(index, per_epoch)
    if epoch != order_epoch:  # Once per epoch, not per batch.
      order = np.random.default_rng([seed, epoch]).permutation(n)
      order_epoch = epoch
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


def _tfds_builder(name: str, config):
  """TFDS's builder of `name` where `config.run` says the data lives."""
  import tensorflow_datasets as tfds

  return tfds.builder(
    name, data_dir=config.run.data_dir or None, try_gcs=config.run.try_gcs
  )


def _celeba_missing_message(config) -> str:
  data_dir = config.run.data_dir or '~/tensorflow_datasets'
  files = '\n'.join(f'      {name}' for name in CELEBA_FILES)
  prepare = (
    'import tensorflow_datasets as tfds;'
    f" tfds.builder('celeb_a', data_dir='{os.path.expanduser(data_dir)}')"
    '.download_and_prepare()'
  )
  return (
    f'TFDS celeb_a is not prepared in {data_dir}. Google Drive quotas make'
    ' the automatic download unreliable, so prepare it by hand:\n'
    '  1. Download these five files from the CelebA page'
    ' (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, "Align&Cropped'
    ' Images" and the annotation files):\n'
    f'{files}\n'
    f'  2. Put them, with exactly these names, in'
    f' {data_dir}/downloads/manual/\n'
    '  3. Prepare the dataset once (TFDS reads the files from there):\n'
    f'      python -c "{prepare}"\n'
    f'     (`tfds build celeb_a --data_dir={data_dir}` does the same but'
    ' needs apache-beam installed.) Then run the same command again.\n'
    'To train without CelebA, use the bundled MNIST:'
    ' --config=configs/gan.py:mnist'
  )


def bundled_mnist() -> np.ndarray:
  """The 10k MNIST test images shipped in the package (offline), as float32
  [10000, 28, 28, 1] in [-1, 1]."""
  images = read_idx_images(BUNDLED_MNIST_DIR / 't10k-images-idx3-ubyte.gz')
  return to_unit_range(images)[..., None]


def load_mnist(config) -> np.ndarray:
  """MNIST as float32 [N, 28, 28, 1] in [-1, 1].

  `data.source='bundled'`: `bundled_mnist()`; `'tfds'`: TFDS mnist
  (`data.split`, from `run.data_dir`), which must be prepared.

  Raises:
    errors.DataError: TFDS mnist is not prepared.
  """
  if config.data.source == 'bundled':
    return bundled_mnist()
  import tensorflow_datasets as tfds

  builder = _tfds_builder('mnist', config)
  if not builder.is_prepared():
    raise errors.DataError(
      'TFDS mnist is not prepared in'
      f' {config.run.data_dir or "~/tensorflow_datasets"}. Prepare it'
      ' with `tfds build mnist` (needs network), or use the bundled copy'
      ' with --config.data.source=bundled.'
    )
  ds = builder.as_dataset(split=config.data.split, batch_size=-1)
  return to_unit_range(tfds.as_numpy(ds)['image'])


def _resize(images, size: int, method: str):
  """Resizes a float32 [1, H, W, C] batch to `size` x `size`.

  'bicubic_tf1' is the TF1 op of the reference code (`tf.image.resize_images`
  in TF 1.x: no half-pixel centres, cubic coefficient -0.75); TF2's
  'bicubic' samples half a pixel away with -0.5 (at 108 -> 64, 2.6 of 255
  apart on average on a smooth test image). Any other name is a
  `tf.image.resize` method.
  """
  import tensorflow as tf

  if method == 'bicubic_tf1':
    return tf.raw_ops.ResizeBicubic(
      images=images,
      size=[size, size],
      align_corners=False,
      half_pixel_centers=False,
    )
  return tf.image.resize(images, (size, size), method=method)


def _celeba_crop(jpeg, crop: int):
  """uint8 [crop, crop, 3]: the centre `crop` square of a CelebA JPEG, equal
  to a full decode then crop.

  Decodes only a window: the square widened by one column on each side where
  the image has one, then drops those columns. libjpeg-turbo's cropped decode
  (`tf.io.decode_and_crop_jpeg`) upsamples chroma as if the window's first
  and last columns were the image's edges, so in 4:2:2 and 4:2:0 JPEGs
  (CelebA's are 4:2:0) the window's first column is wrong when it starts on
  an inner iMCU boundary (a multiple of 16) and its last column when it ends
  on an even inner column: 93 of the 178 crop sizes (107 among them, not
  108), by up to 39 grey levels on noisy test images. Rows are exact, and so
  is all of a 4:4:4 window. Chroma upsampling reaches one column, so the
  widened window's inner columns are exact; in a 4:2:x JPEG the widening
  adds an iMCU column to the decode only where the bare window was inexact.
  """
  import tensorflow as tf

  top, left = (CELEBA_HEIGHT - crop) // 2, (CELEBA_WIDTH - crop) // 2
  start, stop = max(left - 1, 0), min(left + crop + 1, CELEBA_WIDTH)
  window = tf.io.decode_and_crop_jpeg(
    jpeg, [top, start, crop, stop - start], channels=3
  )
  return window[:, left - start : left - start + crop]


def celeba_preprocess(data_config) -> Callable:
  """JPEG bytes -> float32 [size, size, 3] in about [-1, 1] (paper.md §4.2).

  Decodes only a window around the centre `crop_size` square (at (55, 35)
  for 108), and the crop is pixel for pixel what a full decode then crop
  gives, for every crop size 1..178 (tested on 4:4:4, 4:2:2 and 4:2:0
  JPEGs; `_celeba_crop` says why the window is one column wider on each
  side); resizes with `data_config.resize`; scales by 1/127.5 - 1 without
  clipping, so bicubic overshoot stays, as in the reference.
  """
  import tensorflow as tf

  size, crop, method = (
    data_config.image_size,
    data_config.crop_size,
    data_config.resize,
  )

  def preprocess(jpeg):
    image = tf.cast(_celeba_crop(jpeg, crop), tf.float32)
    image = _resize(image[None], size, method)[0]
    return image / 127.5 - 1.0

  return preprocess


def _celeba_share(config):
  """This host's share of the split: (builder, split, number of examples).

  `tfds.split_for_jax_process` with `drop_remainder`: disjoint shares of
  equal size, so every host has the same number of batches per epoch (an
  unequal count would leave some hosts waiting in a collective).
  """
  import tensorflow_datasets as tfds

  builder = _tfds_builder('celeb_a', config)
  split = tfds.split_for_jax_process(config.data.split, drop_remainder=True)
  return builder, split, builder.info.splits[split].num_examples


def celeba_batches_per_epoch(config, batch_size: int) -> int:
  """Whole host batches in this host's share; raises ConfigError if none."""
  _, _, num_examples = _celeba_share(config)
  host_batch = batch_size // jax.process_count()
  if num_examples < host_batch:
    raise errors.ConfigError(
      f"The per-host batch ({host_batch}) is larger than this host's share"
      f' of {config.data.split!r} ({num_examples} examples).'
    )
  return num_examples // host_batch


def celeba_records(config):
  """This host's share as a tf.data.Dataset of undecoded JPEG bytes.

  Only the image is parsed; shuffling and skipping these records is cheap,
  the decode happens after both.
  """
  import tensorflow_datasets as tfds

  builder, split, _ = _celeba_share(config)
  records = builder.as_dataset(
    split=split,
    shuffle_files=False,
    decoders=tfds.decode.PartialDecoding(
      {'image': True}, decoders={'image': tfds.decode.SkipDecoding()}
    ),
  )
  return records.map(lambda example: example['image'])


def celeba_batches(
  config, batch_size: int, seed: int, start: int
) -> Iterator[np.ndarray]:
  """TFDS celeb_a, shuffled per epoch, batched per host, from batch `start`.

  Epoch `e` is this host's share shuffled with a seed derived from
  (seed, e) through a `shuffle_buffer` window (a buffer at least as large
  as the share gives a uniform permutation), cut to whole batches. Batch
  `i` is batch `i % per_epoch` of epoch `i // per_epoch`, so resuming at
  `start` skips `start % per_epoch` batches' worth of *undecoded* records
  of one epoch: at most one read of the share, with no JPEG decoded.
  """
  import tensorflow as tf

  data_config = config.data
  per_epoch = celeba_batches_per_epoch(config, batch_size)
  host_batch = batch_size // jax.process_count()
  records = celeba_records(config)
  first_epoch, offset = divmod(start, per_epoch)

  def epoch(index):
    epoch_seed = tf.random.stateless_uniform(
      [], tf.stack([tf.constant(seed, tf.int64), index]), None, None, tf.int64
    )
    shuffled = records.shuffle(data_config.shuffle_buffer, seed=epoch_seed)
    return shuffled.take(per_epoch * host_batch)

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
  ds = ds.flat_map(epoch).skip(offset * host_batch)
  ds = ds.map(
    celeba_preprocess(data_config),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  ds = ds.batch(host_batch, drop_remainder=True)
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
    images = load_mnist(config)
    return Dataset(
      functools.partial(in_memory_batches, images, batch_size, seed),
    )
  if name in MIXTURES:
    return Dataset(
      functools.partial(mixture_batches, name, batch_size, seed),
    )
  if name == 'celeb_a':
    if data_config.resize not in RESIZE_METHODS:
      raise errors.ConfigError(
        f'Unknown data.resize {data_config.resize!r}; known:'
        f' {", ".join(RESIZE_METHODS)}.'
      )
    if not _tfds_builder('celeb_a', config).is_prepared():
      raise errors.DataError(_celeba_missing_message(config))
    celeba_batches_per_epoch(config, batch_size)
    return Dataset(
      functools.partial(celeba_batches, config, batch_size, seed),
    )
  raise errors.ConfigError(
    f'Unknown data.name {name!r}; known: {", ".join(NAMES)}.'
  )


def evaluation_examples(
  config, num: int, split: str, seed: int
) -> tuple[np.ndarray, str]:
  """Up to `num` real examples in the training range, and a description.

  Bundled MNIST: its 10k images (the presets' training data; no held-out
  set exists offline). TFDS: `split`. 2-D mixtures: fresh draws from a
  stream the training batches never use.
  """
  data_config = config.data
  if data_config.name in MIXTURES:
    centers, std = mixture_centers(data_config.name)
    rng = np.random.default_rng([seed, 2**32 - 1])  # Training: [seed, i].
    modes = rng.integers(len(centers), size=num)
    x = centers[modes] + std * rng.normal(size=(num, 2))
    return x.astype(np.float32), f'{data_config.name}: {num} fresh draws'
  heldout = config.copy_and_resolve_references()
  heldout.data.split = split
  if data_config.name == 'mnist':
    x = load_mnist(heldout)
    subset = f'all {len(x)}'
    if num < len(x):
      # Not a prefix: MNIST's test set is ordered (its first 5000 digits are
      # cleaner than the last 5000).
      subset = f'{num} of {len(x)} drawn with seed {seed}'
      x = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:num])]
    if data_config.source == 'bundled':
      return x, f'bundled MNIST (t10k), {subset}; the presets train on it'
    return x, f'TFDS mnist {split}, {subset}'
  # CelebA's splits are ordered by file name (an identity's images are
  # near each other): shuffle before taking `num`.
  records = celeba_records(heldout)
  records = records.shuffle(data_config.shuffle_buffer, seed=seed).take(num)
  images = records.map(celeba_preprocess(data_config)).batch(100)
  x = np.concatenate(list(images.as_numpy_iterator()))
  return x, (
    f'TFDS celeb_a {split}, {len(x)} examples shuffled with seed {seed}'
    f' (buffer {data_config.shuffle_buffer}), crop {data_config.crop_size},'
    f' {data_config.resize} resize to {data_config.image_size}'
  )
