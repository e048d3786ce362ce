"""The training loop, shared by every model: `train_and_evaluate(config,
workdir)`.

It only trains: set up, restore, step, periodic actions (log, save,
pictures, evaluate), stop. It knows no model (the method does the
iteration, `vi_gen.players` the alternation), checks nothing itself
(`vi_gen.validation`), and leaves SIGTERM, Ctrl-C and NaN to
`vi_gen.guards`.

Resume order: 1. the newest readable checkpoint in `workdir`, if any (its
config must match); 2. otherwise a fresh initialisation from `config.seed`.
Batch `i` and the key of iteration `i` are pure functions of (seed, i), so a
resumed run continues exactly as an uninterrupted one would have.
"""

import contextlib
import itertools
import os
import time
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from vi_gen import (
  checkpoint,
  compiler,
  console,
  data,
  errors,
  guards,
  images,
  parallel,
  validation,
)
from vi_gen.evaluation import run as eval_run
from vi_gen.experiment import Experiment
from vi_gen.state import TrainState


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> TrainState:
  """Trains `config.model` until `config.run.num_steps`, resuming from `workdir`.

  Writes to `workdir`: checkpoints/ (Orbax), TensorBoard events,
  <picture>/step_<N>.png for each of the method's pictures (for the GAN,
  samples/ from a fixed latent batch), and eval_<step>.json every
  `eval_every_steps`. On SIGTERM or Ctrl-C, saves the current step and
  returns early.

  Raises:
    errors.VIGenError: bad config, unwritable workdir, missing data,
      unusable checkpoint (all before anything is written), or divergence
      (after the last good checkpoint was kept).
  """
  validation.check_config(config)
  validation.check_workdir(workdir)
  # From here on SIGTERM and Ctrl-C stop the run at the next iteration
  # boundary, also when they come while the run restores or compiles.
  with guards.StopRequest() as stop, contextlib.ExitStack() as stack:
    return _train(config, workdir, stop, stack)


def _train(
  config: ml_collections.ConfigDict,
  workdir: str,
  stop: guards.StopRequest,
  stack: contextlib.ExitStack,
) -> TrainState:
  start = time.time()
  experiment = Experiment(config)
  method = experiment.method
  dataset = data.create_dataset(config)
  # Pictures always show the same latents and the same real examples.
  # Drawn now, so that a dataset smaller than a batch fails before writing.
  reference = next(dataset.host_batches(0))
  # Nothing is written before this lock (not even unreadable checkpoints
  # set aside): a second run in this workdir stops here.
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:  # Where os.access said yes (root, /proc, ...).
    raise errors.WorkdirError(
      f'Cannot create the workdir {os.path.abspath(workdir)}: {e.strerror}.'
      ' Choose another --workdir.'
    ) from None
  stack.enter_context(guards.WorkdirLock(workdir))
  state = experiment.restore_or_none(workdir, repair=True)
  saved_step = None if state is None else int(jax.device_get(state.step))
  if state is None:
    state = experiment.init()
    logging.info('Initialised %s from seed %d.', config.model, config.seed)
  else:
    logging.info('Resumed from the checkpoint at step %d.', saved_step)
  step = int(jax.device_get(state.step))

  # Only now is anything else written, apart from unreadable checkpoints
  # that were set aside.
  is_main = jax.process_index() == 0
  # TensorBoard events from process 0. The console gets one line per log
  # step from this thread (clu's LoggingWriter printed from its own).
  writer = metric_writers.AsyncMultiWriter(
    [metric_writers.SummaryWriter(workdir)] if is_main else []
  )
  if step == 0:
    flat = checkpoint.flatten(checkpoint.config_meta(config)['config'])
    writer.write_hparams({k: str(v) for k, v in flat.items()})
  logging.info('Config:\n  %s', '\n  '.join(console.config_lines(config)))
  manager = checkpoint.create_manager(
    workdir, config.run.keep_checkpoints, True
  )

  per_iteration = method.batches_per_iteration
  batches = device_batches(
    dataset.host_batches(step * per_iteration),
    per_iteration,
    parallel.batch_sharding(experiment.mesh, batch_axis=1),
    step,
    config.debug.nan_at_step,
  )

  def keyed_iteration(state: TrainState, batch: jax.Array):
    # Iteration i's key, fold_in(loop_key, i), is derived on the devices.
    key = jax.random.fold_in(experiment.loop_key, state.step)
    return method.iteration(state, batch, key)

  iteration = jax.jit(
    keyed_iteration,
    donate_argnums=0,
    out_shardings=(experiment.replicated, experiment.replicated),
    compiler_options=compiler.options(
      getattr(method, 'cpu_library_fusions', None)
    ),
  )
  evaluator = None
  if config.run.eval_every_steps:
    evaluator = eval_run.Evaluator(config, workdir, method)

  progress, first_step = console.Progress(config.run.num_steps, step), step
  pending, first_pending, summary = [], step + 1, {}
  try:
    with metric_writers.ensure_flushes(writer):
      batch = next(batches)
      while step < config.run.num_steps:
        if stop.requested(step, manager):
          if step not in (saved_step, 0):
            guards.check_finite(pending, first_pending, step, state, saved_step)
            checkpoint.save(manager, state, config)
            saved_step = step
          logging.warning(
            'Stopped by %s at step %d; run the same command to resume from'
            ' there.',
            stop.reason,
            step,
          )
          break
        # The first call compiles, which is no training time.
        with (
          progress.timed() if step == first_step else contextlib.nullcontext()
        ):
          state, metrics = iteration(state, batch)
        step += 1
        if step < config.run.num_steps:
          # Stacked and sent while the step just dispatched runs.
          batch = next(batches)
        pending.append(metrics)

        last = step == config.run.num_steps
        log = step % config.run.log_every_steps == 0 or last
        save = step % config.run.checkpoint_every_steps == 0 or last
        draw = step % config.run.sample_every_steps == 0 or last
        if log or save or draw:
          # Checked before anything reads the state, so no checkpoint or
          # picture holds NaNs.
          summary = guards.check_finite(
            pending, first_pending, step, state, saved_step
          )
          pending, first_pending = [], step + 1
          if log:
            rate, text = progress.report(step)
            writer.write_scalars(step, {**summary, 'steps_per_sec': rate})
            logging.info('%s', console.progress_line(text, summary))
        if draw and is_main:
          with progress.timed():
            pictures = method.pictures(state, experiment.grid_key, reference)
            for name, picture in pictures.items():
              images.save_png(
                os.path.join(workdir, name, f'step_{step:07d}.png'),
                picture,
                label=f'step {step}',
              )
            writer.write_images(step, {k: v[None] for k, v in pictures.items()})
        if save:
          with progress.timed():
            checkpoint.save(manager, state, config)
          saved_step = step
        if evaluator and (step % config.run.eval_every_steps == 0 or last):
          # After the save: a failing metric loses no training.
          with progress.timed():
            eval_run.report(evaluator(state, step), workdir, writer)
  finally:
    checkpoint.wait(manager)
    manager.close()
  console.log_end(
    config, workdir, step, saved_step, time.time() - start, summary
  )
  return state


def device_batches(
  host_batches: Iterator[np.ndarray],
  per_iteration: int,
  sharding: jax.sharding.Sharding,
  step: int,
  nan_at_step: int = 0,
) -> Iterator[jax.Array]:
  """The global batches of iterations step + 1, step + 2, ... on the devices.

  Each stacks `per_iteration` host batches. Nothing is read ahead: the loop
  takes the next one right after dispatching a step, so that the stacking
  and the transfer overlap the step. Iteration `nan_at_step` (1-based, 0 =
  never) gets NaNs, to test the divergence guard.
  """
  for i in itertools.count(step + 1):
    local = np.stack([next(host_batches) for _ in range(per_iteration)])
    if i == nan_at_step:
      local = np.full_like(local, np.nan)
    yield parallel.to_global(local, sharding)
