"""EM for Gaussian mixtures: the special case of eqs. (8)-(11) of Su (2018).

The paper derives EM as coordinate descent on one variational objective:

* E-step, eq. (11): with q fixed, the optimal p(z|x) is the exact posterior
  q(x|z)q(z) / sum_z' q(x|z')q(z'); for a finite mixture this is a softmax over
  components, computed here in log space.
* M-step, eq. (8): with p(z|x) frozen, q maximises
  E_x sum_z p(z|x) log q(x, z); for q(z) = w_z and q(x|z) = N(mu_z, Sigma_z)
  the argmax is closed form (responsibility-weighted counts, means and
  covariances).

Each E-step also yields log q(x) (the normaliser of eq. (11)), so tracking the
likelihood costs nothing extra. Because the E-step is exact, eq. (10) shows
the objective equals -E_x log q(x) after it, hence EM never decreases the
likelihood (with `ridge=0`).

Covariances are either full, shape [K, D, D], or diagonal, shape [K, D]; the
type is read from `covariances.ndim`, so it is static under `jax.jit`.
Everything works in float32 (the default) and in float64 when the caller
enables x64; parameters follow the dtype of the data.
"""

import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cholesky, solve_triangular

Array = jax.Array
CovarianceType = Literal['full', 'diag']

# Default ridge, the same value as scikit-learn's `reg_covar`: it keeps the
# Cholesky factorisation defined when a component collapses onto a few points
# (or onto a degenerate subspace), and it is far below the scale of any
# sensibly standardised data. It makes the M-step a slightly regularised
# argmax of eq. (8); pass `ridge=0.0` for the exact one.
DEFAULT_RIDGE = 1e-6


class GMMParams(NamedTuple):
  """Parameters of q(x, z) = w_z N(x; mu_z, Sigma_z).

  Attributes:
    weights: Mixture weights q(z), shape [K], summing to 1.
    means: Component means, shape [K, D].
    covariances: Full covariances [K, D, D] or diagonal variances [K, D].
  """

  weights: Array
  means: Array
  covariances: Array


def covariance_type_of(params: GMMParams) -> CovarianceType:
  """'full' or 'diag', inferred from the rank of `params.covariances`."""
  ndim = jnp.ndim(params.covariances)
  if ndim == 3:
    return 'full'
  if ndim == 2:
    return 'diag'
  raise ValueError(
    f'covariances must have shape [K, D, D] or [K, D], got rank {ndim}.'
  )


class _Moments(NamedTuple):
  """Per-point features whose responsibility-weighted sums are the M-step.

  About `centre` (the data mean), so that float32 keeps its digits when the
  data sit far from the origin. One [K, N] @ [N, F] product then gives every
  component's count, mean and covariance; the Python-level alternative (a
  residual x - mu_k per component, [K, N, D]) ran 5-10x slower on XLA:CPU.

  Attributes:
    centre: The data mean, shape [D].
    features: Shape [N, F]: per point vec((x-c)(x-c)^T) ([D*D], full) or
      (x-c)^2 ([D], diag), then x - c ([D]), then 1.
  """

  centre: Array
  features: Array


def _moments(x: Array, covariance_type: CovarianceType) -> _Moments:
  n, d = x.shape
  centre = jnp.mean(x, axis=0)
  xc = x - centre
  if covariance_type == 'full':
    second = (xc[:, :, None] * xc[:, None, :]).reshape(n, d * d)
  elif covariance_type == 'diag':
    second = xc * xc
  else:
    raise ValueError(f'Unknown covariance_type {covariance_type!r}.')
  ones = jnp.ones((n, 1), x.dtype)
  return _Moments(centre, jnp.concatenate([second, xc, ones], axis=1))


def _mahalanobis(params: GMMParams, moments: _Moments) -> tuple[Array, Array]:
  """(x_n - mu_k)^T Sigma_k^-1 (x_n - mu_k), shape [N, K], and log|Sigma_k|.

  Float32 whitens the residuals with the inverse Cholesky factor L_k^-1 (as
  scikit-learn does): accurate, and one [N, D] @ [D, K*D] product. XLA:CPU
  runs that product 10-20x slower in float64 (a 16-wide contraction), so
  float64 expands the quadratic form instead, one [N, F] @ [F, K] product
  with the `_moments` features; its cancellation costs digits that float64
  has to spare and float32 has not.
  """
  features = moments.features
  d = moments.centre.shape[0]
  xc = features[:, -d - 1 : -1]  # x - c.
  mc = params.means - moments.centre  # mu - c, [K, D].
  full = covariance_type_of(params) == 'full'
  if full:
    chol = cholesky(params.covariances, lower=True)
    eye = jnp.broadcast_to(jnp.eye(d, dtype=chol.dtype), chol.shape)
    whiten = solve_triangular(chol, eye, lower=True)  # L^-1, [K, D, D].
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, 0, 1, 2)), axis=-1)
  else:
    whiten = jax.lax.rsqrt(params.covariances)  # [K, D].
    log_det = jnp.sum(jnp.log(params.covariances), axis=-1)
  if features.dtype == jnp.float64:
    # (x-c)^T P (x-c) - 2 (x-c)^T P (mu-c) + (mu-c)^T P (mu-c), P = Sigma^-1.
    if full:
      precision = jnp.einsum('kdi,kdj->kij', whiten, whiten)
      pm = jnp.einsum('kij,kj->ki', precision, mc)
    else:
      precision = whiten * whiten
      pm = precision * mc
    weights = [
      precision.reshape(len(mc), -1),
      -2.0 * pm,
      jnp.sum(pm * mc, axis=-1, keepdims=True),
    ]
    return features @ jnp.concatenate(weights, axis=1).T, log_det
  if full:
    z = jnp.einsum('nd,ked->nke', xc, whiten) - jnp.einsum(
      'kd,ked->ke', mc, whiten
    )
  else:
    z = (xc[:, None, :] - mc[None]) * whiten[None]
  return jnp.sum(z * z, axis=-1), log_det


def _log_joint(params: GMMParams, moments: _Moments) -> Array:
  """log q(x_n, z=k) = log w_k + log N(x_n; mu_k, Sigma_k), shape [N, K]."""
  d = moments.centre.shape[0]
  maha, log_det = _mahalanobis(params, moments)
  log_norm = jnp.log(params.weights) - 0.5 * (
    d * math.log(2 * math.pi) + log_det
  )
  return log_norm[None, :] - 0.5 * maha


def _posterior(log_joint: Array) -> tuple[Array, Array]:
  """Responsibilities [N, K] and log q(x) [N] from log q(x, z).

  Written out rather than `logsumexp`: XLA:CPU reduces over the minor axis
  (K) of [N, K] fast, and this form does it twice instead of four times.
  """
  peak = jnp.max(log_joint, axis=-1, keepdims=True)
  unnormalised = jnp.exp(log_joint - peak)
  total = jnp.sum(unnormalised, axis=-1, keepdims=True)
  return unnormalised / total, (peak + jnp.log(total))[:, 0]


def _data_moments(params: GMMParams, x: Array) -> _Moments:
  x = jnp.asarray(x)
  return _moments(x, covariance_type_of(params))


@jax.jit
def log_likelihood(params: GMMParams, x: Array) -> Array:
  """Per-point log q(x) = logsumexp_k (log w_k + log N(x; mu_k, Sigma_k)).

  This is the marginal of eq. (9), the quantity EM increases.

  Args:
    params: Mixture parameters.
    x: Data, shape [N, D].

  Returns:
    log q(x_n), shape [N].
  """
  return _posterior(_log_joint(params, _data_moments(params, x)))[1]


@jax.jit
def e_step(params: GMMParams, x: Array) -> Array:
  """E-step, eq. (11): the exact posterior p(z|x) = q(z|x).

  Normalised in log space so far-away points do not underflow to 0/0.

  Args:
    params: Mixture parameters (q held fixed).
    x: Data, shape [N, D].

  Returns:
    Responsibilities p(z=k|x_n), shape [N, K]; each row sums to 1.
  """
  return _posterior(_log_joint(params, _data_moments(params, x)))[0]


def _maximise(
  responsibilities: Array,
  moments: _Moments,
  covariance_type: CovarianceType,
  ridge: float | Array,
) -> GMMParams:
  """The M-step from the `_moments` features (see `m_step`)."""
  centre = moments.centre
  d = centre.shape[0]
  sums = responsibilities.astype(centre.dtype).T @ moments.features  # [K, F]
  counts, sx = sums[:, -1], sums[:, -d - 1 : -1]  # sum r, sum r (x - c).
  # As in scikit-learn, a tiny floor keeps an empty component's mean finite
  # (it becomes 0, not the centre).
  nk = counts + 10 * jnp.finfo(centre.dtype).eps
  weights = nk / jnp.sum(nk)
  means = (sx + counts[:, None] * centre) / nk[:, None]
  mc = means - centre
  # sum r (x - mu)(x - mu)^T, expanded about c, divided by the floored N_k.
  if covariance_type == 'full':
    cross = mc[:, :, None] * sx[:, None, :]
    second = sums[:, : -d - 1].reshape(-1, d, d)
    second = second - cross - jnp.swapaxes(cross, -1, -2)
    second = second + counts[:, None, None] * mc[:, :, None] * mc[:, None, :]
    cov = second / nk[:, None, None]
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    cov = cov + ridge * jnp.eye(d, dtype=centre.dtype)
  else:
    second = sums[:, : -d - 1] - 2 * mc * sx + counts[:, None] * mc * mc
    # The expansion can round below 0 in float32.
    cov = jnp.maximum(second / nk[:, None], 0.0) + ridge
  return GMMParams(weights, means, cov.astype(centre.dtype))


@functools.partial(jax.jit, static_argnames='covariance_type')
def m_step(
  x: Array,
  responsibilities: Array,
  covariance_type: CovarianceType = 'full',
  ridge: float | Array = DEFAULT_RIDGE,
) -> GMMParams:
  """M-step, eq. (8): closed-form argmax of E_x sum_z p(z|x) log q(x, z).

  With p(z|x) frozen the objective separates: the weights maximise
  sum_k N_k log w_k (so w_k = N_k / N) and each Gaussian is a
  responsibility-weighted maximum-likelihood fit.

  Args:
    x: Data, shape [N, D].
    responsibilities: p(z|x) from `e_step`, shape [N, K].
    covariance_type: 'full' ([K, D, D]) or 'diag' ([K, D]) covariances.
    ridge: Added to every covariance diagonal (see `DEFAULT_RIDGE`); 0 gives
      the exact argmax of eq. (8).

  Returns:
    The new parameters, in the dtype of `x`.

  Raises:
    ValueError: an unknown `covariance_type`.
  """
  x = jnp.asarray(x)
  moments = _moments(x, covariance_type)
  return _maximise(responsibilities, moments, covariance_type, ridge)


@functools.partial(jax.jit, static_argnames='num_iters')
def fit(
  x: Array,
  init: GMMParams,
  num_iters: int,
  ridge: float | Array = DEFAULT_RIDGE,
) -> tuple[GMMParams, Array]:
  """Runs `num_iters` EM iterations, eq. (11) then eq. (8), in one `lax.scan`.

  The log-likelihood of the current parameters falls out of each E-step's
  normaliser, so the curve is free except for one extra evaluation at the end.
  The per-point features of the M-step (`_moments`) are computed once.

  Args:
    x: Data, shape [N, D], float32 or float64; `init` is cast to its dtype.
    init: Starting parameters; their covariance rank picks full or diagonal.
      The first E-step evaluates them as given, so their covariances must be
      positive definite (`init_from_data` adds the ridge).
    num_iters: Number of EM iterations (static: changing it retraces).
    ridge: Added to every covariance diagonal in each M-step.

  Returns:
    `(params, curve)`: the parameters after `num_iters` iterations, and the
    mean log-likelihood E_x log q(x), shape [num_iters + 1], where `curve[i]`
    is the value after `i` iterations (`curve[0]` at `init`, `curve[-1]` at
    the returned `params`).
  """
  x = jnp.asarray(x)
  covariance_type = covariance_type_of(init)
  init = GMMParams(*(jnp.asarray(a, x.dtype) for a in init))
  moments = _moments(x, covariance_type)

  def em_iteration(params: GMMParams, _) -> tuple[GMMParams, Array]:
    resp, log_q_x = _posterior(_log_joint(params, moments))  # E, eq. (11).
    new_params = _maximise(resp, moments, covariance_type, ridge)  # Eq. (8).
    return new_params, jnp.mean(log_q_x)

  params, curve = jax.lax.scan(em_iteration, init, length=num_iters)
  final = jnp.mean(_posterior(_log_joint(params, moments))[1])
  return params, jnp.concatenate([curve, final[None]])


@functools.partial(
  jax.jit, static_argnames=('num_components', 'covariance_type')
)
def init_from_data(
  key: Array,
  x: Array,
  num_components: int,
  covariance_type: CovarianceType = 'full',
  ridge: float | Array = DEFAULT_RIDGE,
) -> GMMParams:
  """A simple EM start: k-means++ seeding for the means.

  k-means++ (each new mean is a data point drawn with probability proportional
  to its squared distance to the nearest chosen mean) spreads the means over
  the data, which avoids most of the bad local optima of a uniform draw.
  Weights are uniform and every covariance is the (biased) data covariance
  plus `ridge` on the diagonal, so each component starts broad enough to see
  all points. The ridge matters as in `m_step`: `fit` evaluates the start
  before its first M-step, and a feature that is constant over the data (or
  fewer points than dimensions) makes the data covariance singular, which
  gave NaN from the first E-step on. scikit-learn's start adds its
  `reg_covar` the same way.

  Args:
    key: PRNG key.
    x: Data, shape [N, D].
    num_components: K.
    covariance_type: 'full' or 'diag'.
    ridge: Added to the covariance diagonal (see `DEFAULT_RIDGE`).

  Returns:
    Parameters in the dtype of `x`.
  """
  x = jnp.asarray(x)
  n, d = x.shape
  first_key, rest_key = jax.random.split(key)
  first = x[jax.random.randint(first_key, (), 0, n)]
  means = jnp.zeros((num_components, d), x.dtype).at[0].set(first)
  dist2 = jnp.sum((x - first) ** 2, axis=-1)

  def add_mean(k: int, carry: tuple[Array, Array]) -> tuple[Array, Array]:
    means, dist2 = carry
    # log(0) = -inf: points already chosen are never drawn again.
    idx = jax.random.categorical(
      jax.random.fold_in(rest_key, k), jnp.log(dist2)
    )
    means = means.at[k].set(x[idx])
    dist2 = jnp.minimum(dist2, jnp.sum((x - x[idx]) ** 2, axis=-1))
    return means, dist2

  means, _ = jax.lax.fori_loop(1, num_components, add_mean, (means, dist2))
  centred = x - jnp.mean(x, axis=0)
  if covariance_type == 'full':
    cov = centred.T @ centred / n + ridge * jnp.eye(d, dtype=x.dtype)
    covariances = jnp.broadcast_to(cov, (num_components, d, d))
  elif covariance_type == 'diag':
    var = jnp.mean(centred * centred, axis=0) + ridge
    covariances = jnp.broadcast_to(var, (num_components, d))
  else:
    raise ValueError(f'Unknown covariance_type {covariance_type!r}.')
  weights = jnp.full((num_components,), 1.0 / num_components, x.dtype)
  return GMMParams(weights, means, covariances)
