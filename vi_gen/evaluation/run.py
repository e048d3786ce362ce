"""`Evaluator`: the metrics that apply to a trained model
(`inference.evaluate` runs it on the latest checkpoint, the training loop
every few steps).

The evaluation names no model: the data decides the sample-quality groups
(FID/KID on images, modes on 2-D mixtures), the model declares the rest in
`method.eval_groups` and hands over the functions they call (`generate`,
`reconstruct`, `log_likelihood_bounds`, `log_likelihood`); `vi_gen.data`
draws the real examples. Each group, registered by name in `GROUPS`
(`eval.metrics` names groups explicitly, empty = every group that
applies):

* `classifier` (MNIST): FID and KID on the penultimate features of the
  project's MNIST classifier (`mnist_classifier.py`), the offline metric the
  MNIST experiments report.
* `inception` (images): FID, KID and IS on Inception-v3 pool3 / logits, with
  the weights file `eval.inception_weights`. Without it the group is skipped
  with one log line, or is an error when named in `eval.metrics`.
* `modes` (2-D mixtures): modes captured, high-quality share, reverse KL.
* `likelihood` (models with `log_likelihood_bounds`, the VAE): IWAE bound
  and ELBO, nats and bits/dim.
* `autoencoder` (models with `reconstruct`, the AAE and ALI): reconstruction
  error of G(E(x)) and MMD^2 of the codes E(x) to the prior N(0, I).
* `heldout_likelihood` (models with an exact `log_likelihood`, EM): held-out
  log-likelihood.

Everything is a function of `eval.seed`; every number is written with its
recipe (sample counts, reference split, preprocessing, weights' SHA-256) to
`workdir/eval_<step>.json`. `Evaluator` is built once (reference statistics
are computed on first use and cached on disk), then called per checkpoint,
so the training loop can call it every `eval_every_steps`.
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from vi_gen import data, errors
from vi_gen.evaluation import (
  inception,
  likelihood,
  metrics,
  mnist_classifier,
)
from vi_gen.evaluation import modes as mode_metrics
from vi_gen.evaluation.defaults import get_config
from vi_gen.state import TrainState

GROUPS = (
  'classifier',
  'inception',
  'modes',
  'likelihood',
  'autoencoder',
  'heldout_likelihood',
)
# Generated and real images alike (CelebA's bicubic resize overshoots and
# leaves the grid; MNIST is on it already), as images saved as 8-bit files.
QUANTIZATION = 'clipped to [-1, 1], rounded to the 8-bit grid k/127.5 - 1'


def applicable_groups(
  config: ml_collections.ConfigDict, method_groups: tuple[str, ...]
) -> tuple[str, ...]:
  """The metric groups that make sense for this data and model.

  Args:
    config: the run's config (its data decides the sample-quality groups).
    method_groups: the groups the model declares (`method.eval_groups`).
  """
  groups = []
  name = config.data.name
  if name == 'mnist':
    groups.append('classifier')
  if name in data.IMAGE_DATASETS:
    groups.append('inception')
  if name in data.MIXTURES:
    groups.append('modes')
  return tuple(groups) + tuple(method_groups)


def select_groups(
  config: ml_collections.ConfigDict,
  eval_config: ml_collections.ConfigDict,
  method_groups: tuple[str, ...],
) -> tuple[tuple[str, ...], dict[str, str]]:
  """(groups to compute, {skipped group: why}).

  Raises:
    errors.ConfigError: a requested group is unknown or does not apply, or
      `inception` was requested without a weights file.
  """
  applicable = applicable_groups(config, method_groups)
  requested = tuple(eval_config.metrics)
  for group in requested:
    if group not in GROUPS:
      raise errors.ConfigError(
        f'Unknown eval.metrics entry {group!r}; known: {GROUPS}.'
      )
    if group not in applicable:
      raise errors.ConfigError(
        f'eval.metrics {group!r} does not apply to model {config.model!r} on'
        f' {config.data.name!r}; these do: {applicable}.'
      )
  no_weights = not eval_config.inception_weights
  if 'inception' in requested and no_weights:
    raise errors.ConfigError(
      'eval.metrics asks for inception (FID/KID/IS) but'
      ' eval.inception_weights is empty. Convert the pytorch-fid weights'
      ' with `python -m vi_gen.evaluation.convert_inception` and pass the'
      ' .npz as --config.eval.inception_weights.'
    )
  groups = requested or applicable
  skipped = {}
  if 'inception' in groups and no_weights:
    skipped['inception'] = (
      'no eval.inception_weights file (no download offline); see'
      ' vi_gen.evaluation.convert_inception'
    )
    groups = tuple(g for g in groups if g != 'inception')
  return groups, skipped


def quantize(images: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] as 8-bit images would hold them (QUANTIZATION)."""
  levels = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5)
  return (levels / 127.5 - 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
  """A feature network: images -> (features, logits), and its identity."""

  name: str
  apply: Callable[[np.ndarray], tuple[jax.Array, jax.Array]]
  recipe: dict

  def __call__(
    self, images: np.ndarray, batch_size: int
  ) -> tuple[np.ndarray, np.ndarray]:
    """Features and logits of all `images`, float32, in batches."""
    features, logits = [], []
    for i in range(0, len(images), batch_size):
      f, lg = self.apply(images[i : i + batch_size])
      features.append(np.asarray(f, np.float32))
      logits.append(np.asarray(lg, np.float32))
    return np.concatenate(features), np.concatenate(logits)


def classifier_extractor(path: str) -> FeatureExtractor:
  """The MNIST classifier's features (MNIST-FID); `path` '' = the bundled
  weights."""
  path = path or str(mnist_classifier.WEIGHTS_PATH)
  params = mnist_classifier.load(path)
  return FeatureExtractor(
    'mnist_classifier',
    functools.partial(mnist_classifier.features_and_logits, params),
    {
      'network': 'vi_gen MNIST classifier, 128-d penultimate features',
      'weights': os.path.basename(path),
      'weights_sha256': inception.sha256(path),
    },
  )


def inception_extractor(path: str) -> FeatureExtractor:
  """Inception-v3 pool3 features and logits (FID, KID, IS) from the
  converted weights at `path`."""
  variables = inception.load_variables(path)
  return FeatureExtractor(
    'inception',
    functools.partial(inception.features_and_logits, variables),
    {
      'network': 'FID Inception-v3 (pytorch-fid port of TF 2015-12-05),'
      ' pool3 2048-d; IS on the 1008 logits',
      'weights': os.path.basename(path),
      'weights_sha256': inception.sha256(path),
      'resize': f'to {inception.IMAGE_SIZE}x{inception.IMAGE_SIZE},'
      f' {inception.RESIZE_METHOD}; grey repeated to RGB',
    },
  )


class Evaluator:
  """Built once per config; `evaluator(state, step)` computes every metric.

  Attributes:
    groups: the metric groups it computes.
    skipped: {group: why} for applicable groups it cannot compute.
    extractors: {group: FeatureExtractor} of the feature-based groups.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str,
    method,
    eval_config: ml_collections.ConfigDict | None = None,
  ):
    """
    Args:
      config: the model's config.
      workdir: where reference statistics are cached (under
        `eval_reference/`) unless `eval.reference_dir` is set.
      method: the model (the interface of `vi_gen.methods`).
      eval_config: the `eval` block; default `config.eval`, else
        `get_config()`.
    """
    if eval_config is None:
      eval_config = config.eval if 'eval' in config else get_config()
    self.config = config
    self.eval = eval_config
    self.example_shape = data.example_shape(config.data)
    self.method = method
    self.groups, self.skipped = select_groups(
      config, eval_config, method.eval_groups
    )
    for group, why in self.skipped.items():
      logging.warning('Evaluation: %s metrics skipped: %s.', group, why)
    self.reference_dir = eval_config.reference_dir or os.path.join(
      workdir, 'eval_reference'
    )
    self.key = jax.random.key(eval_config.seed)
    self._generate = jax.jit(self.method.generate)
    self._reference = {}
    self._reference_statistics = {}
    self.extractors = {}
    if 'classifier' in self.groups:
      self.extractors['classifier'] = classifier_extractor(
        eval_config.mnist_classifier
      )
    if 'inception' in self.groups:
      self.extractors['inception'] = inception_extractor(
        eval_config.inception_weights
      )
    # Group name -> state -> (metrics, recipe).
    self._group_functions = {
      'classifier': functools.partial(
        self._feature_metrics, group='classifier', prefix='mnist_'
      ),
      'inception': functools.partial(
        self._feature_metrics, group='inception', prefix=''
      ),
      'modes': self._modes,
      'likelihood': self._likelihood,
      'autoencoder': self._autoencoder,
      'heldout_likelihood': self._heldout_likelihood,
    }

  # ------------------------------------------------------------ the data ---

  @functools.cached_property
  def real(self) -> tuple[np.ndarray, str]:
    """(`num_reference` real examples, what they are)."""
    return data.evaluation_examples(
      self.config, self.eval.num_reference, self.eval.split, self.eval.seed
    )

  def heldout(self) -> tuple[np.ndarray, str]:
    """The first `num_heldout` real examples, and what they are."""
    x, source = self.real
    n = min(self.eval.num_heldout, len(x))
    return x[:n], f'the first {n} of {source}'

  def samples(self, state: TrainState, num: int, stream: int) -> np.ndarray:
    """`num` samples of the model, float32; latents from (seed, stream)."""
    return generate_in_chunks(
      self.method,
      self._generate,
      state,
      jax.random.fold_in(self.key, stream),
      num,
      self.eval.batch_size,
    )

  # ----------------------------------------------------------- the groups ---
  # Jitted once per Evaluator, so that calling it every few steps of a
  # training run compiles nothing after the first call.

  @functools.cached_property
  def _bounds(self) -> Callable:
    return jax.jit(
      self.method.log_likelihood_bounds,
      static_argnames=('num_samples', 'chunk_size'),
    )

  @functools.cached_property
  def _reconstruct(self) -> Callable:
    return jax.jit(self.method.reconstruct)

  def reference_features(self, group: str) -> np.ndarray:
    """Features of the real examples, cached in memory and on disk (by
    recipe, so a change of data, N or network computes them anew)."""
    if group in self._reference:
      return self._reference[group]
    extractor = self.extractors[group]
    x, source = self.real
    recipe = {
      'source': source,
      'num': len(x),
      'quantization': QUANTIZATION,
      **extractor.recipe,
    }
    digest = hashlib.sha256(
      json.dumps(recipe, sort_keys=True).encode()
    ).hexdigest()[:16]
    path = os.path.join(self.reference_dir, f'{extractor.name}_{digest}.npz')
    if os.path.isfile(path):
      with np.load(path, allow_pickle=False) as f:
        features = f['features']
    else:
      features, _ = extractor(quantize(x), self.eval.batch_size)
      os.makedirs(self.reference_dir, exist_ok=True)
      with open(path, 'wb') as f:
        np.savez(f, features=features, recipe=json.dumps(recipe))
      logging.info('Evaluation: cached reference features in %s.', path)
    self._reference[group] = features
    return features

  def reference_statistics(self, group: str) -> metrics.Statistics:
    """FID's mean and covariance of the reference features, once per
    Evaluator (an evaluation every few training steps reuses them)."""
    if group not in self._reference_statistics:
      features = self.reference_features(group)
      self._reference_statistics[group] = metrics.feature_statistics(features)
    return self._reference_statistics[group]

  def _feature_metrics(
    self, state: TrainState, group: str, prefix: str
  ) -> tuple[dict, dict]:
    """FID and KID (and IS for Inception) of generated vs real features."""
    extractor = self.extractors[group]
    real = self.reference_features(group)
    samples = quantize(self.samples(state, self.eval.num_samples, stream=0))
    fake, logits = extractor(samples, self.eval.batch_size)
    kid = metrics.kernel_distance(
      fake,
      real,
      self.eval.kid_subsets,
      self.eval.kid_subset_size,
      self.eval.seed,
    )
    results = {
      f'{prefix}fid': metrics.frechet_distance(
        metrics.feature_statistics(fake), self.reference_statistics(group)
      ),
      f'{prefix}kid': kid.mean,
      f'{prefix}kid_std': kid.std,
    }
    if group == 'inception':
      score = metrics.inception_score(logits, self.eval.is_splits)
      results.update(inception_score=score.mean, inception_score_std=score.std)
    recipe = {
      **extractor.recipe,
      'num_generated': len(fake),
      'reference': self.real[1],
      'num_reference': len(real),
      'images': QUANTIZATION,
      'generator': 'the EMA generator when the run keeps one',
      'fid': 'float64, unbiased covariances, scipy sqrtm, eps 1e-6 retry',
      'kid': f'unbiased MMD^2, (x.y/d + 1)^3, {self.eval.kid_subsets} subsets'
      f' of min({self.eval.kid_subset_size}, N)',
    }
    if group == 'inception':
      recipe['inception_score'] = f'{self.eval.is_splits} splits'
    return results, recipe

  def _modes(self, state: TrainState) -> tuple[dict, dict]:
    centers, std = data.mixture_centers(self.config.data.name)
    num = self.eval.num_mode_samples
    samples = self.samples(state, num, stream=1)
    results = mode_metrics.mode_metrics(samples, centers, std)
    recipe = {
      'num_generated': num,
      'high_quality': 'within 3 std of the nearest mode (VEEGAN)',
      'modes': 'modes nearest to >= 1 high-quality sample',
      'reverse_kl': 'KL(histogram of high-quality samples || uniform)',
    }
    return results, recipe

  def _bits_per_dim(self) -> int | None:
    """D for bits/dim (images only; for 2-D points it means nothing)."""
    if len(self.example_shape) == 1:
      return None
    return math.prod(self.example_shape)

  def _likelihood(self, state: TrainState) -> tuple[dict, dict]:
    x, source = self.heldout()
    iwae, elbo = [], []
    key = jax.random.fold_in(self.key, 2)
    for start in range(0, len(x), self.eval.batch_size):
      b = self._bounds(
        state,
        jnp.asarray(x[start : start + self.eval.batch_size]),
        jax.random.fold_in(key, start),
        num_samples=self.eval.iwae_samples,
        chunk_size=min(self.eval.iwae_chunk, self.eval.iwae_samples),
      )
      iwae.append(np.asarray(b.iwae))
      elbo.append(np.asarray(b.elbo))
    results = {}
    dims = self._bits_per_dim()
    bin_width = self.method.likelihood_bin_width
    for name, values in (('iwae', iwae), ('elbo', elbo)):
      nll, se = likelihood.summarize(-np.concatenate(values))
      results[f'{name}_nll_nats'] = nll
      results[f'{name}_nll_nats_se'] = se
      if dims:
        results[f'{name}_bits_per_dim'] = likelihood.bits_per_dim(
          nll, dims, bin_width
        )
    recipe = {
      'data': source,
      'num_examples': len(x),
      'iwae_samples': self.eval.iwae_samples,
      'elbo': f'mean log-weight over the same {self.eval.iwae_samples} samples',
      'likelihood': self.method.likelihood_description,
      'networks': 'live encoder and decoder, BatchNorm in eval mode',
    }
    return results, recipe

  def _autoencoder(self, state: TrainState) -> tuple[dict, dict]:
    x, source = self.heldout()
    codes, errors_ = [], []
    for start in range(0, len(x), self.eval.batch_size):
      batch = x[start : start + self.eval.batch_size]
      c, recon = self._reconstruct(state, jnp.asarray(batch))
      codes.append(np.asarray(c, np.float64))
      sq = (np.asarray(recon, np.float64) - batch) ** 2
      errors_.append(sq.reshape(len(batch), -1).mean(axis=1))
    codes = np.concatenate(codes)
    mse, mse_se = likelihood.summarize(np.concatenate(errors_))
    prior = np.asarray(
      self.method.latents(jax.random.fold_in(self.key, 3), len(codes))
    )
    mmd2, bandwidth = metrics.rbf_mmd2(
      codes, prior, self.eval.mmd_bandwidth or None
    )
    results = {
      'reconstruction_mse': mse,
      'reconstruction_mse_se': mse_se,
      'latent_mmd2': mmd2,
    }
    recipe = {
      'data': source,
      'num_examples': len(x),
      'reconstruction': 'mean over elements of (x - G(E(x)))^2 in the'
      ' training range, live networks, BatchNorm in eval mode',
      'latent_mmd2': 'unbiased MMD^2 of E(x) vs as many N(0, I) samples,'
      ' Gaussian RBF exp(-|a-b|^2 / (2 s^2)), s = '
      + (
        f'{bandwidth:.6g} (fixed)'
        if self.eval.mmd_bandwidth
        else f'{bandwidth:.6g} (median heuristic: median pairwise distance'
        ' of the pooled sample)'
      ),
    }
    return results, recipe

  def _heldout_likelihood(self, state: TrainState) -> tuple[dict, dict]:
    x, source = self.heldout()
    values = np.asarray(self.method.log_likelihood(state, x))
    nll, se = likelihood.summarize(-values)
    results = {'heldout_nll_nats': nll, 'heldout_nll_nats_se': se}
    dims = self._bits_per_dim()
    if dims:
      results['heldout_bits_per_dim'] = likelihood.bits_per_dim(
        nll, dims, likelihood.PIXEL_BIN_WIDTH
      )
    recipe = {
      'data': source,
      'num_examples': len(x),
      'likelihood': 'Gaussian-mixture density of the data in the training'
      ' range; for images bits/dim counts bins of width 2/255',
    }
    return results, recipe

  def __call__(self, state: TrainState, step: int) -> dict:
    """Every metric of `state`, with recipes; nothing is written."""
    results, recipes = {}, {}
    for group in self.groups:
      values, recipe = self._group_functions[group](state)
      results.update(values)
      recipes[group] = {'seed': self.eval.seed, **recipe}
    return {
      'step': int(step),
      'model': self.config.model,
      'data': self.config.data.name,
      'metrics': results,
      'recipes': recipes,
      'skipped': dict(self.skipped),
    }


def generate_in_chunks(
  method,
  generate: Callable,
  state,
  key: jax.Array,
  num: int,
  batch_size: int,
) -> np.ndarray:
  """`num` samples, float32, `batch_size` per call of `generate` (the
  method's jitted `generate`); chunk i's latents come from fold_in(key,
  start of chunk i), so the samples depend on num only by truncation."""
  chunks = []
  for start in range(0, num, batch_size):
    size = min(batch_size, num - start)
    z = method.latents(jax.random.fold_in(key, start), size)
    chunks.append(np.asarray(jax.device_get(generate(state, z)), np.float32))
  return np.concatenate(chunks)


def to_json(results: dict) -> str:
  """`results` as JSON, NaN and inf as null (JSON has no NaN)."""

  def clean(value):
    if isinstance(value, dict):
      return {k: clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
      return None
    return value

  return json.dumps(clean(results), indent=2, allow_nan=False)


def write_results(workdir: str, results: dict) -> str:
  """Writes `workdir/eval_<step>.json`; returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, f'eval_{results["step"]}.json')
  with open(path, 'w') as f:
    f.write(to_json(results))
  return path


def report(
  results: dict, workdir: str, writer: metric_writers.MetricWriter
) -> None:
  """Writes eval_<step>.json (process 0) and logs the finite metrics as
  eval/<name>."""
  scalars = {
    f'eval/{name}': value
    for name, value in results['metrics'].items()
    if math.isfinite(value)
  }
  writer.write_scalars(results['step'], scalars)
  if jax.process_index() == 0:
    path = write_results(workdir, results)
    logging.info(
      'Evaluation at step %d: %s (%s)', results['step'], scalars, path
    )
