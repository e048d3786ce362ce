"""FID, KID, IS, RBF-MMD, mode metrics and the IWAE bound against values
computed independently: closed forms, scikit-learn kernels, scipy densities.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics.pairwise import polynomial_kernel

from vi_gen import data
from vi_gen.evaluation import likelihood, metrics, modes


def random_rotation(rng, d):
  q, r = np.linalg.qr(rng.normal(size=(d, d)))
  return q * np.sign(np.diag(r))


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  v1, v2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  got = metrics.frechet_distance(
    metrics.Statistics(mu1, np.diag(v1)), metrics.Statistics(mu2, np.diag(v2))
  )
  assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
  """S1 = Q A Q^T, S2 = Q B Q^T: d^2 = |dmu|^2 + sum (sqrt a - sqrt b)^2."""
  rng = np.random.default_rng(1)
  q = random_rotation(rng, 8)
  a, b = rng.uniform(0.1, 4, size=8), rng.uniform(0.1, 4, size=8)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = metrics.frechet_distance(
    metrics.Statistics(mu1, q @ np.diag(a) @ q.T),
    metrics.Statistics(mu2, q @ np.diag(b) @ q.T),
  )
  assert got == pytest.approx(expected, rel=1e-8)


def test_fid_of_a_feature_set_against_itself_is_zero():
  features = np.random.default_rng(2).normal(size=(500, 64)) @ np.diag(
    np.linspace(0.1, 3, 64)
  )
  s = metrics.feature_statistics(features)
  assert s.sigma.shape == (64, 64)
  np.testing.assert_allclose(s.sigma, np.cov(features.T), rtol=1e-12)
  assert abs(metrics.frechet_distance(s, s)) < 1e-8 * np.trace(s.sigma)


def test_fid_with_fewer_samples_than_dimensions_stays_finite():
  """Rank-deficient covariances (N < d): the eps * I path gives a number."""
  rng = np.random.default_rng(3)
  a = metrics.feature_statistics(rng.normal(size=(10, 64)))
  b = metrics.feature_statistics(rng.normal(size=(10, 64)) + 1.0)
  fid = metrics.frechet_distance(a, b)
  assert np.isfinite(fid)
  # At least the mean term (|dmu|^2 ~ 64) and at most the trace bound.
  assert 30 < fid < np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma + b.sigma)


def test_kid_matches_scikit_learn_kernels_on_one_full_subset():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(300, 16)), rng.normal(0.3, 1, size=(300, 16))
  k = lambda a, b: polynomial_kernel(a, b, degree=3, gamma=1 / 16, coef0=1)  # noqa: E731
  kxx, kyy = k(x, x), k(y, y)
  expected = (
    (kxx.sum() - np.trace(kxx)) / (300 * 299)
    + (kyy.sum() - np.trace(kyy)) / (300 * 299)
    - 2 * k(x, y).mean()
  )
  # A subset of all rows is a permutation: the same statistic.
  got = metrics.kernel_distance(x, y, num_subsets=1, subset_size=1000)
  assert got.mean == pytest.approx(expected, rel=1e-10)
  assert got.std == 0.0


def test_kid_is_zero_on_average_for_one_distribution_and_positive_when_shifted():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(1000, 32)), rng.normal(size=(1000, 32))
  same = metrics.kernel_distance(x, y, num_subsets=50, subset_size=300)
  shifted = metrics.kernel_distance(x, y + 0.5, num_subsets=50, subset_size=300)
  # Unbiased: the mean of 50 estimates is within 3 standard errors of 0.
  assert abs(same.mean) < 3 * same.std / math.sqrt(50)
  assert shifted.mean > 20 * same.std


def test_inception_score_extremes():
  """Uniform predictions: IS = 1; confident and evenly spread over C
  classes in every split: IS = C."""
  uniform = metrics.inception_score(np.zeros((100, 7)), num_splits=10)
  assert uniform.mean == pytest.approx(1.0) and uniform.std == pytest.approx(0)
  labels = np.arange(100) % 5
  confident = metrics.inception_score(100.0 * np.eye(5)[labels], 10)
  assert confident.mean == pytest.approx(5.0, rel=1e-6)


def test_rbf_mmd_matches_the_gaussian_closed_form():
  """For N(0, s^2 I) vs N(m, s^2 I) in d dims and bandwidth h:
  MMD^2 = 2 c (1 - exp(-|m|^2 / (2 (h^2 + 2 s^2)))), c = (h^2 /
  (h^2 + 2 s^2))^(d / 2)."""
  rng = np.random.default_rng(6)
  d, s, h = 2, 1.0, 1.5
  m = np.array([1.0, 0.5])
  x, y = rng.normal(0, s, size=(3000, d)), m + rng.normal(0, s, size=(3000, d))
  c = (h**2 / (h**2 + 2 * s**2)) ** (d / 2)
  expected = 2 * c * (1 - np.exp(-(m @ m) / (2 * (h**2 + 2 * s**2))))
  got, bandwidth = metrics.rbf_mmd2(x, y, bandwidth=h)
  assert bandwidth == h
  # The estimate's std at n = 3000 is about 0.007 (measured over seeds).
  assert got == pytest.approx(expected, abs=0.03)
  same, _ = metrics.rbf_mmd2(x, rng.normal(0, s, size=(3000, d)), bandwidth=h)
  assert abs(same) < 0.05 * expected


def test_median_bandwidth_is_the_median_pairwise_distance():
  # Pooled points 0, 1, 3, 7 on a line: distances 1, 3, 7, 2, 6, 4.
  x, y = np.array([[0.0], [1.0]]), np.array([[3.0], [7.0]])
  assert metrics.median_bandwidth(x, y) == pytest.approx(3.5)
  _, bandwidth = metrics.rbf_mmd2(x, y)
  assert bandwidth == pytest.approx(3.5)


@pytest.mark.parametrize('name', data.MIXTURES)
def test_mode_metrics_on_hand_made_samples(name):
  centers, std = data.mixture_centers(name)
  k = len(centers)
  rng = np.random.default_rng(7)

  def near(ids):
    return centers[ids] + 0.5 * std * rng.uniform(-1, 1, size=(len(ids), 2))

  collapsed = modes.mode_metrics(near(np.zeros(500, int)), centers, std)
  assert collapsed == {
    'modes': 1,
    'high_quality': 1.0,
    'reverse_kl': pytest.approx(math.log(k)),
  }
  spread = modes.mode_metrics(near(np.arange(100 * k) % k), centers, std)
  assert spread == {'modes': k, 'high_quality': 1.0, 'reverse_kl': 0.0}
  # 3 modes with shares 1/2, 1/4, 1/4, plus as many points between modes.
  ids = np.array([0] * 200 + [1] * 100 + [2] * 100)
  between = (centers[0] + centers[1]) / 2 + np.zeros((400, 2))
  mixed = modes.mode_metrics(np.concatenate([near(ids), between]), centers, std)
  q = np.array([0.5, 0.25, 0.25])
  assert mixed['modes'] == 3
  assert mixed['high_quality'] == 0.5
  assert mixed['reverse_kl'] == pytest.approx(np.sum(q * np.log(k * q)))
  nothing = modes.mode_metrics(between, centers, std)
  assert nothing['modes'] == 0 and nothing['high_quality'] == 0.0
  assert math.isnan(nothing['reverse_kl'])


class LinearGaussian:
  """q(z) = N(0, I_2), q(x|z) = N(W z + b, s^2 I_3), W^T W diagonal, so the
  exact posterior is a diagonal Gaussian and log q(x) is closed form."""

  w = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
  b = np.array([0.5, -1.0, 0.2])
  s2 = 0.25

  def log_marginal(self, x):
    cov = self.w @ self.w.T + self.s2 * np.eye(3)
    return stats.multivariate_normal(self.b, cov).logpdf(x)

  def posterior(self, x):
    var = 1.0 / (1.0 + np.diag(self.w.T @ self.w) / self.s2)
    mean = (x - self.b) @ self.w / self.s2 * var
    return mean, np.log(np.broadcast_to(var, mean.shape))

  def log_likelihood_fn(self, x):
    x = jnp.asarray(x, jnp.float32)

    def fn(z):
      mean = z @ jnp.asarray(self.w.T, jnp.float32) + self.b
      return -0.5 * jnp.sum(
        (x - mean) ** 2 / self.s2 + math.log(2 * math.pi * self.s2), axis=-1
      )

    return fn


def test_iwae_with_the_exact_posterior_is_log_p_x_for_any_k():
  model = LinearGaussian()
  x = np.random.default_rng(8).normal(size=(16, 3))
  mean, logvar = model.posterior(x)
  bounds = likelihood.iwae_bound(
    jax.random.key(0),
    jnp.asarray(mean, jnp.float32),
    jnp.asarray(logvar, jnp.float32),
    model.log_likelihood_fn(x),
    num_samples=20,
    chunk_size=5,
  )
  np.testing.assert_allclose(bounds.iwae, model.log_marginal(x), atol=1e-4)
  np.testing.assert_allclose(bounds.elbo, model.log_marginal(x), atol=1e-4)


def test_iwae_rises_with_k_towards_log_p_x_above_the_elbo():
  """A wrong encoder (shifted mean, doubled std): ELBO < IWAE_K, rising in
  K and reaching log q(x) at K = 5000, chunked."""
  model = LinearGaussian()
  x = np.random.default_rng(9).normal(size=(256, 3)) * 2
  mean, logvar = model.posterior(x)
  mean, logvar = mean + 0.5, logvar + math.log(4.0)
  log_p = model.log_marginal(x).mean()
  iwae, elbo = {}, {}
  for k, chunk in ((1, 1), (10, 10), (100, 25), (5000, 500)):
    b = likelihood.iwae_bound(
      jax.random.key(k),
      jnp.asarray(mean, jnp.float32),
      jnp.asarray(logvar, jnp.float32),
      model.log_likelihood_fn(x),
      num_samples=k,
      chunk_size=chunk,
    )
    assert np.all(b.iwae >= b.elbo - 1e-5)  # Jensen, per example.
    iwae[k], elbo[k] = float(b.iwae.mean()), float(b.elbo.mean())
  assert iwae[1] == pytest.approx(elbo[1], abs=1e-6)
  assert log_p - elbo[5000] > 1.0  # The encoder really is wrong.
  assert iwae[1] < iwae[10] < iwae[100] < iwae[5000] <= log_p + 0.01
  assert log_p - iwae[5000] < 0.05


def test_iwae_rejects_a_chunk_that_does_not_divide_k():
  with pytest.raises(ValueError, match='multiple'):
    likelihood.iwae_bound(
      jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1, 2)), None, 10, 3
    )


def test_bits_per_dim():
  assert likelihood.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
  # A continuous density 1 on bins of width 1/2: one bit per dimension.
  assert likelihood.bits_per_dim(0.0, 10, bin_width=0.5) == pytest.approx(1.0)
