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
from jax.scipy.special import logsumexp

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


def _log_gaussian(params: GMMParams, x: Array) -> Array:
  """log N(x_n; mu_k, Sigma_k) for all n, k, shape [N, K]."""
  x = jnp.asarray(x)
  d = x.shape[-1]
  log_2pi = d * math.log(2 * math.pi)
  if covariance_type_of(params) == 'full':

    def one_component(mean: Array, cov: Array) -> Array:
      chol = cholesky(cov, lower=True)
      # Whitened residuals L^-1 (x - mu): their squared norm is the
      # Mahalanobis distance, and log|Sigma| = 2 sum log diag L.
      z = solve_triangular(chol, (x - mean).T, lower=True)
      log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
      return -0.5 * (log_2pi + log_det + jnp.sum(z * z, axis=0))

    return jax.vmap(one_component, out_axes=1)(params.means, params.covariances)
  var = params.covariances
  diff = x[:, None, :] - params.means[None, :, :]
  maha = jnp.sum(diff * diff / var[None], axis=-1)
  log_det = jnp.sum(jnp.log(var), axis=-1)
  return -0.5 * (log_2pi + log_det[None, :] + maha)


def _log_joint(params: GMMParams, x: Array) -> Array:
  """log q(x_n, z=k) = log w_k + log N(x_n; mu_k, Sigma_k), shape [N, K]."""
  return jnp.log(params.weights)[None, :] + _log_gaussian(params, x)


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
  return logsumexp(_log_joint(params, x), axis=-1)


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
  log_joint = _log_joint(params, x)
  return jnp.exp(log_joint - logsumexp(log_joint, axis=-1, keepdims=True))


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
  """
  x = jnp.asarray(x)
  resp = jnp.asarray(responsibilities, x.dtype)
  # As in scikit-learn, a tiny floor keeps an empty component's mean finite.
  nk = jnp.sum(resp, axis=0) + 10 * jnp.finfo(x.dtype).eps
  weights = nk / jnp.sum(nk)
  means = (resp.T @ x) / nk[:, None]
  # Centred residuals (rather than E[xx^T] - mu mu^T) avoid cancellation in
  # float32.
  diff = x[None, :, :] - means[:, None, :]  # [K, N, D]
  if covariance_type == 'full':
    cov = jnp.einsum('nk,knd,kne->kde', resp, diff, diff) / nk[:, None, None]
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    cov = cov + ridge * jnp.eye(x.shape[-1], dtype=x.dtype)
  elif covariance_type == 'diag':
    cov = jnp.einsum('nk,knd->kd', resp, diff * diff) / nk[:, None]
    cov = cov + ridge
  else:
    raise ValueError(f'Unknown covariance_type {covariance_type!r}.')
  return GMMParams(weights, means, cov.astype(x.dtype))


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

  def em_iteration(params: GMMParams, _) -> tuple[GMMParams, Array]:
    log_joint = _log_joint(params, x)
    log_q_x = logsumexp(log_joint, axis=-1, keepdims=True)
    resp = jnp.exp(log_joint - log_q_x)  # E-step, eq. (11).
    new_params = m_step(x, resp, covariance_type, ridge)  # M-step, eq. (8).
    return new_params, jnp.mean(log_q_x)

  params, curve = jax.lax.scan(em_iteration, init, length=num_iters)
  final = jnp.mean(log_likelihood(params, x))
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
