"""The training loop, shared by every model: `train_and_evaluate(config, workdir)`.

Resume order: 1. the newest readable checkpoint in `workdir`, if any (its
config must match); 2. otherwise a fresh initialisation from `config.seed`.
Batch `i` and the key of iteration `i` are pure functions of (seed, i), so a
resumed run continues exactly as an uninterrupted one would have.

SIGTERM (a preempted VM, a scheduler) stops the loop at the next iteration
boundary with a checkpoint of that step; rerunning the same command resumes
from it. A NaN or inf in a metric (losses, gradient and parameter norms) or
anywhere in the train state stops the run, naming the step range, before
anything of that range is saved.
"""

import math
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers

from vi_gen import checkpoint, data, errors, images, methods, parallel
from vi_gen.evaluation import run as eval_run
from vi_gen.state import TrainState

# Fields that count or size something, so must be integers >= 1.
POSITIVE_INTS = (
  'num_steps',
  'batch_size',
  'log_every_steps',
  'checkpoint_every_steps',
  'sample_every_steps',
  'keep_checkpoints',
  'num_grid_samples',
  'data.image_size',
  'data.shuffle_buffer',
  'eval.batch_size',
  'eval.num_samples',
  'eval.num_reference',
  'eval.kid_subsets',
  'eval.kid_subset_size',
  'eval.is_splits',
  'eval.num_mode_samples',
  'eval.num_heldout',
  'eval.iwae_samples',
  'eval.iwae_chunk',
)


def _is_int(value) -> bool:
  # A locked ConfigDict lets True into an int field.
  return isinstance(value, int) and not isinstance(value, bool)


def _check_values(flat: dict) -> None:
  """Rules for every field of the flattened config: set (not None) and, for
  numbers, finite.

  A locked ConfigDict already rejects most wrong types, but lets None into
  any field, bool into int fields, and NaN/inf into float fields; the
  command line lets anything into a tuple.
  """
  for name, value in flat.items():
    items = value if isinstance(value, list) else [value]
    if any(v is None for v in items):
      raise errors.ConfigError(f'{name} must be set, got {value!r}.')
    if any(isinstance(v, float) and not math.isfinite(v) for v in items):
      raise errors.ConfigError(f'{name} must be finite, got {value!r}.')


def _check_networks(config: ml_collections.ConfigDict) -> None:
  """The fields that several models share: latent size and network shapes."""

  if 'latent_dim' in config:
    errors.require(
      _is_int(config.latent_dim) and config.latent_dim >= 1,
      f'latent_dim must be >= 1 (an integer), got {config.latent_dim!r}.',
    )
  network = config.get('network', {})
  for name in network:
    value = network[name]
    if name.endswith('widths'):
      errors.require(
        isinstance(value, tuple) and all(_is_int(w) and w >= 1 for w in value),
        f'network.{name} must be a tuple of integers >= 1, got {value!r}.',
      )
    elif name == 'kernel_size':
      errors.require(
        _is_int(value) and value >= 1,
        f'network.kernel_size must be >= 1 (an integer), got {value!r}.',
      )
  shape = data.example_shape(config.data)
  if 'g_widths' in network and len(shape) == 3:
    scale = 2 ** len(network.g_widths)
    errors.require(
      len(network.g_widths) >= 1 and shape[0] % scale == 0,
      f'The generator doubles its {len(network.g_widths)}-layer base'
      f' network.g_widths={network.g_widths!r} up to the image size'
      f' {shape[0]}, which must be divisible by 2**len(g_widths) = {scale}.',
    )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects invalid values before anything is written; raises ConfigError."""

  flat = checkpoint.flatten(config.to_dict())
  _check_values(flat)
  for name in POSITIVE_INTS:
    value = flat[name]
    errors.require(
      _is_int(value) and value >= 1,
      f'{name} must be >= 1 (an integer), got {value!r}.',
    )
  errors.require(
    _is_int(config.seed) and 0 <= config.seed < 2**63,
    f'seed must be an integer in [0, 2**63), got {config.seed!r}.',
  )
  optim = config.optim
  errors.require(optim.lr > 0, f'optim.lr must be > 0, got {optim.lr}.')
  errors.require(
    0 <= optim.b1 < 1, f'optim.b1 must be in [0, 1), got {optim.b1}.'
  )
  errors.require(
    0 <= optim.b2 < 1, f'optim.b2 must be in [0, 1), got {optim.b2}.'
  )
  errors.require(optim.eps > 0, f'optim.eps must be > 0, got {optim.eps}.')
  errors.require(
    data.NAMES.count(config.data.name) == 1,
    f'Unknown data.name {config.data.name!r}; known: {", ".join(data.NAMES)}.',
  )
  errors.require(
    config.data.source in ('bundled', 'tfds'),
    f"data.source must be 'bundled' or 'tfds', got {config.data.source!r}.",
  )
  errors.require(
    config.data.source == 'tfds' or config.data.name == 'mnist',
    f'Only mnist is bundled; data.name={config.data.name!r} needs'
    " data.source='tfds'.",
  )
  errors.require(
    0 < config.data.crop_size <= 178,
    f'data.crop_size must be in (0, 178] (CelebA is 218x178), got'
    f' {config.data.crop_size}.',
  )
  errors.require(
    config.data.resize in data.RESIZE_METHODS,
    f'data.resize must be one of {data.RESIZE_METHODS}, got'
    f' {config.data.resize!r}.',
  )
  errors.require(
    bool(config.data.split), "data.split must name a TFDS split, e.g. 'train'."
  )
  errors.require(
    0 <= config.ema_decay < 1,
    f'ema_decay must be in [0, 1) (0 = off), got {config.ema_decay}.',
  )
  errors.require(
    _is_int(config.debug.nan_at_step) and config.debug.nan_at_step >= 0,
    'debug.nan_at_step must be an integer >= 0 (0 = off), got'
    f' {config.debug.nan_at_step!r}.',
  )
  errors.require(
    _is_int(config.eval_every_steps) and config.eval_every_steps >= 0,
    'eval_every_steps must be an integer >= 0 (0 = off), got'
    f' {config.eval_every_steps!r}.',
  )
  errors.require(
    config.eval.mmd_bandwidth >= 0,
    'eval.mmd_bandwidth must be >= 0 (0 = median heuristic), got'
    f' {config.eval.mmd_bandwidth}.',
  )
  eval_run.select_groups(config, config.eval)
  _check_networks(config)
  try:
    methods.get(config.model).check_config(config)
  except (AttributeError, KeyError) as e:
    raise errors.ConfigError(
      f'This config lacks fields that model {config.model!r} needs ({e});'
      f' start from configs/{config.model}.py.'
    ) from e


def check_workdir(workdir: str) -> None:
  """Fails before anything is compiled when the run could not save.

  Checks the workdir and its checkpoints/ where they exist, else the
  nearest existing parent that would hold them.

  Raises:
    errors.WorkdirError: naming the path and what is wrong with it.
  """
  for path in (os.path.abspath(workdir), checkpoint.checkpoint_dir(workdir)):
    existing = path
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
      problem = f'{existing} exists and is not a directory'
    elif not os.access(existing, os.W_OK | os.X_OK):
      problem = f'{existing} is not writable'
    else:
      continue
    raise errors.WorkdirError(
      f'Cannot write to the workdir {os.path.abspath(workdir)}: {problem}.'
      ' Choose another --workdir.'
    )


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """runs/<model>[_<preset>], so the card's command works without flags."""
  name = config.model + (f'_{config.preset}' if config.preset else '')
  return os.path.join('runs', name)


class _Setup:
  """What both training and sampling build from a (checked) config."""

  def __init__(self, config: ml_collections.ConfigDict):
    parallel.check_batch_size(config.batch_size)
    self.mesh = parallel.create_mesh()
    self.replicated = parallel.replicated(self.mesh)
    self.method = methods.get(config.model)(
      config, data.example_shape(config.data)
    )
    keys = jax.random.split(jax.random.key(config.seed), 3)
    self.init_key, self.loop_key, self.grid_key = keys

  def restore_or_init(
    self, config, workdir: str, repair: bool = False
  ) -> TrainState | None:
    abstract = checkpoint.abstract_like(
      jax.eval_shape(self.method.init, self.init_key), self.replicated
    )
    return checkpoint.restore_latest(workdir, config, abstract, repair)

  def init(self) -> TrainState:
    return jax.jit(self.method.init, out_shardings=self.replicated)(
      self.init_key
    )


class _StopRequest:
  """SIGTERM, or Orbax's multi-host preemption notice, as a flag.

  The loop polls `requested` at every iteration boundary and then saves and
  stops. The handler only sets the flag: acting inside it could interrupt
  an Orbax save or a device transfer halfway. On multi-host runs JAX's
  preemption service catches SIGTERM itself and `reached_preemption` makes
  every host stop at the same step; a Python handler there would replace
  the service's and let the hosts disagree, so none is installed. Nor is
  one outside the main thread, where Python cannot install it.
  """

  def __init__(self):
    self._previous = None
    self.reason = ''

  def __enter__(self) -> '_StopRequest':
    single = jax.process_count() == 1
    main = threading.current_thread() is threading.main_thread()
    # None: a handler installed outside Python, which could not be restored.
    previous = signal.getsignal(signal.SIGTERM)
    if single and main and previous is not None:
      signal.signal(signal.SIGTERM, self._handle)
      self._previous = previous
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum: int, frame) -> None:
    del frame
    self.reason = signal.Signals(signum).name

  def requested(self, step: int, manager: ocp.CheckpointManager) -> bool:
    # Called at every step on every host, as reached_preemption needs.
    if manager.reached_preemption(step):
      self.reason = self.reason or 'a preemption notice'
    return bool(self.reason)


@jax.jit
def _finite_leaves(state: TrainState) -> jax.Array:
  return jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(state)])


def _check_finite(
  pending: list[dict],
  first: int,
  last: int,
  state: TrainState,
  saved_step: int | None,
) -> dict[str, float]:
  """Means of the metrics of iterations first..last.

  Raises:
    errors.DivergenceError: a metric or an array of the state (params,
      BatchNorm statistics, optimizer states, old and EMA params; not
      `extras`) holds NaN or inf. The metrics alone miss the arrays that no
      metric summarizes.
  """
  stacked = jax.device_get(pending)
  summary, broken = {}, []
  for name in stacked[0] if stacked else ():
    values = np.asarray([m[name] for m in stacked], np.float64)
    if np.all(np.isfinite(values)):
      summary[name] = float(values.mean())
    else:
      broken.append(name)
  # `extras` may hold NaN on purpose (EM's curve marks unused slots so).
  checked = state.replace(extras={})
  finite = np.asarray(jax.device_get(_finite_leaves(checked)))
  names = checkpoint.leaf_names(checked)
  broken += [
    f'state.{n}' for n, ok in zip(names, finite, strict=True) if not ok
  ]
  if broken:
    shown = ', '.join(broken[:8]) + (', ...' if len(broken) > 8 else '')
    kept = (
      'no checkpoint was written'
      if saved_step is None
      else f'the last checkpoint, of step {saved_step}, is intact'
    )
    raise errors.DivergenceError(
      f'NaN or inf within steps [{first}, {last}] in {shown}. Training'
      f' stopped and {kept}. JAX_DEBUG_NANS=True finds the operation that'
      ' makes the first NaN (slowly).'
    )
  return summary


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> TrainState:
  """Trains `config.model` until `config.num_steps`, resuming from `workdir`.

  Writes to `workdir`: checkpoints/ (Orbax), TensorBoard events, and
  <picture>/step_<N>.png for each of the method's pictures (for the GAN,
  samples/ from a fixed latent batch). On SIGTERM, saves the current step
  and returns early.

  Raises:
    errors.VIGenError: bad config, unwritable workdir, missing data,
      unusable checkpoint (all before anything is written), or divergence
      (after the last good checkpoint was kept).
  """
  check_config(config)
  check_workdir(workdir)
  # From here on SIGTERM stops the run at the next iteration boundary, also
  # when it comes while the run restores or compiles.
  with _StopRequest() as stop:
    return _train(config, workdir, stop)


def _train(
  config: ml_collections.ConfigDict, workdir: str, stop: _StopRequest
) -> TrainState:
  """The body of `train_and_evaluate`, after the checks."""
  setup = _Setup(config)
  method = setup.method
  dataset = data.create_dataset(config)
  # Pictures always show the same latents and the same real examples.
  # Drawn now, so that a dataset smaller than a batch fails before writing.
  reference = next(dataset.host_batches(0))
  state = setup.restore_or_init(config, workdir, repair=True)
  saved_step = None if state is None else int(jax.device_get(state.step))
  if state is None:
    state = setup.init()
    logging.info('Initialised %s from seed %d.', config.model, config.seed)
  else:
    logging.info('Resumed from the checkpoint at step %d.', saved_step)
  step = int(jax.device_get(state.step))

  # Only now is anything written, apart from unreadable checkpoints that
  # were set aside.
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

  evaluator = None
  if config.eval_every_steps:
    evaluator = eval_run.Evaluator(config, workdir)

  pending, first_pending = [], step + 1
  last_log_time, last_log_step = time.time(), step
  try:
    with metric_writers.ensure_flushes(writer):
      while step < config.num_steps:
        if stop.requested(step, manager):
          if step not in (saved_step, 0):
            _check_finite(pending, first_pending, step, state, saved_step)
            checkpoint.save(manager, state, config)
          logging.warning(
            'Stopped by %s at step %d; run the same command to resume from'
            ' there.',
            stop.reason,
            step,
          )
          break
        local = np.stack([next(batches) for _ in range(per_iteration)])
        if step + 1 == config.debug.nan_at_step:
          local = np.full_like(local, np.nan)
        batch = parallel.to_global(local, batch_sharding)
        key = jax.random.fold_in(setup.loop_key, step)
        state, metrics = iteration(state, batch, key)
        step += 1
        pending.append(metrics)

        last = step == config.num_steps
        log = step % config.log_every_steps == 0 or last
        save = step % config.checkpoint_every_steps == 0 or last
        draw = step % config.sample_every_steps == 0 or last
        if log or save or draw:
          # Checked before anything reads the state, so no checkpoint or
          # picture holds NaNs.
          summary = _check_finite(
            pending, first_pending, step, state, saved_step
          )
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
        if draw and is_main:
          pictures = method.pictures(state, setup.grid_key, reference)
          for name, picture in pictures.items():
            images.save_png(
              os.path.join(workdir, name, f'step_{step:07d}.png'), picture
            )
          writer.write_images(step, {k: v[None] for k, v in pictures.items()})
        if save:
          checkpoint.save(manager, state, config)
          saved_step = step
        if evaluator and (step % config.eval_every_steps == 0 or last):
          # After the save: a failing metric loses no training.
          results = evaluator(state, step)
          _report(results, workdir, writer, is_main)
  finally:
    manager.wait_until_finished()
    manager.close()
  return state


def _report(
  results: dict,
  workdir: str,
  writer: metric_writers.MetricWriter,
  is_main: bool,
) -> None:
  """Writes eval_<step>.json and logs the finite metrics as eval/<name>."""
  scalars = {
    f'eval/{name}': value
    for name, value in results['metrics'].items()
    if math.isfinite(value)
  }
  writer.write_scalars(results['step'], scalars)
  if is_main:
    path = eval_run.write_results(workdir, results)
    logging.info(
      'Evaluation at step %d: %s (%s)', results['step'], scalars, path
    )


def _restore(setup: _Setup, config, workdir: str, mode: str) -> TrainState:
  """The latest checkpoint, for --mode=sample and --mode=eval."""
  state = setup.restore_or_init(config, workdir)
  if state is None:
    raise errors.CheckpointError(
      f'No checkpoint in {checkpoint.checkpoint_dir(workdir)}: train first'
      f' (the same --config and --workdir without --mode={mode}).'
    )
  return state


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Computes config.eval's metrics of the latest checkpoint in `workdir`.

  Writes workdir/eval_<step>.json (every metric with its recipe) and
  returns the same dict.

  Raises:
    errors.CheckpointError: no checkpoint, or one of another experiment.
    errors.ConfigError: a requested metric cannot be computed.
  """
  check_config(config)
  setup = _Setup(config)
  evaluator = eval_run.Evaluator(config, workdir)
  state = _restore(setup, config, workdir, 'eval')
  results = evaluator(state, int(jax.device_get(state.step)))
  writer = metric_writers.create_default_writer(
    workdir, just_logging=jax.process_index() != 0
  )
  with metric_writers.ensure_flushes(writer):
    _report(results, workdir, writer, jax.process_index() == 0)
  return results


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
  check_config(config)
  setup = _Setup(config)
  state = _restore(setup, config, workdir, 'sample')
  return methods.generate_in_chunks(
    setup.method,
    jax.jit(setup.method.generate),
    state,
    jax.random.key(seed),
    num_samples,
    config.batch_size,
  )


def encode(
  config: ml_collections.ConfigDict, workdir: str, num_examples: int
) -> np.ndarray:
  """E(x) of `num_examples` real examples, drawn as the evaluation draws
  them (`eval_run.real_examples`), from the latest checkpoint: float32
  [N, latent_dim], a Gaussian encoder's mean.

  Raises:
    errors.ConfigError: the model has no encoder, or num_examples < 1.
  """
  if num_examples < 1:
    raise errors.ConfigError(f'num_samples must be >= 1, got {num_examples}.')
  check_config(config)
  setup = _Setup(config)
  if not hasattr(setup.method, 'reconstruct'):
    raise errors.ConfigError(
      f'Model {config.model!r} has no encoder; --encode works for vae, aae'
      ' and ali.'
    )
  state = _restore(setup, config, workdir, 'sample')
  x, _ = eval_run.real_examples(
    config.data, num_examples, config.eval.split, config.eval.seed
  )
  reconstruct = jax.jit(setup.method.reconstruct)
  codes = [
    np.asarray(reconstruct(state, x[i : i + config.batch_size])[0], np.float32)
    for i in range(0, len(x), config.batch_size)
  ]
  return np.concatenate(codes)
