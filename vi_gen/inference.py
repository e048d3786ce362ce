"""The inference modes of a trained run: `evaluate`, `sample`, `encode`.

Each restores the latest checkpoint of a workdir, logs its step and asks
the model (through the interface of `vi_gen.methods`) for what it needs;
none trains or writes a checkpoint.
"""

import math
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer import record_writer

from vi_gen import checkpoint, data, errors, methods, validation
from vi_gen.evaluation import run as eval_run
from vi_gen.experiment import Experiment

EVAL_EVENTS = os.path.join('eval', 'events.out.tfevents.vi_gen_eval')


def append_scalars(path: str, step: int, scalars: dict[str, float]) -> None:
  """Appends `scalars` at `step` to the TensorBoard events file `path`.

  TensorBoard's writers open a new file on every start; --mode=eval would
  then leave one more file per invocation. The record format allows
  appending, so every --mode=eval of a workdir shares one file.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  events = (
    []
    if os.path.exists(path)
    else [event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2')]
  )
  values = [
    summary_pb2.Summary.Value(tag=tag, simple_value=value)
    for tag, value in scalars.items()
  ]
  events.append(
    event_pb2.Event(
      wall_time=time.time(),
      step=step,
      summary=summary_pb2.Summary(value=values),
    )
  )
  with open(path, 'ab') as f:
    writer = record_writer.RecordWriter(f)
    for event in events:
      writer.write(event.SerializeToString())


def _restore(experiment: Experiment, workdir: str, mode: str):
  """The latest checkpoint, with a line that names its step."""
  state = experiment.restore(workdir, mode)
  logging.info(
    '--mode=%s on the checkpoint at step %d (%s).',
    mode,
    int(jax.device_get(state.step)),
    checkpoint.checkpoint_dir(workdir),
  )
  return state


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Computes config.eval's metrics of the latest checkpoint in `workdir`.

  Writes workdir/eval_<step>.json (every metric with its recipe) and
  returns the same dict. The finite metrics also go to TensorBoard, as
  eval/<metric> in `EVAL_EVENTS`: a run of their own (`<workdir>/eval`),
  apart from the training's curves and its periodic evaluations, which
  may have used other eval.* settings; one file however often it runs.

  Raises:
    errors.CheckpointError: no checkpoint, or one of another experiment.
    errors.ConfigError: a requested metric cannot be computed.
  """
  validation.check_config(config)
  experiment = Experiment(config)
  evaluator = eval_run.Evaluator(config, workdir, experiment.method)
  state = _restore(experiment, workdir, 'eval')
  results = evaluator(state, int(jax.device_get(state.step)))
  # The JSON and the log line; TensorBoard below.
  eval_run.report(results, workdir, metric_writers.MultiWriter([]))
  if jax.process_index() == 0:
    append_scalars(
      os.path.join(workdir, EVAL_EVENTS),
      results['step'],
      {
        f'eval/{name}': value
        for name, value in results['metrics'].items()
        if math.isfinite(value)
      },
    )
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
  state = _restore(experiment, workdir, 'sample')
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
  state = _restore(experiment, workdir, 'sample')
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
