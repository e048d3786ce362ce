"""Orbax checkpoints of the train state, with the config that produced them.

Each checkpoint holds two items: `state` (the TrainState) and `meta` (the
model name and the config as JSON). On resume the config is compared first,
so a workdir of another model or another experiment gives a clear error and
is left untouched, instead of a shape error deep in Orbax or, worse, a run
that silently continues a different experiment.
"""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from vi_gen import errors
from vi_gen.state import TrainState

# Fields that may change between a run and its resumption: they control how
# long the run is and what it logs, not what it computes.
RUN_CONTROL_FIELDS = frozenset(
  {
    'num_steps',
    'log_every_steps',
    'checkpoint_every_steps',
    'sample_every_steps',
    'keep_checkpoints',
    'num_grid_samples',
    'preset',
    'data.data_dir',
    'data.try_gcs',
    'network.fast_conv',
  }
)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(
  workdir: str, keep: int, create: bool
) -> ocp.CheckpointManager:
  """A manager for `workdir/checkpoints`; `create=False` only reads."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, create=create, read_only=not create
  )
  # Handlers, not just names: reading the state's metadata needs them.
  handlers = {
    'state': ocp.StandardCheckpointHandler(),
    'meta': ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(
    checkpoint_dir(workdir), item_handlers=handlers, options=options
  )


def flatten(config: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten(value, f'{name}.'))
    else:
      flat[name] = list(value) if isinstance(value, tuple) else value
  return flat


def config_meta(config: ml_collections.ConfigDict) -> dict:
  return {
    'model': config.model,
    'config': json.loads(config.to_json_best_effort()),
  }


def config_differences(
  saved: dict, config: ml_collections.ConfigDict
) -> list[str]:
  """Experiment-defining fields that differ between `saved` meta and config."""
  old = flatten(saved['config'])
  new = flatten(config_meta(config)['config'])
  return [
    f'{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}'
    for k in sorted(old.keys() | new.keys())
    if k not in RUN_CONTROL_FIELDS and old.get(k) != new.get(k)
  ]


def _shapes(tree) -> dict[str, tuple]:
  def name(path) -> str:
    parts = (
      getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))) for k in path
    )
    return '.'.join(str(p) for p in parts)

  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {name(path): (tuple(x.shape), str(x.dtype)) for path, x in flat}


def shape_differences(stored, expected) -> list[str]:
  """Arrays whose presence, shape or dtype differ, e.g. after a code change."""
  old, new = _shapes(stored), _shapes(expected)
  return [
    f'{k}: checkpoint {old.get(k)}, now {new.get(k)}'
    for k in sorted(old.keys() | new.keys())
    if old.get(k) != new.get(k)
  ]


def abstract_like(
  state: TrainState, sharding: jax.sharding.Sharding
) -> TrainState:
  """Shapes and dtypes of `state`, to be restored with `sharding`.

  Without shardings in the target, Orbax restores every array onto one
  device and the next jitted step fails.
  """
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
  )


def restore_latest(
  workdir: str,
  config: ml_collections.ConfigDict,
  abstract_state: TrainState,
) -> TrainState | None:
  """The latest checkpoint in `workdir`, or None when there is none.

  Raises:
    errors.CheckpointError: the checkpoint belongs to another model or
      experiment, or cannot be read. Nothing in the workdir is changed.
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    return None
  manager = create_manager(workdir, config.keep_checkpoints, create=False)
  step = manager.latest_step()
  if step is None:
    return None
  where = os.path.join(checkpoint_dir(workdir), str(step))
  try:
    meta = manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    ).meta
  except Exception as e:  # Orbax raises many types for unreadable files.
    raise errors.CheckpointError(
      f'Cannot read the checkpoint metadata in {where} ({e}). It was left'
      ' untouched; use another --workdir, or move it away to start over.'
    ) from e
  if meta.get('model') != config.model:
    raise errors.CheckpointError(
      f'{where} is a checkpoint of model {meta.get("model")!r}, but this'
      f' config trains {config.model!r}. It was left untouched; use another'
      ' --workdir.'
    )
  differences = config_differences(meta, config)
  if differences:
    raise errors.CheckpointError(
      f'{where} was written by a different experiment; resuming would'
      ' silently change it. Differences:\n  '
      + '\n  '.join(differences)
      + '\nThe checkpoint was left untouched; use another --workdir (or the'
      ' same config to resume).'
    )
  try:
    stored = manager.item_metadata(step)['state']
    mismatched = shape_differences(stored, abstract_state)
    if not mismatched:
      restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)),
      )
  except Exception as e:
    raise errors.CheckpointError(
      f'Cannot restore the train state from {where}: {e}\nIt was left'
      ' untouched; use another --workdir.'
    ) from e
  if mismatched:
    raise errors.CheckpointError(
      f'Cannot restore the train state from {where}: its arrays do not match'
      ' the networks this config builds:\n  '
      + '\n  '.join(mismatched[:10])
      + f'\n({len(mismatched)} in all.) It was left untouched; use another'
      ' --workdir.'
    )
  return restored.state


def save(
  manager: ocp.CheckpointManager,
  state: TrainState,
  config: ml_collections.ConfigDict,
) -> None:
  """Saves asynchronously; Orbax commits atomically when the write is done."""
  step = int(jax.device_get(state.step))
  manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      meta=ocp.args.JsonSave(config_meta(config)),
    ),
    force=True,
  )
