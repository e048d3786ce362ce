"""The train state: one pytree holding everything that changes in training.

Resuming from it continues a run exactly, so it holds the old generator (the
regularizer's G^o) and the EMA too. PRNG keys are not stored: they are
derived from `config.seed` and the step.
"""

from typing import Any

import jax
from flax import struct

PyTree = Any


class TrainState(struct.PyTreeNode):
  """Params and BatchNorm statistics per network, optimizer state per player.

  Attributes:
    step: number of completed iterations.
    params: network name -> params.
    batch_stats: network name -> BatchNorm running statistics (may be empty).
    opt_states: player name -> optax state.
    old_params: network name -> frozen params of the old network (for the
      GAN, the generator at the start of the latest G phase).
    ema_params: network name -> exponential moving average (empty if off).
    extras: other arrays that change in training and must survive a resume
      but are neither params nor optimizer state (EM's likelihood curve).
  """

  step: jax.Array
  params: dict[str, PyTree]
  batch_stats: dict[str, PyTree]
  opt_states: dict[str, PyTree]
  old_params: dict[str, PyTree] = struct.field(default_factory=dict)
  ema_params: dict[str, PyTree] = struct.field(default_factory=dict)
  extras: dict[str, PyTree] = struct.field(default_factory=dict)
