"""Data parallelism: one 'data' mesh axis, replicated state, sharded batches.

Under `jax.jit` the compiler inserts the gradient all-reduce itself, and
BatchNorm statistics are those of the *global* batch, so 1 and N devices
compute the same function (pmap would have used per-device statistics).
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
  """This host's rows of a batch -> one global array over all hosts."""
  return jax.make_array_from_process_local_data(sharding, local)
