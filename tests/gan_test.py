"""The GAN iteration: finite for every preset's shapes, the right old generator."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import gan as gan_config
from vi_gen import errors, losses
from vi_gen.methods.gan import GAN


def tiny_config(**overrides):
  config = gan_config.get_config('test')
  config.run.num_grid_samples = 4
  for name, value in overrides.items():
    config[name] = value
  return config


def make(config, shape):
  gan = GAN(config, shape)
  return gan, gan.init(jax.random.key(0))


def real_batch(gan, config, shape, seed=1):
  rng = np.random.default_rng(seed)
  batch = rng.uniform(
    -1, 1, (gan.batches_per_iteration, config.batch_size, *shape)
  )
  return jnp.asarray(batch, jnp.float32)


def finite(tree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
  'shape,g_widths,d_widths',
  [
    ((28, 28, 1), (16, 8), (8, 16)),  # the mnist preset's layout
    ((64, 64, 3), (16, 8, 8, 4), (4, 8, 8, 16)),  # celeba's, narrower
    ((2,), (16, 16), (16, 16)),  # toy
  ],
)
def test_one_iteration_per_preset_shape_is_finite(shape, g_widths, d_widths):
  config = tiny_config(d_steps=2, ema_decay=0.9)
  config.network.g_widths, config.network.d_widths = g_widths, d_widths
  gan, state = make(config, shape)
  new_state, metrics = jax.jit(gan.iteration)(
    state, real_batch(gan, config, shape), jax.random.key(3)
  )
  assert int(new_state.step) == 1
  assert finite(new_state) and finite(metrics)
  assert gan.generate(new_state, gan.latents(jax.random.key(0), 3)).shape == (
    3,
    *shape,
  )
  # Both players moved.
  for name in ('generator', 'discriminator'):
    before = jax.tree.leaves(state.params[name])
    after = jax.tree.leaves(new_state.params[name])
    assert any(
      not np.array_equal(a, b) for a, b in zip(before, after, strict=True)
    )


def leaves_equal(a, b) -> bool:
  return all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


@pytest.mark.parametrize('mode', ['phase', 'lagged'])
def test_old_generator_is_the_snapshot_at_the_start_of_the_g_phase(mode):
  """After an iteration, old_params holds G as it was when its phase began.

  D steps do not change G, so that is G before the iteration, in both modes.
  """
  config = tiny_config(old_generator=mode)
  shape = (28, 28, 1)
  gan, state = make(config, shape)
  step = jax.jit(gan.iteration)
  state1, _ = step(state, real_batch(gan, config, shape, 1), jax.random.key(1))
  assert leaves_equal(state1.old_params['generator'], state.params['generator'])
  state2, _ = step(state1, real_batch(gan, config, shape, 2), jax.random.key(2))
  assert leaves_equal(
    state2.old_params['generator'], state1.params['generator']
  )
  assert not leaves_equal(
    state2.params['generator'], state1.params['generator']
  )


def test_zero_weight_is_the_standard_gan():
  config = tiny_config(reg_weight=0.0)
  gan, state = make(config, (28, 28, 1))
  _, metrics = jax.jit(gan.iteration)(
    state, real_batch(gan, config, (28, 28, 1)), jax.random.key(0)
  )
  assert float(metrics['g_regularizer']) == 0.0
  np.testing.assert_allclose(metrics['g_loss'], metrics['g_adversarial'])


def test_init_does_not_alias_old_and_live_params():
  """Donating a state whose old params alias the live ones crashes XLA."""
  config = tiny_config(ema_decay=0.5)
  gan, state = make(config, (28, 28, 1))
  live = {x.unsafe_buffer_pointer() for x in jax.tree.leaves(state.params)}
  copies = jax.tree.leaves((state.old_params, state.ema_params))
  assert not live & {x.unsafe_buffer_pointer() for x in copies}
  step = jax.jit(gan.iteration, donate_argnums=0)
  state, _ = step(
    state, real_batch(gan, config, (28, 28, 1)), jax.random.key(0)
  )
  assert finite(state)


@pytest.mark.parametrize(
  'overrides,message',
  [
    (dict(old_generator='phase', g_steps=1), 'exactly zero'),
    (dict(old_generator='newest'), 'old_generator must be one of'),
    (dict(g_steps=0), 'g_steps must be >= 1'),
    (dict(d_steps=0), 'd_steps and g_steps must be >= 1'),
    (dict(reg_weight=-1.0), 'reg_weight must be >= 0'),
    (dict(g_batches=0), 'g_batches must be >= 1'),
    (dict(generator_loss='wasserstein'), 'generator_loss must be one of'),
  ],
)
def test_invalid_gan_configs_are_rejected(overrides, message):
  with pytest.raises(errors.ConfigError, match=message):
    GAN(tiny_config(**overrides), (28, 28, 1))


def test_phase_with_one_g_step_is_fine_without_the_regularizer():
  gan = GAN(
    tiny_config(old_generator='phase', g_steps=1, reg_weight=0.0), (28, 28, 1)
  )
  assert [p.steps for p in gan.phases()] == [1, 1]


@pytest.mark.parametrize('adversarial', ['nonsaturating', 'saturating'])
def test_generator_step_loss_is_the_public_eq_26(adversarial):
  """The loss the G phase differentiates equals
  `losses.regularized_generator_loss` on the same G(z), D(G(z)), G^o(z)."""
  config = tiny_config(reg_weight=3.0, generator_loss=adversarial)
  gan, state = make(config, (28, 28, 1))
  z = gan.latents(jax.random.key(1), config.batch_size)
  old_fake = jax.random.uniform(
    jax.random.key(2), (config.batch_size, 28, 28, 1)
  )
  loss, (_, terms, _) = gan.generator_loss(
    state.params, state.batch_stats, (z[None], (old_fake,)), 0
  )
  fake, _ = gan.run('generator', state.params, state.batch_stats, z)
  logits, _ = gan.run('discriminator', state.params, state.batch_stats, fake)
  want = losses.regularized_generator_loss(
    logits, fake, old_fake, 3.0, adversarial
  )
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(terms['g_regularizer']) > 0


def bias_layers(params) -> list[str]:
  return sorted(
    '/'.join(str(k.key) for k in path[:-1])
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    if path[-1].key == 'bias'
  )


def test_experiment_2_networks_have_the_reference_biases_only():
  """paper.md §4.3: without BatchNorm the reference keeps no hidden biases:
  only D's first conv, G's last transposed conv and D's final dense."""
  config = gan_config.get_config('mnist_exp2')
  gan, state = make(config, (28, 28, 1))
  assert bias_layers(state.params['generator']) == ['ConvTranspose2x_1']
  assert bias_layers(state.params['discriminator']) == ['Conv2x_0', 'Dense_0']
  assert (config.d_steps, config.g_batches, config.g_steps) == (5, 5, 2)
  assert not config.network.batch_norm
  # With hidden biases (the default without BatchNorm) every layer has one.
  config.network.hidden_bias = True
  _, state = make(config, (28, 28, 1))
  assert len(bias_layers(state.params['generator'])) == 3
  assert len(bias_layers(state.params['discriminator'])) == 3


def generator_runs(gan, state, batch) -> int:
  """How many times tracing one iteration runs the generator."""
  runs = []
  run = gan.run

  def counting_run(name, *args, **kwargs):
    runs.append(name)
    return run(name, *args, **kwargs)

  gan.run = counting_run
  jax.make_jaxpr(gan.iteration)(state, batch, jax.random.key(0))
  return runs.count('generator')


@pytest.mark.parametrize(
  'overrides,runs',
  [
    # 1 D step's fake, 2 G steps; G^o(z) is the first G step's samples.
    (dict(old_generator='phase'), 3),
    # 5 D steps, 5 x 2 G steps, G^o on z_1..z_4 (z_0's is reused).
    (dict(old_generator='phase', d_steps=5, g_batches=5), 19),
    # Lagged: G^o is last iteration's snapshot, run on its own.
    (dict(old_generator='lagged'), 4),
    (dict(old_generator='phase', reg_weight=0.0), 3),
  ],
  ids=['phase', 'experiment-2-schedule', 'lagged', 'unregularized'],
)
def test_phase_mode_reuses_the_first_g_step_as_the_old_samples(overrides, runs):
  """In 'phase' mode G^o(z_0) is the first G step's forward output (same
  params, same z, same batch): the iteration runs G once less than
  'lagged', which needs G^o on its own."""
  config = tiny_config(**overrides)
  gan, state = make(config, (28, 28, 1))
  assert generator_runs(gan, state, real_batch(gan, config, (28, 28, 1))) == (
    runs
  )


@pytest.mark.parametrize(
  'mode,g_batches,want',
  [
    ('phase', 1, (0.6597592830657959, 1.0666693015082274e-05, 5.279331207)),
    ('lagged', 1, (0.6602823734283447, 0.00011145991447847337, 5.279333591)),
    ('phase', 2, (0.6388779282569885, 5.603450699709356e-05, 5.279763221)),
    ('lagged', 2, (0.6412294507026672, 0.00046963855857029557, 5.279762268)),
  ],
)
def test_iterations_match_the_implementation_without_reuse(
  mode, g_batches, want
):
  """Two iterations of the test preset (BatchNorm in train mode) give the
  G loss, regularizer and generator norm that the implementation before
  the reuse of G^o(z_0) (#14) gave on this data."""
  config = tiny_config(old_generator=mode, g_batches=g_batches)
  gan, state = make(config, (28, 28, 1))
  iteration = jax.jit(gan.iteration)
  rng = np.random.default_rng(0)
  for i in range(2):
    batch = rng.uniform(-1, 1, (1, config.batch_size, 28, 28, 1))
    state, metrics = iteration(
      state, batch.astype(np.float32), jax.random.key(i)
    )
  got = (
    metrics['g_loss'],
    metrics['g_regularizer'],
    optax.tree.norm(state.params['generator']),
  )
  np.testing.assert_allclose(got, want, rtol=2e-6)
