"""Distances between feature sets, on the host in float64.

The conventions are those of the reference implementations, so that the
numbers mean what the field means by them (anchors-ecosystem.md §1):

* FID (Heusel et al. 2017): d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)
  with `scipy.linalg.sqrtm`, unbiased covariances, and the eps * I retry of
  pytorch-fid / clean-fid / jax-fid when the product is singular. Where
  those would fail (the root still complex after the retry, e.g. features of
  scale 1e3 with fewer samples than dimensions), the trace is taken exactly
  from the symmetric form Tr (S1^1/2 S2 S1^1/2)^1/2.
* KID (Binkowski et al. 2018): the unbiased MMD^2 with the polynomial kernel
  (x.y / d + 1)^3, averaged over random subsets (clean-fid's and
  StyleGAN2-ADA's `kid50k` scheme: 100 subsets of 1000).
* IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) per split, mean and
  std over 10 splits.
* MMD with a Gaussian RBF kernel (Gretton et al. 2012) for codes against the
  prior, bandwidth by the median heuristic unless given.
"""

from typing import NamedTuple

import numpy as np
from scipy import linalg
from scipy.spatial import distance
from scipy.special import log_softmax, logsumexp


class Statistics(NamedTuple):
  """The Gaussian fitted to a feature set: mean [d] and covariance [d, d]."""

  mu: np.ndarray
  sigma: np.ndarray


class MeanStd(NamedTuple):
  mean: float
  std: float


def feature_statistics(features: np.ndarray) -> Statistics:
  """Mean and unbiased covariance in float64, as pytorch-fid and TTUR.

  The covariance is [d, d] also for d = 1 (`np.cov` returns a scalar there).
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(
      f'features must be [N >= 2, d], got shape {features.shape}.'
    )
  sigma = np.atleast_2d(np.cov(features, rowvar=False))
  return Statistics(features.mean(axis=0), sigma)


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray | None:
  """(S1 S2)^1/2, real part; None when the imaginary part is not noise."""
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.all(np.isfinite(covmean)):
    return None
  if np.iscomplexobj(covmean):
    # Tolerance of pytorch-fid and clean-fid.
    if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
      return None
    covmean = covmean.real
  return covmean


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """The symmetric square root of a covariance, negative rounding clipped."""
  w, v = np.linalg.eigh(0.5 * (sigma + sigma.T))
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """Tr (S1 S2)^1/2 = Tr (S1^1/2 S2 S1^1/2)^1/2, exact for singular S1, S2.

  S1 S2 is similar to the positive semi-definite S1^1/2 S2 S1^1/2, so the
  eigenvalues of its principal root are the square roots of this matrix's
  (real, non-negative) eigenvalues.
  """
  root1 = _psd_sqrt(sigma1)
  inner = root1 @ sigma2 @ root1
  eigenvalues = np.linalg.eigvalsh(0.5 * (inner + inner.T))
  return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def frechet_distance(
  stats1: Statistics, stats2: Statistics, eps: float = 1e-6
) -> float:
  """The Frechet distance between N(mu1, S1) and N(mu2, S2).

  When the product S1 S2 is singular (fewer samples than dimensions) its
  square root can come out non-finite or complex; then eps * I is added to
  both covariances and the root is taken again (pytorch-fid's fallback).
  When that fails too (pytorch-fid raises), the trace of the root is taken
  from the symmetric form (`_trace_sqrt_product`), exact for singular
  covariances.

  Raises:
    ValueError: statistics of different dimensions.
  """
  mu1, mu2 = (
    np.atleast_1d(np.asarray(s.mu, np.float64)) for s in (stats1, stats2)
  )
  sigma1, sigma2 = (
    np.atleast_2d(np.asarray(s.sigma, np.float64)) for s in (stats1, stats2)
  )
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(
      f'Statistics of different dimensions: {mu1.shape} and {mu2.shape}.'
    )
  covmean = _sqrtm_product(sigma1, sigma2)
  if covmean is None:
    offset = eps * np.eye(len(mu1))
    covmean = _sqrtm_product(sigma1 + offset, sigma2 + offset)
  if covmean is None:
    trace_covmean = _trace_sqrt_product(sigma1, sigma2)
  else:
    trace_covmean = np.trace(covmean)
  diff = mu1 - mu2
  return float(
    diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
  )


def _unbiased_mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
  """Unbiased MMD^2 from the three Gram matrices (diagonals of kxx, kyy
  excluded), Gretton et al. 2012, eq. (3)."""
  m, n = len(kxx), len(kyy)
  xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
  yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
  return float(xx + yy - 2.0 * kxy.mean())


def kernel_distance(
  features1: np.ndarray,
  features2: np.ndarray,
  num_subsets: int = 100,
  subset_size: int = 1000,
  seed: int = 0,
) -> MeanStd:
  """KID: unbiased MMD^2, kernel (x.y / d + 1)^3, over random subsets.

  Each subset draws min(subset_size, N1, N2) rows of each set without
  replacement (clean-fid's `kernel_distance`); returns the mean and the std
  of the per-subset estimates. Often reported x 1e3.
  """
  x = np.asarray(features1, np.float64)
  y = np.asarray(features2, np.float64)
  d = x.shape[1]
  m = min(subset_size, len(x), len(y))
  if m < 2:
    raise ValueError(f'KID needs >= 2 samples per set, got {len(x)}, {len(y)}.')
  rng = np.random.default_rng(seed)

  def kernel(a, b):
    return (a @ b.T / d + 1.0) ** 3

  estimates = []
  for _ in range(num_subsets):
    xs = x[rng.choice(len(x), m, replace=False)]
    ys = y[rng.choice(len(y), m, replace=False)]
    estimates.append(
      _unbiased_mmd2(kernel(xs, xs), kernel(ys, ys), kernel(xs, ys))
    )
  return MeanStd(float(np.mean(estimates)), float(np.std(estimates)))


def inception_score(logits: np.ndarray, num_splits: int = 10) -> MeanStd:
  """IS = exp(E_x KL(p(y|x) || p(y))) on each of `num_splits` contiguous
  splits (p(y) is the split's mean); mean and std over the splits.

  In log space throughout: log p(y) is a log-mean-exp, and a class of
  probability 0 for an example (a logit of -inf, or one so far below the
  others that exp underflows) adds 0 log 0 = 0 to its KL, not NaN.
  """
  log_p = log_softmax(np.asarray(logits, np.float64), axis=-1)
  if len(log_p) < num_splits:
    raise ValueError(f'{len(log_p)} samples for {num_splits} splits.')
  scores = []
  for part in np.array_split(log_p, num_splits):
    log_py = logsumexp(part, axis=0) - np.log(len(part))
    p = np.exp(part)
    with np.errstate(invalid='ignore'):
      terms = np.where(p > 0, p * (part - log_py), 0.0)
    kl = np.sum(terms, axis=-1)
    scores.append(np.exp(np.mean(kl)))
  return MeanStd(float(np.mean(scores)), float(np.std(scores)))


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
  """The median heuristic: the median Euclidean distance between distinct
  points of the pooled sample (Gretton et al. 2012, §8).

  Distances come from the differences themselves, not |a|^2 + |b|^2 - 2 a.b,
  which cancels to 0 far from the origin. When more than half of the pairs
  coincide (duplicated points, e.g. a collapsed encoder) that median is 0, a
  kernel of zero width; then it is the median over the pairs at a positive
  distance, and 1 when all points coincide (every kernel value is then 1,
  whatever the width).
  """
  pooled = np.concatenate([x, y]).astype(np.float64)
  distances = distance.pdist(pooled)
  median = float(np.median(distances))
  if median > 0:
    return median
  positive = distances[distances > 0]
  return float(np.median(positive)) if positive.size else 1.0


def rbf_mmd2(
  x: np.ndarray, y: np.ndarray, bandwidth: float | None = None
) -> tuple[float, float]:
  """Unbiased MMD^2 with k(a, b) = exp(-||a - b||^2 / (2 bandwidth^2)).

  Args:
    x: [m, d] samples of one distribution (e.g. codes E(x)).
    y: [n, d] samples of the other (e.g. prior samples).
    bandwidth: the kernel's sigma; None = `median_bandwidth(x, y)`.

  Returns:
    (MMD^2, the bandwidth used).
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if min(len(x), len(y)) < 2:
    raise ValueError(f'MMD needs >= 2 samples per set, got {len(x)}, {len(y)}.')
  if bandwidth is None:
    bandwidth = median_bandwidth(x, y)
  if not bandwidth > 0:
    raise ValueError(f'The bandwidth must be > 0, got {bandwidth}.')

  def kernel(a, b):
    # Distances from the differences (no cancellation far from the origin),
    # divided by the bandwidth before squaring (no underflow of bw^2).
    scaled = distance.cdist(a, b) / bandwidth
    return np.exp(-0.5 * scaled**2)

  return _unbiased_mmd2(kernel(x, x), kernel(y, y), kernel(x, y)), bandwidth
