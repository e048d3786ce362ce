"""The training loop, shared by every model: `train_and_evaluate(config, workdir)`.

Resume order: 1. the latest checkpoint in `workdir`, if any (its config must
match); 2. otherwise a fresh initialisation from `config.seed`. Batch `i` and
the key of iteration `i` are pure functions of (seed, i), so a resumed run
continues exactly as an uninterrupted one would have.
"""

import math
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from vi_gen import checkpoint, data, errors, images, methods, parallel
from vi_gen.state import TrainState


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects invalid values before anything is written; raises ConfigError."""

  def require(ok: bool, message: str) -> None:
    if not ok:
      raise errors.ConfigError(message)

  positive = ('num_steps', 'batch_size', 'log_every_steps')
  positive += ('checkpoint_every_steps', 'sample_every_steps')
  positive += ('keep_checkpoints', 'num_grid_samples')
  for name in positive:
    require(config[name] >= 1, f'{name} must be >= 1, got {config[name]}.')
  optim = config.optim
  require(optim.lr > 0, f'optim.lr must be > 0, got {optim.lr}.')
  require(0 <= optim.b1 < 1, f'optim.b1 must be in [0, 1), got {optim.b1}.')
  require(0 <= optim.b2 < 1, f'optim.b2 must be in [0, 1), got {optim.b2}.')
  require(optim.eps > 0, f'optim.eps must be > 0, got {optim.eps}.')
  require(
    data.NAMES.count(config.data.name) == 1,
    f'Unknown data.name {config.data.name!r}; known: {", ".join(data.NAMES)}.',
  )
  require(
    config.data.source in ('bundled', 'tfds'),
    f"data.source must be 'bundled' or 'tfds', got {config.data.source!r}.",
  )
  require(
    config.data.source == 'tfds' or config.data.name == 'mnist',
    f'Only mnist is bundled; data.name={config.data.name!r} needs'
    " data.source='tfds'.",
  )
  require(
    0 < config.data.crop_size <= 178,
    f'data.crop_size must be in (0, 178] (CelebA is 218x178), got'
    f' {config.data.crop_size}.',
  )
  require(
    0 <= config.ema_decay < 1,
    f'ema_decay must be in [0, 1) (0 = off), got {config.ema_decay}.',
  )
  methods.get(config.model).check_config(config)


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """runs/<model>[_<preset>], so the card's command works without flags."""
  name = config.model + (f'_{config.preset}' if config.preset else '')
  return os.path.join('runs', name)


class _Setup:
  """What both training and sampling build from a config."""

  def __init__(self, config: ml_collections.ConfigDict):
    check_config(config)
    parallel.check_batch_size(config.batch_size)
    self.mesh = parallel.create_mesh()
    self.replicated = parallel.replicated(self.mesh)
    self.method = methods.get(config.model)(
      config, data.example_shape(config.data)
    )
    keys = jax.random.split(jax.random.key(config.seed), 3)
    self.init_key, self.loop_key, self.grid_key = keys

  def restore_or_init(self, config, workdir: str) -> TrainState | None:
    abstract = checkpoint.abstract_like(
      jax.eval_shape(self.method.init, self.init_key), self.replicated
    )
    return checkpoint.restore_latest(workdir, config, abstract)

  def init(self) -> TrainState:
    return jax.jit(self.method.init, out_shardings=self.replicated)(
      self.init_key
    )


def _summarize(pending: list[dict], first: int, last: int) -> dict[str, float]:
  """Means of the metrics of iterations first..last; stops on NaN/inf."""
  stacked = jax.device_get(pending)
  summary = {}
  for name in stacked[0]:
    values = np.asarray([m[name] for m in stacked], np.float64)
    if not np.all(np.isfinite(values)):
      raise errors.DivergenceError(
        f'{name} became NaN or inf somewhere within steps [{first}, {last}].'
        ' Training stopped; the last checkpoint (before that range) is'
        ' intact.'
      )
    summary[name] = float(values.mean())
  return summary


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> TrainState:
  """Trains `config.model` until `config.num_steps`, resuming from `workdir`.

  Writes to `workdir`: checkpoints/ (Orbax), TensorBoard events, and
  <picture>/step_<N>.png for each of the method's pictures (for the GAN,
  samples/ from a fixed latent batch).

  Raises:
    errors.VIGenError: bad config, missing data, unusable checkpoint (all
      before anything is written), or divergence (after the last good
      checkpoint was kept).
  """
  setup = _Setup(config)
  method = setup.method
  dataset = data.create_dataset(config)
  state = setup.restore_or_init(config, workdir)
  if state is None:
    state = setup.init()
    logging.info('Initialised %s from seed %d.', config.model, config.seed)
  step = int(jax.device_get(state.step))
  if step:
    logging.info('Resumed from the checkpoint at step %d.', step)

  # Only now is anything written.
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(
    workdir, just_logging=not is_main
  )
  if step == 0:
    flat = checkpoint.flatten(checkpoint.config_meta(config)['config'])
    writer.write_hparams({k: str(v) for k, v in flat.items()})
  manager = checkpoint.create_manager(workdir, config.keep_checkpoints, True)

  per_iteration = method.batches_per_iteration
  batches = dataset.host_batches(step * per_iteration)
  batch_sharding = parallel.batch_sharding(setup.mesh, batch_axis=1)
  iteration = jax.jit(
    method.iteration,
    donate_argnums=0,
    out_shardings=(setup.replicated, setup.replicated),
  )
  # Pictures always show the same latents and the same real examples.
  reference = next(dataset.host_batches(0))

  pending, first_pending = [], step + 1
  last_log_time, last_log_step = time.time(), step
  try:
    with metric_writers.ensure_flushes(writer):
      while step < config.num_steps:
        local = np.stack([next(batches) for _ in range(per_iteration)])
        batch = parallel.to_global(local, batch_sharding)
        key = jax.random.fold_in(setup.loop_key, step)
        state, metrics = iteration(state, batch, key)
        step += 1
        pending.append(metrics)

        last = step == config.num_steps
        log = step % config.log_every_steps == 0 or last
        save = step % config.checkpoint_every_steps == 0 or last
        if log or save:
          # Checked before every save, so no checkpoint holds NaNs.
          summary = _summarize(pending, first_pending, step)
          pending, first_pending = [], step + 1
          if log:
            now = time.time()
            rate = (step - last_log_step) / (now - last_log_time)
            last_log_time, last_log_step = now, step
            eta = (config.num_steps - step) / max(rate, 1e-9)
            writer.write_scalars(step, {**summary, 'steps_per_sec': rate})
            logging.info(
              'step %d/%d, %.2f it/s, ETA %s',
              step,
              config.num_steps,
              rate,
              time.strftime('%H:%M:%S', time.gmtime(math.ceil(eta))),
            )
        if (step % config.sample_every_steps == 0 or last) and is_main:
          pictures = method.pictures(state, setup.grid_key, reference)
          for name, picture in pictures.items():
            images.save_png(
              os.path.join(workdir, name, f'step_{step:07d}.png'), picture
            )
          writer.write_images(step, {k: v[None] for k, v in pictures.items()})
        if save:
          checkpoint.save(manager, state, config)
  finally:
    manager.wait_until_finished()
    manager.close()
  return state


def sample(
  config: ml_collections.ConfigDict,
  workdir: str,
  num_samples: int,
  seed: int = 0,
) -> np.ndarray:
  """`num_samples` samples from the latest checkpoint in `workdir`.

  Returns float32 [num_samples, *example_shape] in the data's range; the EMA
  generator when the run kept one. The same seed gives the same samples.
  """
  if num_samples < 1:
    raise errors.ConfigError(f'num_samples must be >= 1, got {num_samples}.')
  setup = _Setup(config)
  state = setup.restore_or_init(config, workdir)
  if state is None:
    raise errors.CheckpointError(
      f'No checkpoint in {checkpoint.checkpoint_dir(workdir)}: train first'
      ' (same --config and --workdir, without --mode).'
    )
  generate = jax.jit(setup.method.generate)
  key = jax.random.key(seed)
  chunks, done = [], 0
  while done < num_samples:
    size = min(config.batch_size, num_samples - done)
    z = setup.method.latents(jax.random.fold_in(key, done), size)
    chunks.append(np.asarray(jax.device_get(generate(state, z)), np.float32))
    done += size
  return np.concatenate(chunks)
