"""GAN and the paper's regularized GAN (VGAN): eqs. (16), (20) and (26).

One iteration is `d_steps` D steps (eq. 16, each on its own real batch and
fresh z), then a snapshot of the generator, then `g_steps` G steps on one
fresh z (eq. 26), as in the reference code (paper.md §3.3, §4.6). The
regularizer pulls G(z) towards G^o(z), the old generator on the same z:

* `old_generator='phase'` (the paper's meaning): G^o is the generator at the
  start of this G phase, the one D was just trained against. On the first G
  step G == G^o, so the term only acts from the second step on.
* `old_generator='lagged'`: G^o is the snapshot of the previous iteration,
  one iteration behind, which acts even with a single G step.

`reg_weight=0` gives the standard GAN of eq. (20).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vi_gen import errors, losses, networks
from vi_gen.methods import common
from vi_gen.state import TrainState, copy_tree


def check_config(config) -> None:
  """GAN-specific config rules; raises errors.ConfigError."""
  errors.require(
    config.reg_weight >= 0,
    f'reg_weight must be >= 0, got {config.reg_weight}.',
  )
  common.check_alternation(
    config,
    term='the regularizer',
    switch_off='reg_weight=0',
    uses_old=bool(config.reg_weight),
  )


class GAN(common.LatentModel):
  """The GAN method: networks, optimizers and one jit-able iteration."""

  networks = ('generator', 'discriminator')
  decoder_name = 'generator'
  check_config = staticmethod(check_config)

  def __init__(self, config, example_shape: tuple[int, ...]):
    check_config(config)
    self.config = config
    self.example_shape = tuple(example_shape)
    self.generator, self.discriminator = networks.build_gan(
      config.network, example_shape
    )
    self.txs = {name: common.adam(config.optim) for name in self.networks}
    self.batches_per_iteration = config.d_steps

  def init(self, key: jax.Array) -> TrainState:
    params, batch_stats = common.init_networks(
      key,
      {
        'generator': (
          self.generator,
          (jnp.zeros((2, self.config.latent_dim)),),
        ),
        'discriminator': (
          self.discriminator,
          (jnp.zeros((2, *self.example_shape)),),
        ),
      },
    )
    return common.new_state(
      params,
      batch_stats,
      self.txs,
      old_params={'generator': copy_tree(params['generator'])},
      ema_params=common.ema_init(
        params['generator'], 'generator', self.config.ema_decay
      ),
    )

  def _d_step(self, g_params, g_stats, carry, inputs):
    """One D step of eq. (16) on a real batch and G(z) for fresh z."""
    d_params, d_opt, d_stats = carry
    real, key = inputs
    # G's statistics are updated by G's own steps only.
    fake, _ = common.apply(
      self.generator,
      g_params,
      g_stats,
      self.latents(key, real.shape[0]),
      train=True,
    )
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(params):
      # D sees the real and the fake batch separately, as in the reference,
      # so each gets its own BatchNorm statistics.
      d = params['discriminator']
      real_logits, stats = common.apply(
        self.discriminator, d, d_stats, real, train=True
      )
      fake_logits, stats = common.apply(
        self.discriminator, d, stats, fake, train=True
      )
      loss = losses.discriminator_loss(real_logits, fake_logits)
      return loss, (stats, real_logits, fake_logits)

    params, opt_states, loss, aux, grad_norm = common.descend(
      self.txs,
      loss_fn,
      {'discriminator': d_params},
      {'discriminator': d_opt},
    )
    d_stats, real_logits, fake_logits = aux
    metrics = {
      'd_loss': loss,
      'd_real': jnp.mean(jax.nn.sigmoid(real_logits)),
      'd_fake': jnp.mean(jax.nn.sigmoid(fake_logits)),
      'd_grad_norm': grad_norm,
    }
    carry = params['discriminator'], opt_states['discriminator'], d_stats
    return carry, metrics

  def _g_step(self, d_params, d_stats, z, old_fake, carry, _):
    """One G step of eq. (26) (eq. 20 when reg_weight is 0)."""
    g_params, g_opt, g_stats = carry
    weight = self.config.reg_weight

    def loss_fn(params):
      fake, stats = common.apply(
        self.generator, params['generator'], g_stats, z, train=True
      )
      # D's statistics are not updated by G's steps.
      logits, _ = common.apply(
        self.discriminator, d_params, d_stats, fake, train=True
      )
      adversarial = losses.generator_loss(logits)
      if weight:
        regularizer = losses.generator_regularizer(fake, old_fake)
      else:
        regularizer = jnp.zeros(())
      return adversarial + weight * regularizer, (
        stats,
        adversarial,
        regularizer,
      )

    params, opt_states, loss, aux, grad_norm = common.descend(
      self.txs, loss_fn, {'generator': g_params}, {'generator': g_opt}
    )
    g_stats, adversarial, regularizer = aux
    metrics = {
      'g_loss': loss,
      'g_adversarial': adversarial,
      'g_regularizer': regularizer,
      'g_grad_norm': grad_norm,
    }
    return (params['generator'], opt_states['generator'], g_stats), metrics

  def iteration(
    self, state: TrainState, batch: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """d_steps D steps, the old-generator snapshot, g_steps G steps.

    Args:
      state: the train state.
      batch: real data, [d_steps, batch_size, *example_shape].
      key: this iteration's key (derived from the seed and the step).

    Returns:
      The new state and scalar metrics, each averaged over its phase.
    """
    keys = jax.random.split(key, self.config.d_steps + 1)
    d_keys, g_key = keys[:-1], keys[-1]
    d_step = functools.partial(
      self._d_step, state.params['generator'], state.batch_stats['generator']
    )
    carry = (
      state.params['discriminator'],
      state.opt_states['discriminator'],
      state.batch_stats['discriminator'],
    )
    (d_params, d_opt, d_stats), d_metrics = common.unrolled_scan(
      d_step, carry, (batch, d_keys)
    )

    snapshot = state.params['generator']
    z = self.latents(g_key, batch.shape[1])
    old_fake = None
    if self.config.reg_weight:
      target = snapshot
      if self.config.old_generator == 'lagged':
        target = state.old_params['generator']
      old_fake, _ = common.apply(
        self.generator, target, state.batch_stats['generator'], z, train=True
      )
      old_fake = jax.lax.stop_gradient(old_fake)

    g_step = functools.partial(self._g_step, d_params, d_stats, z, old_fake)
    carry = (
      snapshot,
      state.opt_states['generator'],
      state.batch_stats['generator'],
    )
    (g_params, g_opt, g_stats), g_metrics = common.unrolled_scan(
      g_step, carry, None, length=self.config.g_steps
    )

    ema_params = common.ema_step(
      state.ema_params, g_params, 'generator', self.config.ema_decay
    )
    new_state = state.replace(
      step=state.step + 1,
      params={'generator': g_params, 'discriminator': d_params},
      batch_stats={'generator': g_stats, 'discriminator': d_stats},
      opt_states={'generator': g_opt, 'discriminator': d_opt},
      old_params={'generator': snapshot},
      ema_params=ema_params,
    )
    # Averaged over the phase's steps (in 'phase' mode the regularizer of the
    # first G step is zero by construction).
    metrics = {k: jnp.mean(v) for k, v in {**d_metrics, **g_metrics}.items()}
    metrics['g_param_norm'] = optax.tree.norm(g_params)
    metrics['d_param_norm'] = optax.tree.norm(d_params)
    return new_state, metrics

  def pictures(
    self, state: TrainState, key: jax.Array, reference: np.ndarray
  ) -> dict[str, np.ndarray]:
    """Samples from fixed latents: an image grid, or 2-D points over data."""
    return {'samples': self.samples_picture(state, key, reference)}
