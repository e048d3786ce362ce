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

import functools

import jax
import jax.numpy as jnp
import optax

from vi_gen import errors, losses, networks
from vi_gen.methods import common
from vi_gen.state import TrainState, copy_tree

PLAYERS = ('encoder', 'generator')


def check_config(config) -> None:
  """ALI-specific config rules; raises errors.ConfigError."""
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
  common.check_alternation(
    config,
    term="ali.complete's terms of eq. (40)",
    switch_off='ali.complete=False',
    uses_old=ali.complete,
  )


def _perturb(key: jax.Array, mean: jax.Array, sigma: float) -> jax.Array:
  """A sample of N(mean, sigma^2 I); the mean itself when sigma is 0."""
  if not sigma:
    return mean
  return mean + sigma * jax.random.normal(key, mean.shape, mean.dtype)


class ALI(common.EncoderDecoder):
  """The ALI method: encoder, generator, joint (x, z) discriminator."""

  networks = ('encoder', 'generator', 'discriminator')
  decoder_name = 'generator'
  check_config = staticmethod(check_config)

  def __init__(self, config, example_shape: tuple[int, ...]):
    check_config(config)
    self.config = config
    self.example_shape = tuple(example_shape)
    self.encoder = networks.build_encoder(
      config.network, example_shape, config.latent_dim
    )
    self.generator = networks.build_generator(config.network, example_shape)
    self.discriminator = networks.build_joint_discriminator(
      config.network, example_shape
    )
    self.txs = {name: common.adam(config.optim) for name in self.networks}
    self.batches_per_iteration = config.d_steps

  def init(self, key: jax.Array) -> TrainState:
    x = jnp.zeros((2, *self.example_shape))
    z = jnp.zeros((2, self.config.latent_dim))
    params, batch_stats = common.init_networks(
      key,
      {
        'encoder': (self.encoder, (x,)),
        'generator': (self.generator, (z,)),
        'discriminator': (self.discriminator, (x, z)),
      },
    )
    old_params = {}
    if self.config.ali.complete:
      old_params = {name: copy_tree(params[name]) for name in PLAYERS}
    return common.new_state(
      params,
      batch_stats,
      self.txs,
      old_params=old_params,
      ema_params=common.ema_init(
        params['generator'], 'generator', self.config.ema_decay
      ),
    )

  def _sides(self, params, batch_stats, x, z, key):
    """Both sides' samples, z_hat ~ p(z|x) and x_hat ~ q(x|z), and G(z).

    Returns:
      (z_hat, x_hat, G(z), updated statistics of E and G).
    """
    code, e_stats = common.apply(
      self.encoder, params['encoder'], batch_stats['encoder'], x, train=True
    )
    fake, g_stats = common.apply(
      self.generator,
      params['generator'],
      batch_stats['generator'],
      z,
      train=True,
    )
    e_key, g_key = jax.random.split(key)
    z_hat = _perturb(e_key, code, self.config.ali.encoder_sigma)
    x_hat = _perturb(g_key, fake, self.config.ali.generator_sigma)
    return z_hat, x_hat, fake, {'encoder': e_stats, 'generator': g_stats}

  def _d_step(self, eg_params, eg_stats, carry, inputs):
    """One D step of eq. (38) on a real batch and fresh z and noise."""
    params, opt_states, d_stats = carry
    x, key = inputs
    z_key, noise_key = jax.random.split(key)
    z = self.latents(z_key, x.shape[0])
    # E's and G's statistics are updated by their own steps only.
    z_hat, x_hat, _, _ = self._sides(eg_params, eg_stats, x, z, noise_key)
    z_hat, x_hat = jax.lax.stop_gradient((z_hat, x_hat))

    def loss_fn(params):
      # The two sides separately, as the GAN's real and fake batches.
      d_params = params['discriminator']
      encoder_logits, stats = common.apply(
        self.discriminator, d_params, d_stats, x, z_hat, train=True
      )
      generator_logits, stats = common.apply(
        self.discriminator, d_params, stats, x_hat, z, train=True
      )
      loss = losses.ali_discriminator_loss(encoder_logits, generator_logits)
      return loss, (stats, encoder_logits, generator_logits)

    params, opt_states, loss, aux, grad_norm = common.descend(
      self.txs, loss_fn, params, opt_states
    )
    d_stats, encoder_logits, generator_logits = aux
    metrics = {
      'd_loss': loss,
      'd_encoder': jnp.mean(jax.nn.sigmoid(encoder_logits)),
      'd_generator': jnp.mean(jax.nn.sigmoid(generator_logits)),
      'd_grad_norm': grad_norm,
    }
    return (params, opt_states, d_stats), metrics

  def _eg_step(self, d_params, d_stats, x, z, key, old, carry, _):
    """One step of E and G on eq. (41), (42) or (43), plus eq. (40)'s
    derived terms when `ali.complete`.

    `old` is (G^o(z), E^o's params) when complete, else None.
    """
    params, opt_states, batch_stats = carry
    ali = self.config.ali

    def loss_fn(params):
      z_hat, x_hat, fake, stats = self._sides(params, batch_stats, x, z, key)
      # D's statistics are not updated by these steps.
      encoder_logits, _ = common.apply(
        self.discriminator, d_params, d_stats, x, z_hat, train=True
      )
      generator_logits, _ = common.apply(
        self.discriminator, d_params, d_stats, x_hat, z, train=True
      )
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
        code, _ = common.apply(
          self.encoder,
          params['encoder'],
          batch_stats['encoder'],
          x_hat,
          train=True,
        )
        old_code, _ = common.apply(
          self.encoder, old_encoder, batch_stats['encoder'], x_hat, train=True
        )
        terms['eg_latent_cycle'] = losses.ali_latent_cycle(
          z, code, old_code, ali.encoder_sigma
        )
      return sum(terms.values()), (stats, terms)

    params, opt_states, loss, (batch_stats, terms), grad_norm = common.descend(
      self.txs, loss_fn, params, opt_states
    )
    metrics = {'eg_loss': loss, **terms, 'eg_grad_norm': grad_norm}
    return (params, opt_states, batch_stats), metrics

  def iteration(
    self, state: TrainState, batch: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """d_steps D steps, the E/G snapshot, g_steps E/G steps.

    Args:
      state: the train state.
      batch: real data, [d_steps, batch_size, *example_shape].
      key: this iteration's key (derived from the seed and the step).

    Returns:
      The new state and scalar metrics, each averaged over its phase.
    """
    keys = jax.random.split(key, self.config.d_steps + 2)
    d_keys, z_key, noise_key = keys[:-2], keys[-2], keys[-1]

    def players(tree):
      return {name: tree[name] for name in PLAYERS}

    d = ('discriminator',)
    d_step = functools.partial(
      self._d_step, players(state.params), players(state.batch_stats)
    )
    carry = (
      {n: state.params[n] for n in d},
      {n: state.opt_states[n] for n in d},
      state.batch_stats['discriminator'],
    )
    (d_params, d_opt, d_stats), d_metrics = common.unrolled_scan(
      d_step, carry, (batch, d_keys)
    )

    # D's steps do not change E and G: this is what D was trained against.
    snapshot = players(state.params)
    x = batch[-1]
    z = self.latents(z_key, x.shape[0])
    old = None
    if self.config.ali.complete:
      source = snapshot
      if self.config.old_generator == 'lagged':
        source = state.old_params
      old_fake, _ = common.apply(
        self.generator,
        source['generator'],
        state.batch_stats['generator'],
        z,
        train=True,
      )
      old = (jax.lax.stop_gradient(old_fake), source['encoder'])

    eg_step = functools.partial(
      self._eg_step,
      d_params['discriminator'],
      d_stats,
      x,
      z,
      noise_key,
      old,
    )
    carry = (snapshot, players(state.opt_states), players(state.batch_stats))
    (params, opt_states, batch_stats), eg_metrics = common.unrolled_scan(
      eg_step, carry, None, length=self.config.g_steps
    )

    new_state = state.replace(
      step=state.step + 1,
      params={**params, **d_params},
      batch_stats={**batch_stats, 'discriminator': d_stats},
      opt_states={**opt_states, **d_opt},
      old_params=snapshot if self.config.ali.complete else {},
      ema_params=common.ema_step(
        state.ema_params,
        params['generator'],
        'generator',
        self.config.ema_decay,
      ),
    )
    metrics = {k: jnp.mean(v) for k, v in {**d_metrics, **eg_metrics}.items()}
    for name, prefix in (('encoder', 'e'), ('generator', 'g')):
      metrics[f'{prefix}_param_norm'] = optax.tree.norm(params[name])
    metrics['d_param_norm'] = optax.tree.norm(d_params)
    return new_state, metrics
