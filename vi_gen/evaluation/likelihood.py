"""Likelihood bounds of latent-variable models: the IWAE bound and the ELBO.

Burda et al. 2016 (arXiv:1509.00519): with z_k ~ p(z|x) (the encoder) and
w_k = q(x|z_k) q(z_k) / p(z_k|x) (the paper's names: q is the generative
model, p(z|x) the encoder),

  log p_K(x) = logsumexp_k log w_k - log K <= log q(x),

non-decreasing in K and tending to log q(x); K = 1 is the ELBO, eq. (7)
negated. The IWAE paper reports K = 5000. Samples are drawn in chunks under
`lax.scan`, so memory holds one chunk whatever K is.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_LOG_2PI = math.log(2.0 * math.pi)


class Bounds(NamedTuple):
  """Per-example bounds on log q(x), in nats, shape [B]."""

  iwae: jax.Array
  elbo: jax.Array


def iwae_bound(
  key: jax.Array,
  mean: jax.Array,
  logvar: jax.Array,
  log_likelihood_fn: Callable[[jax.Array], jax.Array],
  num_samples: int,
  chunk_size: int,
) -> Bounds:
  """The K-sample IWAE bound and the K-sample ELBO estimate of log q(x).

  Both use the same samples: the ELBO is the mean of the log-weights, the
  IWAE bound their log-mean-exp. The prior is N(0, I), the encoder
  N(mean, diag exp(logvar)).

  Args:
    key: PRNG key for the samples.
    mean: [B, L] encoder means.
    logvar: [B, L] encoder log-variances.
    log_likelihood_fn: z [B, L] -> log q(x|z) [B] (the decoder's density of
      the examples the encoder saw, in the same order).
    num_samples: K, a multiple of `chunk_size`.
    chunk_size: samples per chunk (memory: chunk_size decoder batches).

  Returns:
    Bounds(iwae [B], elbo [B]) in nats.
  """
  if num_samples % chunk_size:
    raise ValueError(
      f'num_samples={num_samples} must be a multiple of chunk_size='
      f'{chunk_size}.'
    )
  std = jnp.exp(0.5 * logvar)

  def chunk(carry, chunk_key):
    log_sum, total = carry
    eps = jax.random.normal(chunk_key, (chunk_size, *mean.shape), mean.dtype)
    z = mean + std * eps
    # log N(z; mean, var) with (z - mean) / std = eps; log N(z; 0, I).
    log_posterior = -0.5 * jnp.sum(eps**2 + logvar + _LOG_2PI, axis=-1)
    log_prior = -0.5 * jnp.sum(z**2 + _LOG_2PI, axis=-1)
    log_w = jax.vmap(log_likelihood_fn)(z) + log_prior - log_posterior
    log_sum = jnp.logaddexp(log_sum, jax.nn.logsumexp(log_w, axis=0))
    return (log_sum, total + jnp.sum(log_w, axis=0)), None

  batch = mean.shape[:1]
  init = (jnp.full(batch, -jnp.inf, mean.dtype), jnp.zeros(batch, mean.dtype))
  keys = jax.random.split(key, num_samples // chunk_size)
  (log_sum, total), _ = jax.lax.scan(chunk, init, keys)
  return Bounds(log_sum - math.log(num_samples), total / num_samples)


def bits_per_dim(
  nll_nats: float, num_dims: int, bin_width: float | None = None
) -> float:
  """nats per example -> bits per dimension.

  For a continuous density of data quantised in bins of `bin_width`,
  P(bin) ~= p(x) bin_width^D, so the discrete NLL is nll - D log bin_width;
  `bin_width=None` takes `nll_nats` as a discrete NLL already.
  """
  if bin_width is not None:
    nll_nats -= num_dims * math.log(bin_width)
  return nll_nats / (num_dims * math.log(2.0))


# The pixel grid of `vi_gen.data.to_unit_range`: k / 127.5 - 1.
PIXEL_BIN_WIDTH = 2.0 / 255.0


def summarize(values: np.ndarray) -> tuple[float, float]:
  """Mean and its standard error over examples."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))
