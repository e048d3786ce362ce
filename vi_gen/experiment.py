"""`Experiment`: what training, sampling and evaluation all build from a
checked config: the device mesh, the model, the keys, and the train state
(restored from the workdir, or freshly initialised).

This module knows no particular model (it asks `vi_gen.methods` by name)
and writes nothing.
"""

import os

import jax
import ml_collections

from vi_gen import checkpoint, data, errors, methods, parallel
from vi_gen.state import TrainState


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """runs/<model>[_<preset>], so the card's command works without flags."""
  name = config.model + (f'_{config.preset}' if config.preset else '')
  return os.path.join('runs', name)


class Experiment:
  """The mesh, the method and the keys of a (checked) config.

  Attributes:
    mesh: the 1-D 'data' device mesh.
    replicated: the sharding of the train state (replicated).
    method: the model, `methods.get(config.model)(config, example_shape)`.
    init_key, loop_key, grid_key: from `config.seed`: the initialisation,
      the iterations (folded with the step), the pictures' fixed latents.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    parallel.check_batch_size(config.batch_size)
    self.config = config
    self.mesh = parallel.create_mesh()
    self.replicated = parallel.replicated(self.mesh)
    self.method = methods.get(config.model)(
      config, data.example_shape(config.data)
    )
    keys = jax.random.split(jax.random.key(config.seed), 3)
    self.init_key, self.loop_key, self.grid_key = keys

  def restore_or_none(
    self, workdir: str, repair: bool = False
  ) -> TrainState | None:
    """The newest readable checkpoint of `workdir`, or None if it has none.

    Raises:
      errors.CheckpointError: a checkpoint of another experiment.
    """
    abstract = checkpoint.abstract_like(
      jax.eval_shape(self.method.init, self.init_key), self.replicated
    )
    return checkpoint.restore_latest(workdir, self.config, abstract, repair)

  def restore(self, workdir: str, mode: str) -> TrainState:
    """The latest checkpoint, for the inference modes.

    Raises:
      errors.CheckpointError: none, or one of another experiment.
    """
    state = self.restore_or_none(workdir)
    if state is None:
      raise errors.CheckpointError(
        f'No checkpoint in {checkpoint.checkpoint_dir(workdir)}: train first'
        f' (the same --config and --workdir without --mode={mode}).'
      )
    return state

  def init(self) -> TrainState:
    """A fresh state from `init_key`, replicated over the mesh."""
    return jax.jit(self.method.init, out_shardings=self.replicated)(
      self.init_key
    )
