"""ALI/BiGAN: eqs. (38) and (40)-(43).

Two joint distributions of (x, z) are matched through a discriminator
D(x, z) = p(1|x, z), the probability that a pair comes from the encoder side:

* encoder side: x ~ p~(x), z ~ p(z|x) = N(E(x), encoder_sigma^2 I);
* generator side: z ~ N(0, I), x ~ q(x|z) = N(G(z), generator_sigma^2 I).

A sigma of 0 makes that side deterministic (Dirac); both are sampled by
reparameterization. One iteration is `d_steps` D steps of eq. (38), each on
its own real batch with fresh z and noise, then `g_steps` steps of E and G
together against the frozen D, on the last real batch and one fresh z and
noise, minimising by `ali.variant`:

* 'vi', the paper's eq. (41): both sides push D -> 1;
* 'minmax', eq. (42): minus D's loss;
* 'nonsaturating', eq. (43): the labels swapped.

`ali.complete` keeps the two terms of eq. (40) that (41) drops, in the
DERIVED closed forms of `losses.ali_generator_kl` and
`losses.ali_latent_cycle` (Gaussian sides only). They compare E and G with
E^o and G^o, the networks D was just trained against, kept in
`state.old_params` as the GAN's old generator: snapshot at the start of the
E/G phase (`old_generator='phase'`, needs g_steps >= 2) or one iteration
behind ('lagged').
"""

import jax
import jax.numpy as jnp

from vi_gen import errors, losses, networks, players
from vi_gen.methods import base

PLAYERS = ('encoder', 'generator')


def perturb(key: jax.Array, mean: jax.Array, sigma: float) -> jax.Array:
  """A sample of N(mean, sigma^2 I); the mean itself when sigma is 0."""
  if not sigma:
    return mean
  return mean + sigma * jax.random.normal(key, mean.shape, mean.dtype)


class ALI(base.EncoderDecoder):
  """ALI: encoder, generator and joint (x, z) discriminator."""

  decoder_name = 'generator'
  eval_groups = ('autoencoder',)

  @staticmethod
  def check_config(config) -> None:
    ali = config.ali
    errors.require(
      ali.variant in losses.ALI_VARIANTS,
      f'ali.variant must be one of {losses.ALI_VARIANTS}, got {ali.variant!r}.',
    )
    errors.require(
      ali.encoder_sigma >= 0 and ali.generator_sigma >= 0,
      'ali.encoder_sigma and ali.generator_sigma must be >= 0 (0 ='
      f' deterministic), got {ali.encoder_sigma} and {ali.generator_sigma}.',
    )
    if ali.complete:
      errors.require(
        ali.variant == 'vi',
        'ali.complete restores the terms of eq. (40) that eq. (41) drops; it'
        f" needs ali.variant='vi', got {ali.variant!r}.",
      )
      errors.require(
        ali.encoder_sigma > 0 and ali.generator_sigma > 0,
        'ali.complete needs Gaussian sides, ali.encoder_sigma > 0 and'
        ' ali.generator_sigma > 0: its terms divide by 2 sigma^2 and diverge'
        f' when a side is deterministic (got {ali.encoder_sigma} and'
        f' {ali.generator_sigma}).',
      )
    base.check_alternation(
      config,
      term="ali.complete's terms of eq. (40)",
      switch_off='ali.complete=False',
      uses_old=ali.complete,
    )

  def build_networks(self):
    cfg = self.config
    x = jnp.zeros((2, *self.example_shape))
    z = jnp.zeros((2, cfg.latent_dim))
    return {
      **self.autoencoder_networks(),
      'discriminator': (
        networks.build_joint_discriminator(
          cfg.network, self.example_shape, self.lowering
        ),
        (x, z),
      ),
    }

  @property
  def old_networks(self) -> tuple[str, ...]:
    return PLAYERS if self.config.ali.complete else ()

  @property
  def batches_per_iteration(self) -> int:
    return self.config.d_steps

  def _keys(self, key: jax.Array):
    """(one key per D step, the E/G phase's z key, its noise key)."""
    return base.split_keys(key, self.config.d_steps, 2)

  def phases(self) -> list[players.Phase]:
    return [
      self.discriminator_phase(lambda key: self._keys(key)[0]),
      players.Phase(
        'eg',
        PLAYERS,
        self.encoder_generator_loss,
        self.config.g_steps,
        self._encoder_generator_inputs,
        snapshot=self.old_networks,
      ),
    ]

  def _sides(self, params, stats, x, z, key):
    """Both sides' samples, z_hat ~ p(z|x) and x_hat ~ q(x|z), and G(z).

    Returns:
      (z_hat, x_hat, G(z), updated statistics of E and G).
    """
    code, e_stats = self.run('encoder', params, stats, x)
    fake, g_stats = self.run('generator', params, stats, z)
    e_key, g_key = jax.random.split(key)
    z_hat = perturb(e_key, code, self.config.ali.encoder_sigma)
    x_hat = perturb(g_key, fake, self.config.ali.generator_sigma)
    return z_hat, x_hat, fake, {'encoder': e_stats, 'generator': g_stats}

  def discriminator_loss(self, params, stats, shared, step_input):
    """Eq. (38) on a real batch and fresh z and noise."""
    del shared
    x, key = step_input
    z_key, noise_key = jax.random.split(key)
    z = self.latents(z_key, x.shape[0])
    # E's and G's statistics are updated by their own steps only.
    z_hat, x_hat, _, _ = self._sides(params, stats, x, z, noise_key)
    encoder_logits, generator_logits, d_stats = self.discriminate(
      params, stats, (x, z_hat), (x_hat, z)
    )
    loss = losses.ali_discriminator_loss(encoder_logits, generator_logits)
    return loss, (
      d_stats,
      base.mean_probabilities(
        d_encoder=encoder_logits, d_generator=generator_logits
      ),
    )

  def _encoder_generator_inputs(self, ctx: players.Context):
    """The last real batch, one z and noise key, and, when `ali.complete`,
    (G^o(z), E^o's params)."""
    _, z_key, noise_key = self._keys(ctx.key)
    x = ctx.batch[-1]
    z = self.latents(z_key, x.shape[0])
    old = None
    if self.config.ali.complete:
      phase = self.config.old_generator == 'phase'
      # D's steps do not change E and G: this is what D was trained against.
      source = ctx.params if phase else ctx.old_params
      old_fake, _ = self.run('generator', source, ctx.batch_stats, z)
      old = (old_fake, source['encoder'])
    return (x, z, noise_key, old), None

  def encoder_generator_loss(self, params, stats, shared, step_input):
    """Eq. (41), (42) or (43) by `ali.variant`, plus eq. (40)'s derived
    terms when `ali.complete`."""
    del step_input
    x, z, key, old = shared
    ali = self.config.ali
    z_hat, x_hat, fake, new_stats = self._sides(params, stats, x, z, key)
    # D's statistics are not updated by these steps.
    encoder_logits, _ = self.run('discriminator', params, stats, x, z_hat)
    generator_logits, _ = self.run('discriminator', params, stats, x_hat, z)
    # Eq. (41) ('vi'), (42) ('minmax') or (43) ('nonsaturating').
    adversarial = losses.ali_generator_encoder_loss(
      encoder_logits, generator_logits, ali.variant
    )
    terms = {'eg_adversarial': adversarial}
    if ali.complete:
      old_fake, old_encoder = old
      # Eq. (40), third term: E_z KL(q(x|z) || q^o(x|z)) (DERIVED form).
      terms['eg_generator_kl'] = losses.ali_generator_kl(
        fake, old_fake, ali.generator_sigma
      )
      # Eq. (40), last term: E log(p^o(z|x) / p(z|x)) on the generator
      # side (DERIVED form); it reaches G through x_hat.
      code, _ = self.run('encoder', params, stats, x_hat)
      old_code, _ = self.run('encoder', {'encoder': old_encoder}, stats, x_hat)
      terms['eg_latent_cycle'] = losses.ali_latent_cycle(
        z, code, old_code, ali.encoder_sigma
      )
    return sum(terms.values()), (new_stats, terms)
