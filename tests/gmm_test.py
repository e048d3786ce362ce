"""Tests for vi_gen.gmm: EM as eqs. (8)-(11) against scipy and scikit-learn."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning

from vi_gen import gmm, testing

COVARIANCE_TYPES = ('full', 'diag')


def _sample_mixture(
  seed: int, num_points: int, dim: int, num_components: int
) -> np.ndarray:
  """Points from a random, well-separated Gaussian mixture (float64)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(num_components, size=num_points)
  centres = 4.0 * rng.normal(size=(num_components, dim))
  scales = rng.normal(size=(num_components, dim, dim)) / np.sqrt(dim)
  noise = rng.normal(size=(num_points, dim))
  return centres[labels] + np.einsum('nde,ne->nd', scales[labels], noise)


def _random_params(
  seed: int, dim: int, num_components: int, covariance_type: str
) -> gmm.GMMParams:
  """Random valid parameters as float64 numpy arrays."""
  rng = np.random.default_rng(seed)
  weights = rng.dirichlet(np.ones(num_components))
  means = rng.normal(size=(num_components, dim))
  if covariance_type == 'full':
    a = rng.normal(size=(num_components, dim, dim))
    cov = a @ np.swapaxes(a, -1, -2) / dim + 0.5 * np.eye(dim)
  else:
    cov = rng.uniform(0.3, 2.0, size=(num_components, dim))
  return gmm.GMMParams(weights, means, cov)


def _reference_log_joint(params: gmm.GMMParams, x: np.ndarray) -> np.ndarray:
  """log w_k + log N(x_n; mu_k, Sigma_k) with scipy, shape [N, K]."""
  weights, means, cov = (np.asarray(a, np.float64) for a in params)
  columns = []
  for k in range(len(weights)):
    sigma = cov[k] if cov.ndim == 3 else np.diag(cov[k])
    columns.append(
      np.log(weights[k]) + stats.multivariate_normal(means[k], sigma).logpdf(x)
    )
  return np.stack(columns, axis=1)


def _as_jax(params: gmm.GMMParams) -> gmm.GMMParams:
  return gmm.GMMParams(*(jnp.asarray(a) for a in params))


@pytest.mark.parametrize('covariance_type', COVARIANCE_TYPES)
def test_log_likelihood_matches_scipy(covariance_type):
  x = _sample_mixture(0, 200, 3, 4)
  params = _random_params(1, 3, 4, covariance_type)
  expected = logsumexp(_reference_log_joint(params, x), axis=1)
  with jax.enable_x64(True):
    got64 = np.asarray(gmm.log_likelihood(_as_jax(params), jnp.asarray(x)))
  assert got64.dtype == np.float64
  np.testing.assert_allclose(got64, expected, rtol=1e-12, atol=1e-10)
  # Default float32.
  got32 = gmm.log_likelihood(_as_jax(params), jnp.asarray(x))
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got32), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize('covariance_type', COVARIANCE_TYPES)
def test_e_step_is_the_exact_posterior(covariance_type):
  x = _sample_mixture(2, 150, 2, 3)
  params = _random_params(3, 2, 3, covariance_type)
  log_joint = _reference_log_joint(params, x)
  expected = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
  with jax.enable_x64(True):
    resp = np.asarray(gmm.e_step(_as_jax(params), jnp.asarray(x)))
  np.testing.assert_allclose(resp, expected, atol=1e-12)
  np.testing.assert_allclose(resp.sum(axis=1), 1.0, atol=1e-12)
  resp32 = np.asarray(gmm.e_step(_as_jax(params), jnp.asarray(x)))
  np.testing.assert_allclose(resp32, expected, atol=1e-5)
  np.testing.assert_allclose(resp32.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize('covariance_type', COVARIANCE_TYPES)
def test_m_step_with_hard_assignments_is_per_class_mle(covariance_type):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(120, 3))
  labels = np.arange(120) % 3
  resp = np.eye(3)[labels]
  with jax.enable_x64(True):
    params = gmm.m_step(jnp.asarray(x), jnp.asarray(resp), covariance_type, 0.0)
  for k in range(3):
    xk = x[labels == k]
    np.testing.assert_allclose(params.weights[k], 1 / 3, atol=1e-12)
    np.testing.assert_allclose(params.means[k], xk.mean(0), atol=1e-12)
    cov = np.cov(xk, rowvar=False, bias=True)
    if covariance_type == 'diag':
      cov = np.diag(cov)
    np.testing.assert_allclose(params.covariances[k], cov, atol=1e-12)


@pytest.mark.parametrize('covariance_type', COVARIANCE_TYPES)
@pytest.mark.parametrize(
  ('dim', 'num_components'), [(2, 3), (6, 4)], ids=['2d', '6d']
)
def test_em_never_decreases_log_likelihood(
  covariance_type, dim, num_components
):
  x = _sample_mixture(5 + dim, 400, dim, num_components)
  with jax.enable_x64(True):
    xj = jnp.asarray(x)
    init = gmm.init_from_data(
      jax.random.key(0), xj, num_components, covariance_type
    )
    # ridge=0: the exact M-step (8), for which monotonicity is a theorem.
    _, curve = gmm.fit(xj, init, num_iters=40, ridge=0.0)
  curve = np.asarray(curve)
  assert curve.shape == (41,)
  assert np.all(np.isfinite(curve))
  assert np.all(np.diff(curve) >= -1e-10), np.diff(curve).min()
  assert curve[-1] > curve[0] + 0.1

  # Float32 with the default ridge, from the same start: monotone up to
  # rounding, and the same curve up to float32 precision.
  init32 = gmm.GMMParams(*(np.asarray(a, np.float32) for a in init))
  params32, curve32 = gmm.fit(jnp.asarray(x, jnp.float32), init32, 40)
  assert curve32.dtype == jnp.float32
  assert all(a.dtype == jnp.float32 for a in params32)
  curve32 = np.asarray(curve32)
  assert np.all(np.diff(curve32) >= -1e-4), np.diff(curve32).min()
  np.testing.assert_allclose(curve32, curve, atol=1e-2)


@pytest.mark.parametrize('covariance_type', COVARIANCE_TYPES)
def test_matches_sklearn_from_the_same_start(covariance_type):
  # Comparing the whole curve with sklearn's per-iteration `lower_bounds_`
  # pins down the iteration count, so one `num_iters` suffices.
  dim, num_components, ridge, num_iters = 4, 3, 1e-6, 25
  x = _sample_mixture(11, 300, dim, num_components)
  with jax.enable_x64(True):
    xj = jnp.asarray(x)
    init = gmm.init_from_data(
      jax.random.key(1), xj, num_components, covariance_type
    )
    params, curve = gmm.fit(xj, init, num_iters, ridge=ridge)
  init = gmm.GMMParams(*(np.asarray(a) for a in init))
  params = gmm.GMMParams(*(np.asarray(a) for a in params))
  curve = np.asarray(curve)

  # sklearn's fit: initialise (our start overrides everything), then
  # `max_iter` rounds of (E-step, M-step), so `max_iter` = our `num_iters`.
  # Its `lower_bounds_[i]` is the mean log-likelihood computed in the i-th
  # E-step, i.e. before the i-th M-step: our curve[i].
  sk = testing.sklearn_mixture(init, num_iters, ridge)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ConvergenceWarning)
    sk.fit(x)
  assert sk.n_iter_ == num_iters

  # Float64 agreement is ~1e-13 in practice; 1e-8 leaves a wide margin.
  np.testing.assert_allclose(curve[-1], sk.score(x), rtol=0, atol=1e-8)
  np.testing.assert_allclose(curve[:-1], sk.lower_bounds_, rtol=0, atol=1e-8)
  np.testing.assert_allclose(params.weights, sk.weights_, atol=1e-8)
  np.testing.assert_allclose(params.means, sk.means_, atol=1e-8)
  np.testing.assert_allclose(params.covariances, sk.covariances_, atol=1e-8)


def test_float64_does_not_leak():
  assert jnp.zeros(()).dtype == jnp.float32


def test_init_from_data_picks_distinct_data_points():
  x = jnp.asarray(_sample_mixture(3, 100, 3, 5), jnp.float32)
  for covariance_type, cov_shape in [('full', (5, 3, 3)), ('diag', (5, 3))]:
    params = gmm.init_from_data(jax.random.key(2), x, 5, covariance_type)
    assert params.covariances.shape == cov_shape
    np.testing.assert_allclose(params.weights, 0.2)
    dist = np.abs(np.asarray(params.means)[:, None] - np.asarray(x)[None])
    matches = np.all(dist == 0, axis=-1)  # [K, N]
    assert np.all(matches.any(axis=1))
    assert len({int(np.argmax(row)) for row in matches}) == 5


def test_fit_does_not_retrace_for_same_shapes():
  x = _sample_mixture(7, 123, 2, 2).astype(np.float32)
  init = gmm.init_from_data(jax.random.key(3), jnp.asarray(x), 2, 'diag')
  gmm.fit(x, init, 3, ridge=1e-6)
  size = gmm.fit._cache_size()
  gmm.fit(x + 1.0, init._replace(means=init.means + 1.0), 3, ridge=1e-3)
  assert gmm.fit._cache_size() == size
  gmm.fit(x, init, 4, ridge=1e-6)  # A new static num_iters compiles again.
  assert gmm.fit._cache_size() == size + 1
