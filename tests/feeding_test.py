"""The loop's data feed: the dataset's batches, in order, on the devices,
sent while the previous step runs and never read further ahead."""

import jax
import numpy as np
from jax._src import array

from configs import gan as gan_config
from vi_gen import data, parallel, train

SHAPE = (2, 8, 3)  # [per_iteration, batch, features]


class Counting:
  """Host batches 0, 1, ... (batch i is all i), counting those read."""

  def __init__(self):
    self.read = 0

  def __iter__(self):
    return self

  def __next__(self) -> np.ndarray:
    self.read += 1
    return np.full(SHAPE[1:], self.read - 1, np.float32)


def test_device_batches_are_the_host_batches_in_order_on_the_devices():
  host = Counting()
  sharding = parallel.batch_sharding(parallel.create_mesh(), batch_axis=1)
  feed = train.device_batches(host, 2, sharding, step=3, nan_at_step=5)
  assert host.read == 0  # Nothing before it is asked for.
  first = next(feed)
  assert isinstance(first, jax.Array) and first.sharding == sharding
  assert len(first.sharding.device_set) == jax.device_count() > 1
  np.testing.assert_array_equal(
    first, np.stack([np.full(SHAPE[1:], i) for i in (0, 1)])
  )
  assert host.read == 2  # One iteration's batches, none ahead.
  assert np.isnan(next(feed)).all()  # Iteration 5 = step 3 + 2.
  np.testing.assert_array_equal(next(feed)[1], np.full(SHAPE[1:], 5))
  assert host.read == 6


def test_the_loop_trains_on_the_dataset_batches_in_order(tmp_path, monkeypatch):
  """Each run takes exactly its iterations' batches, a resumed one from
  where the first stopped."""
  fed, feed = [], train.device_batches

  def recording(*args, **kwargs):
    for batch in feed(*args, **kwargs):
      fed.append(np.asarray(batch))
      yield batch

  monkeypatch.setattr(train, 'device_batches', recording)
  config = gan_config.get_config('test')
  config.d_steps = 2
  config.run.num_steps = 3
  train.train_and_evaluate(config, str(tmp_path))
  assert len(fed) == 3
  config.run.num_steps = 5
  train.train_and_evaluate(config, str(tmp_path))
  assert len(fed) == 5
  host = data.create_dataset(config).host_batches(0)
  want = [np.stack([next(host), next(host)]) for _ in range(5)]
  np.testing.assert_array_equal(np.stack(fed), np.stack(want))


def test_the_loop_reads_nothing_back_between_log_steps(tmp_path, monkeypatch):
  """Between its log, checkpoint and picture steps the loop only dispatches:
  a value read back from the devices would wait for the step. Two runs with
  the same events, 3 and 6 iterations apart, read back equally often."""
  reads = []
  value = array.ArrayImpl._value

  def counted(self):
    reads.append(self.shape)
    return value.fget(self)

  monkeypatch.setattr(array.ArrayImpl, '_value', property(counted))

  def count_reads(num_steps: int) -> int:
    config = gan_config.get_config('test')
    config.run.num_steps = num_steps
    config.run.log_every_steps = num_steps // 2
    config.run.checkpoint_every_steps = num_steps
    config.run.sample_every_steps = num_steps
    config.run.eval_every_steps = 0
    reads.clear()
    train.train_and_evaluate(config, str(tmp_path / str(num_steps)))
    return len(reads)

  few = count_reads(6)
  assert few > 0  # The log steps' reads are seen.
  assert count_reads(12) == few
