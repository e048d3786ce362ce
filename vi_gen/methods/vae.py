"""VAE: eq. (7), the joint KL (5) with a Gaussian encoder p(z|x).

One iteration is one Adam step of the encoder and the decoder on one real
batch: z is ONE reparameterized sample of p(z|x) = N(mean, diag exp(logvar))
per x, and the KL to q(z) = N(0, I) is analytic (paper.md §3.1). The decoder
q(x|z) is either

* 'gaussian': N(G(z), exp(recon_logvar) I), with `recon_logvar` fixed or
  learned (one shared scalar: the optimum is the mean squared error, so it
  cannot collapse onto MNIST's constant background the way a per-pixel
  variance does), or
* 'bernoulli': Bernoulli(sigmoid(G(z))) on x mapped from [-1, 1] to [0, 1];
  its mean, mapped back, is 2 sigmoid(l) - 1 = tanh(l / 2).
"""

import jax
import jax.numpy as jnp
import optax

from vi_gen import data, errors, losses, networks
from vi_gen.methods import common
from vi_gen.state import TrainState

RECON_LOGVAR = 'recon_logvar'


def check_config(config) -> None:
  """VAE-specific config rules; raises errors.ConfigError."""
  vae = config.vae
  errors.require(
    vae.likelihood in losses.LIKELIHOODS,
    f'vae.likelihood must be one of {losses.LIKELIHOODS}, got'
    f' {vae.likelihood!r}.',
  )
  if vae.likelihood == 'bernoulli':
    errors.require(
      len(data.example_shape(config.data)) == 3,
      "vae.likelihood='bernoulli' models pixels in [0, 1]; use 'gaussian'"
      f' for the 2-D data {config.data.name!r}.',
    )
    errors.require(
      not vae.learn_variance,
      "vae.learn_variance applies to likelihood='gaussian' only.",
    )


class VAE(common.EncoderDecoder):
  """The VAE method: encoder, decoder, and one jit-able iteration."""

  networks = ('encoder', 'decoder')
  check_config = staticmethod(check_config)

  def __init__(self, config, example_shape: tuple[int, ...]):
    check_config(config)
    self.config = config
    self.example_shape = tuple(example_shape)
    self.bernoulli = config.vae.likelihood == 'bernoulli'
    self.encoder = networks.build_encoder(
      config.network, example_shape, config.latent_dim, gaussian=True
    )
    self.decoder = networks.build_generator(
      config.network, example_shape, logits=self.bernoulli
    )
    trained = self.networks
    if config.vae.learn_variance:
      trained += (RECON_LOGVAR,)
    self.txs = {name: common.adam(config.optim) for name in trained}
    self.batches_per_iteration = 1

  def init(self, key: jax.Array) -> TrainState:
    params, batch_stats = common.init_networks(
      key,
      {
        'encoder': (self.encoder, (jnp.zeros((2, *self.example_shape)),)),
        'decoder': (self.decoder, (jnp.zeros((2, self.config.latent_dim)),)),
      },
    )
    if self.config.vae.learn_variance:
      params[RECON_LOGVAR] = jnp.asarray(
        self.config.vae.recon_logvar, jnp.float32
      )
    return common.new_state(
      params,
      batch_stats,
      self.txs,
      ema_params=common.ema_init(
        params['decoder'], 'decoder', self.config.ema_decay
      ),
    )

  def recon_logvar(self, params) -> jax.Array:
    """log of q(x|z)'s variance: learned, or the config's."""
    return params.get(RECON_LOGVAR, self.config.vae.recon_logvar)

  def iteration(
    self, state: TrainState, batch: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One step of eq. (7) for the encoder and the decoder.

    Args:
      state: the train state.
      batch: real data, [1, batch_size, *example_shape].
      key: this iteration's key (derived from the seed and the step).

    Returns:
      The new state and scalar metrics.
    """
    x = batch[0]
    target = (x + 1.0) / 2.0 if self.bernoulli else x

    def loss_fn(params):
      (mean, logvar), e_stats = common.apply(
        self.encoder,
        params['encoder'],
        state.batch_stats['encoder'],
        x,
        train=True,
      )
      z = losses.reparameterize(key, mean, logvar)
      recon, d_stats = common.apply(
        self.decoder,
        params['decoder'],
        state.batch_stats['decoder'],
        z,
        train=True,
      )
      # Eq. (7): E_x[-log q(x|z) + KL(p(z|x) || N(0, I))].
      loss, terms = losses.vae_loss(
        target,
        recon,
        mean,
        logvar,
        likelihood=self.config.vae.likelihood,
        recon_logvar=self.recon_logvar(params),
      )
      return loss, ({'encoder': e_stats, 'decoder': d_stats}, terms)

    params, opt_states, _, (batch_stats, terms), grad_norm = common.descend(
      self.txs, loss_fn, state.params, state.opt_states
    )
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=batch_stats,
      opt_states=opt_states,
      ema_params=common.ema_step(
        state.ema_params, params['decoder'], 'decoder', self.config.ema_decay
      ),
    )
    metrics = {
      **terms,
      'grad_norm': grad_norm,
      'e_param_norm': optax.tree.norm(params['encoder']),
      'g_param_norm': optax.tree.norm(params['decoder']),
    }
    if RECON_LOGVAR in params:
      metrics[RECON_LOGVAR] = params[RECON_LOGVAR]
    return new_state, metrics

  def code(self, encoder_output) -> jax.Array:
    """The encoder's mean."""
    return encoder_output[0]

  def mean(self, decoder_output: jax.Array) -> jax.Array:
    """Gaussian: G(z); Bernoulli: 2 sigmoid(l) - 1, in [-1, 1]."""
    return jnp.tanh(decoder_output / 2.0) if self.bernoulli else decoder_output
