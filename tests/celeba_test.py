"""The celeb_a pipeline: reference preprocessing, per-host shares, resume, and
the celeba preset training under `tfds.testing.mock_data` on 1 and 4 devices.

`mock_data` ignores split slicing, so per-host shares and epochs are tested on
a tiny *real* TFDS celeb_a built here with `store_as_tfds_dataset` (the
registered builder's features, JPEG images). Image i of it is a flat grey of
value `10 + 8 i`, so an example's index can be read back from any batch.
"""

import functools
import io
import itertools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.download import download_manager

from configs import gan as gan_config
from vi_gen import data, errors, testing, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 26  # 26 // 3 hosts = 8 each: two examples are dropped.


def grey_images(num: int) -> list[np.ndarray]:
  """CelebA-sized images, image i a flat grey 10 + 8 i (so it is known
  which example a batch row holds)."""
  return [np.full((218, 178, 3), 10 + 8 * i, np.uint8) for i in range(num)]


@pytest.fixture(scope='module')
def tiny_celeba(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  testing.store_celeba(data_dir, {'train': grey_images(NUM_EXAMPLES)})
  return data_dir


def celeba_config(data_dir: str = '', **data_overrides):
  """The celeba preset reading TFDS from `data_dir`, with `data.*` changed."""
  config = gan_config.get_config('celeba')
  config.run.data_dir = data_dir
  config.data.update(data_overrides)
  return config


def example_ids(batch: np.ndarray) -> list[int]:
  """Indices of the flat grey examples in a preprocessed batch."""
  grey = (batch.mean(axis=(1, 2, 3)) + 1.0) * 127.5
  ids = np.round((grey - 10) / 8)
  np.testing.assert_allclose(grey, 10 + 8 * ids, atol=1.5)  # JPEG rounding
  return ids.astype(int).tolist()


def batches(config, batch_size: int, seed: int, start: int, num: int):
  return list(
    itertools.islice(data.celeba_batches(config, batch_size, seed, start), num)
  )


def random_jpeg(seed: int = 0) -> bytes:
  rng = np.random.default_rng(seed)
  smooth = rng.uniform(0, 255, (28, 23, 3))
  image = tf.image.resize(smooth, (218, 178), 'bilinear')
  image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
  return tf.io.encode_jpeg(image, quality=95).numpy()


@pytest.mark.parametrize(
  'crop,top,left', [(108, 55, 35), (140, 39, 19), (160, 29, 9)]
)
def test_preprocessing_is_a_centre_crop_resize_and_rescale(crop, top, left):
  jpeg = random_jpeg()
  config = celeba_config(crop_size=crop, resize='bicubic').data
  image = data.celeba_preprocess(config)(tf.constant(jpeg)).numpy()
  full = tf.io.decode_jpeg(jpeg, channels=3).numpy()
  window = full[top : top + crop, left : left + crop].astype(np.float32)
  expected = tf.image.resize(window, (64, 64), 'bicubic').numpy()
  assert image.shape == (64, 64, 3) and image.dtype == np.float32
  np.testing.assert_allclose(image, expected / 127.5 - 1.0, atol=1e-5)


def test_bicubic_tf1_samples_the_reference_grid():
  """The TF1 op maps output pixel i to input i * scale: at scale 2 it picks
  every other pixel, where TF2's half-pixel grid interpolates."""
  jpeg = random_jpeg(1)
  full = tf.io.decode_jpeg(jpeg, channels=3).numpy().astype(np.float32)
  window = full[45:173, 25:153]  # The centre 128 x 128 square.
  expected = window[::2, ::2] / 127.5 - 1.0
  reference = data.celeba_preprocess(
    celeba_config(crop_size=128, resize='bicubic_tf1').data
  )(tf.constant(jpeg)).numpy()
  np.testing.assert_allclose(reference, expected, atol=1e-5)
  tf2 = data.celeba_preprocess(
    celeba_config(crop_size=128, resize='bicubic').data
  )(tf.constant(jpeg))
  assert np.abs(tf2.numpy() - expected).max() > 0.01


# PIL's `subsampling` argument for each chroma layout; CelebA's JPEGs are
# baseline 4:2:0 at quality about 95.
SUBSAMPLINGS = {'4:4:4': 0, '4:2:2': 1, '4:2:0': 2}
CROP_SIZES = range(1, data.CELEBA_WIDTH + 1)  # What validation accepts.


def centre_window(crop: int) -> tuple[int, int]:
  return (218 - crop) // 2, (178 - crop) // 2


@functools.cache
def noisy_jpeg(subsampling: str) -> tuple[bytes, np.ndarray]:
  """A baseline 218x178 JPEG (quality 95) of gradients plus uniform noise
  in every channel, so that a chroma error shows; and its full decode."""
  rows, cols = np.mgrid[0:218, 0:178]
  gradients = np.stack([cols / 177, rows / 217, (rows + cols) / 394], -1)
  noise = np.random.default_rng(0).uniform(0, 128, gradients.shape)
  image = (gradients * 127 + noise).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(
    buffer, 'JPEG', quality=95, subsampling=SUBSAMPLINGS[subsampling]
  )
  jpeg = buffer.getvalue()
  return jpeg, tf.io.decode_jpeg(jpeg, channels=3).numpy()


@pytest.mark.parametrize('subsampling', SUBSAMPLINGS)
def test_crop_is_a_full_decode_then_crop_at_every_crop_size(subsampling):
  jpeg, full = noisy_jpeg(subsampling)
  inexact = []
  for crop in CROP_SIZES:
    top, left = centre_window(crop)
    window = data._celeba_crop(tf.constant(jpeg), crop).numpy()
    if not np.array_equal(window, full[top : top + crop, left : left + crop]):
      inexact.append(crop)
  assert not inexact, f'crop sizes not equal to decode-then-crop: {inexact}'


@pytest.mark.parametrize('subsampling', SUBSAMPLINGS)
def test_a_bare_window_decode_errs_in_the_columns_the_rule_names(subsampling):
  """Why the window is widened: libjpeg-turbo's cropped decode upsamples
  chroma as if the window's edges were the image's. Its first column is
  wrong when it starts on an inner iMCU boundary (a multiple of 16 for
  4:2:x) and its last column when it ends on an even inner column; 4:4:4
  has nothing to upsample. So 93 of the 178 centre crops are inexact in
  4:2:2 and 4:2:0, among them 107, but not the reference's 108."""
  jpeg, full = noisy_jpeg(subsampling)
  inexact = set()
  for crop in CROP_SIZES:
    top, left = centre_window(crop)
    window = tf.io.decode_and_crop_jpeg(jpeg, [top, left, crop, crop], 3)
    error = window.numpy() != full[top : top + crop, left : left + crop]
    columns = set(np.flatnonzero(error.any(axis=(0, 2))).tolist())
    expected = set()
    if subsampling != '4:4:4':
      if left > 0 and left % 16 == 0:
        expected.add(0)
      if left + crop < 178 and (left + crop) % 2 == 0:
        expected.add(crop - 1)
    assert columns == expected, crop
    if columns:
      inexact.add(crop)
  assert len(inexact) == (0 if subsampling == '4:4:4' else 93)
  assert 108 not in inexact and (subsampling == '4:4:4') != (107 in inexact)


@pytest.mark.parametrize('crop', [107, 108, 140, 160, 178])
def test_preprocessing_resizes_a_full_decode_then_crop(crop):
  jpeg, full = noisy_jpeg('4:2:0')
  top, left = centre_window(crop)
  window = full[top : top + crop, left : left + crop].astype(np.float32)
  for resize in ('bicubic_tf1', 'area'):
    config = celeba_config(crop_size=crop, resize=resize).data
    image = data.celeba_preprocess(config)(tf.constant(jpeg)).numpy()
    expected = data._resize(window[None], 64, resize)[0].numpy()
    np.testing.assert_array_equal(image, expected / 127.5 - 1.0)


def test_unknown_resize_method_is_rejected(tiny_celeba):
  config = gan_config.get_config('celeba')
  config.run.data_dir = tiny_celeba
  config.data.resize = 'cubic'
  with pytest.raises(errors.ConfigError, match='bicubic_tf1'):
    data.create_dataset(config)


def test_missing_celeba_step_3_prepares_from_the_manual_files(tmp_path):
  """The printed command runs offline and reads the files of step 2 (here
  stand-ins, so TFDS stops at their checksums instead of downloading)."""
  config = gan_config.get_config('celeba')
  config.run.data_dir = str(tmp_path)
  with pytest.raises(errors.DataError) as error:
    data.create_dataset(config)
  command = next(
    line.strip()
    for line in str(error.value).splitlines()
    if 'python -c' in line
  )
  manual = tmp_path / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  for name in data.CELEBA_FILES:
    (manual / name).write_text('not the real file')
  code = command.removeprefix('python -c "').removesuffix('"')
  checksum_error = download_manager.NonMatchingChecksumError
  with pytest.raises(checksum_error, match='downloads/manual/'):
    exec(code, {})


def test_simulated_hosts_get_disjoint_equal_shares(tiny_celeba, monkeypatch):
  """3 hosts, global batch 6: each host's epoch is 4 batches of 2, a
  permutation of its own 8 examples; the next epoch reorders the same 8."""
  config = celeba_config(tiny_celeba)
  monkeypatch.setattr(jax, 'process_count', lambda: 3)
  shares = []
  for host in range(3):
    monkeypatch.setattr(jax, 'process_index', lambda host=host: host)
    stream = batches(config, 6, 0, 0, 8)
    assert all(batch.shape == (2, 64, 64, 3) for batch in stream)
    first = sum((example_ids(b) for b in stream[:4]), [])
    second = sum((example_ids(b) for b in stream[4:]), [])
    assert len(set(first)) == 8 and sorted(first) == sorted(second)
    assert first != second
    shares.append(set(first))
  assert not (shares[0] & shares[1] or shares[0] & shares[2])
  assert not shares[1] & shares[2]
  assert set.union(*shares) <= set(range(NUM_EXAMPLES))


def test_resume_neither_repeats_nor_skips(tiny_celeba):
  """Batch i is the same whether the stream starts at 0 or resumes at i."""
  config = celeba_config(tiny_celeba)
  stream = batches(config, 8, 0, 0, 8)  # 3 batches (24 examples) per epoch
  for start in (2, 4):
    resumed = batches(config, 8, 0, start, 8 - start)
    for a, b in zip(stream[start:], resumed, strict=True):
      np.testing.assert_array_equal(a, b)
  epochs = [
    sum((example_ids(b) for b in stream[e : e + 3]), []) for e in (0, 3)
  ]
  assert all(len(set(epoch)) == 24 for epoch in epochs)
  assert epochs[0] != epochs[1]
  other_seed = sum((example_ids(b) for b in batches(config, 8, 1, 0, 3)), [])
  assert other_seed != epochs[0]


def test_split_smaller_than_a_batch_is_rejected_before_training(tiny_celeba):
  config = gan_config.get_config('celeba')
  config.run.data_dir = tiny_celeba
  config.batch_size = 32
  with pytest.raises(errors.ConfigError, match='larger than'):
    data.create_dataset(config)


def tiny_training_config(data_dir: str):
  """The celeba preset (64x64, the reference preprocessing) with tiny
  networks: 2 iterations, checkpoints and sample grids at step 2."""
  config = gan_config.get_config('celeba')
  config.run.data_dir = data_dir
  config.batch_size = 8
  config.run.num_steps = 2
  config.latent_dim = 8
  config.run.log_every_steps = 1
  config.run.checkpoint_every_steps = 2
  config.run.sample_every_steps = 2
  config.run.num_grid_samples = 4
  config.network.g_widths = (8, 8, 8, 8)
  config.network.d_widths = (8, 8, 8, 8)
  return config


def train_under_mock_data(data_dir: str, workdir: str):
  """Trains through the real pipeline on random JPEGs from `mock_data`; the
  metadata (split sizes) comes from the tiny dataset in `data_dir`."""
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, data_dir=data_dir):
    return train.train_and_evaluate(tiny_training_config(data_dir), workdir)


def state_arrays(state) -> dict[str, np.ndarray]:
  flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(state))
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in flat}


@pytest.mark.slow
def test_celeba_preset_trains_under_mock_data_on_1_and_4_devices(
  tiny_celeba, tmp_path
):
  one_device = subprocess.Popen(
    [sys.executable, __file__, tiny_celeba, str(tmp_path / 'one')],
    cwd=REPO,
    env={**os.environ, 'PYTHONPATH': REPO, 'CUDA_VISIBLE_DEVICES': ''},
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  four = train_under_mock_data(tiny_celeba, str(tmp_path / 'four'))
  output, _ = one_device.communicate(timeout=600)
  assert one_device.returncode == 0, output[-3000:]
  assert int(four.step) == 2
  for workdir in ('one', 'four'):
    assert os.listdir(tmp_path / workdir / 'checkpoints') == ['2']
    assert os.listdir(tmp_path / workdir / 'samples') == ['step_0000002.png']
  one = np.load(tmp_path / 'one' / 'state.npz')
  four_arrays = state_arrays(four)
  assert sorted(one.files) == sorted(four_arrays)
  for name, value in four_arrays.items():
    # Same data, seed and global batch: equal up to the summation order of
    # the batch reductions (parallel_test.py explains the tolerances).
    atol = 1e-5 if name.startswith('.opt_states') else 1e-6
    np.testing.assert_allclose(one[name], value, rtol=1e-5, atol=atol)


if __name__ == '__main__':
  # The 1-device run: python tests/celeba_test.py DATA_DIR WORKDIR
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_num_cpu_devices', 1)
  assert jax.device_count() == 1
  data_dir, workdir = sys.argv[1:]
  np.savez(
    os.path.join(workdir, 'state.npz'),
    **state_arrays(train_under_mock_data(data_dir, workdir)),
  )
