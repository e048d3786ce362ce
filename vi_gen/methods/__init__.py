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
