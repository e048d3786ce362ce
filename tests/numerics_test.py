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

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_gen import losses
from vi_gen.evaluation import likelihood

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
