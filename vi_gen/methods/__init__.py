"""One module per model. Each defines a class with the same small interface:

  method = Method(config, example_shape)   # networks, optimizers, checks
  method.batches_per_iteration             # real batches one iteration uses
  method.init(key) -> TrainState
  method.iteration(state, batch, key) -> (state, metrics)   # pure, jit-able
  method.latents(key, num) -> z
  method.generate(state, z) -> samples
  method.pictures(state, key, reference) -> {name: uint8 [H, W, C]}
  Method.check_config(config)              # static; raises ConfigError

Models with an encoder (VAE, AAE, ALI) also have
`method.reconstruct(state, x) -> (E(x), G(E(x)))`, which the evaluation and
`--encode` use; EM has `method.mixture(state)`. The training loop only talks
to this interface.
"""

from collections.abc import Callable

import jax
import numpy as np

from vi_gen import errors
from vi_gen.methods.aae import AAE
from vi_gen.methods.ali import ALI
from vi_gen.methods.em import EM
from vi_gen.methods.gan import GAN
from vi_gen.methods.vae import VAE

METHODS = {
  'aae': AAE,
  'ali': ALI,
  'em': EM,
  'gan': GAN,
  'vae': VAE,
}


def get(name: str) -> type:
  if name not in METHODS:
    raise errors.ConfigError(
      f'Unknown model {name!r}; known: {sorted(METHODS)}.'
    )
  return METHODS[name]


def generate_in_chunks(
  method,
  generate: Callable,
  state,
  key: jax.Array,
  num: int,
  batch_size: int,
) -> np.ndarray:
  """`num` samples, float32, `batch_size` per call of `generate` (the
  method's jitted `generate`); chunk i's latents come from fold_in(key,
  start of chunk i), so the samples depend on num only by truncation."""
  chunks = []
  for start in range(0, num, batch_size):
    size = min(batch_size, num - start)
    z = method.latents(jax.random.fold_in(key, start), size)
    chunks.append(np.asarray(jax.device_get(generate(state, z)), np.float32))
  return np.concatenate(chunks)
