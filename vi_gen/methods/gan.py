"""GAN and the paper's regularized GAN (VGAN): eqs. (16), (20) and (26).

One iteration is two phases (paper.md §3.3, §4.6):

1. `d_steps` D steps of eq. (16), each on its own real batch and fresh z;
2. a snapshot of the generator, G^o, then `g_batches` fresh z batches with
   `g_steps` G steps of eq. (26) on each, all regularized towards the same
   G^o (the reference's Experiment 1: 1 batch x 2 steps; Experiment 2:
   5 batches x 2 steps after 5 D steps).

The regularizer pulls G(z) towards G^o(z), the old generator on the same z:

* `old_generator='phase'` (the paper's meaning): G^o is the generator at the
  start of this G phase, the one D was just trained against. On the phase's
  first G step G == G^o, so the term acts from the second step on, and that
  step's samples are G^o(z) on the first z batch: they are reused, not
  computed again (later batches' G^o(z) still are).
* `old_generator='lagged'`: G^o is the snapshot of the previous iteration,
  one iteration behind, which acts even with a single G step.

`reg_weight=0` gives the standard GAN of eq. (20); `generator_loss=
'saturating'` its minimax form, E log(1 - D(G(z))).
"""

import jax
import jax.numpy as jnp
import numpy as np

from vi_gen import errors, losses, networks, players
from vi_gen.methods import base

# The generator's adversarial term: eq. (20), or the minimax form it replaces.
GENERATOR_LOSSES = {
  'nonsaturating': losses.generator_loss,
  'saturating': losses.saturating_generator_loss,
}


class GAN(base.LatentModel):
  """The GAN: a generator and a discriminator, alternating."""

  decoder_name = 'generator'
  old_networks = ('generator',)

  @staticmethod
  def check_config(config) -> None:
    errors.require(
      config.reg_weight >= 0,
      f'reg_weight must be >= 0, got {config.reg_weight}.',
    )
    errors.require(
      config.generator_loss in GENERATOR_LOSSES,
      f'generator_loss must be one of {tuple(GENERATOR_LOSSES)}, got'
      f' {config.generator_loss!r}.',
    )
    errors.require(
      config.g_batches >= 1,
      f'g_batches must be >= 1, got {config.g_batches}.',
    )
    base.check_alternation(
      config,
      term='the regularizer',
      switch_off='reg_weight=0',
      uses_old=bool(config.reg_weight),
    )

  def build_networks(self):
    generator, discriminator = networks.build_gan(
      self.config.network, self.example_shape, self.lowering
    )
    return {
      'generator': (generator, (jnp.zeros((2, self.config.latent_dim)),)),
      'discriminator': (discriminator, (jnp.zeros((2, *self.example_shape)),)),
    }

  @property
  def batches_per_iteration(self) -> int:
    return self.config.d_steps

  def _keys(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(one key per D step, the G phase's key)."""
    return base.split_keys(key, self.config.d_steps, 1)

  def phases(self) -> list[players.Phase]:
    return [
      self.discriminator_phase(lambda key: self._keys(key)[0]),
      players.Phase(
        'g',
        ('generator',),
        self.generator_loss,
        self.config.g_batches * self.config.g_steps,
        self._generator_inputs,
        snapshot=('generator',),
        updates_shared=True,
      ),
    ]

  def discriminator_objective(
    self, real_logits: jax.Array, fake_logits: jax.Array
  ) -> jax.Array:
    """D's loss on its outputs for a real and a fake batch: eq. (16).
    Override it (and `generator_objective`) for another GAN objective; the
    schedule and the old-generator regularizer stay."""
    return losses.discriminator_loss(real_logits, fake_logits)

  def generator_objective(self, fake_logits: jax.Array) -> jax.Array:
    """G's adversarial term: eq. (20), or the saturating minimax form."""
    return GENERATOR_LOSSES[self.config.generator_loss](fake_logits)

  def discriminator_loss(self, params, stats, shared, step_input):
    """Eq. (16) on a real batch and G(z) for fresh z."""
    del shared
    real, key = step_input
    # G's statistics are updated by G's own steps only.
    fake, _ = self.run(
      'generator', params, stats, self.latents(key, real.shape[0])
    )
    real_logits, fake_logits, d_stats = self.discriminate(
      params, stats, (real,), (fake,)
    )
    loss = self.discriminator_objective(real_logits, fake_logits)
    return loss, (
      d_stats,
      base.mean_probabilities(d_real=real_logits, d_fake=fake_logits),
    )

  def _generator_inputs(self, ctx: players.Context):
    """Shared by the G steps: the z batches and, when the regularizer is on,
    G^o on each (None where the first G step's samples will be G^o(z)); per
    G step: the index of its z batch.

    Batch b's z is seen by G steps b * g_steps ... (b + 1) * g_steps - 1.
    """
    cfg = self.config
    size = ctx.batch.shape[1]
    z = self.latents(self._keys(ctx.key)[1], cfg.g_batches * size)
    z = z.reshape(cfg.g_batches, size, -1)
    old_fakes = None
    if cfg.reg_weight:
      phase = cfg.old_generator == 'phase'
      old = ctx.params if phase else ctx.old_params
      # One batch at a time: BatchNorm in train mode normalises per batch,
      # as the G steps will. In 'phase' mode the first G step runs G^o on
      # z_0 (same params, same batch): it hands its samples on.
      old_fakes = tuple(
        None
        if phase and b == 0
        else self.run('generator', old, ctx.batch_stats, zb)[0]
        for b, zb in enumerate(z)
      )
    # NumPy: each step's batch index stays a Python int when unrolled.
    batch_index = np.repeat(np.arange(cfg.g_batches), cfg.g_steps)
    return (z, old_fakes), batch_index

  def generator_loss(self, params, stats, shared, b):
    """Eq. (26) (eq. 20 when reg_weight is 0) on the z of batch `b`.

    Also returns `shared`, with this step's samples as G^o(z_b) if the step
    is at the snapshot (entry b was None).
    """
    z, old_fakes = shared
    cfg = self.config
    fake, g_stats = self.run('generator', params, stats, z[b])
    # D's statistics are not updated by G's steps.
    logits, _ = self.run('discriminator', params, stats, fake)
    adversarial = self.generator_objective(logits)
    regularizer = jnp.zeros(())
    if cfg.reg_weight:
      if old_fakes[b] is None:  # At the snapshot: G == G^o.
        old_fake = jax.lax.stop_gradient(fake)
        old_fakes = (*old_fakes[:b], old_fake, *old_fakes[b + 1 :])
      # Eq. (26): the adversarial term plus the distance to G^o(z).
      regularizer = losses.generator_regularizer(fake, old_fakes[b])
    loss = adversarial + cfg.reg_weight * regularizer
    return loss, (
      {'generator': g_stats},
      {'g_adversarial': adversarial, 'g_regularizer': regularizer},
      (z, old_fakes),
    )
