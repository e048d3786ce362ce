"""What every model that decodes z ~ N(0, I) shares (GAN, VAE, AAE, ALI):
building its networks, the generic alternating-players iteration
(`vi_gen.players`), the prior, sampling, the pictures, and the functions the
evaluation asks for.

A model subclasses `LatentModel` (or `EncoderDecoder`) and declares:
`build_networks()` (name -> (Flax module, example inputs)), `phases()` (its
schedule of `players.Phase`s, each loss a function of `vi_gen.losses`),
`check_config(config)`, `decoder_name` (the network that maps z to x,
default 'decoder'), and optionally `old_networks`, `eval_groups`,
`batches_per_iteration` and `pictures`. Nothing in the loop or the
evaluation names a model.

Every model keeps one Adam per trained entry of `state.params` (Adam is
elementwise, so a joint loss over several networks gives each the update it
would get on its own), BatchNorm statistics per network in
`state.batch_stats`, and samples with BatchNorm in eval mode.
"""

import abc
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vi_gen import compiler, errors, images, networks, players
from vi_gen.state import PyTree, TrainState

OLD_GENERATOR_MODES = ('phase', 'lagged')
# The square of the latent scatter plot: +-4 standard deviations of N(0, I).
LATENT_EXTENT = 4.0


def adam(optim_config) -> optax.GradientTransformation:
  """Adam with the reference's defaults (lr 2e-4, b1 0.5)."""
  return optax.adam(
    optim_config.lr,
    b1=optim_config.b1,
    b2=optim_config.b2,
    eps=optim_config.eps,
  )


def sampling_params(state: TrainState, name: str) -> PyTree:
  """The EMA of network `name` when the run keeps one, else its params."""
  return state.ema_params.get(name, state.params[name])


def check_alternation(
  config, term: str, switch_off: str, uses_old: bool
) -> None:
  """The d_steps / g_steps / old_generator rules of the GAN and ALI.

  Args:
    config: the model config.
    term: what uses the old networks, for the error message.
    switch_off: the setting that turns that term off, for the message.
    uses_old: whether the term is on.
  """
  errors.require(
    config.d_steps >= 1 and config.g_steps >= 1,
    f'd_steps and g_steps must be >= 1, got {config.d_steps} and'
    f' {config.g_steps}.',
  )
  errors.require(
    config.old_generator in OLD_GENERATOR_MODES,
    f'old_generator must be one of {OLD_GENERATOR_MODES}, got'
    f' {config.old_generator!r}.',
  )
  errors.require(
    not (uses_old and config.old_generator == 'phase' and config.g_steps == 1),
    f"old_generator='phase' with g_steps=1 makes {term} and"
    ' its gradient exactly zero: the snapshot is taken at the start of the G'
    ' phase, so G == G^o on its only step. Use g_steps >= 2 (the'
    f" reference uses 2), old_generator='lagged', or {switch_off}.",
  )


def mean_probabilities(**logits: jax.Array) -> dict[str, jax.Array]:
  """{name: mean of sigmoid(logits)}: D's average verdict on a batch."""
  return {name: jnp.mean(jax.nn.sigmoid(v)) for name, v in logits.items()}


def split_keys(key: jax.Array, steps: int, extra: int) -> tuple:
  """(one key per D step, then `extra` more keys) from the iteration key."""
  keys = jax.random.split(key, steps + extra)
  return (keys[:steps], *keys[steps:])


def reconstruction_picture(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
  """Images: each original left of its reconstruction; points: the
  reconstructions (red) over the originals (grey)."""
  if x.ndim == 2:
    return images.picture(recon, x)
  pairs = np.stack([x, recon], axis=1).reshape(-1, *x.shape[1:])
  columns = 2 * int(np.ceil(np.sqrt(len(x) / 2)))
  return images.image_grid(pairs, columns=columns)


class LatentModel(abc.ABC):
  """The base of the models that decode z ~ N(0, I).

  `decoder_name` names the network that maps z to x; `mean` maps its raw
  output to a sample in the data's range.
  """

  decoder_name = 'decoder'
  # What XLA:CPU gives the YNNPACK library in the training iteration.
  cpu_library_fusions = compiler.CONVOLUTIONAL
  # Metric groups of vi_gen.evaluation that this model supports, beyond
  # those that the data decides (FID/KID on images, modes on 2-D mixtures).
  eval_groups: tuple[str, ...] = ()

  def __init__(self, config, example_shape: tuple[int, ...]):
    self.check_config(config)
    self.config = config
    self.example_shape = tuple(example_shape)
    # How stride-2 convolutions are lowered (same function either way).
    self.lowering = networks.resolve_lowering(
      config.run.conv_lowering, self.example_shape
    )
    self.networks = self.build_networks()
    self.txs = {name: adam(config.optim) for name in self.trained()}

  @staticmethod
  def check_config(config) -> None:
    """Model-specific config rules; raises errors.ConfigError. None here."""
    del config

  @abc.abstractmethod
  def build_networks(self) -> dict[str, tuple[nn.Module, tuple]]:
    """name -> (Flax module, example inputs for its init)."""

  @abc.abstractmethod
  def phases(self) -> list[players.Phase]:
    """The schedule of one iteration."""

  def trained(self) -> tuple[str, ...]:
    """The entries of `state.params` that have an optimizer."""
    return tuple(self.networks) + tuple(self.extra_params())

  def extra_params(self) -> dict[str, PyTree]:
    """Trained params that belong to no network (the VAE's variance)."""
    return {}

  @property
  def old_networks(self) -> tuple[str, ...]:
    """Networks kept in `state.old_params` (the paper's G^o)."""
    return ()

  @property
  def batches_per_iteration(self) -> int:
    """Real batches one iteration uses."""
    return 1

  @property
  def _ema(self) -> tuple[str, float]:
    return self.decoder_name, self.config.ema_decay

  def init(self, key: jax.Array) -> TrainState:
    """Step 0: every network initialised from `key`, one Adam state per
    trained entry, copies of the old networks and of the EMA network."""
    params, batch_stats = players.init_networks(key, self.networks)
    params.update(self.extra_params())
    return players.new_state(
      params, batch_stats, self.txs, self.old_networks, self._ema
    )

  def iteration(
    self, state: TrainState, batch: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One iteration of `phases()`; pure and jit-able.

    Args:
      state: the train state.
      batch: real data, [batches_per_iteration, batch_size, *example_shape].
      key: this iteration's key (derived from the seed and the step).

    Returns:
      The new state and scalar metrics, each averaged over its phase.
    """
    return players.alternate(
      self.phases(), self.txs, state, batch, key, self._ema
    )

  def discriminator_phase(
    self, d_keys: Callable[[jax.Array], jax.Array]
  ) -> players.Phase:
    """`d_steps` steps of `self.discriminator_loss`, step i on real batch i
    and key i of `d_keys(iteration key)`."""
    return players.Phase(
      'd',
      ('discriminator',),
      self.discriminator_loss,
      self.config.d_steps,
      lambda ctx: (None, (ctx.batch, d_keys(ctx.key))),
    )

  def discriminate(
    self, params, batch_stats, first: tuple, second: tuple
  ) -> tuple[jax.Array, jax.Array, dict[str, PyTree]]:
    """The discriminator on two batches in turn (real and fake, codes and
    prior samples, ...), as the reference does: each batch gets its own
    BatchNorm statistics.

    Returns:
      (logits of `first`, logits of `second`, {'discriminator': updated
      BatchNorm statistics}).
    """
    a, stats = self.run('discriminator', params, batch_stats, *first)
    b, stats = self.run(
      'discriminator', params, {'discriminator': stats}, *second
    )
    return a, b, {'discriminator': stats}

  def run(
    self, name: str, params, batch_stats, *inputs, train: bool = True
  ) -> tuple[jax.Array, PyTree]:
    """Network `name` on `inputs`, with the entries of the state dicts."""
    return players.apply(
      self.networks[name][0],
      params[name],
      batch_stats[name],
      *inputs,
      train=train,
    )

  def mean(self, decoder_output: jax.Array) -> jax.Array:
    """The decoder's mean, in the data's range."""
    return decoder_output

  def latents(self, key: jax.Array, num: int) -> jax.Array:
    """z ~ N(0, I), the prior q(z) of every model here."""
    return jax.random.normal(key, (num, self.config.latent_dim))

  def _decode(self, params, state: TrainState, z: jax.Array) -> jax.Array:
    name = self.decoder_name
    out, _ = self.run(name, {name: params}, state.batch_stats, z, train=False)
    return self.mean(out)

  def generate(self, state: TrainState, z: jax.Array) -> jax.Array:
    """Samples at z (the EMA decoder when enabled), BatchNorm in eval mode."""
    params = sampling_params(state, self.decoder_name)
    return self._decode(params, state, z)

  def pictures(
    self, state: TrainState, key: jax.Array, reference: np.ndarray
  ) -> dict[str, np.ndarray]:
    """What the loop draws every `sample_every_steps`: {name: uint8 image};
    here the samples of fixed latents (an image grid, or 2-D points over
    the data)."""
    return {'samples': self.samples_picture(state, key, reference)}

  @functools.cached_property
  def _jitted_generate(self) -> Callable:
    return jax.jit(self.generate)

  def samples_picture(
    self, state: TrainState, key: jax.Array, reference: np.ndarray
  ) -> np.ndarray:
    """G(z) for fixed z: an image grid, or 2-D points over the data."""
    z = self.latents(key, self.config.run.num_grid_samples)
    samples = np.asarray(jax.device_get(self._jitted_generate(state, z)))
    return images.picture(samples, reference)


class EncoderDecoder(LatentModel):
  """What the models with an encoder share: reconstructing, and the
  reconstruction and latent pictures.

  Subclasses also build an 'encoder'; `code` maps its raw output to a code.
  """

  def autoencoder_networks(
    self, gaussian: bool = False, logits: bool = False
  ) -> dict[str, tuple[nn.Module, tuple]]:
    """The encoder (a Gaussian one's head gives (mean, log-variance)) and
    the decoder (raw logits if `logits`) for `build_networks`."""
    cfg = self.config
    return {
      'encoder': (
        networks.build_encoder(
          cfg.network,
          self.example_shape,
          cfg.latent_dim,
          gaussian,
          self.lowering,
        ),
        (jnp.zeros((2, *self.example_shape)),),
      ),
      self.decoder_name: (
        networks.build_generator(
          cfg.network, self.example_shape, logits, self.lowering
        ),
        (jnp.zeros((2, cfg.latent_dim)),),
      ),
    }

  def code(self, encoder_output) -> jax.Array:
    """The point code E(x) (a Gaussian encoder's mean)."""
    return encoder_output

  def reconstruct(
    self, state: TrainState, x: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """(E(x), G(E(x))) with the live networks, BatchNorm in eval mode."""
    out, _ = self.run(
      'encoder', state.params, state.batch_stats, x, train=False
    )
    codes = self.code(out)
    return codes, self._decode(state.params[self.decoder_name], state, codes)

  @functools.cached_property
  def _jitted_reconstruct(self) -> Callable:
    return jax.jit(self.reconstruct)

  def pictures(
    self, state: TrainState, key: jax.Array, reference: np.ndarray
  ) -> dict[str, np.ndarray]:
    """samples: G(z) for fixed z; reconstructions: G(E(x)) next to x for
    the fixed real examples; latents (2-D codes only): E(x) in red over
    prior samples in grey."""
    x = np.asarray(reference[: self.config.run.num_grid_samples])
    codes, recon = (np.asarray(a) for a in self._jitted_reconstruct(state, x))
    pictures = {
      'samples': self.samples_picture(state, key, reference),
      'reconstructions': reconstruction_picture(x, recon),
    }
    if codes.shape[-1] == 2:
      prior = np.asarray(self.latents(key, len(codes)))
      pictures['latents'] = images.scatter_plot(codes, prior, LATENT_EXTENT)
    return pictures
