"""Numerics at extreme but valid inputs (issue 13, item 1).

Each test sets a function of losses.py, gmm.py or evaluation/ at an extreme
(tiny variances, near-zero KLs, singular covariances, duplicate points,
zero-probability classes, empty components, points far from the origin) and
compares it with a float64 reference computed independently: closed forms,
NumPy/SciPy, scikit-learn. Those marked FAULT failed before the fix that
came with them (NaN, inf, 0, an exception, or the wrong sign); the others
pin down behaviour that was already right.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import rel_entr, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from vi_gen import gmm, losses, testing
from vi_gen.evaluation import likelihood, metrics, modes

LOG_2PI = math.log(2 * math.pi)
F32_EPS = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------- losses ---


@pytest.mark.parametrize(
  ('diff', 'logvar'),
  [
    (0.0, -100.0),  # FAULT: exp(100) = inf in float32, 0 * inf = NaN.
    (1e-3, -100.0),  # FAULT: inf, where 1.34e37 is representable.
    (0.5, -150.0),  # The value (3.5e64) overflows float32: inf, not NaN.
    (0.0, -200.0),  # FAULT: NaN; exp(-logvar / 2) overflows too here.
    (1e-30, -200.0),  # FAULT: NaN; (1e-30)^2 e^200 = 7.2e26.
    (1e-20, -150.0),  # FAULT: NaN.
    (3.0, 50.0),  # The other side: exp(-50), fine before and after.
    (1e30, 60.0),  # FAULT: inf ((1e30)^2 overflows first); 8.8e33.
  ],
)
def test_gaussian_nll_at_extreme_log_variances(diff, logvar):
  x = jnp.full((1, 2), diff, jnp.float32)
  got = np.asarray(jax.jit(losses.gaussian_nll)(x, jnp.zeros((1, 2)), logvar))
  d, lv = np.float64(np.float32(diff)), np.float64(logvar)
  with np.errstate(over='ignore'):
    sq = np.exp(2 * np.log(d) - lv) if d else 0.0
  want = 2 * 0.5 * (sq + lv + LOG_2PI)
  if want < np.finfo(np.float32).max:
    np.testing.assert_allclose(got, [want], rtol=1e-5)
  else:  # The value itself overflows float32: +inf, never NaN.
    assert got[0] == np.inf


def test_gaussian_nll_gradient_at_a_tiny_variance():
  """FAULT: NaN gradients. d/dmean = -(x - mean) e^-lv and d/dlogvar =
  (1 - (x - mean)^2 e^-lv) / 2, finite here (the gradient in the mean, the
  residual over the variance, overflows long before the value does), at a
  zero residual too and where the log form is taken (lv = -200)."""
  x = jnp.asarray([[0.0, 1e-10, 1e-30, 0.0]], jnp.float32)
  logvar = jnp.asarray([[-100.0, -100.0, -150.0, -200.0]], jnp.float32)
  gm, glv = jax.jit(
    jax.grad(lambda m, lv: losses.gaussian_nll(x, m, lv).sum(), (0, 1))
  )(jnp.zeros_like(x), logvar)
  d, lv = np.asarray(x, np.float64), np.asarray(logvar, np.float64)
  scaled = np.where(d != 0, np.exp(2 * np.log(np.where(d, d, 1)) - lv), 0.0)
  want_m = -np.where(d != 0, np.exp(np.log(np.where(d, d, 1)) - lv), 0.0)
  want_lv = 0.5 * (1 - scaled)
  np.testing.assert_allclose(np.asarray(gm), want_m, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(glv), want_lv, rtol=1e-5)


def test_gaussian_nll_unchanged_at_a_fixed_unit_variance():
  """logvar = 0 (the VAE default): exactly (x - mean)^2 / 2 + log(2 pi)/2."""
  rng = np.random.default_rng(0)
  x, mean = (jnp.asarray(a, jnp.float32) for a in rng.normal(size=(2, 4, 9)))
  got = jax.jit(losses.gaussian_nll)(x, mean, 0.0)
  want = jnp.sum(0.5 * (jnp.square(x - mean) + LOG_2PI), axis=1)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-7)


@pytest.mark.parametrize('logvar', [1e-6, -1e-6, 1e-4, -1e-4, 1e-2, -3e-3])
def test_gaussian_kl_near_the_prior(logvar):
  """FAULT: exp(lv) - lv - 1 cancels in float32: -1.2e-7 (a negative KL)
  at lv = 1e-6 where the KL is 5e-13 per dim, 0 at lv = 1e-4 where it is
  5e-9. expm1(lv) - lv >= 0 with an error of a few eps * |lv|."""
  lv32 = np.float32(logvar)
  got = float(
    jax.jit(losses.gaussian_kl)(
      jnp.zeros((1, 4), jnp.float32), jnp.full((1, 4), lv32)
    )[0]
  )
  lv = np.float64(lv32)
  # Taylor series of exp(lv) - lv - 1 to lv^6 (error < lv^7 / 5040).
  series = sum(lv**k / math.factorial(k) for k in range(2, 7))
  want = 0.5 * 4 * series
  assert got >= 0.0
  assert abs(got - want) <= 2 * 4 * 4 * F32_EPS * abs(lv)


def test_ali_terms_with_a_sigma_whose_square_underflows():
  """FAULT: NaN. sigma = 1e-25 is a normal float32, sigma^2 = 1e-50 is 0."""
  fake = jnp.full((2, 3), 1e-20, jnp.float32)
  sigma = 1e-25
  got = float(
    jax.jit(losses.ali_generator_kl)(fake, jnp.zeros_like(fake), sigma)
  )
  d = np.float64(np.float32(1e-20))
  want = 3 * (d / sigma) ** 2 / 2
  assert got == pytest.approx(want, rel=1e-5)
  z = jnp.zeros((2, 3), jnp.float32)
  cycle = float(jax.jit(losses.ali_latent_cycle)(z, fake, 2 * fake, sigma))
  want = 3 * ((d / sigma) ** 2 - (2 * d / sigma) ** 2) / 2
  assert cycle == pytest.approx(want, rel=1e-5)


# -------------------------------------------------------------------- GMM ---


def _constant_feature_data() -> np.ndarray:
  """500 points of [N(0, 1), 0] (float64)."""
  rng = np.random.default_rng(0)
  return np.stack([rng.normal(size=500), np.zeros(500)], axis=1)


def _sklearn_from(init: gmm.GMMParams, x: np.ndarray, num_iters: int, ridge):
  sk = testing.sklearn_mixture(init, num_iters, ridge)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ConvergenceWarning)
    sk.fit(x)
  return sk


@pytest.mark.parametrize('covariance_type', ['full', 'diag'])
def test_em_on_data_with_a_constant_feature_matches_sklearn(covariance_type):
  """FAULT: NaN from the first step (the start's covariance is the data's,
  singular; the M-step's ridge cannot mend NaN responsibilities). With the
  ridge in `init_from_data` too: scikit-learn's curve (reg_covar = 1e-6)
  from the same start, to 1e-8 in float64 and 2e-4 in float32."""
  x = _constant_feature_data()
  num_iters = 20
  with jax.enable_x64(True):
    init = gmm.init_from_data(
      jax.random.key(0), jnp.asarray(x), 2, covariance_type
    )
    _, curve = gmm.fit(jnp.asarray(x), init, num_iters)
  sk = _sklearn_from(init, x, num_iters, gmm.DEFAULT_RIDGE)
  curve = np.asarray(curve)
  np.testing.assert_allclose(curve[:-1], sk.lower_bounds_, rtol=0, atol=1e-8)
  np.testing.assert_allclose(curve[-1], sk.score(x), rtol=0, atol=1e-8)

  x32 = jnp.asarray(x, jnp.float32)
  init32 = gmm.init_from_data(jax.random.key(0), x32, 2, covariance_type)
  _, curve32 = gmm.fit(x32, init32, num_iters)
  sk32 = _sklearn_from(init32, x, num_iters, gmm.DEFAULT_RIDGE)
  np.testing.assert_allclose(curve32[:-1], sk32.lower_bounds_, atol=2e-4)
  # Near scikit-learn's own fit (4.5523 after its 8 iterations, 4.5650 at
  # convergence): the constant feature contributes -log(2 pi 1e-6) / 2.
  assert 4.55 < float(curve32[-1]) < 4.5651


@pytest.mark.parametrize('covariance_type', ['full', 'diag'])
def test_em_on_identical_points_is_the_ridge_gaussian(covariance_type):
  """FAULT: NaN. 50 copies of one point: every covariance is ridge * I and
  log q(x) = -D log(2 pi ridge) / 2 at every step."""
  x = jnp.full((50, 3), 0.3, jnp.float32)
  init = gmm.init_from_data(jax.random.key(0), x, 2, covariance_type)
  _, curve = gmm.fit(x, init, 5)
  want = -0.5 * 3 * math.log(2 * math.pi * gmm.DEFAULT_RIDGE)
  np.testing.assert_allclose(np.asarray(curve), want, rtol=1e-6)


@pytest.mark.parametrize('covariance_type', ['full', 'diag'])
def test_m_step_with_an_empty_component_matches_sklearn(covariance_type):
  """No fault: a component with no responsibility gets sklearn's floor
  (N_k + 10 eps), a zero mean and ridge * I, and the likelihood stays
  finite."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(40, 3))
  resp = np.eye(3)[np.arange(40) % 2]  # Column 2 is empty.
  with jax.enable_x64(True):
    params = gmm.m_step(jnp.asarray(x), jnp.asarray(resp), covariance_type)
    ll = np.asarray(gmm.log_likelihood(params, jnp.asarray(x)))
  nk, means, cov = _estimate_gaussian_parameters(
    x, resp, gmm.DEFAULT_RIDGE, covariance_type
  )
  np.testing.assert_allclose(params.weights, nk / nk.sum(), rtol=1e-12)
  np.testing.assert_allclose(params.means, means, atol=1e-12)
  np.testing.assert_allclose(params.covariances, cov, atol=1e-12)
  assert np.all(np.isfinite(ll))
  params32 = gmm.m_step(
    jnp.asarray(x, jnp.float32), jnp.asarray(resp, jnp.float32), covariance_type
  )
  assert all(np.all(np.isfinite(a)) for a in params32)
  ll32 = gmm.log_likelihood(params32, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(ll32), ll, rtol=1e-4)


# ------------------------------------------------------------------- FID ---


def _fid_by_nuclear_norm(f1: np.ndarray, f2: np.ndarray) -> float:
  """FID from the features: with S1 = A^T A, S2 = B^T B (A, B centred and
  scaled by 1 / sqrt(N - 1)), Tr (S1 S2)^1/2 is the nuclear norm of A B^T,
  an N1 x N2 matrix; exact whatever the ranks."""
  a = (f1 - f1.mean(0)) / math.sqrt(len(f1) - 1)
  b = (f2 - f2.mean(0)) / math.sqrt(len(f2) - 1)
  dmu = f1.mean(0) - f2.mean(0)
  nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
  return float(dmu @ dmu + np.sum(a * a) + np.sum(b * b) - 2 * nuclear)


@pytest.mark.parametrize(
  ('num', 'dim', 'scale'),
  [
    (10, 64, 1e3),  # FAULT: ValueError (root complex after the eps retry).
    (10, 64, 1.0),  # Rank 9 of 64: the eps retry, already close.
    (3, 64, 1e-3),
    (500, 16, 1.0),  # Full rank: sqrtm.
  ],
)
def test_fid_with_rank_deficient_covariances(num, dim, scale):
  rng = np.random.default_rng(3)
  f1 = scale * rng.normal(size=(num, dim))
  f2 = scale * (rng.normal(size=(num, dim)) + 1.0)
  got = metrics.frechet_distance(
    metrics.feature_statistics(f1), metrics.feature_statistics(f2)
  )
  want = _fid_by_nuclear_norm(f1, f2)
  # The traces cancel to about 1e-9 of Tr S1 + Tr S2 in float64.
  assert got == pytest.approx(want, rel=1e-7)


def test_fid_with_dead_features_and_more_samples_than_dimensions():
  """No fault: post-ReLU features with units that never fire (zero
  columns): singular covariances with N > d."""
  rng = np.random.default_rng(4)
  f1 = np.maximum(rng.normal(size=(500, 64)), 0)
  f2 = np.maximum(rng.normal(size=(500, 64)) + 0.2, 0)
  f1[:, :40] = f2[:, :40] = 0.0
  got = metrics.frechet_distance(
    metrics.feature_statistics(f1), metrics.feature_statistics(f2)
  )
  assert got == pytest.approx(_fid_by_nuclear_norm(f1, f2), rel=1e-9)


def test_fid_of_one_dimensional_features():
  """FAULT: ValueError (np.cov of one column is a scalar). In 1-D the
  distance is (m1 - m2)^2 + (s1 - s2)^2."""
  rng = np.random.default_rng(5)
  f1, f2 = rng.normal(size=(30, 1)), 2.0 * rng.normal(size=(40, 1)) + 1.0
  s1, s2 = metrics.feature_statistics(f1), metrics.feature_statistics(f2)
  assert s1.sigma.shape == (1, 1)
  want = (f1.mean() - f2.mean()) ** 2 + (f1.std(ddof=1) - f2.std(ddof=1)) ** 2
  assert metrics.frechet_distance(s1, s2) == pytest.approx(want, rel=1e-12)


# -------------------------------------------------------------------- IS ---


def _reference_inception_score(logits: np.ndarray, num_splits: int) -> list:
  scores = []
  for part in np.array_split(softmax(logits, axis=-1), num_splits):
    kl = rel_entr(part, part.mean(0)).sum(-1)  # 0 log 0 = 0.
    scores.append(math.exp(kl.mean()))
  return scores


@pytest.mark.parametrize('never', [-np.inf, -1000.0, -800.0])
def test_inception_score_with_a_class_never_predicted(never):
  """FAULT: NaN. A class of probability 0 (a logit of -inf, or so low that
  exp underflows in every example of a split) gives 0 * log 0."""
  rng = np.random.default_rng(6)
  logits = 3.0 * rng.normal(size=(40, 6))
  logits[:, 5] = never
  logits[:20, 4] = never  # In one of the two splits only.
  got = metrics.inception_score(logits, num_splits=2)
  scores = _reference_inception_score(logits, 2)
  assert got.mean == pytest.approx(np.mean(scores), rel=1e-12)
  assert got.std == pytest.approx(np.std(scores), rel=1e-9)


def test_inception_score_with_huge_logits():
  """No fault: confident logits of 1e4 (softmax saturates to one-hot)."""
  labels = np.arange(100) % 5
  got = metrics.inception_score(1e4 * np.eye(5)[labels], 10)
  assert got.mean == pytest.approx(5.0, rel=1e-12)


# ------------------------------------------------------------------- MMD ---


def _reference_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
  gamma = 1.0 / (2.0 * bandwidth**2)
  kxx, kyy = rbf_kernel(x, x, gamma=gamma), rbf_kernel(y, y, gamma=gamma)
  m, n = len(x), len(y)
  return float(
    (kxx.sum() - m) / (m * (m - 1))
    + (kyy.sum() - n) / (n * (n - 1))
    - 2 * rbf_kernel(x, y, gamma=gamma).mean()
  )


def test_mmd_of_identical_points_is_zero():
  """FAULT: NaN (the median distance is 0: a kernel of zero width, and
  exp(-0 / 0)). All points equal: MMD^2 = 0 for every bandwidth."""
  x = np.full((20, 2), 0.7)
  mmd2, bandwidth = metrics.rbf_mmd2(x, x.copy())
  assert mmd2 == 0.0 and bandwidth > 0


def test_mmd_of_a_collapsed_encoder():
  """FAULT: NaN. 50 identical codes against 10 prior samples: most pairs
  coincide, so the bandwidth is the median of the positive distances."""
  rng = np.random.default_rng(7)
  x, y = np.full((50, 2), 0.3), rng.normal(size=(10, 2))
  mmd2, bandwidth = metrics.rbf_mmd2(x, y)
  pooled = np.concatenate([x, y])
  dist = np.linalg.norm(pooled[:, None] - pooled[None], axis=-1)
  dist = dist[np.triu_indices(len(pooled), k=1)]
  assert np.median(dist) == 0.0
  assert bandwidth == pytest.approx(np.median(dist[dist > 0]), rel=1e-12)
  assert mmd2 == pytest.approx(_reference_mmd2(x, y, bandwidth), rel=1e-9)


def test_mmd_far_from_the_origin():
  """FAULT: |a|^2 + |b|^2 - 2 a.b cancels at an offset of 1e8: bandwidth
  2.83 (the median distance is 1.88) and MMD^2 0.096 (0.131). Both are
  translation invariant: the reference is computed on the unshifted points."""
  rng = np.random.default_rng(8)
  x0, y0 = rng.normal(size=(30, 2)), rng.normal(0.5, 1.0, size=(30, 2))
  mmd2, bandwidth = metrics.rbf_mmd2(x0 + 1e8, y0 + 1e8)
  assert bandwidth == pytest.approx(metrics.median_bandwidth(x0, y0), rel=1e-6)
  assert mmd2 == pytest.approx(_reference_mmd2(x0, y0, bandwidth), rel=1e-5)


def test_mmd_rejects_a_zero_bandwidth():
  """FAULT: NaN (0 / 0 on the diagonal) for a given bandwidth of 0."""
  x = np.random.default_rng(9).normal(size=(5, 2))
  with pytest.raises(ValueError, match='bandwidth must be > 0'):
    metrics.rbf_mmd2(x, x + 1.0, bandwidth=0.0)


# ----------------------------------------------------------------- modes ---


def test_mode_metrics_with_duplicates_nan_and_far_samples():
  """No fault: 90 copies of one mode, 5 NaN samples (a diverged generator)
  and 5 at 1e200 (whose squared norm overflows): one mode, 90% high
  quality, reverse KL = log K (everything on one mode)."""
  centers = np.array([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
  samples = np.concatenate(
    [
      np.tile(centers[1], (90, 1)),
      np.full((5, 2), np.nan),
      np.full((5, 2), 1e200),
    ]
  )
  with np.errstate(invalid='ignore', over='ignore'):
    got = modes.mode_metrics(samples, centers, std=0.02)
  assert got['modes'] == 1
  assert got['high_quality'] == pytest.approx(0.9)
  assert got['reverse_kl'] == pytest.approx(math.log(4), rel=1e-12)


# ------------------------------------------------------------------ IWAE ---


def test_iwae_of_a_nearly_deterministic_decoder():
  """FAULT: NaN (through losses.gaussian_nll). x = z + N(0, e^-100) in
  float32, with the exact posterior N(x / (1 + s2), s2 / (1 + s2)): every
  log-weight is log q(x) = log N(x; 0, 1 + s2), here at x = 0."""
  decoder_logvar, dim = -100.0, 3
  s2 = math.exp(decoder_logvar)
  x = jnp.zeros((4, dim), jnp.float32)
  post_logvar = decoder_logvar - math.log1p(s2)
  bounds = likelihood.iwae_bound(
    jax.random.key(0),
    jnp.zeros((4, dim), jnp.float32),
    jnp.full((4, dim), post_logvar, jnp.float32),
    lambda z: -losses.gaussian_nll(x, z, decoder_logvar),
    num_samples=20,
    chunk_size=10,
  )
  want = -0.5 * dim * (LOG_2PI + math.log1p(s2))
  np.testing.assert_allclose(np.asarray(bounds.iwae), want, atol=1e-4)
  np.testing.assert_allclose(np.asarray(bounds.elbo), want, atol=1e-4)


def test_iwae_with_log_weights_far_below_zero():
  """No fault: log-weights near -1e4 (a decoder far from the data) are
  combined in log space: the bound is the exact log-mean-exp."""
  rng = np.random.default_rng(10)
  mean = rng.normal(size=(3, 2))
  logvar = np.full((3, 2), -1.0)
  offset = -1e4
  bounds = likelihood.iwae_bound(
    jax.random.key(1),
    jnp.asarray(mean, jnp.float32),
    jnp.asarray(logvar, jnp.float32),
    # log q(x|z) = offset + log p(z|x) - log q(z): every log-weight = offset.
    lambda z: (
      offset
      + jnp.sum(
        -0.5 * ((z - mean) ** 2 / np.exp(logvar) + logvar) + 0.5 * z**2, axis=-1
      )
    ),
    num_samples=30,
    chunk_size=10,
  )
  np.testing.assert_allclose(np.asarray(bounds.iwae), offset, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(bounds.elbo), offset, rtol=1e-6)


@pytest.mark.parametrize('covariance_type', ['full', 'diag'])
def test_float32_em_on_a_thin_component_far_from_the_others(covariance_type):
  """FAULT: NaN. A covariance taken as E[(x-c)(x-c)^T] - (mu-c)(mu-c)^T
  cancels in float32 when a component is thin (std 0.01 along one axis)
  and far (30 std of the data) from the centre c: the difference is no
  longer positive definite, and its Cholesky factor is NaN. Centred
  residuals keep float32 finite and on float64's curve."""
  rng = np.random.default_rng(0)
  widths = np.array([[1.0, 1.0, 1.0], [1.0, 0.01, 1.0], [0.5, 0.5, 0.5]])
  centres = np.array([[0.0, 0.0, 0.0], [300.0, -200.0, 100.0], [5.0, 5, 5]])
  labels = np.arange(3000) % 3
  x = centres[labels] + widths[labels] * rng.normal(size=(3000, 3))
  with jax.enable_x64(True):
    init = gmm.init_from_data(
      jax.random.key(0), jnp.asarray(x), 3, covariance_type
    )
    _, curve = gmm.fit(jnp.asarray(x), init, 30)
  init32 = gmm.GMMParams(*(np.asarray(a, np.float32) for a in init))
  _, curve32 = gmm.fit(jnp.asarray(x, jnp.float32), init32, 30)
  assert np.all(np.isfinite(np.asarray(curve32)))
  np.testing.assert_allclose(curve32[-1], curve[-1], atol=1e-3)
