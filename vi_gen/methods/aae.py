"""AAE: eqs. (30), (33) and (34), the GAN derivation with x and z swapped.

The encoder is deterministic, p(z|x) = delta(z - E(x)) (eq. 27), and a
latent discriminator D(z) = q(0|z), the probability that z is a PRIOR sample,
tells codes from z ~ N(0, I). One iteration, on one real batch:

1. D step, eq. (30), on E(x) and fresh prior samples (trains D only).
2. Autoencoder step against the updated D, by `aae.mode`:
   * 'joint' (default), eq. (34): E and G minimise
     -log D(E(x)) + recon_weight * ||x - G(E(x))||^2 together.
   * 'separate': E minimises eq. (33), -log D(E(x)), alone, and the decoder
     is trained apart on the codes: eq. (34) minimised over G with E frozen,
     i.e. recon_weight * ||x - G(sg(E(x)))||^2. The reconstruction then
     never reaches E.
   `recon_weight` applies to the per-element mean, as the GAN's regularizer.
"""

import jax
import jax.numpy as jnp
import optax

from vi_gen import errors, losses, networks
from vi_gen.methods import common
from vi_gen.state import TrainState

MODES = ('joint', 'separate')


def check_config(config) -> None:
  """AAE-specific config rules; raises errors.ConfigError."""
  errors.require(
    config.aae.mode in MODES,
    f'aae.mode must be one of {MODES}, got {config.aae.mode!r}.',
  )
  errors.require(
    config.aae.recon_weight > 0,
    'aae.recon_weight must be > 0 (the decoder learns only through the'
    f' reconstruction), got {config.aae.recon_weight}.',
  )


class AAE(common.EncoderDecoder):
  """The AAE method: encoder, decoder, latent discriminator."""

  networks = ('encoder', 'decoder', 'discriminator')
  check_config = staticmethod(check_config)

  def __init__(self, config, example_shape: tuple[int, ...]):
    check_config(config)
    self.config = config
    self.example_shape = tuple(example_shape)
    self.encoder = networks.build_encoder(
      config.network, example_shape, config.latent_dim
    )
    self.decoder = networks.build_generator(config.network, example_shape)
    self.discriminator = networks.build_latent_discriminator(config.network)
    self.txs = {name: common.adam(config.optim) for name in self.networks}
    self.batches_per_iteration = 1

  def init(self, key: jax.Array) -> TrainState:
    x = jnp.zeros((2, *self.example_shape))
    z = jnp.zeros((2, self.config.latent_dim))
    params, batch_stats = common.init_networks(
      key,
      {
        'encoder': (self.encoder, (x,)),
        'decoder': (self.decoder, (z,)),
        'discriminator': (self.discriminator, (z,)),
      },
    )
    return common.new_state(
      params,
      batch_stats,
      self.txs,
      ema_params=common.ema_init(
        params['decoder'], 'decoder', self.config.ema_decay
      ),
    )

  def _encode(self, state: TrainState, params, x: jax.Array):
    return common.apply(
      self.encoder, params, state.batch_stats['encoder'], x, train=True
    )

  def _d_step(self, state: TrainState, x: jax.Array, prior: jax.Array):
    """One D step of eq. (30): codes labelled 0, prior samples 1."""
    # E's statistics are updated by E's own step only.
    codes, _ = self._encode(state, state.params['encoder'], x)
    codes = jax.lax.stop_gradient(codes)
    name = 'discriminator'

    def loss_fn(params):
      # Codes and prior samples separately, as the GAN's real and fake.
      code_logits, stats = common.apply(
        self.discriminator,
        params[name],
        state.batch_stats[name],
        codes,
        train=True,
      )
      prior_logits, stats = common.apply(
        self.discriminator, params[name], stats, prior, train=True
      )
      loss = losses.aae_discriminator_loss(code_logits, prior_logits)
      return loss, (stats, code_logits, prior_logits)

    params, opt_states, loss, aux, grad_norm = common.descend(
      self.txs,
      loss_fn,
      {name: state.params[name]},
      {name: state.opt_states[name]},
    )
    stats, code_logits, prior_logits = aux
    metrics = {
      'd_loss': loss,
      'd_code': jnp.mean(jax.nn.sigmoid(code_logits)),
      'd_prior': jnp.mean(jax.nn.sigmoid(prior_logits)),
      'd_grad_norm': grad_norm,
    }
    return params[name], opt_states[name], stats, metrics

  def _autoencoder_step(self, state: TrainState, x: jax.Array, d_params):
    """One step of eq. (34) ('joint'), or of eq. (33) for E plus eq. (34)
    over G alone ('separate'), against the D of this iteration."""
    names = ('encoder', 'decoder')
    joint = self.config.aae.mode == 'joint'
    weight = self.config.aae.recon_weight
    d_stats = state.batch_stats['discriminator']

    def loss_fn(params):
      codes, e_stats = self._encode(state, params['encoder'], x)
      # D's statistics are not updated by this step.
      code_logits, _ = common.apply(
        self.discriminator, d_params, d_stats, codes, train=True
      )
      recon, g_stats = common.apply(
        self.decoder,
        params['decoder'],
        state.batch_stats['decoder'],
        codes if joint else jax.lax.stop_gradient(codes),
        train=True,
      )
      adversarial = losses.aae_encoder_loss(code_logits)  # Eq. (33).
      if joint:
        loss = losses.aae_loss(code_logits, x, recon, weight)  # Eq. (34).
      else:
        # Eq. (33) for E; eq. (34) for G, whose D term is then a constant.
        loss = adversarial + losses.aae_loss(
          jax.lax.stop_gradient(code_logits), x, recon, weight
        )
      stats = {'encoder': e_stats, 'decoder': g_stats}
      return loss, (stats, adversarial, jnp.mean(jnp.square(x - recon)))

    params, opt_states, loss, aux, grad_norm = common.descend(
      self.txs,
      loss_fn,
      {name: state.params[name] for name in names},
      {name: state.opt_states[name] for name in names},
    )
    stats, adversarial, reconstruction = aux
    metrics = {
      'ae_loss': loss,
      'e_adversarial': adversarial,
      'reconstruction': reconstruction,
      'ae_grad_norm': grad_norm,
    }
    return params, opt_states, stats, metrics

  def iteration(
    self, state: TrainState, batch: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """The D step of eq. (30), then the autoencoder step.

    Args:
      state: the train state.
      batch: real data, [1, batch_size, *example_shape].
      key: this iteration's key (derived from the seed and the step).

    Returns:
      The new state and scalar metrics.
    """
    x = batch[0]
    d_params, d_opt, d_stats, d_metrics = self._d_step(
      state, x, self.latents(key, x.shape[0])
    )
    params, opt_states, batch_stats, ae_metrics = self._autoencoder_step(
      state, x, d_params
    )
    params['discriminator'] = d_params
    opt_states['discriminator'] = d_opt
    batch_stats['discriminator'] = d_stats
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=batch_stats,
      opt_states=opt_states,
      ema_params=common.ema_step(
        state.ema_params, params['decoder'], 'decoder', self.config.ema_decay
      ),
    )
    metrics = {**d_metrics, **ae_metrics}
    for name, prefix in (('encoder', 'e'), ('decoder', 'g')):
      metrics[f'{prefix}_param_norm'] = optax.tree.norm(params[name])
    metrics['d_param_norm'] = optax.tree.norm(d_params)
    return new_state, metrics
