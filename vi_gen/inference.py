"""The inference modes of a trained run: `evaluate`, `sample`, `encode`.

Each restores the latest checkpoint of a workdir and asks the model
(through the interface of `vi_gen.methods`) for what it needs; none trains
or writes a checkpoint.
"""

import jax
import ml_collections
import numpy as np
from clu import metric_writers

from vi_gen import data, errors, methods, validation
from vi_gen.evaluation import run as eval_run
from vi_gen.experiment import Experiment


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Computes config.eval's metrics of the latest checkpoint in `workdir`.

  Writes workdir/eval_<step>.json (every metric with its recipe) and
  returns the same dict.

  Raises:
    errors.CheckpointError: no checkpoint, or one of another experiment.
    errors.ConfigError: a requested metric cannot be computed.
  """
  validation.check_config(config)
  experiment = Experiment(config)
  evaluator = eval_run.Evaluator(config, workdir, experiment.method)
  state = experiment.restore(workdir, 'eval')
  results = evaluator(state, int(jax.device_get(state.step)))
  writer = metric_writers.create_default_writer(
    workdir, just_logging=jax.process_index() != 0
  )
  with metric_writers.ensure_flushes(writer):
    eval_run.report(results, workdir, writer)
  return results


def sample(
  config: ml_collections.ConfigDict,
  workdir: str,
  num_samples: int,
  seed: int = 0,
) -> np.ndarray:
  """`num_samples` samples from the latest checkpoint in `workdir`.

  Returns float32 [num_samples, *example_shape] in the data's range; the EMA
  generator when the run kept one. The same seed gives the same samples;
  `eval.batch_size` latents per network call.
  """
  if num_samples < 1:
    raise errors.ConfigError(f'num_samples must be >= 1, got {num_samples}.')
  validation.check_config(config)
  experiment = Experiment(config)
  method = experiment.method
  state = experiment.restore(workdir, 'sample')
  return eval_run.generate_in_chunks(
    method,
    jax.jit(method.generate),
    state,
    jax.random.key(seed),
    num_samples,
    config.eval.batch_size,
  )


def encode(
  config: ml_collections.ConfigDict, workdir: str, num_examples: int
) -> np.ndarray:
  """E(x) of `num_examples` real examples, drawn as the evaluation draws
  them (`data.evaluation_examples`), from the latest checkpoint: float32
  [N, latent_dim], a Gaussian encoder's mean.

  Raises:
    errors.ConfigError: the model has no encoder, or num_examples < 1.
  """
  if num_examples < 1:
    raise errors.ConfigError(f'num_samples must be >= 1, got {num_examples}.')
  validation.check_config(config)
  experiment = Experiment(config)
  method = experiment.method
  if not hasattr(method, 'reconstruct'):
    raise errors.ConfigError(
      f'Model {config.model!r} has no encoder; --encode works for the'
      f' models with one: {", ".join(methods.with_encoder())}.'
    )
  state = experiment.restore(workdir, 'sample')
  x, _ = data.evaluation_examples(
    config, num_examples, config.eval.split, config.eval.seed
  )
  reconstruct = jax.jit(method.reconstruct)
  chunk = config.eval.batch_size
  codes = [
    np.asarray(reconstruct(state, x[i : i + chunk])[0], np.float32)
    for i in range(0, len(x), chunk)
  ]
  return np.concatenate(codes)
