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

from vi_gen import errors, losses, networks, players
from vi_gen.methods import base

MODES = ('joint', 'separate')


class AAE(base.EncoderDecoder):
  """The AAE: encoder, decoder and latent discriminator."""

  eval_groups = ('autoencoder',)

  @staticmethod
  def check_config(config) -> None:
    errors.require(
      config.aae.mode in MODES,
      f'aae.mode must be one of {MODES}, got {config.aae.mode!r}.',
    )
    errors.require(
      config.aae.recon_weight > 0,
      'aae.recon_weight must be > 0 (the decoder learns only through the'
      f' reconstruction), got {config.aae.recon_weight}.',
    )

  def build_networks(self):
    z = jnp.zeros((2, self.config.latent_dim))
    return {
      **self.autoencoder_networks(),
      'discriminator': (
        networks.build_latent_discriminator(self.config.network),
        (z,),
      ),
    }

  def phases(self) -> list[players.Phase]:
    return [
      players.Phase(
        'd', ('discriminator',), self.discriminator_loss, inputs=self._codes
      ),
      players.Phase(
        'ae',
        ('encoder', 'decoder'),
        self.autoencoder_loss,
        inputs=lambda ctx: (ctx.batch[0], None),
      ),
    ]

  def _codes(self, ctx: players.Context):
    """E(x) of the real batch and as many prior samples."""
    x = ctx.batch[0]
    # E's statistics are updated by E's own step only.
    codes, _ = self.run('encoder', ctx.params, ctx.batch_stats, x)
    return (codes, self.latents(ctx.key, x.shape[0])), None

  def discriminator_loss(self, params, stats, shared, step_input):
    """Eq. (30): codes labelled 0, prior samples 1."""
    del step_input
    codes, prior = shared
    code_logits, prior_logits, d_stats = self.discriminate(
      params, stats, (codes,), (prior,)
    )
    loss = losses.aae_discriminator_loss(code_logits, prior_logits)
    return loss, (
      d_stats,
      base.mean_probabilities(d_code=code_logits, d_prior=prior_logits),
    )

  def autoencoder_loss(self, params, stats, x, step_input):
    """Eq. (34) ('joint'), or eq. (33) for E plus eq. (34) over G alone
    ('separate'), against the D of this iteration."""
    del step_input
    joint = self.config.aae.mode == 'joint'
    weight = self.config.aae.recon_weight
    codes, e_stats = self.run('encoder', params, stats, x)
    # D's statistics are not updated by this step.
    code_logits, _ = self.run('discriminator', params, stats, codes)
    recon, g_stats = self.run(
      'decoder',
      params,
      stats,
      codes if joint else jax.lax.stop_gradient(codes),
    )
    adversarial = losses.aae_encoder_loss(code_logits)  # Eq. (33).
    if joint:
      loss = losses.aae_loss(code_logits, x, recon, weight)  # Eq. (34).
    else:
      # Eq. (33) for E; eq. (34) for G, whose D term is then a constant.
      loss = adversarial + losses.aae_loss(
        jax.lax.stop_gradient(code_logits), x, recon, weight
      )
    return loss, (
      {'encoder': e_stats, 'decoder': g_stats},
      {
        'e_adversarial': adversarial,
        'reconstruction': jnp.mean(jnp.square(x - recon)),
      },
    )
