"""The models, one module each, registered by name in `METHODS`.

A model is a class with this interface, which is all that the loop
(`vi_gen.train`), the inference modes (`vi_gen.inference`) and the
evaluation (`vi_gen.evaluation`) know of it:

  method = Method(config, example_shape)   # networks, optimizers, checks
  method.batches_per_iteration             # real batches one iteration uses
  method.init(key) -> TrainState
  method.iteration(state, batch, key) -> (state, metrics)   # pure, jit-able
  method.latents(key, num) -> z
  method.generate(state, z) -> samples
  method.pictures(state, key, reference) -> {name: uint8 [H, W, C]}
  method.eval_groups                       # metric groups it supports
  Method.check_config(config)              # static; raises ConfigError

optionally `method.cpu_library_fusions` (how XLA:CPU compiles the
iteration, `vi_gen.compiler`; XLA's defaults without it), and, for the
metric groups it declares, `reconstruct(state, x)` ('autoencoder'),
`log_likelihood_bounds(state, x, key, ...)` ('likelihood').
The gradient-trained models (GAN, VAE, AAE, ALI) subclass
`methods.base.LatentModel` and declare their phases (`vi_gen.players`); EM
writes its closed-form iteration itself. `register` adds a model from
outside the package.
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


def register(name: str, method: type) -> None:
  """Makes `config.model = name` train `method` (e.g. from a test or a
  research script, without editing this package)."""
  METHODS[name] = method


def with_encoder() -> list[str]:
  """The registered models that have an encoder (`reconstruct`)."""
  return sorted(n for n, m in METHODS.items() if hasattr(m, 'reconstruct'))


def get(name: str) -> type:
  """The model class registered as `name`.

  Raises:
    errors.ConfigError: no model of that name.
  """
  if name not in METHODS:
    raise errors.ConfigError(
      f'Unknown model {name!r}; known: {sorted(METHODS)}.'
    )
  return METHODS[name]
