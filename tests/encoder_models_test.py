"""VAE, AAE and ALI: one iteration per preset's shapes, which networks each
loss reaches, ALI's old-params snapshot, config checks, and a run of each
`test` preset through the loop."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import aae as aae_config
from configs import ali as ali_config
from configs import vae as vae_config
from vi_gen import errors, players, train, validation
from vi_gen.methods.aae import AAE
from vi_gen.methods.ali import ALI, perturb
from vi_gen.methods.vae import VAE

MODELS = {
  'vae': (VAE, vae_config),
  'aae': (AAE, aae_config),
  'ali': (ALI, ali_config),
}
MNIST = (28, 28, 1)


def tiny_config(model, **overrides):
  """The `test` preset; `a__b=v` sets config.a.b."""
  config = MODELS[model][1].get_config('test')
  config.run.num_grid_samples = 4
  for name, value in overrides.items():
    *parents, leaf = name.split('__')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def make(model, config, shape=MNIST):
  method = MODELS[model][0](config, shape)
  return method, method.init(jax.random.key(0))


def real_batch(method, shape=MNIST, seed=1):
  rng = np.random.default_rng(seed)
  size = (method.batches_per_iteration, method.config.batch_size, *shape)
  return jnp.asarray(rng.uniform(-1, 1, size), jnp.float32)


@functools.cache
def jitted_iteration(method):
  return jax.jit(method.iteration)


def step(method, state, seed=1, shape=MNIST):
  return jitted_iteration(method)(
    state, real_batch(method, shape, seed), jax.random.key(seed)
  )


def finite(tree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


def equal(a, b) -> bool:
  return all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


POINTS = (2,)
# The presets' data layouts: MNIST (`mnist`, `test`), CelebA 64x64 with
# narrow networks, and the 2-D mixtures (`toy`).
LAYOUTS = {
  'mnist': (MNIST, {}),
  'celeba': (
    (64, 64, 3),
    {
      'network__e_widths': (4, 8, 8, 16),
      'network__g_widths': (16, 8, 8, 4),
      'network__d_widths': (4, 8, 8, 16),
    },
  ),
  'toy': (POINTS, {}),
}
# Every code path of each model: ALI with several D steps and the complete
# loss (old networks, noisy sides), all with an EMA.
OPTIONS = {
  'vae': {'vae__learn_variance': True},
  'aae': {},
  'ali': {
    'd_steps': 2,
    'g_steps': 2,
    'ali__complete': True,
    'ali__encoder_sigma': 0.5,
    'ali__generator_sigma': 0.5,
  },
}


@pytest.mark.parametrize(
  'layout',
  ['mnist', pytest.param('celeba', marks=pytest.mark.slow), 'toy'],
)
@pytest.mark.parametrize('model', sorted(MODELS))
def test_one_iteration_per_preset_shape_is_finite_and_moves_every_player(
  model, layout
):
  shape, overrides = LAYOUTS[layout]
  config = tiny_config(model, ema_decay=0.9, **overrides, **OPTIONS[model])
  if model == 'aae':  # Its D is an MLP on z at every layout.
    config.network.d_widths = (16, 16)
  method, state = make(model, config, shape)
  new_state, metrics = step(method, state, shape=shape)
  assert int(new_state.step) == 1
  assert finite(new_state) and finite(metrics)
  for name in state.params:
    assert not equal(new_state.params[name], state.params[name]), name
  samples = method.generate(new_state, method.latents(jax.random.key(0), 3))
  assert samples.shape == (3, *shape)
  if len(shape) == 3:
    assert float(jnp.max(jnp.abs(samples))) <= 1.0
  codes, recon = method.reconstruct(new_state, real_batch(method, shape)[0])
  assert codes.shape == (config.batch_size, config.latent_dim)
  assert recon.shape == (config.batch_size, *shape)


def test_pictures_show_samples_reconstructions_and_2d_latents():
  method, state = make('aae', tiny_config('aae'))
  reference = np.asarray(real_batch(method)[0])
  pictures = method.pictures(state, jax.random.key(0), reference)
  assert set(pictures) == {'samples', 'reconstructions', 'latents'}
  for picture in pictures.values():
    assert picture.dtype == np.uint8 and picture.ndim == 3
  # 4 originals next to 4 reconstructions: a 4-column grid of 28x28 tiles.
  assert pictures['reconstructions'].shape == (2 + 2 * 30, 2 + 4 * 30, 1)
  method, state = make('aae', tiny_config('aae', latent_dim=3), POINTS)
  reference = np.asarray(real_batch(method, POINTS)[0])
  pictures = method.pictures(state, jax.random.key(0), reference)
  assert set(pictures) == {'samples', 'reconstructions'}  # Scatter plots.
  assert pictures['reconstructions'].shape == (256, 256, 3)


def test_vae_bernoulli_maps_data_to_unit_range_and_means_back():
  config = tiny_config('vae', vae__likelihood='bernoulli')
  method, state = make('vae', config)
  _, metrics = step(method, state)
  assert finite(metrics)
  # Bernoulli NLL of 784 pixels is at most 784 log 2 per example near init.
  assert 0 < float(metrics['reconstruction']) < 784 * np.log(2) * 1.5
  logits = jnp.linspace(-8.0, 8.0, 5)
  np.testing.assert_allclose(
    method.mean(logits), 2 * jax.nn.sigmoid(logits) - 1, atol=1e-6
  )


def test_vae_learned_variance_is_trained_and_fixed_is_not_a_param():
  config = tiny_config('vae', vae__learn_variance=True)
  method, state = make('vae', config, POINTS)
  new_state, metrics = step(method, state, shape=POINTS)
  assert float(new_state.params['recon_logvar']) != 0.0
  assert 'recon_logvar' in metrics
  config = tiny_config('vae', vae__recon_logvar=-2.0)
  method, state = make('vae', config, POINTS)
  assert 'recon_logvar' not in state.params
  _, metrics = step(method, state, shape=POINTS)
  assert 'recon_logvar' not in metrics


def test_aae_separate_mode_keeps_the_reconstruction_out_of_the_encoder():
  """Eq. (33): E's update does not depend on lambda; G's does. Eq. (34):
  lambda reaches E too. D's step (eq. 30) depends on neither."""

  def after(mode, weight):
    config = tiny_config('aae', aae__mode=mode, aae__recon_weight=weight)
    method, state = make('aae', config, POINTS)
    return step(method, state, shape=POINTS)[0].params

  separate_1, separate_100 = after('separate', 1.0), after('separate', 100.0)
  assert equal(separate_1['encoder'], separate_100['encoder'])
  assert not equal(separate_1['decoder'], separate_100['decoder'])
  joint_1, joint_100 = after('joint', 1.0), after('joint', 100.0)
  assert not equal(joint_1['encoder'], joint_100['encoder'])
  for params in (separate_100, joint_1, joint_100):
    assert equal(params['discriminator'], separate_1['discriminator'])


def test_ali_variant_acts_on_e_and_g_only():
  """D's steps (eq. 38) come first, so the variant never changes D. With one
  E/G step G's update does not involve E: eq. (43) has the generator term of
  eq. (41) and so the same G, and differs in the encoder term."""
  after = {}
  for variant in ('vi', 'minmax', 'nonsaturating'):
    config = tiny_config('ali', ali__variant=variant)
    method, state = make('ali', config, POINTS)
    after[variant] = step(method, state, shape=POINTS)[0].params
  for variant in ('minmax', 'nonsaturating'):
    assert equal(after[variant]['discriminator'], after['vi']['discriminator'])
    assert not equal(after[variant]['encoder'], after['vi']['encoder'])
  assert equal(after['nonsaturating']['generator'], after['vi']['generator'])


def complete_config(**overrides):
  return tiny_config(
    'ali',
    ali__complete=True,
    ali__encoder_sigma=0.5,
    ali__generator_sigma=0.5,
    g_steps=2,
    **overrides,
  )


@pytest.mark.parametrize('mode', ['phase', 'lagged'])
def test_ali_complete_snapshots_the_old_encoder_and_generator(mode):
  """old_params holds E and G as they were when the E/G phase began."""
  method, state = make('ali', complete_config(old_generator=mode), POINTS)
  live = {x.unsafe_buffer_pointer() for x in jax.tree.leaves(state.params)}
  old = {x.unsafe_buffer_pointer() for x in jax.tree.leaves(state.old_params)}
  assert not live & old  # Copies: a donated state must not alias them.
  state1, metrics = step(method, state, 1, POINTS)
  state2, _ = step(method, state1, 2, POINTS)
  for name in ('encoder', 'generator'):
    assert equal(state1.old_params[name], state.params[name])
    assert equal(state2.old_params[name], state1.params[name])
    assert not equal(state2.params[name], state1.params[name])
  # Averaged over 2 E/G steps; in 'phase' mode the first one is exactly 0.
  assert float(metrics['eg_generator_kl']) > 0
  assert float(metrics['eg_latent_cycle']) != 0
  np.testing.assert_allclose(
    metrics['eg_loss'],
    metrics['eg_adversarial']
    + metrics['eg_generator_kl']
    + metrics['eg_latent_cycle'],
    rtol=1e-5,
  )


def test_ali_without_complete_keeps_no_old_params():
  method, state = make('ali', tiny_config('ali'), POINTS)
  assert state.old_params == {}
  new_state, metrics = step(method, state, shape=POINTS)
  assert new_state.old_params == {}
  assert 'eg_generator_kl' not in metrics


def test_ali_sides_are_deterministic_at_sigma_zero_and_gaussian_above():
  key = jax.random.key(0)
  mean = jnp.ones((4, 2))
  assert perturb(key, mean, 0.0) is mean
  noisy = perturb(key, jnp.zeros(10_000), 0.5)
  np.testing.assert_allclose(jnp.std(noisy), 0.5, rtol=0.05)


def test_unrolled_scan_matches_lax_scan():
  def step(carry, x):
    return carry * 2 + x, {'y': carry + x}

  xs = jnp.arange(3.0)
  expected = jax.lax.scan(step, 1.0, xs)
  assert equal(players.unrolled_scan(step, 1.0, xs), expected)
  expected = jax.lax.scan(lambda c, _: step(c, 1.0), 1.0, None, length=2)
  got = players.unrolled_scan(lambda c, _: step(c, 1.0), 1.0, length=2)
  assert equal(got, expected)


@pytest.mark.parametrize(
  'model,overrides,message',
  [
    ('vae', dict(vae__likelihood='laplace'), 'vae.likelihood must be one of'),
    (
      'vae',
      dict(vae__likelihood='bernoulli', vae__learn_variance=True),
      "applies to likelihood='gaussian' only",
    ),
    ('aae', dict(aae__mode='eq35'), 'aae.mode must be one of'),
    ('aae', dict(aae__recon_weight=0.0), 'aae.recon_weight must be > 0'),
    ('ali', dict(ali__variant='wasserstein'), 'ali.variant must be one of'),
    ('ali', dict(ali__encoder_sigma=-1.0), 'must be >= 0'),
    ('ali', dict(ali__complete=True), 'needs Gaussian sides'),
    (
      'ali',
      dict(
        ali__complete=True,
        ali__variant='minmax',
        ali__encoder_sigma=0.1,
        ali__generator_sigma=0.1,
      ),
      "needs ali.variant='vi'",
    ),
    (
      'ali',
      dict(
        ali__complete=True,
        ali__encoder_sigma=0.1,
        ali__generator_sigma=0.1,
        g_steps=1,
      ),
      'exactly zero',
    ),
    ('ali', dict(old_generator='newest'), 'old_generator must be one of'),
    ('ali', dict(d_steps=0), 'd_steps and g_steps must be >= 1'),
  ],
)
def test_invalid_configs_are_rejected(model, overrides, message):
  config = tiny_config(model, **overrides)
  with pytest.raises(errors.ConfigError, match=message):
    MODELS[model][0](config, MNIST)
  with pytest.raises(errors.ConfigError, match=message):
    validation.check_config(config)


def test_bernoulli_vae_on_2d_points_is_rejected():
  config = vae_config.get_config('toy')
  config.vae.likelihood = 'bernoulli'
  config.vae.learn_variance = False
  with pytest.raises(errors.ConfigError, match='2-D data'):
    validation.check_config(config)


@pytest.mark.parametrize('model', sorted(MODELS))
@pytest.mark.parametrize('preset', ['mnist', 'celeba', 'toy', 'test'])
def test_every_preset_is_a_valid_config(model, preset):
  config = MODELS[model][1].get_config(preset)
  validation.check_config(config)
  assert config.model == model and config.preset == preset


def test_common_fields_match_the_gan_config():
  from configs import gan as gan_config

  gan = gan_config.get_config('mnist')
  for model in MODELS:
    config = MODELS[model][1].get_config('mnist')
    for name in ('batch_size', 'latent_dim', 'ema_decay'):
      assert name in config, (model, name)
    for block in ('run', 'data', 'optim'):
      assert set(config[block]) == set(gan[block]), (model, block)
    for name in ('g_widths', 'kernel_size', 'batch_norm', 'hidden_bias'):
      assert name in config.network, (model, name)


@pytest.mark.slow
@pytest.mark.parametrize('model', sorted(MODELS))
def test_test_preset_trains_end_to_end(model, tmp_path):
  config = MODELS[model][1].get_config('test')
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == config.run.num_steps
  assert os.listdir(tmp_path / 'checkpoints')
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  for folder in ('samples', 'reconstructions', 'latents'):
    assert os.listdir(tmp_path / folder), folder
