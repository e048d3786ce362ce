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

from vi_gen import compiler

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


def _log_joint(params: GMMParams, x: Array) -> Array:
  """log q(x_n, z=k) = log w_k + log N(x_n; mu_k, Sigma_k), shape [N, K].

  The Mahalanobis distance is the squared norm of the residual whitened by
  L_k^-1 (Sigma_k = L_k L_k^T), as scikit-learn computes it, one component
  at a time (`lax.map`): XLA:CPU ran the batched float64 product
  [N, D] @ [D, K*D] 6x slower at D = 16 (float32 alike either way).
  """
  d = x.shape[-1]
  if covariance_type_of(params) == 'full':
    chol = cholesky(params.covariances, lower=True)
    eye = jnp.broadcast_to(jnp.eye(d, dtype=chol.dtype), chol.shape)
    whiten = solve_triangular(chol, eye, lower=True)  # L^-1, [K, D, D].
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, 0, 1, 2)), axis=-1)

    def whitened(residual: Array, w: Array) -> Array:
      return residual @ w.T

  else:
    whiten = jax.lax.rsqrt(params.covariances)  # [K, D].
    log_det = jnp.sum(jnp.log(params.covariances), axis=-1)

    def whitened(residual: Array, w: Array) -> Array:
      return residual * w

  def mahalanobis(component: tuple[Array, Array]) -> Array:
    mean, w = component
    z = whitened(x - mean, w)
    return jnp.sum(z * z, axis=-1)

  maha = jax.lax.map(mahalanobis, (params.means, whiten)).T
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
  return _posterior(_log_joint(params, jnp.asarray(x)))[1]


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
  return _posterior(_log_joint(params, jnp.asarray(x)))[0]


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
  if covariance_type not in ('full', 'diag'):
    raise ValueError(f'Unknown covariance_type {covariance_type!r}.')
  x = jnp.asarray(x)
  resp = jnp.asarray(responsibilities, x.dtype)
  n, d = x.shape
  # Counts and sums in one product (a sum over N of [N, K] is slow on
  # XLA:CPU). As in scikit-learn, a tiny floor keeps an empty component's
  # mean finite (it becomes 0).
  sums = resp.T @ jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
  nk = sums[:, -1] + 10 * jnp.finfo(x.dtype).eps
  weights = nk / jnp.sum(nk)
  means = sums[:, :-1] / nk[:, None]

  # Centred residuals (rather than E[xx^T] - mu mu^T, which cancels in
  # float32 and then breaks the Cholesky factorisation of thin components),
  # one component at a time: XLA:CPU ran the batched form (an einsum over
  # [K, N, D]) 8x slower at D = 16.
  def scatter(component: tuple[Array, Array]) -> Array:
    mean, r = component
    y = (x - mean) * jnp.sqrt(r)[:, None]
    if covariance_type == 'full':
      return y.T @ y
    return jnp.sum(y * y, axis=0)

  scatters = jax.lax.map(scatter, (means, resp.T))
  if covariance_type == 'full':
    cov = scatters / nk[:, None, None]
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    cov = cov + ridge * jnp.eye(d, dtype=x.dtype)
  else:
    cov = scatters / nk[:, None] + ridge
  return GMMParams(weights, means, cov.astype(x.dtype))


# EM's XLA:CPU options (`compiler.MIXTURE`): its reductions outside
# YNNPACK, 2x faster on 2-D data; its dots inside (see compiler.py).
@functools.partial(
  compiler.jit, library_fusions=compiler.MIXTURE, static_argnames='num_iters'
)
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
    resp, log_q_x = _posterior(_log_joint(params, x))  # E-step, eq. (11).
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
