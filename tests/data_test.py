"""Input pipelines: the bundled MNIST, the 2-D mixtures, and missing data."""

import gzip
import itertools

import numpy as np
import pytest

from configs import gan as gan_config
from vi_gen import data, errors


def test_bundled_mnist_is_the_10k_test_set_in_unit_range():
  config = gan_config.get_config('mnist')
  images = data.load_mnist(config)
  assert images.shape == (10_000, 28, 28, 1)
  assert images.dtype == np.float32
  assert images.min() == -1.0 and images.max() == 1.0
  # Independent read of the raw bytes: IDX header is 16 bytes.
  with gzip.open(data.BUNDLED_MNIST_DIR / 't10k-images-idx3-ubyte.gz') as f:
    raw = np.frombuffer(f.read()[16:], np.uint8).reshape(10_000, 28, 28)
  np.testing.assert_allclose(images[..., 0], raw / 127.5 - 1.0, atol=1e-6)


def test_idx_reader_rejects_other_files(tmp_path):
  path = tmp_path / 'bad.gz'
  with gzip.open(path, 'wb') as f:
    f.write(b'\x00\x00\x08\x01' + bytes(12))
  with pytest.raises(errors.DataError, match='not an IDX image file'):
    data.read_idx_images(path)


def test_batches_are_a_pure_function_of_seed_and_index():
  examples = np.arange(50, dtype=np.float32)[:, None]
  first = list(itertools.islice(data.in_memory_batches(examples, 8, 3, 0), 20))
  resumed = list(
    itertools.islice(data.in_memory_batches(examples, 8, 3, 13), 7)
  )
  for a, b in zip(first[13:], resumed, strict=True):
    np.testing.assert_array_equal(a, b)
  other_seed = next(data.in_memory_batches(examples, 8, 4, 0))
  assert not np.array_equal(first[0], other_seed)


def test_an_epoch_visits_each_example_at_most_once():
  examples = np.arange(50, dtype=np.float32)[:, None]
  epoch = list(itertools.islice(data.in_memory_batches(examples, 8, 0, 0), 6))
  seen = np.concatenate(epoch)[:, 0]
  assert len(seen) == 48 and len(set(seen.tolist())) == 48


@pytest.mark.parametrize(
  'name,num_modes,std', [('ring8', 8, 0.02), ('grid25', 25, 0.05)]
)
def test_mixture_samples_sit_on_their_modes(name, num_modes, std):
  centers, config_std = data.mixture_centers(name)
  assert len(centers) == num_modes and config_std == std
  batch = next(data.mixture_batches(name, 4096, 0, 0))
  distances = np.linalg.norm(batch[:, None] - centers[None], axis=-1)
  nearest = distances.argmin(1)
  assert np.all(distances.min(1) < 6 * std)
  counts = np.bincount(nearest, minlength=num_modes)
  assert counts.min() > 0.5 * 4096 / num_modes  # all modes, roughly even
  offsets = batch - centers[nearest]
  np.testing.assert_allclose(offsets.std(0), std, rtol=0.1)


def test_ring8_is_on_a_circle_of_radius_2():
  centers, _ = data.mixture_centers('ring8')
  np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 2.0)


def test_missing_celeba_fails_with_the_manual_steps(tmp_path):
  config = gan_config.get_config()
  config.run.data_dir = str(tmp_path)
  with pytest.raises(errors.DataError) as error:
    data.create_dataset(config)
  message = str(error.value)
  for name in data.CELEBA_FILES:
    assert name in message
  assert f'{tmp_path}/downloads/manual/' in message
  assert 'tfds build celeb_a' in message
  assert 'configs/gan.py:mnist' in message
  assert list(tmp_path.iterdir()) == []  # nothing written


def test_missing_tfds_mnist_points_at_the_bundled_copy(tmp_path):
  config = gan_config.get_config('mnist')
  config.data.source = 'tfds'
  config.run.data_dir = str(tmp_path)
  with pytest.raises(errors.DataError, match='data.source=bundled'):
    data.create_dataset(config)
