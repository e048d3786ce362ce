"""The MNIST classifier, MNIST-FID's ranking, and `evaluate` end to end."""

import json
import logging
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from configs import aae as aae_config
from configs import ali as ali_config
from configs import em as em_config
from configs import gan as gan_config
from configs import vae as vae_config
from vi_gen import (
  checkpoint,
  data,
  errors,
  experiment,
  inference,
  methods,
  testing,
  train,
)
from vi_gen.evaluation import (
  defaults,
  inception,
  metrics,
  mnist_classifier,
  run,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_METRICS = {'mnist_fid', 'mnist_kid', 'mnist_kid_std'}
MODE_METRICS = {'modes', 'high_quality', 'reverse_kl'}
SKIPPED_INCEPTION = {'inception'}


@pytest.fixture(scope='module')
def mnist():
  return mnist_classifier.bundled_mnist()


def small_eval(**overrides):
  config = defaults.get_config()
  config.num_samples = 200
  config.num_reference = 500
  config.batch_size = 100
  config.kid_subsets = 10
  config.kid_subset_size = 100
  config.num_mode_samples = 500
  config.num_heldout = 16
  config.iwae_samples = 20
  config.iwae_chunk = 10
  config.update(overrides)
  return config


def random_state(method, seed: int = 0):
  """A train state of `method`'s shapes filled at random (BatchNorm
  variances 1): the evaluation's plumbing needs no trained networks, and
  compiling `init` of the DCGANs takes about 20 s on a CPU."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if jnp.issubdtype(leaf.dtype, jnp.integer):
      return jnp.zeros(leaf.shape, leaf.dtype)
    if jax.tree_util.keystr(path).endswith("['var']"):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.asarray(rng.normal(0, 0.05, leaf.shape), leaf.dtype)

  abstract = jax.eval_shape(method.init, jax.random.key(0))
  return jax.tree_util.tree_map_with_path(fill, abstract)


def test_shipped_classifier_reaches_98_percent_on_the_held_out_digits(mnist):
  images, labels = mnist
  n = mnist_classifier.NUM_TRAIN
  params = mnist_classifier.load()
  assert mnist_classifier.accuracy(params, images[n:], labels[n:]) >= 0.98
  assert os.path.getsize(mnist_classifier.WEIGHTS_PATH) < 1_000_000


def test_standardize_gives_unit_variance_features_and_keeps_the_logits(mnist):
  images = mnist[0][:1000]
  params = mnist_classifier.load()
  # The same classifier with features three times larger.
  scaled = {
    **params,
    'Dense_0': jax.tree.map(lambda x: 3 * x, params['Dense_0']),
    'Dense_1': {**params['Dense_1'], 'kernel': params['Dense_1']['kernel'] / 3},
  }
  features, logits = mnist_classifier.predict(
    mnist_classifier.standardize(scaled, images), images
  )
  assert np.mean(np.var(features, axis=0)) == pytest.approx(1.0, rel=1e-4)
  _, expected = mnist_classifier.predict(params, images)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_mnist_fid_ranks_real_digits_below_blurred_ones_below_noise(mnist):
  """Held-out digits against the classifier's training digits: real <
  blurred (an imperfect model) < uniform noise, for FID and KID."""
  images, _ = mnist
  n = mnist_classifier.NUM_TRAIN
  extract = run.classifier_extractor('')
  # Every other image: half the CPU time, the same ranking.
  reference, _ = extract(images[:n:2], 1000)
  held_out = images[n::2]
  blurred = run.quantize(
    ndimage.gaussian_filter(held_out, sigma=(0, 1.0, 1.0, 0), mode='nearest')
  )
  noise = run.quantize(
    np.random.default_rng(0).uniform(-1, 1, held_out.shape)
  ).astype(np.float32)
  fids, kids = [], []
  for x in (held_out, blurred, noise):
    features, _ = extract(x, 1000)
    fids.append(
      metrics.frechet_distance(
        metrics.feature_statistics(features),
        metrics.feature_statistics(reference),
      )
    )
    kids.append(metrics.kernel_distance(features, reference, 20, 1000).mean)
  assert fids[0] < fids[1] < fids[2]
  assert kids[0] < kids[1] < kids[2]
  assert fids[1] > 5 * fids[0]


# Random networks give degenerate samples, whose features' covariance is.
@pytest.mark.filterwarnings('ignore:Matrix is singular')
def make_evaluator(config, workdir, eval_config):
  method = methods.get(config.model)(config, data.example_shape(config.data))
  return run.Evaluator(config, workdir, method, eval_config)


@pytest.mark.parametrize(
  'config_module, preset, expected',
  [
    (gan_config, 'test', MNIST_METRICS),
    (gan_config, 'toy', MODE_METRICS),
    (
      vae_config,
      'test',
      MNIST_METRICS
      | {f'{b}_nll_nats{s}' for b in ('iwae', 'elbo') for s in ('', '_se')}
      | {'iwae_bits_per_dim', 'elbo_bits_per_dim'},
    ),
    (
      aae_config,
      'test',
      MNIST_METRICS
      | {'reconstruction_mse', 'reconstruction_mse_se', 'latent_mmd2'},
    ),
    (
      ali_config,
      'toy',
      MODE_METRICS
      | {'reconstruction_mse', 'reconstruction_mse_se', 'latent_mmd2'},
    ),
    (
      em_config,
      'toy',
      MODE_METRICS | {'heldout_nll_nats', 'heldout_nll_nats_se'},
    ),
  ],
)
def test_evaluator_computes_the_metrics_that_apply(
  tmp_path, config_module, preset, expected
):
  config = config_module.get_config(preset)
  evaluator = make_evaluator(config, str(tmp_path), small_eval())
  if config.model == 'em':  # A valid mixture: `init`'s placeholder.
    state = evaluator.method.init(jax.random.key(0))
  else:
    state = random_state(evaluator.method)
  results = evaluator(state, 7)
  assert results['step'] == 7
  assert set(results['metrics']) == expected
  for name, value in results['metrics'].items():
    # An untrained model may put no sample near a mode: no histogram.
    assert math.isfinite(value) or name == 'reverse_kl', name
  images = config.data.name == 'mnist'
  assert set(results['skipped']) == (SKIPPED_INCEPTION if images else set())
  assert set(results['recipes']) == set(evaluator.groups)
  if 'iwae_nll_nats' in expected:
    assert (
      results['metrics']['iwae_nll_nats']
      <= (results['metrics']['elbo_nll_nats'])
    )


def test_celeba_reference_images_are_a_seeded_shuffle_of_the_split(tmp_path):
  """On a tiny prepared celeb_a whose image i is a flat grey 10 + 8 i."""
  grey = [np.full((218, 178, 3), 10 + 8 * i, np.uint8) for i in range(12)]
  testing.store_celeba(str(tmp_path), {'test': grey})
  config = gan_config.get_config('celeba')
  config.run.data_dir = str(tmp_path)

  def ids(seed):
    x, source = data.evaluation_examples(config, 5, 'test', seed)
    assert x.shape == (5, 64, 64, 3)
    assert source.startswith('TFDS celeb_a test, 5 examples shuffled')
    grey = (x.mean(axis=(1, 2, 3)) + 1.0) * 127.5
    return np.round((grey - 10) / 8).astype(int).tolist()

  assert ids(0) == ids(0)
  assert len(set(ids(0))) == 5 and ids(0) != ids(1)
  assert ids(0) != [0, 1, 2, 3, 4]


def save_checkpoint(config, workdir, step):
  method = experiment.Experiment(config).method
  state = random_state(method).replace(step=jnp.asarray(step, jnp.int32))
  manager = checkpoint.create_manager(workdir, 3, True)
  checkpoint.save(manager, state, config)
  manager.wait_until_finished()
  manager.close()


def test_evaluate_restores_the_latest_checkpoint_and_writes_its_json(tmp_path):
  config = gan_config.get_config('test')
  workdir = str(tmp_path)
  config.eval = small_eval()
  save_checkpoint(config, workdir, 3)
  results = inference.evaluate(config, workdir)
  with open(tmp_path / 'eval_3.json') as f:
    assert json.load(f) == results
  assert set(results['metrics']) == MNIST_METRICS
  recipe = results['recipes']['classifier']
  assert recipe['weights_sha256'] == inception.sha256(
    mnist_classifier.WEIGHTS_PATH
  )
  assert recipe['num_generated'] == 200 and recipe['num_reference'] == 500
  assert recipe['reference'].startswith('bundled MNIST (t10k), 500 of 10000')
  (cached,) = os.listdir(tmp_path / 'eval_reference')
  stamp = os.path.getmtime(tmp_path / 'eval_reference' / cached)
  # Fixed seed: the same numbers again, from the cached reference features.
  assert inference.evaluate(config, workdir) == results
  assert os.path.getmtime(tmp_path / 'eval_reference' / cached) == stamp


def test_evaluate_without_a_checkpoint_says_so(tmp_path):
  with pytest.raises(errors.CheckpointError, match='No checkpoint'):
    inference.evaluate(gan_config.get_config('test'), str(tmp_path))


def test_inception_is_skipped_with_a_warning_or_fails_when_requested(
  tmp_path, caplog
):
  config = gan_config.get_config('test')
  with caplog.at_level(logging.WARNING):
    evaluator = make_evaluator(config, str(tmp_path), small_eval())
  assert evaluator.groups == ('classifier',)
  assert 'inception metrics skipped' in caplog.text
  with pytest.raises(errors.ConfigError, match='inception_weights is empty'):
    make_evaluator(config, '', small_eval(metrics=('inception',)))
  with pytest.raises(errors.ConfigError, match='not found'):
    make_evaluator(
      config,
      '',
      small_eval(metrics=('inception',), inception_weights='/nonexistent.npz'),
    )
  with pytest.raises(errors.ConfigError, match='does not apply'):
    make_evaluator(config, '', small_eval(metrics=('modes',)))


@pytest.mark.filterwarnings('ignore:Matrix is singular')
def test_inception_group_records_its_weights_and_computes_is(tmp_path):
  """The Inception group's path with its network swapped for a cheap one
  (the real network at 299x299 and a 2048-d sqrtm take minutes on a CPU;
  the network itself is tested in evaluation_inception_test.py)."""
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
    lambda s: rng.uniform(0.5, 1.0, s.shape).astype(np.float32),
    inception.abstract_variables(),
  )
  weights = tmp_path / 'random.npz'
  inception.save_variables(weights, variables)
  eval_config = small_eval(
    metrics=('inception',), inception_weights=str(weights), is_splits=4
  )
  evaluator = make_evaluator(
    gan_config.get_config('test'), str(tmp_path), eval_config
  )
  recipe = evaluator.extractors['inception'].recipe
  assert recipe['weights_sha256'] == inception.sha256(weights)
  assert '299x299' in recipe['resize']

  def row_and_column_means(images):
    x = np.asarray(images).reshape(len(images), 28, 28)
    return x.mean(axis=2)[:, 6:22], x.mean(axis=1)

  evaluator.extractors['inception'] = run.FeatureExtractor(
    'means', row_and_column_means, recipe
  )
  results = evaluator(random_state(evaluator.method), 0)
  assert set(results['metrics']) == {
    'fid',
    'kid',
    'kid_std',
    'inception_score',
    'inception_score_std',
  }
  assert results['metrics']['inception_score'] >= 1.0
  assert results['recipes']['inception']['inception_score'] == '4 splits'


def scalar_tags(workdir) -> set[str]:
  """The scalar tags in a workdir's TensorBoard events."""
  from tensorboard.backend.event_processing import event_accumulator

  events = event_accumulator.EventAccumulator(str(workdir))
  events.Reload()
  return set(events.Tags()['tensors']) | set(events.Tags()['scalars'])


def test_eval_every_steps_writes_json_and_tensorboard_while_training(tmp_path):
  config = gan_config.get_config('test')
  config.run.eval_every_steps = 2
  config.eval = small_eval(num_reference=200)
  train.train_and_evaluate(config, str(tmp_path))
  for step in (2, 4):
    with open(tmp_path / f'eval_{step}.json') as f:
      results = json.load(f)
    assert results['step'] == step
    assert set(results['metrics']) == MNIST_METRICS
    assert all(math.isfinite(v) for v in results['metrics'].values())
  assert {'eval/mnist_fid', 'eval/mnist_kid'} <= scalar_tags(tmp_path)
  # Evaluation fields may change on resume: they never change the state.
  config.run.num_steps = 6
  config.eval = small_eval(num_reference=300, seed=1)
  train.train_and_evaluate(config, str(tmp_path))
  assert (tmp_path / 'eval_6.json').is_file()


def test_encode_dumps_the_codes_of_real_examples(tmp_path):
  config = vae_config.get_config('test')
  train.train_and_evaluate(config, str(tmp_path))
  codes = inference.encode(config, str(tmp_path), 10)
  assert codes.shape == (10, config.latent_dim) and codes.dtype == np.float32
  assert np.all(np.isfinite(codes)) and np.ptp(codes, axis=0).min() > 0
  with pytest.raises(errors.ConfigError, match='has no encoder'):
    inference.encode(gan_config.get_config('test'), str(tmp_path), 10)


def run_main(*args):
  return subprocess.run(
    [sys.executable, '-m', 'vi_gen.main', *args],
    cwd=REPO,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.slow
def test_cli_eval_mode_prints_and_writes_the_2d_metrics(tmp_path):
  """The issue's command pair: train the toy GAN on grid25, then evaluate."""
  flags = [
    '--config=configs/gan.py:toy',
    '--config.data.name=grid25',
    f'--workdir={tmp_path}',
    '--config.run.num_steps=20',
    '--config.eval.num_mode_samples=500',
  ]
  result = run_main(*flags)
  assert result.returncode == 0, result.stderr[-3000:]
  result = run_main(*flags, '--mode=eval')
  assert result.returncode == 0, result.stderr[-3000:]
  printed = json.loads(result.stdout[result.stdout.index('{') :])
  with open(tmp_path / 'eval_20.json') as f:
    assert json.load(f) == printed
  assert set(printed['metrics']) == MODE_METRICS
  assert 0 <= printed['metrics']['modes'] <= 25
  assert printed['recipes']['modes']['num_generated'] == 500
