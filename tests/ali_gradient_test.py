"""ALI's E/G gradients against a hand computation (issue 12, the ALI part).

A 1-D model small enough to differentiate on paper: encoder E(x) = a x + b,
generator G(z) = c z + d and a fixed discriminator with logit
l(x, z) = w0 + w1 x + w2 z + w3 x z, on five data points and five prior
draws. The references are closed-form derivatives written out below in
numpy float64 (checked themselves against central differences of a numpy
loss); they use no JAX and no code of `vi_gen`. They are compared with

* jax.grad of `losses.ali_generator_encoder_loss` on the same logits;
* jax.grad of `ALI.encoder_generator_loss`, the method's own E/G loss, with
  these networks put in place of its MLPs;
* the update that one `ALI.iteration` (D phase + E/G phase through
  `vi_gen.players`) applies, with plain SGD at rate 1 for E and G and a
  frozen D, so that the applied update is minus the gradient;

and the sign structure of eqs. (41)-(43): under (41) the encoder's step
raises D(x, E(x)) (as D's own step on eq. (38) does), under (42) and (43)
it lowers it; the generator's step raises D(G(z), z) under all three.
Last, the DERIVED terms of eq. (40) (`ali.complete`): their gradients by
hand, and which of them vanish at the snapshot E = E^o, G = G^o.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ali as ali_config
from vi_gen import losses, methods, players
from vi_gen.methods import ali as ali_module

X = np.array([-1.3, -0.4, 0.2, 0.9, 1.7])  # data x_i
Z = np.array([-1.1, -0.2, 0.5, 1.4, 0.3])  # prior draws z_j
E0 = {'scale': 0.7, 'shift': -0.2}  # a, b
G0 = {'scale': 1.3, 'shift': 0.4}  # c, d
W = np.array([0.1, -0.6, 0.8, 0.5])  # w0, w1, w2, w3
VARIANTS = ('vi', 'minmax', 'nonsaturating')
SIGMA_E, SIGMA_G = 0.3, 0.2
# The noise of the Gaussian sides (ali.complete), fixed so that the hand
# computation sees the same draws: z_hat = E(x) + SIGMA_E * EPS_E,
# x_hat = G(z) + SIGMA_G * EPS_G.
EPS_E = np.array([0.5, -1.2, 0.3, 0.8, -0.1])
EPS_G = np.array([-0.7, 0.4, 1.1, -0.3, 0.9])


# ------------------------------------------------------------ the networks


class Affine(nn.Module):
  """u -> scale * u + shift on [B, 1]: the encoder and the generator."""

  @nn.compact
  def __call__(self, u, train=False):
    del train
    scale = self.param('scale', nn.initializers.ones, ())
    shift = self.param('shift', nn.initializers.zeros, ())
    return scale * u + shift


class Bilinear(nn.Module):
  """The logit w0 + w1 x + w2 z + w3 x z on [B, 1] pairs."""

  @nn.compact
  def __call__(self, x, z, train=False):
    del train
    w = self.param('w', nn.initializers.zeros, (4,))
    return w[0] + w[1] * x + w[2] * z + w[3] * x * z


# ------------------------------------------------- the hand computation


def sigmoid(t):
  return 1.0 / (1.0 + np.exp(-t))


def logit(x, z, w=W):
  return w[0] + w[1] * x + w[2] * z + w[3] * x * z


def dloss_dlogits(variant, l_real, l_fake):
  """d loss / d logit per pair, loss = batch means (n = len(l_real)).

  -log D = softplus(-l) has derivative -(1 - s); -log(1 - D) = softplus(l)
  has derivative s, with s = sigmoid(l).
  """
  n, m = len(l_real), len(l_fake)
  s_r, s_f = sigmoid(l_real), sigmoid(l_fake)
  if variant == 'vi':  # -log D(x, E(x)) - log D(G(z), z), eq. (41)
    return -(1 - s_r) / n, -(1 - s_f) / m
  if variant == 'minmax':  # log D(x, E(x)) + log(1 - D(G(z), z)), eq. (42)
    return (1 - s_r) / n, -s_f / m
  if variant == 'nonsaturating':  # -log(1 - D(x,E(x))) - log D(G(z),z) (43)
    return s_r / n, -(1 - s_f) / m
  raise ValueError(variant)


def np_adversarial(variant, l_real, l_fake):
  """The losses themselves in numpy (for the finite differences)."""
  neg_log_d = lambda t: np.log1p(np.exp(-t))  # noqa: E731
  neg_log_1md = lambda t: np.log1p(np.exp(t))  # noqa: E731
  if variant == 'vi':
    return neg_log_d(l_real).mean() + neg_log_d(l_fake).mean()
  if variant == 'minmax':
    return -neg_log_d(l_real).mean() - neg_log_1md(l_fake).mean()
  return neg_log_1md(l_real).mean() + neg_log_d(l_fake).mean()


def sides(e, g, eps_e, eps_g):
  z_hat = e['scale'] * X + e['shift'] + SIGMA_E * eps_e
  x_hat = g['scale'] * Z + g['shift'] + SIGMA_G * eps_g
  return z_hat, x_hat


def hand_adversarial_grads(variant, e=E0, g=G0, noisy=False):
  """{encoder: {scale, shift}, generator: {scale, shift}} of the E/G loss.

  Encoder side: l_i = l(x_i, z_hat_i), z_hat_i = a x_i + b (+ noise), so
  dl_i/da = (w2 + w3 x_i) x_i and dl_i/db = w2 + w3 x_i. Generator side:
  l_j = l(x_hat_j, z_j), x_hat_j = c z_j + d (+ noise), so
  dl_j/dc = (w1 + w3 z_j) z_j and dl_j/dd = w1 + w3 z_j.
  """
  eps_e, eps_g = (EPS_E, EPS_G) if noisy else (0 * X, 0 * Z)
  z_hat, x_hat = sides(e, g, eps_e, eps_g)
  dr, df = dloss_dlogits(variant, logit(X, z_hat), logit(x_hat, Z))
  de = dr * (W[2] + W[3] * X)  # d loss / d z_hat_i
  dg = df * (W[1] + W[3] * Z)  # d loss / d x_hat_j
  return {
    'encoder': {'scale': np.sum(de * X), 'shift': np.sum(de)},
    'generator': {'scale': np.sum(dg * Z), 'shift': np.sum(dg)},
  }


def hand_complete_grads(e, g, e_old, g_old):
  """Gradients of eq. (40)'s DERIVED third and fourth terms.

  KL = mean_j (g_j - g^o_j)^2 / (2 sG^2), g_j = c z_j + d:
    dKL/dc = mean_j (g_j - g^o_j) z_j / sG^2, dKL/dd likewise without z_j;
    no encoder gradient.
  Cycle = mean_j [(z_j - E(x~_j))^2 - (z_j - E^o(x~_j))^2] / (2 sE^2),
  x~_j = g_j + sG eps_j:
    dC/da = -mean_j r_j x~_j / sE^2, dC/db = -mean_j r_j / sE^2, with
    r_j = z_j - a x~_j - b: E^o does not enter the encoder's gradient;
    dC/dc = mean_j (-r_j a + r^o_j a^o) z_j / sE^2, dC/dd likewise without
    z_j, with r^o_j = z_j - a^o x~_j - b^o: zero when E = E^o.
  """
  g_new = g['scale'] * Z + g['shift']
  g_prev = g_old['scale'] * Z + g_old['shift']
  x_t = g_new + SIGMA_G * EPS_G
  r = Z - e['scale'] * x_t - e['shift']
  r_old = Z - e_old['scale'] * x_t - e_old['shift']
  n = len(Z)
  kl = {
    'scale': np.sum((g_new - g_prev) * Z) / n / SIGMA_G**2,
    'shift': np.sum(g_new - g_prev) / n / SIGMA_G**2,
  }
  cycle_g = (-r * e['scale'] + r_old * e_old['scale']) / n / SIGMA_E**2
  cycle = {
    'encoder': {
      'scale': -np.sum(r * x_t) / n / SIGMA_E**2,
      'shift': -np.sum(r) / n / SIGMA_E**2,
    },
    'generator': {'scale': np.sum(cycle_g * Z), 'shift': np.sum(cycle_g)},
  }
  return kl, cycle


def add(*trees):
  return jax.tree.map(lambda *v: sum(v), *trees)


# --------------------------------------------------------------- the method


def make_method(variant='vi', complete=False, lr=1.0):
  """ALI with the hand networks, SGD(lr) for E and G, D frozen, and the
  prior draws fixed to Z."""
  config = ali_config.get_config('toy')
  config.latent_dim = 1
  config.batch_size = len(X)
  config.ali.variant = variant
  if complete:
    config.ali.complete = True
    config.ali.encoder_sigma = SIGMA_E
    config.ali.generator_sigma = SIGMA_G
    config.g_steps = 2
  method = methods.get('ali')(config, (1,))
  method.networks = {
    'encoder': (Affine(), (jnp.zeros((2, 1)),)),
    'generator': (Affine(), (jnp.zeros((2, 1)),)),
    'discriminator': (Bilinear(), (jnp.zeros((2, 1)), jnp.zeros((2, 1)))),
  }
  method.txs = {
    'encoder': optax.sgd(lr),
    'generator': optax.sgd(lr),
    'discriminator': optax.set_to_zero(),
  }
  method.latents = lambda key, num: jnp.asarray(Z[:num, None])
  return method


def params_of(e=E0, g=G0):
  f = lambda v: jnp.asarray(v, jnp.float64)  # noqa: E731
  return {
    'encoder': jax.tree.map(f, e),
    'generator': jax.tree.map(f, g),
    'discriminator': {'w': f(W)},
  }


def to_numpy(tree):
  return jax.tree.map(lambda v: np.asarray(v, np.float64), tree)


def assert_trees_close(got, want, rtol=1e-10, atol=1e-12):
  got, want = to_numpy(got), to_numpy(want)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


@pytest.fixture
def fixed_noise(monkeypatch):
  """The Gaussian sides draw EPS_E / EPS_G instead of random noise."""
  noise = {SIGMA_E: EPS_E, SIGMA_G: EPS_G}

  def perturb(key, mean, sigma):
    del key
    if not sigma:
      return mean
    return mean + sigma * jnp.asarray(noise[sigma][:, None], mean.dtype)

  monkeypatch.setattr(ali_module, 'perturb', perturb)


def eg_grads(method, params, old=None):
  """jax.grad of the method's E/G loss w.r.t. E and G, D frozen."""
  x, z = jnp.asarray(X[:, None]), jnp.asarray(Z[:, None])
  shared = (x, z, jax.random.key(0), old)
  stats = {name: {} for name in params}

  def loss(trained):
    value, (_, terms) = method.encoder_generator_loss(
      {**params, **trained}, stats, shared, None
    )
    return value, terms

  trained = {n: params[n] for n in ('encoder', 'generator')}
  return jax.grad(loss, has_aux=True)(trained)


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize('variant', VARIANTS)
def test_hand_gradients_match_central_differences(variant):
  """The closed forms above, against the numpy loss itself."""

  def loss(flat):
    e = {'scale': flat[0], 'shift': flat[1]}
    g = {'scale': flat[2], 'shift': flat[3]}
    z_hat, x_hat = sides(e, g, 0 * X, 0 * Z)
    return np_adversarial(variant, logit(X, z_hat), logit(x_hat, Z))

  flat = np.array([E0['scale'], E0['shift'], G0['scale'], G0['shift']])
  h = 1e-6
  numeric = [
    (loss(flat + h * u) - loss(flat - h * u)) / (2 * h) for u in np.eye(4)
  ]
  hand = hand_adversarial_grads(variant)
  analytic = [
    hand['encoder']['scale'],
    hand['encoder']['shift'],
    hand['generator']['scale'],
    hand['generator']['shift'],
  ]
  np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize('variant', VARIANTS)
def test_loss_gradient_in_the_logits_matches_the_hand_one(variant):
  l_real = logit(X, E0['scale'] * X + E0['shift'])
  l_fake = logit(G0['scale'] * Z + G0['shift'], Z)
  got = jax.grad(losses.ali_generator_encoder_loss, argnums=(0, 1))(
    jnp.asarray(l_real), jnp.asarray(l_fake), variant
  )
  want = dloss_dlogits(variant, l_real, l_fake)
  for a, b in zip(got, want, strict=True):
    assert a.dtype == jnp.float64
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(
    losses.ali_generator_encoder_loss(l_real, l_fake, variant),
    np_adversarial(variant, l_real, l_fake),
    rtol=1e-12,
  )


@pytest.mark.parametrize('variant', VARIANTS)
def test_method_loss_gradient_matches_the_hand_one(variant):
  method = make_method(variant)
  grads, terms = eg_grads(method, params_of())
  assert set(terms) == {'eg_adversarial'}
  assert_trees_close(grads, hand_adversarial_grads(variant))


@pytest.mark.parametrize('variant', VARIANTS)
def test_the_iteration_applies_the_hand_gradient(variant):
  """One iteration through vi_gen.players: D phase (frozen here), then one
  E/G step of SGD at rate 1, so params change by minus the gradient."""
  method = make_method(variant)
  params = params_of()
  state = players.new_state(params, {n: {} for n in params}, method.txs)
  batch = jnp.asarray(X[None, :, None])
  new_state, _ = method.iteration(state, batch, jax.random.key(0))
  assert_trees_close(new_state.params['discriminator'], {'w': W})
  applied = jax.tree.map(
    lambda old, new: old - new,
    {n: params[n] for n in ('encoder', 'generator')},
    {n: new_state.params[n] for n in ('encoder', 'generator')},
  )
  assert_trees_close(applied, hand_adversarial_grads(variant))


def test_vi_encoder_term_is_d_own_encoder_term_and_43_is_opposite():
  """On the encoder's pairs, eq. (41)'s term is -log D(x, E(x)), exactly
  the encoder-side term of D's loss (38): same gradient in the logits; (42)
  has minus it and (43) the opposite sign."""
  l_real = jnp.asarray(logit(X, E0['scale'] * X + E0['shift']))
  l_fake = jnp.asarray(logit(G0['scale'] * Z + G0['shift'], Z))
  d_grad = jax.grad(losses.ali_discriminator_loss)(l_real, l_fake)
  eg = {
    v: jax.grad(losses.ali_generator_encoder_loss)(l_real, l_fake, v)
    for v in VARIANTS
  }
  np.testing.assert_allclose(eg['vi'], d_grad, rtol=1e-12)
  np.testing.assert_allclose(eg['minmax'], -d_grad, rtol=1e-12)
  assert np.all(np.asarray(d_grad) < 0)
  assert np.all(np.asarray(eg['nonsaturating']) > 0)


@pytest.mark.parametrize(
  'variant,encoder_sign',
  [('vi', +1), ('minmax', -1), ('nonsaturating', -1)],
)
def test_a_small_step_moves_d_of_the_encoder_pairs_by_the_variant(
  variant, encoder_sign
):
  """After one small E/G step (the method's iteration, SGD 1e-3), D on the
  encoder's pairs rises under (41) and falls under (42)/(43); D on the
  generator's pairs rises under all three. Read off with the hand D."""
  method = make_method(variant, lr=1e-3)
  params = params_of()
  state = players.new_state(params, {n: {} for n in params}, method.txs)
  new = method.iteration(
    state, jnp.asarray(X[None, :, None]), jax.random.key(0)
  )[0].params
  before_e, before_g = sides(E0, G0, 0 * X, 0 * Z)
  after_e, after_g = sides(
    to_numpy(new['encoder']), to_numpy(new['generator']), 0 * X, 0 * Z
  )
  d_enc = sigmoid(logit(X, after_e)).mean() - sigmoid(logit(X, before_e)).mean()
  d_gen = sigmoid(logit(after_g, Z)).mean() - sigmoid(logit(before_g, Z)).mean()
  assert np.sign(d_enc) == encoder_sign and abs(d_enc) > 1e-6
  assert d_gen > 1e-6


def test_vi_and_43_share_the_generator_gradient_and_not_the_encoders():
  vi = hand_adversarial_grads('vi')
  ns = hand_adversarial_grads('nonsaturating')
  assert vi['generator'] == ns['generator']
  # On the encoder, (41) and (43) differ per pair by the factor
  # -(1 - s)/s, a negative number: opposite signs, pair by pair.
  assert vi['encoder']['shift'] * ns['encoder']['shift'] < 0


@pytest.mark.parametrize('at_snapshot', [True, False])
def test_complete_terms_match_the_hand_gradients(fixed_noise, at_snapshot):
  """ali.complete: the adversarial term on the Gaussian sides plus the
  DERIVED KL and latent-cycle terms, against the hand forms, with E^o, G^o
  equal to E, G (the first step of a phase) or apart (a later one)."""
  del fixed_noise
  method = make_method('vi', complete=True)
  e_old = E0 if at_snapshot else {'scale': 0.5, 'shift': 0.1}
  g_old = G0 if at_snapshot else {'scale': 1.0, 'shift': 0.6}
  params = params_of()
  old_fake = jnp.asarray((g_old['scale'] * Z + g_old['shift'])[:, None])
  old = (old_fake, params_of(e_old)['encoder'])
  grads, terms = eg_grads(method, params, old)
  assert set(terms) == {'eg_adversarial', 'eg_generator_kl', 'eg_latent_cycle'}
  kl, cycle = hand_complete_grads(E0, G0, e_old, g_old)
  want = add(
    hand_adversarial_grads('vi', noisy=True),
    {'encoder': {'scale': 0.0, 'shift': 0.0}, 'generator': kl},
    cycle,
  )
  assert_trees_close(grads, want)


def test_at_the_snapshot_only_the_encoder_cycle_gradient_survives():
  """At E = E^o, G = G^o the generator's gradients of both dropped terms
  vanish (the KL is a divergence, minimal there; the cycle's two codes
  cancel), but the encoder's cycle gradient, -(1/sE^2) mean (z - E(x~))
  dE/dtheta, does not: it does not depend on E^o at all, and vanishes only
  where E inverts G, E(G(z) + noise) = z."""
  kl, cycle = hand_complete_grads(E0, G0, E0, G0)
  assert kl == {'scale': 0.0, 'shift': 0.0}
  np.testing.assert_allclose(list(cycle['generator'].values()), 0.0, atol=1e-12)
  assert min(abs(v) for v in cycle['encoder'].values()) > 1e-2
  apart = hand_complete_grads(
    E0, G0, {'scale': 0.5, 'shift': 0.1}, {'scale': 1.0, 'shift': 0.6}
  )
  assert apart[1]['encoder'] == cycle['encoder']
  # An encoder that inverts the noiseless generator (a = 1/c, b = -d/c)
  # leaves only the noise's share of the residual.
  inverse = {'scale': 1 / G0['scale'], 'shift': -G0['shift'] / G0['scale']}
  _, inv_cycle = hand_complete_grads(inverse, G0, inverse, G0)
  noiseless = G0['scale'] * Z + G0['shift']
  residual = Z - (inverse['scale'] * noiseless + inverse['shift'])
  np.testing.assert_allclose(residual, 0.0, atol=1e-12)
  np.testing.assert_allclose(
    inv_cycle['encoder']['shift'],
    inverse['scale'] * SIGMA_G * EPS_G.mean() / SIGMA_E**2,
    rtol=1e-10,
  )


# ------------------------------- eqs. (37), (39), (40) on discrete (x, z)


def discrete_setup(seed):
  """p~(x), p^o(z|x), q(z), q^o(x|z) on 3 x values and 4 z values, and D of
  eq. (39) for them."""
  rng = np.random.default_rng(seed)
  normalize = lambda a, axis: a / a.sum(axis=axis, keepdims=True)  # noqa: E731
  p_data = normalize(rng.uniform(0.2, 1, 3), 0)  # p~(x)
  p_old = normalize(rng.uniform(0.1, 1, (3, 4)), 1)  # p^o(z|x) [x, z]
  q_z = normalize(rng.uniform(0.2, 1, 4), 0)  # q(z)
  q_old = normalize(rng.uniform(0.1, 1, (3, 4)), 0)  # q^o(x|z) [x, z]
  enc, gen = p_old * p_data[:, None], q_old * q_z[None, :]
  d = enc / (enc + gen)  # eq. (39)
  return p_data, p_old, q_z, q_old, d


def eq37(p, q, p_data, q_z, d):
  """Eq. (37) by sums; p = p(z|x), q = q(x|z), both [x, z]."""
  gen = q * q_z[None, :]
  return np.sum(p * p_data[:, None] * -np.log(d)) + np.sum(
    gen * np.log(gen / ((1 - d) * p * p_data[:, None]))
  )


def eq40(p, q, p_old, q_old, q_z, p_data, d):
  """Eq. (40) by sums: T1 + T2 + T3 + T4."""
  gen = q * q_z[None, :]
  t1 = np.sum(p * p_data[:, None] * -np.log(d))
  t2 = np.sum(gen * -np.log(d))
  t3 = np.sum(q_z * np.sum(q * np.log(q / q_old), axis=0))
  t4 = np.sum(gen * np.log(p_old / p))
  return t1 + t2 + t3 + t4


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_eq40_is_eq37_when_d_is_eq39(seed):
  """The paper's rewrite, away from the snapshot (p != p^o, q != q^o)."""
  p_data, p_old, q_z, q_old, d = discrete_setup(seed)
  rng = np.random.default_rng(100 + seed)
  p = p_old * rng.uniform(0.5, 1.5, p_old.shape)
  p /= p.sum(axis=1, keepdims=True)
  q = q_old * rng.uniform(0.5, 1.5, q_old.shape)
  q /= q.sum(axis=0, keepdims=True)
  np.testing.assert_allclose(
    eq40(p, q, p_old, q_old, q_z, p_data, d),
    eq37(p, q, p_data, q_z, d),
    rtol=1e-12,
  )


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_at_the_snapshot_the_encoder_gradient_of_eq37_pushes_d_to_zero(seed):
  """d(37)/dp(z|x) at p = p^o, q = q^o is p~(x) [-log D - (1 - D)/D]
  (docs/results/ali.md, section 2); (41) keeps only p~(x) [-log D]. A
  softmax-gradient step of the encoder then lowers its mean D under (37)
  and raises it under (41)."""
  p_data, p_old, q_z, q_old, d = discrete_setup(seed)
  h = 1e-7
  numeric = np.zeros_like(p_old)
  for i, j in np.ndindex(*p_old.shape):
    step = np.zeros_like(p_old)
    step[i, j] = h
    numeric[i, j] = (
      eq37(p_old + step, q_old, p_data, q_z, d)
      - eq37(p_old - step, q_old, p_data, q_z, d)
    ) / (2 * h)
  exact = p_data[:, None] * (-np.log(d) - (1 - d) / d)
  np.testing.assert_allclose(numeric, exact, rtol=1e-6)
  only_41 = p_data[:, None] * -np.log(d)

  def mean_d_after_step(grad, eps=1e-4):
    # Softmax parameterisation of each row: dlogits = p (g - E_p g).
    centred = grad - np.sum(p_old * grad, axis=1, keepdims=True)
    p = p_old * np.exp(-eps * p_old * centred)
    p /= p.sum(axis=1, keepdims=True)
    return np.sum(p * p_data[:, None] * d)

  before = np.sum(p_old * p_data[:, None] * d)
  assert mean_d_after_step(exact) < before
  assert mean_d_after_step(only_41) > before
