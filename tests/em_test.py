"""EM in the loop: exact EM steps (eqs. 8, 11), the curve, resume, bad input."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import em as em_config
from vi_gen import data, errors, gmm, train, validation
from vi_gen.methods import em


def toy_config(**overrides):
  """The test preset on ring8, small: quick 2-D runs."""
  config = em_config.get_config('test')
  config.data.name = 'ring8'
  config.data.source = 'tfds'
  config.batch_size = 512
  config.num_components = 0
  config.covariance_type = 'full'
  config.ridge = 1e-6
  for name, value in overrides.items():
    config[name] = value
  return config


def overlapping_clusters(seed: int = 0, n: int = 600) -> np.ndarray:
  """Three overlapping 2-D clusters: EM needs many steps, each visible."""
  rng = np.random.default_rng(seed)
  centres = np.array([[0.0, 0.0], [1.5, 0.5], [0.5, 1.8]])
  labels = rng.integers(3, size=n)
  return (centres[labels] + rng.normal(size=(n, 2))).astype(np.float32)


def run_iterations(method, x, num, seed=7):
  """`num` iterations on the same batch; (state, per-step log-likelihood)."""
  iteration, key = jax.jit(method.iteration), jax.random.key(seed)
  state = method.init(jax.random.key(0))
  batch = jnp.asarray(x)[None]
  curve = []
  for _ in range(num):
    state, metrics = iteration(state, batch, key)
    curve.append(float(metrics['log_likelihood']))
  return state, np.asarray(curve)


@pytest.mark.parametrize('covariance_type', em.COVARIANCE_TYPES)
def test_log_likelihood_never_decreases_on_a_fixed_batch(covariance_type):
  config = toy_config(
    num_components=3, covariance_type=covariance_type, ridge=0.0
  )
  method = em.EM(config, (2,))
  state, curve = run_iterations(method, overlapping_clusters(), 30)
  assert np.all(np.diff(curve) >= -1e-5 * np.abs(curve[1:]))
  assert curve[-1] > curve[0] + 0.01
  # The state's curve holds the same values, one per step.
  saved = jax.device_get(state.extras['curve'])
  np.testing.assert_array_equal(saved['steps'][:30], np.arange(30))
  assert np.all(saved['steps'][30:] == -1)
  np.testing.assert_allclose(saved['log_likelihood'][:30], curve, rtol=1e-6)


@pytest.mark.parametrize('covariance_type', em.COVARIANCE_TYPES)
def test_iterations_agree_with_gmm_fit(covariance_type):
  config = toy_config(
    num_components=3, covariance_type=covariance_type, ridge=1e-3
  )
  method = em.EM(config, (2,))
  x, num = overlapping_clusters(1), 12
  state, curve = run_iterations(method, x, num, seed=3)
  init = method.initial_mixture(jax.random.key(3), jnp.asarray(x))
  params, expected_curve = gmm.fit(jnp.asarray(x), init, num, ridge=1e-3)
  np.testing.assert_allclose(curve, expected_curve[:num], rtol=1e-5)
  for got, want in zip(method.mixture(state), params, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_first_step_starts_from_kmeans_plus_plus_seeds():
  """Well-separated modes: the hard-assignment start already finds them."""
  config = toy_config()
  method = em.EM(config, (2,))
  x = next(data.mixture_batches('ring8', 512, 0, 0))
  state, _ = run_iterations(method, x, 1)
  means = np.asarray(method.mixture(state).means)
  radii = np.linalg.norm(means, axis=1)
  np.testing.assert_allclose(radii, 2.0, atol=0.02)
  angles = np.sort(np.mod(np.arctan2(means[:, 1], means[:, 0]), 2 * np.pi))
  np.testing.assert_allclose(np.diff(angles), np.pi / 4, atol=0.02)


def test_curve_keeps_a_fixed_size_by_thinning():
  curve = {
    'steps': jnp.full((4,), -1, jnp.int32),
    'log_likelihood': jnp.full((4,), jnp.nan),
  }
  record = jax.jit(em.record)
  history = {}
  for step in range(10):
    curve = record(curve, jnp.int32(step), jnp.float32(10 * step))
    history[step] = np.asarray(curve['steps'])
  np.testing.assert_array_equal(history[3], [0, 1, 2, 3])
  np.testing.assert_array_equal(history[4], [0, 2, 4, -1])
  np.testing.assert_array_equal(history[7], [0, 2, 4, 6])
  np.testing.assert_array_equal(history[9], [0, 4, 8, -1])
  np.testing.assert_array_equal(curve['log_likelihood'][:3], [0, 40, 80])


@pytest.mark.parametrize('covariance_type', em.COVARIANCE_TYPES)
def test_generate_samples_the_mixture(covariance_type):
  config = toy_config(num_components=2, covariance_type=covariance_type)
  method = em.EM(config, (2,))
  means = np.array([[-10.0, 0.0], [10.0, 0.0]])
  cov = np.array([[[1.0, 0.0], [0.0, 4.0]], [[0.5, 0.3], [0.3, 0.5]]])
  params = gmm.GMMParams(
    weights=np.array([0.25, 0.75]),
    means=means,
    covariances=cov
    if covariance_type == 'full'
    else np.array([[1, 4], [0.5, 0.5]]),
  )
  state = method.init(jax.random.key(0)).replace(
    params={
      'mixture': {
        k: jnp.asarray(v, jnp.float32) for k, v in params._asdict().items()
      }
    }
  )
  z = method.latents(jax.random.key(1), 20_000)
  samples = np.asarray(method.generate(state, z))
  right = samples[:, 0] > 0
  assert abs(right.mean() - 0.75) < 0.015
  for k, side in enumerate((~right, right)):
    np.testing.assert_allclose(samples[side].mean(0), means[k], atol=0.06)
    want = cov[k] if covariance_type == 'full' else np.diag(np.diag(cov[k]))
    np.testing.assert_allclose(np.cov(samples[side].T), want, atol=0.1)


def assert_pngs(workdir, folder, steps=(2, 4)):
  names = sorted(os.listdir(workdir / folder))
  assert names == [f'step_{s:07d}.png' for s in steps]
  with open(workdir / folder / names[-1], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_mnist_end_to_end_writes_checkpoints_pictures_and_a_rising_curve(
  tmp_path,
):
  state = train.train_and_evaluate(em_config.get_config('test'), str(tmp_path))
  assert int(state.step) == 4
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '4']
  for folder in ('log_likelihood_curve', 'means', 'samples'):
    assert_pngs(tmp_path, folder)
  assert not (tmp_path / 'ellipses').exists()
  # The batch is all of the bundled MNIST every step: exact EM.
  curve = jax.device_get(state.extras['curve'])
  np.testing.assert_array_equal(curve['steps'][:4], [0, 1, 2, 3])
  assert np.all(np.diff(curve['log_likelihood'][:4]) > 0)


def test_2d_end_to_end_draws_ellipses(tmp_path):
  train.train_and_evaluate(toy_config(), str(tmp_path))
  for folder in ('log_likelihood_curve', 'ellipses', 'samples'):
    assert_pngs(tmp_path, folder)
  assert not (tmp_path / 'means').exists()


def test_resume_continues_the_curve(tmp_path):
  """4 steps straight == 2 steps, then the same run raised to 4 steps."""
  config = em_config.get_config('test')
  straight = train.train_and_evaluate(config, str(tmp_path / 'a'))
  config.run.num_steps = 2
  train.train_and_evaluate(config, str(tmp_path / 'b'))
  config.run.num_steps = 4
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))
  curve = jax.device_get(resumed.extras['curve'])
  np.testing.assert_array_equal(curve['steps'][:5], [0, 1, 2, 3, -1])
  for a, b in zip(
    jax.tree.leaves(jax.device_get(straight)),
    jax.tree.leaves(jax.device_get(resumed)),
    strict=True,
  ):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  'overrides,message',
  [
    (dict(num_components=-1), 'num_components must be >= 1, got -1'),
    (dict(num_components=0), 'exists only for the 2-D mixtures'),
    (dict(covariance_type='spherical'), 'covariance_type must be one of'),
    (dict(ridge=-1.0), 'ridge must be >= 0'),
    (dict(ridge=0.0), 'ridge must be > 0 for images'),
    (dict(num_components=20_000), 'exceeds batch_size=10000'),
  ],
)
def test_invalid_values_fail_before_anything_is_written(
  tmp_path, overrides, message
):
  config = em_config.get_config('test')
  for name, value in overrides.items():
    config[name] = value
  with pytest.raises(errors.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('preset', ['', 'mnist', 'toy', 'test'])
def test_presets_are_valid(preset):
  config = em_config.get_config(preset)
  validation.check_config(config)
  assert config.preset == (preset or 'mnist')


def test_toy_preset_has_one_component_per_mode():
  config = em_config.get_config('toy')
  assert em.num_components(config) == 8
  config.data.name = 'grid25'
  assert em.num_components(config) == 25


def test_there_is_no_celeba_preset():
  with pytest.raises(ValueError, match='no celeba preset'):
    em_config.get_config('celeba')
