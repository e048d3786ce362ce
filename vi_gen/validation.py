"""Config and workdir checks: everything a run needs is checked before
anything is compiled or written.

Generic rules (types, ranges, the data and evaluation fields) are here; each
model adds its own through `Method.check_config`. This module knows no
model and runs nothing.
"""

import math
import os

import ml_collections

from vi_gen import checkpoint, data, errors, methods, networks
from vi_gen.evaluation import run as eval_run

# Fields that count or size something, so must be integers >= 1.
POSITIVE_INTS = (
  'run.num_steps',
  'batch_size',
  'run.log_every_steps',
  'run.checkpoint_every_steps',
  'run.sample_every_steps',
  'run.keep_checkpoints',
  'run.num_grid_samples',
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
    elif name == 'compute_dtype':
      errors.require(
        value in networks.COMPUTE_DTYPES,
        'network.compute_dtype must be one of'
        f' {", ".join(networks.COMPUTE_DTYPES)}, got {value!r}.',
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


def _check_eval_counts(eval_config: ml_collections.ConfigDict) -> None:
  """Counts that the metrics need more than one of: a covariance (FID) and
  KID's unbiased estimate need two examples per set."""
  for name in ('num_samples', 'num_reference', 'kid_subset_size'):
    value = eval_config[name]
    errors.require(
      value >= 2,
      f'eval.{name} must be >= 2 (FID and KID need two examples per set),'
      f' got {value}.',
    )
  errors.require(
    eval_config.is_splits <= eval_config.num_samples,
    f'eval.is_splits={eval_config.is_splits} must be at most'
    f' eval.num_samples={eval_config.num_samples}: each Inception Score'
    ' split needs a sample.',
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
  _check_eval_counts(config.eval)
  chunk = min(config.eval.iwae_chunk, config.eval.iwae_samples)
  errors.require(
    config.eval.iwae_samples % chunk == 0,
    f'eval.iwae_samples={config.eval.iwae_samples} must be a multiple of'
    f' eval.iwae_chunk={config.eval.iwae_chunk}: the IWAE bound draws its'
    f' samples in chunks of that size (e.g. eval.iwae_samples='
    f'{chunk * math.ceil(config.eval.iwae_samples / chunk)}).',
  )
  errors.require(
    _is_int(config.seed) and 0 <= config.seed < 2**63,
    f'seed must be an integer in [0, 2**63), got {config.seed!r}.',
  )
  if 'optim' in config:  # EM has no optimizer.
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
  if 'ema_decay' in config:
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
    _is_int(config.run.eval_every_steps) and config.run.eval_every_steps >= 0,
    'run.eval_every_steps must be an integer >= 0 (0 = off), got'
    f' {config.run.eval_every_steps!r}.',
  )
  errors.require(
    config.run.get('conv_lowering', 'auto') in networks.LOWERINGS,
    f'run.conv_lowering must be one of {", ".join(networks.LOWERINGS)},'
    f' got {config.run.get("conv_lowering")!r}.',
  )
  errors.require(
    config.eval.mmd_bandwidth >= 0,
    'eval.mmd_bandwidth must be >= 0 (0 = median heuristic), got'
    f' {config.eval.mmd_bandwidth}.',
  )
  method = methods.get(config.model)
  eval_run.select_groups(config, config.eval, method.eval_groups)
  _check_networks(config)
  try:
    method.check_config(config)
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
