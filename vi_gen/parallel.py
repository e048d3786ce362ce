"""Data parallelism: one 'data' mesh axis, replicated state, sharded batches.

One `jax.jit` iteration runs over a 1-D mesh of every device of every
process. Parameters, optimizer states and BatchNorm statistics are
replicated; each batch is split along its example axis. The compiler inserts
the all-reduces, so the program computes what one device would compute on
the whole global batch:

* losses and gradients are means over the global batch;
* BatchNorm in training mode normalizes with the mean and variance of the
  global batch (all-reduced per-device sums) and updates its running
  averages from them. pmap-style data parallelism used each device's own
  shard statistics instead, which made the model depend on the device count.

So 1 and N devices train the same model, up to the summation order of the
batch reductions (tests/parallel_test.py compares 1, 4 and 8 devices and 2
processes). Each process loads only its rows of every global batch and
`to_global` assembles them; `pmap` (in maintenance mode since JAX 0.8) is not
used.
"""

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from vi_gen import errors


def create_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process.

  Auto axes: with the Explicit default of jax 0.10, a batch-sharded grad
  step fails with a ShardingTypeError.
  """
  return jax.make_mesh(
    (jax.device_count(),), ('data',), axis_types=(AxisType.Auto,)
  )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of the train state: a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(
  mesh: jax.sharding.Mesh, batch_axis: int = 0
) -> NamedSharding:
  """Shards axis `batch_axis` (the example axis) over 'data'."""
  return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), 'data'))


def check_batch_size(batch_size: int) -> None:
  """The global batch must split evenly over devices and processes."""
  devices = jax.device_count()
  if batch_size % devices or batch_size % jax.process_count():
    raise errors.ConfigError(
      f'batch_size={batch_size} is not divisible by the {devices} devices'
      f' ({jax.process_count()} processes); choose a multiple of {devices}.'
    )


def to_global(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """This host's rows of a batch -> one global array over all hosts.

  The global batch is the hosts' rows in process order, and its shape is
  inferred: the sharded axis is `local`'s times the number of processes.
  """
  return jax.make_array_from_process_local_data(sharding, local)
