"""Tests of vi_gen.losses against formulas written independently in NumPy.

Every loss runs under jax.jit. The NumPy references use D = 1 / (1 + e^-l)
and 1 - D = 1 / (1 + e^l) directly (float64, finite for |l| <= 30), never
softplus.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vi_gen import losses

TOL = {'rtol': 1e-5, 'atol': 1e-5}


def _logits(rng: np.random.Generator, shape) -> np.ndarray:
  """Random logits with some saturated entries at +-30."""
  out = rng.normal(size=shape) * 4.0
  out.flat[:4] = [30.0, -30.0, 29.5, -29.5]
  return out


def _neg_log_d(logit):
  return -np.log(1.0 / (1.0 + np.exp(-logit)))


def _neg_log_one_minus_d(logit):
  return -np.log(1.0 / (1.0 + np.exp(logit)))


def _f32(*arrays):
  return [jnp.asarray(a, jnp.float32) for a in arrays]


# --------------------------------------------------------------------- GAN ---


def test_discriminator_loss():
  rng = np.random.default_rng(0)
  real, fake = _logits(rng, (16, 1)), _logits(rng, (12, 1))
  got = jax.jit(losses.discriminator_loss)(*_f32(real, fake))
  want = _neg_log_d(real).mean() + _neg_log_one_minus_d(fake).mean()
  np.testing.assert_allclose(got, want, **TOL)


def test_generator_loss():
  fake = _logits(np.random.default_rng(1), (16,))
  got = jax.jit(losses.generator_loss)(*_f32(fake))
  np.testing.assert_allclose(got, _neg_log_d(fake).mean(), **TOL)


def test_saturating_generator_loss():
  """E log(1 - D) = -E softplus(l), and its gradient -D / B vanishes where
  D rejects the samples (l = -30), unlike eq. (20)'s -(1 - D) / B."""
  fake = _logits(np.random.default_rng(21), (16, 1))
  got = jax.jit(losses.saturating_generator_loss)(*_f32(fake))
  np.testing.assert_allclose(got, -_neg_log_one_minus_d(fake).mean(), **TOL)
  grad = jax.jit(jax.grad(losses.saturating_generator_loss))(*_f32(fake))
  d = 1.0 / (1.0 + np.exp(-fake))
  np.testing.assert_allclose(grad, -d / fake.size, rtol=1e-5, atol=1e-12)
  # Logits of -30: D = 9.4e-14.
  rejected = jnp.full((8,), -30.0)
  saturated = jax.grad(losses.saturating_generator_loss)(rejected)
  non_saturated = jax.grad(losses.generator_loss)(rejected)
  assert np.all(np.abs(saturated) < 1e-13 / 8)
  np.testing.assert_allclose(non_saturated, -1.0 / 8, rtol=1e-6)


def test_generator_regularizer_is_mean_over_all_elements():
  rng = np.random.default_rng(2)
  fake, old = rng.normal(size=(2, 4, 3, 5, 2))
  got = jax.jit(losses.generator_regularizer)(*_f32(fake, old))
  np.testing.assert_allclose(got, ((fake - old) ** 2).mean(), **TOL)


def test_regularized_generator_loss():
  rng = np.random.default_rng(3)
  logits = _logits(rng, (4, 1))
  fake, old = rng.normal(size=(2, 4, 6))
  got = jax.jit(losses.regularized_generator_loss)(
    *_f32(logits, fake, old), 5.0
  )
  want = _neg_log_d(logits).mean() + 5.0 * ((fake - old) ** 2).mean()
  np.testing.assert_allclose(got, want, **TOL)


def test_regularizer_zero_with_zero_gradient_at_the_old_generator():
  fake = jnp.asarray(np.random.default_rng(4).normal(size=(4, 6)), jnp.float32)
  value, grad = jax.jit(jax.value_and_grad(losses.generator_regularizer))(
    fake, fake
  )
  assert value == 0.0
  assert np.all(np.asarray(grad) == 0.0)


def test_regularizer_positive_and_no_gradient_into_old_fake():
  fake, old = _f32(*np.random.default_rng(5).normal(size=(2, 4, 6)))
  fn = jax.jit(jax.value_and_grad(losses.generator_regularizer, (0, 1)))
  value, (g_fake, g_old) = fn(fake, old)
  assert value > 0
  np.testing.assert_allclose(g_fake, 2 * (fake - old) / fake.size, **TOL)
  assert np.all(np.asarray(g_old) == 0.0)


@pytest.mark.parametrize(
  'fn',
  [
    losses.generator_regularizer,
    lambda a, b: losses.regularized_generator_loss(jnp.zeros(4), a, b, 1.0),
    lambda a, b: losses.aae_loss(jnp.zeros(4), a, b, 1.0),
    lambda a, b: losses.ali_generator_kl(a, b, 1.0),
    lambda a, b: losses.ali_latent_cycle(a, a, b, 1.0),
    lambda a, b: losses.gaussian_nll(a, b, 0.0),
    lambda a, b: losses.bernoulli_nll(b, a),
  ],
)
def test_shape_mismatch_raises(fn):
  with pytest.raises(ValueError, match='shape|broadcast'):
    fn(jnp.zeros((4, 3)), jnp.zeros((4, 3, 1)))


# ---------------------------------------------------- densities and the VAE ---


def test_gaussian_kl_closed_form():
  rng = np.random.default_rng(6)
  mean, logvar = rng.normal(size=(2, 8, 5))
  got = jax.jit(losses.gaussian_kl)(*_f32(mean, logvar))
  var = np.exp(logvar)
  # KL(N(m, v) || N(0, 1)) = log(1 / sqrt(v)) + (v + m^2) / 2 - 1 / 2.
  want = (np.log(1 / np.sqrt(var)) + (var + mean**2) / 2 - 0.5).sum(-1)
  assert got.shape == (8,)
  np.testing.assert_allclose(got, want, **TOL)


def test_gaussian_kl_monte_carlo():
  rng = np.random.default_rng(7)
  mean, logvar = rng.normal(size=(2, 3, 4)) * 0.7
  std = np.exp(logvar / 2)
  z = mean + std * rng.normal(size=(200_000, 3, 4))
  log_ratio = stats.norm.logpdf(z, mean, std) - stats.norm.logpdf(z)
  mc = log_ratio.sum(-1).mean(0)
  got = jax.jit(losses.gaussian_kl)(*_f32(mean, logvar))
  np.testing.assert_allclose(got, mc, atol=0.02)


@pytest.mark.parametrize('per_element', [False, True])
def test_gaussian_nll_matches_scipy(per_element):
  rng = np.random.default_rng(8)
  x, mean = rng.normal(size=(2, 6, 3, 4))
  logvar = rng.normal(size=(6, 3, 4)) if per_element else np.float64(-0.7)
  got = jax.jit(losses.gaussian_nll)(*_f32(x, mean, logvar))
  want = -stats.norm.logpdf(x, mean, np.exp(logvar / 2)).sum((1, 2))
  assert got.shape == (6,)
  np.testing.assert_allclose(got, want, **TOL)


def test_bernoulli_nll():
  rng = np.random.default_rng(9)
  logits = _logits(rng, (6, 5, 2))
  x = rng.uniform(size=(6, 5, 2))
  x[:3] = x[:3] > 0.5  # binary and non-binary targets
  got = jax.jit(losses.bernoulli_nll)(*_f32(logits, x))
  d = 1 / (1 + np.exp(-logits))
  want = -(x * np.log(d) + (1 - x) * np.log(1 / (1 + np.exp(logits))))
  assert got.shape == (6,)
  np.testing.assert_allclose(got, want.sum((1, 2)), rtol=1e-5, atol=1e-4)


def test_vae_loss_bernoulli_terms():
  rng = np.random.default_rng(10)
  x = (rng.uniform(size=(4, 7)) > 0.5).astype(float)
  logits = _logits(rng, (4, 7))
  mean, logvar = rng.normal(size=(2, 4, 3))
  fn = jax.jit(functools.partial(losses.vae_loss, likelihood='bernoulli'))
  loss, terms = fn(*_f32(x, logits, mean, logvar))
  rec = np.where(x == 1, _neg_log_d(logits), _neg_log_one_minus_d(logits))
  var = np.exp(logvar)
  kl = 0.5 * (mean**2 + var - np.log(var) - 1).sum(-1)
  np.testing.assert_allclose(terms['reconstruction'], rec.sum(-1).mean(), **TOL)
  np.testing.assert_allclose(terms['kl'], kl.mean(), **TOL)
  np.testing.assert_allclose(loss, rec.sum(-1).mean() + kl.mean(), **TOL)
  assert terms['loss'] == loss


def test_vae_loss_unknown_likelihood_raises():
  with pytest.raises(ValueError, match="'gaussian', 'bernoulli'"):
    losses.vae_loss(*[jnp.zeros((2, 3))] * 4, likelihood='laplace')


class LinearGaussian:
  """z ~ N(0, I_d), x|z ~ N(Wz + b, s^2 I_D), q(z|x) = N(Ax + c, diag(v)).

  W has orthogonal columns, so the exact posterior is diagonal and the
  encoder family contains it.
  """

  d, dim_x, s = 3, 5, 0.7

  def __init__(self, seed: int):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(self.dim_x, self.d)))
    self.w = q * np.array([1.5, 0.8, 0.4])
    self.b = rng.normal(size=self.dim_x)
    self.x = rng.normal(size=(6, self.dim_x)) * 1.5
    self.rng = rng

  def exact_posterior(self):
    var = 1 / (1 + (self.w**2).sum(0) / self.s**2)
    a = var[:, None] * self.w.T / self.s**2
    return (self.x - self.b) @ a.T, np.broadcast_to(var, (6, self.d))

  def other_encoder(self):
    mean, var = self.exact_posterior()
    r = self.rng
    return mean + 0.5 * r.normal(size=mean.shape), var * r.uniform(0.3, 3, 3)

  def elbo(self, mean, var):
    """Closed-form E_q log p(x|z) - KL(q(z|x) || p(z)), per example."""
    resid = self.x - mean @ self.w.T - self.b
    trace = var @ (self.w**2).T  # diag(W diag(v) W^T)
    rec = -0.5 * self.dim_x * np.log(2 * np.pi * self.s**2) - (
      (resid**2 + trace).sum(-1) / (2 * self.s**2)
    )
    kl = 0.5 * (mean**2 + var - np.log(var) - 1).sum(-1)
    return rec - kl

  def log_evidence(self):
    cov = self.w @ self.w.T + self.s**2 * np.eye(self.dim_x)
    return stats.multivariate_normal(self.b, cov).logpdf(self.x)

  def vae_loss(self, z, mean, var):
    """vae_loss with the decoder applied to the given z."""
    recon = z @ self.w.T + self.b
    return losses.vae_loss(
      self.x, recon, mean, jnp.log(var), recon_logvar=2 * np.log(self.s)
    )


@pytest.mark.parametrize('exact', [False, True])
def test_vae_loss_expectation_is_the_negative_elbo(exact):
  """Sigma points +-sqrt(d) e_i give E_eps exactly for a quadratic in eps."""
  with jax.enable_x64(True):
    model = LinearGaussian(11)
    mean, var = model.exact_posterior() if exact else model.other_encoder()
    eps = np.sqrt(model.d) * np.concatenate([np.eye(model.d), -np.eye(model.d)])

    @jax.jit
    def expected_loss(mean, var):
      def one(e):
        return model.vae_loss(mean + jnp.sqrt(var) * e, mean, var)

      return jax.tree.map(lambda t: t.mean(0), jax.vmap(one)(eps))

    loss, terms = expected_loss(mean, var)
    assert loss.dtype == jnp.float64
    np.testing.assert_allclose(loss, -model.elbo(mean, var).mean(), rtol=1e-12)
    kl = 0.5 * (mean**2 + var - np.log(var) - 1).sum(-1).mean()
    np.testing.assert_allclose(terms['kl'], kl, rtol=1e-12)
    if exact:  # the ELBO is tight at the true posterior
      np.testing.assert_allclose(-loss, model.log_evidence().mean(), atol=1e-5)
  assert jnp.zeros(()).dtype == jnp.float32  # x64 did not leak


def test_vae_loss_monte_carlo_with_reparameterize():
  with jax.enable_x64(True):
    model = LinearGaussian(12)
    mean, var = model.other_encoder()

    @jax.jit
    def sample_loss(key):
      z = losses.reparameterize(key, jnp.asarray(mean), jnp.log(var))
      return model.vae_loss(z, mean, var)[0]

    keys = jax.random.split(jax.random.key(0), 20_000)
    samples = np.asarray(jax.vmap(sample_loss)(keys))
  want = -model.elbo(mean, var).mean()
  stderr = samples.std() / np.sqrt(samples.size)
  assert abs(samples.mean() - want) < 4 * stderr, (samples.mean(), want)


def test_elbo_below_log_evidence_with_equality_at_exact_posterior():
  model = LinearGaussian(13)
  log_px = model.log_evidence()
  for _ in range(5):
    assert np.all(model.elbo(*model.other_encoder()) < log_px - 1e-6)
  np.testing.assert_allclose(
    model.elbo(*model.exact_posterior()), log_px, atol=1e-10
  )


# --------------------------------------------------------------------- AAE ---


def test_aae_discriminator_loss():
  rng = np.random.default_rng(14)
  code, prior = _logits(rng, (10, 1)), _logits(rng, (8, 1))
  got = jax.jit(losses.aae_discriminator_loss)(*_f32(code, prior))
  # D(z) = P(z is a prior sample): codes are labelled 0, prior samples 1.
  want = _neg_log_one_minus_d(code).mean() + _neg_log_d(prior).mean()
  np.testing.assert_allclose(got, want, **TOL)


def test_aae_encoder_loss():
  code = _logits(np.random.default_rng(15), (10,))
  got = jax.jit(losses.aae_encoder_loss)(*_f32(code))
  np.testing.assert_allclose(got, _neg_log_d(code).mean(), **TOL)


def test_aae_loss():
  rng = np.random.default_rng(16)
  code = _logits(rng, (5, 1))
  x, x_recon = rng.normal(size=(2, 5, 4, 4, 1))
  got = jax.jit(losses.aae_loss)(*_f32(code, x, x_recon), 2.5)
  want = _neg_log_d(code).mean() + 2.5 * ((x - x_recon) ** 2).mean()
  np.testing.assert_allclose(got, want, **TOL)


# --------------------------------------------------------------------- ALI ---


def test_ali_discriminator_loss():
  rng = np.random.default_rng(17)
  enc, gen = _logits(rng, (9,)), _logits(rng, (7,))
  got = jax.jit(losses.ali_discriminator_loss)(*_f32(enc, gen))
  want = _neg_log_d(enc).mean() + _neg_log_one_minus_d(gen).mean()
  np.testing.assert_allclose(got, want, **TOL)


_ALI_REFERENCE = {
  'vi': lambda e, g: _neg_log_d(e).mean() + _neg_log_d(g).mean(),
  'minmax': lambda e, g: -_neg_log_d(e).mean() - _neg_log_one_minus_d(g).mean(),
  'nonsaturating': lambda e, g: (
    _neg_log_one_minus_d(e).mean() + _neg_log_d(g).mean()
  ),
}


@pytest.mark.parametrize('variant', losses.ALI_VARIANTS)
def test_ali_generator_encoder_loss(variant):
  rng = np.random.default_rng(18)
  enc, gen = _logits(rng, (9, 1)), _logits(rng, (7, 1))
  fn = jax.jit(losses.ali_generator_encoder_loss, static_argnames='variant')
  got = fn(*_f32(enc, gen), variant=variant)
  np.testing.assert_allclose(got, _ALI_REFERENCE[variant](enc, gen), **TOL)


def test_ali_unknown_variant_raises():
  with pytest.raises(ValueError, match="'vi', 'minmax', 'nonsaturating'"):
    losses.ali_generator_encoder_loss(jnp.zeros(2), jnp.zeros(2), 'bigan')


def test_ali_complete_terms():
  rng = np.random.default_rng(19)
  fake, old_fake = rng.normal(size=(2, 6, 4, 2))
  z, code, old_code = rng.normal(size=(3, 6, 3))
  sg, se = 0.3, 0.6
  kl = jax.jit(losses.ali_generator_kl)(*_f32(fake, old_fake), sg)
  # KL(N(m1, s^2) || N(m2, s^2)) per element, from the general formula.
  per = np.log(sg / sg) + (sg**2 + (fake - old_fake) ** 2) / (2 * sg**2) - 0.5
  np.testing.assert_allclose(kl, per.sum((1, 2)).mean(), **TOL)
  cycle = jax.jit(losses.ali_latent_cycle)(*_f32(z, code, old_code), se)
  log_ratio = stats.norm.logpdf(z, old_code, se) - stats.norm.logpdf(
    z, code, se
  )
  np.testing.assert_allclose(cycle, log_ratio.sum(-1).mean(), **TOL)
  # G^o(z) is a constant; E^o(x) depends on G through x, so it is not.
  g_fake, g_old = jax.jit(jax.grad(losses.ali_generator_kl, (0, 1)))(
    *_f32(fake, old_fake), sg
  )
  np.testing.assert_allclose(g_fake, (fake - old_fake) / (sg**2 * 6), **TOL)
  assert np.all(np.asarray(g_old) == 0.0)
  g_code, g_old = jax.jit(jax.grad(losses.ali_latent_cycle, (1, 2)))(
    *_f32(z, code, old_code), se
  )
  np.testing.assert_allclose(g_code, (code - z) / (se**2 * 6), **TOL)
  np.testing.assert_allclose(g_old, (z - old_code) / (se**2 * 6), **TOL)


def test_ali_vi_and_nonsaturating_oppose_on_encoder_agree_on_generator():
  """Paper §3.5: (41) and (43) share the G term, flip the E term."""
  rng = np.random.default_rng(20)
  x, z = rng.normal(size=(8, 5)), rng.normal(size=(8, 3))
  w_x, w_z, bias = rng.normal(size=5), rng.normal(size=3), 0.3
  code, fake = rng.normal(size=(8, 3)), rng.normal(size=(8, 5))

  def loss(code, fake, variant):
    enc_logits = x @ w_x + code @ w_z + bias  # toy D(x, E(x))
    gen_logits = fake @ w_x + z @ w_z + bias  # toy D(G(z), z)
    return losses.ali_generator_encoder_loss(enc_logits, gen_logits, variant)

  grad = jax.jit(jax.grad(loss, (0, 1)), static_argnames='variant')
  (code_vi, fake_vi), (code_ns, fake_ns) = (
    grad(*_f32(code, fake), variant=v) for v in ('vi', 'nonsaturating')
  )
  assert np.all(np.sum(code_vi * code_ns, -1) < 0)  # per sample, anti-parallel
  np.testing.assert_allclose(fake_vi, fake_ns, rtol=0, atol=0)
  # The same at the logit level.
  enc, gen = _f32(*_logits(rng, (2, 8)))
  grad = jax.jit(
    jax.grad(losses.ali_generator_encoder_loss, (0, 1)),
    static_argnames='variant',
  )
  (e_vi, g_vi), (e_ns, g_ns) = (
    grad(enc, gen, variant=v) for v in ('vi', 'nonsaturating')
  )
  assert np.all(e_vi < 0) and np.all(e_ns > 0)
  np.testing.assert_array_equal(g_vi, g_ns)


# --------------------------------------- the optimal-discriminator identities ---


def _batch(logits: jax.Array, counts: np.ndarray) -> jax.Array:
  """The cells of `logits`, each repeated `count` times: a batch whose mean
  is the expectation under counts / counts.sum()."""
  return logits.reshape(-1)[np.repeat(np.arange(counts.size), counts.ravel())]


def test_gan_optimal_discriminator_and_complete_generator_loss():
  """Eq. (16) is minimised by (18); then (17) equals (19) exactly."""
  p_data = np.array([3, 2, 2, 2, 1])  # counts out of 10
  q_old = np.array([1, 1, 2, 3, 3])
  q_new = np.array([2, 3, 1, 1, 3])
  pd, qo, q = p_data / 10, q_old / 10, q_new / 10
  l_opt = jnp.asarray(np.log(pd / qo), jnp.float32)  # logit of eq. (18)

  @jax.jit
  def d_loss(logits):
    return losses.discriminator_loss(
      _batch(logits, p_data), _batch(logits, q_old)
    )

  np.testing.assert_allclose(jax.jit(jax.grad(d_loss))(l_opt), 0, atol=1e-6)
  for delta in np.random.default_rng(21).normal(size=(5, 5)):
    assert d_loss(l_opt + delta) > d_loss(l_opt)

  dstar = pd / (pd + qo)
  eq17 = np.sum(q * np.log(q / ((1 - dstar) * pd)))
  g_loss = jax.jit(losses.generator_loss)(_batch(l_opt, q_new))
  eq19 = g_loss + np.sum(q * np.log(q / qo))  # -E_q log D + KL(q || q^o)
  np.testing.assert_allclose(eq19, eq17, **TOL)


def test_ali_optimal_discriminator_and_complete_loss():
  """Eq. (38) is minimised by (39); then (37) equals (40) exactly."""
  # Joints over x in {0, 1, 2} (rows) and z in {0, 1}, as counts out of 20.
  # Encoder side p(z|x) p~(x): P and P^o share p~(x) (row sums 5, 8, 7).
  # Generator side q(x|z) q(z): Q and Q^o share q(z) (column sums 10, 10).
  p_cur, p_old = (
    np.array([[3, 2], [4, 4], [1, 6]]),
    np.array([[1, 4], [6, 2], [2, 5]]),
  )
  q_cur, q_old = (
    np.array([[5, 1], [2, 3], [3, 6]]),
    np.array([[2, 4], [5, 1], [3, 5]]),
  )
  pc, po, qc, qo = (a / 20 for a in (p_cur, p_old, q_cur, q_old))
  l_opt = jnp.asarray(np.log(po / qo), jnp.float32)  # logit of eq. (39)

  @jax.jit
  def d_loss(logits):
    return losses.ali_discriminator_loss(
      _batch(logits, p_old), _batch(logits, q_old)
    )

  np.testing.assert_allclose(jax.jit(jax.grad(d_loss))(l_opt), 0, atol=1e-6)

  dstar = po / (po + qo)
  eq37 = np.sum(-pc * np.log(dstar)) + np.sum(
    qc * np.log(qc / ((1 - dstar) * pc))
  )
  eq41 = jax.jit(losses.ali_generator_encoder_loss)(
    _batch(l_opt, p_cur), _batch(l_opt, q_cur)
  )
  # With q(z) and p~(x) shared, q(x|z) / q^o(x|z) = Q / Q^o and
  # p^o(z|x) / p(z|x) = P^o / P: the two terms that (41) drops.
  eq40 = eq41 + np.sum(qc * np.log(qc / qo)) + np.sum(qc * np.log(po / pc))
  np.testing.assert_allclose(eq40, eq37, **TOL)
