"""Orbax checkpoints of the train state, with the config that produced them.

Each checkpoint holds two items: `state` (the TrainState) and `meta` (the
model name and the config as JSON). On resume the config is compared first,
so a workdir of another model or another experiment gives a clear error and
is left untouched, instead of a shape error deep in Orbax or, worse, a run
that silently continues a different experiment.

A checkpoint that cannot be read (a truncated file, a step directory that was
only partly written) is a different matter: the run falls back to the newest
one that can be read and moves the unreadable ones aside, never deleting
anything.
"""

import contextlib
import errno
import json
import os
import shutil

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from jax.experimental import multihost_utils

from vi_gen import errors
from vi_gen.state import TrainState

# Config sections that may change between a run and its resumption: they
# control how long the run is, what it logs, where the data lives and how
# layers are lowered (`run`), what is measured (`eval`) and testing aids
# (`debug`), never what the run computes.
RUN_CONTROL_SECTIONS = ('run', 'eval', 'debug')
# Where unreadable checkpoints are moved (<workdir>/<this>/<step>).
UNREADABLE_DIR = 'checkpoints_unreadable'
# Orbax writes this last into every step directory it commits, on every
# file system; a step directory without it was never completely written.
COMMIT_MARKER = 'commit_success.txt'
# In the names of the directories of saves that are not committed yet.
TMP_MARKER = '.orbax-checkpoint-tmp'


def checkpoint_dir(workdir: str) -> str:
  """<workdir>/checkpoints (absolute), where Orbax keeps the steps."""
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(
  workdir: str, keep: int, create: bool
) -> ocp.CheckpointManager:
  """A manager for `workdir/checkpoints`; `create=False` only reads.

  The writer removes the temporary directories of saves that a killed run
  left unfinished: they never held a complete checkpoint.
  """
  options = ocp.CheckpointManagerOptions(
    # A reader neither saves nor deletes (Orbax warns otherwise).
    max_to_keep=keep if create else None,
    save_interval_steps=1 if create else 0,
    create=create,
    read_only=not create,
    cleanup_tmp_directories=create,
  )
  # Handlers, not just names: reading the state's metadata needs them.
  handlers = {
    'state': ocp.StandardCheckpointHandler(),
    'meta': ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(
    checkpoint_dir(workdir), item_handlers=handlers, options=options
  )


def flatten(config: dict) -> dict:
  """{'a.b': value} of a nested dict, tuples as lists (as JSON has them)."""
  flat = traverse_util.flatten_dict(config, sep='.')
  return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}


def config_meta(config: ml_collections.ConfigDict) -> dict:
  """The model and the whole config as JSON, saved beside every checkpoint
  so that a resume can tell another experiment apart."""
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
    if not is_run_control(k) and old.get(k) != new.get(k)
  ]


def is_run_control(field: str) -> bool:
  """Whether a dotted config field may change on resume: those under
  RUN_CONTROL_SECTIONS may."""
  return field.split('.', 1)[0] in RUN_CONTROL_SECTIONS


def _named_leaves(tree) -> list[tuple[str, object]]:
  """(dotted path, leaf), e.g. ('params.generator.Dense_0.kernel', x)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [
    (jax.tree_util.keystr(path, simple=True, separator='.'), leaf)
    for path, leaf in flat
  ]


def leaf_names(tree) -> list[str]:
  """Dotted paths of the leaves, e.g. 'params.generator.Dense_0.kernel'."""
  return [name for name, _ in _named_leaves(tree)]


def _shapes(tree) -> dict[str, tuple]:
  return {
    name: (tuple(x.shape), str(x.dtype)) for name, x in _named_leaves(tree)
  }


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


def _check_same_experiment(
  where: str, meta: dict, config: ml_collections.ConfigDict
) -> None:
  """Raises CheckpointError when `meta` is of another model or experiment."""
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


def _reason(e: Exception) -> str:
  """The gist of an Orbax/TensorStore error, which can run to pages."""
  gist = str(e).strip().splitlines()[0] if str(e).strip() else ''
  gist = gist.split(' See full TensorStore')[0][:300].rstrip('.')
  return f'{type(e).__name__}: {gist}'


def _move_aside(workdir: str, step: int) -> str:
  """Moves step directory `step` to <workdir>/checkpoints_unreadable/."""
  target_dir = os.path.join(os.path.abspath(workdir), UNREADABLE_DIR)
  os.makedirs(target_dir, exist_ok=True)
  target, copy = os.path.join(target_dir, str(step)), 1
  while os.path.exists(target):  # Keep an earlier one moved at this step.
    target = os.path.join(target_dir, f'{step}.{copy}')
    copy += 1
  os.rename(os.path.join(checkpoint_dir(workdir), str(step)), target)
  return target


def _set_aside(workdir: str, unreadable: list[tuple[int, str]]) -> None:
  """Moves the unreadable step directories newer than the restored one.

  Left in place, Orbax would list them as the latest steps: the next save
  at such a step number would collide with the directory, and garbage
  collection (`keep_checkpoints`) would count them and delete good ones.
  """
  if jax.process_index() == 0:
    for step, reason in unreadable:
      target = _move_aside(workdir, step)
      logging.warning(
        'Moved the unreadable checkpoint of step %d to %s (%s). Nothing was'
        ' deleted.',
        step,
        target,
        reason,
      )
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('vi_gen:unreadable_checkpoints_moved')


def restore_latest(
  workdir: str,
  config: ml_collections.ConfigDict,
  abstract_state: TrainState,
  repair: bool = False,
) -> TrainState | None:
  """The newest readable checkpoint in `workdir`, or None when there is none.

  A checkpoint that cannot be read is skipped, with a warning, for the next
  older one. With `repair` (training), the skipped ones are then moved to
  <workdir>/checkpoints_unreadable/<step> so that the run can save those
  steps again; without it (sampling) nothing is changed.

  Raises:
    errors.CheckpointError: the newest readable checkpoint belongs to
      another model or experiment, or its arrays do not fit this config's
      networks; or checkpoints exist and none can be read. In each case
      nothing in the workdir is changed.
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    return None
  manager = create_manager(workdir, config.run.keep_checkpoints, create=False)
  unreadable = []
  for step in sorted(manager.all_steps(), reverse=True):
    where = os.path.join(checkpoint_dir(workdir), str(step))
    try:
      if not os.path.exists(os.path.join(where, COMMIT_MARKER)):
        raise FileNotFoundError(f'no {COMMIT_MARKER}: its save never finished')
      meta = manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
      ).meta
      stored = manager.item_metadata(step)['state']
      if stored is None:
        raise FileNotFoundError(f'{where}/state holds no train state')
    except Exception as e:  # Orbax raises many types for unreadable files.
      unreadable.append((step, _reason(e)))
      logging.warning('Cannot read the checkpoint %s (%s).', where, _reason(e))
      continue
    # Not corruption: a clear error, before anything is moved.
    _check_same_experiment(where, meta, config)
    mismatched = shape_differences(stored, abstract_state)
    if mismatched:
      raise errors.CheckpointError(
        f'Cannot restore the train state from {where}: its arrays do not'
        ' match the networks this config builds:\n  '
        + '\n  '.join(mismatched[:10])
        + f'\n({len(mismatched)} in all.) It was left untouched; use another'
        ' --workdir.'
      )
    try:
      state = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)),
      ).state
    except Exception as e:
      unreadable.append((step, _reason(e)))
      logging.warning('Cannot read the checkpoint %s (%s).', where, _reason(e))
      continue
    if unreadable:
      logging.warning('Falling back to the checkpoint of step %d.', step)
      if repair:
        _set_aside(workdir, unreadable)
    return state
  if unreadable:
    listing = '\n  '.join(f'step {s}: {r}' for s, r in unreadable)
    raise errors.CheckpointError(
      f'No checkpoint in {checkpoint_dir(workdir)} can be read:\n  {listing}\n'
      'Nothing was changed, and this run does not train from scratch over'
      ' them. Move that directory away to start over, or use another'
      ' --workdir.'
    )
  return None


def save(
  manager: ocp.CheckpointManager,
  state: TrainState,
  config: ml_collections.ConfigDict,
) -> None:
  """Saves asynchronously; Orbax commits atomically when the write is done.

  Waits for the previous save first, so that its failure surfaces here, and
  checks that the disk has room for this one before writing anything.

  Raises:
    errors.DiskFullError: no room for the checkpoint (before writing, or
      when the write itself runs out of space); the last good checkpoint
      is kept and no partly written step is left behind.
  """
  step = int(jax.device_get(state.step))
  wait(manager)
  _check_free_space(manager, state, step)
  with _disk_full_as_error(manager, step):
    manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave(config_meta(config)),
      ),
      force=True,
    )


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for the save in flight; raises errors.DiskFullError (one line,
  no partial step left) if it ran out of space."""
  with _disk_full_as_error(manager, None):
    manager.wait_until_finished()


# Room kept free beyond the checkpoint's own size: Orbax's metadata files
# and whatever else the run writes until the next save (PNGs, events).
DISK_MARGIN_BYTES = 1 << 20


def checkpoint_bytes(manager: ocp.CheckpointManager, state: TrainState) -> int:
  """The expected size of a new checkpoint: the newest committed one's size
  on disk, or (before the first) the state's bytes plus a quarter for the
  format's overhead."""
  latest = manager.latest_step()
  if latest is not None:
    step_dir = os.path.join(str(manager.directory), str(latest))
    return sum(
      os.path.getsize(os.path.join(root, name))
      for root, _, names in os.walk(step_dir)
      for name in names
    )
  return int(1.25 * sum(x.nbytes for x in jax.tree.leaves(state)))


def _check_free_space(
  manager: ocp.CheckpointManager, state: TrainState, step: int
) -> None:
  directory = str(manager.directory)
  os.makedirs(directory, exist_ok=True)
  free = shutil.disk_usage(directory).free
  needed = checkpoint_bytes(manager, state)
  if free < needed + DISK_MARGIN_BYTES:
    raise errors.DiskFullError(_disk_full_message(manager, step, free, needed))


def _disk_full_message(
  manager: ocp.CheckpointManager,
  step: int | None,
  free: int,
  needed: int | None = None,
) -> str:
  mb = 1 << 20
  latest = manager.latest_step()
  room = f'{free / mb:.1f} MB free'
  if needed is not None:
    room += f', a checkpoint needs about {needed / mb:.1f} MB'
  what = 'the checkpoint' if step is None else f'the checkpoint of step {step}'
  if latest is None:
    kept = 'no checkpoint was written yet. Free some space and start again.'
  else:
    kept = (
      f'the last good checkpoint (step {latest}) is kept. Free some space'
      ' and run the same command to resume from it.'
    )
  return (
    f'Disk full: no room for {what} in {manager.directory} ({room}); {kept}'
  )


def is_disk_full(e: BaseException) -> bool:
  """Whether `e`, or an exception it was raised from, means "no space left"
  (OSError ENOSPC/EDQUOT, or TensorStore's RESOURCE_EXHAUSTED)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if 'RESOURCE_EXHAUSTED' in str(e) or 'No space left' in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


@contextlib.contextmanager
def _disk_full_as_error(manager: ocp.CheckpointManager, step: int | None):
  """Turns a write that ran out of space into errors.DiskFullError, after
  removing the unfinished step directories it left (never a committed
  one: those hold no `.orbax-checkpoint-tmp` in their name)."""
  try:
    yield
  except Exception as e:
    if not is_disk_full(e):
      raise
    directory = str(manager.directory)
    for name in os.listdir(directory):
      if TMP_MARKER in name:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    raise errors.DiskFullError(
      _disk_full_message(manager, step, shutil.disk_usage(directory).free)
    ) from None
