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

from vi_gen import data, errors, losses, players
from vi_gen.evaluation import likelihood
from vi_gen.methods import base
from vi_gen.state import TrainState

RECON_LOGVAR = 'recon_logvar'


class VAE(base.EncoderDecoder):
  """The VAE: one player, the encoder and decoder trained together."""

  eval_groups = ('likelihood',)

  @staticmethod
  def check_config(config) -> None:
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

  @property
  def bernoulli(self) -> bool:
    """Whether q(x|z) is Bernoulli (else Gaussian)."""
    return self.config.vae.likelihood == 'bernoulli'

  def build_networks(self):
    return self.autoencoder_networks(gaussian=True, logits=self.bernoulli)

  def extra_params(self):
    """The learned log-variance of q(x|z), when `vae.learn_variance`."""
    if not self.config.vae.learn_variance:
      return {}
    return {
      RECON_LOGVAR: jnp.asarray(self.config.vae.recon_logvar, jnp.float32)
    }

  def recon_logvar(self, params) -> jax.Array:
    """log of q(x|z)'s variance: learned, or the config's."""
    return params.get(RECON_LOGVAR, self.config.vae.recon_logvar)

  def target(self, x: jax.Array) -> jax.Array:
    """x as q(x|z) models it: in [0, 1] for the Bernoulli decoder."""
    return (x + 1.0) / 2.0 if self.bernoulli else x

  def phases(self) -> list[players.Phase]:
    return [
      players.Phase(
        'vae',
        self.trained(),
        self.loss,
        inputs=lambda ctx: ((ctx.batch[0], ctx.key), None),
      )
    ]

  def loss(self, params, stats, shared, step_input):
    """Eq. (7): E_x[-log q(x|z) + KL(p(z|x) || N(0, I))], one
    reparameterized z per x."""
    del step_input
    x, key = shared
    (mean, logvar), e_stats = self.run('encoder', params, stats, x)
    z = losses.reparameterize(key, mean, logvar)
    recon, d_stats = self.run('decoder', params, stats, z)
    loss, terms = losses.vae_loss(
      self.target(x),
      recon,
      mean,
      logvar,
      likelihood=self.config.vae.likelihood,
      recon_logvar=self.recon_logvar(params),
    )
    metrics = {'reconstruction': terms['reconstruction'], 'kl': terms['kl']}
    if RECON_LOGVAR in params:
      metrics[RECON_LOGVAR] = params[RECON_LOGVAR]
    return loss, ({'encoder': e_stats, 'decoder': d_stats}, metrics)

  def code(self, encoder_output) -> jax.Array:
    """The encoder's mean."""
    return encoder_output[0]

  def mean(self, decoder_output: jax.Array) -> jax.Array:
    """Gaussian: G(z); Bernoulli: 2 sigmoid(l) - 1, in [-1, 1]."""
    return jnp.tanh(decoder_output / 2.0) if self.bernoulli else decoder_output

  # ------------------------------------------ what the evaluation asks for ---

  def log_likelihood_bounds(
    self,
    state: TrainState,
    x: jax.Array,
    key: jax.Array,
    num_samples: int,
    chunk_size: int,
  ) -> likelihood.Bounds:
    """The IWAE bound and the ELBO of log q(x) per example of x [B, ...]
    (live networks, BatchNorm in eval mode), in nats, in the likelihood the
    model was trained with."""
    (mean, logvar), _ = self.run(
      'encoder', state.params, state.batch_stats, x, train=False
    )
    target = self.target(x)
    recon_logvar = self.recon_logvar(state.params)

    def log_likelihood(z: jax.Array) -> jax.Array:
      out, _ = self.run(
        'decoder', state.params, state.batch_stats, z, train=False
      )
      if self.bernoulli:
        return -losses.bernoulli_nll(out, target)
      return -losses.gaussian_nll(target, out, recon_logvar)

    return likelihood.iwae_bound(
      key, mean, logvar, log_likelihood, num_samples, chunk_size
    )

  @property
  def likelihood_bin_width(self) -> float | None:
    """The bin width of a continuous density (for bits/dim), or None when
    the likelihood is discrete already."""
    return None if self.bernoulli else likelihood.PIXEL_BIN_WIDTH

  @property
  def likelihood_description(self) -> str:
    """What the nats are a density of, for the evaluation's recipe."""
    if self.bernoulli:
      return (
        'Bernoulli(sigmoid(logits)) of the grey levels mapped to [0, 1] (the'
        ' training cross-entropy; a normalised likelihood only for binary'
        ' images); bits/dim = nats / (D ln 2)'
      )
    return (
      'Gaussian N(G(z), exp(recon_logvar)) density of the data in the'
      ' training range; for images bits/dim counts bins of width 2/255'
      ' (discrete NLL = NLL - D ln(2/255)), without dequantisation noise'
    )
