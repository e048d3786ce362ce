"""Run guards: stop requests (SIGTERM, Ctrl-C, preemption), the NaN/inf
check, and the workdir lock.

They let the loop stop cleanly: a stop request at an iteration boundary
with a checkpoint of that step, a divergence before anything of the broken
step range is saved, a second run in the same workdir before it writes
anything. This module knows no model; it writes only the lock file.
"""

import json
import os
import signal
import socket
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vi_gen import checkpoint, errors
from vi_gen.state import TrainState


class StopRequest:
  """SIGTERM, Ctrl-C (SIGINT) or Orbax's multi-host preemption notice, as a
  flag.

  The loop polls `requested` at every iteration boundary and then saves and
  stops. The handler only sets the flag: acting inside it could interrupt
  an Orbax save or a device transfer halfway. A second Ctrl-C stops at once
  (KeyboardInterrupt), for a run that hangs. On multi-host runs JAX's
  preemption service catches SIGTERM itself and `reached_preemption` makes
  every host stop at the same step; a Python handler there would replace
  the service's and let the hosts disagree, so none is installed. Nor is
  one outside the main thread, where Python cannot install it.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self._previous = {}
    self.reason = ''

  def __enter__(self) -> 'StopRequest':
    single = jax.process_count() == 1
    main = threading.current_thread() is threading.main_thread()
    if single and main:
      for signum in self.SIGNALS:
        # None: a handler installed outside Python, which could not be
        # restored. An ignored SIGINT (a background job of a shell) stays
        # ignored.
        previous = signal.getsignal(signum)
        ignored = signum == signal.SIGINT and previous == signal.SIG_IGN
        if ignored:
          logging.warning(
            'Ctrl-C (SIGINT) is ignored in this process (a background job?):'
            ' stop it with SIGTERM (kill %d) to save and exit.',
            os.getpid(),
          )
        if previous is not None and not ignored:
          signal.signal(signum, self.handle)
          self._previous[signum] = previous
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  def handle(self, signum: int, frame) -> None:
    """The signal handler: sets `reason`; a second SIGINT raises
    KeyboardInterrupt."""
    del frame
    if signum == signal.SIGINT and self.reason:
      raise KeyboardInterrupt
    self.reason = signal.Signals(signum).name
    if signum == signal.SIGINT:
      print(
        '\nCtrl-C: saving a checkpoint at the end of this iteration, then'
        ' stopping (Ctrl-C again stops at once, without saving).',
        flush=True,
      )

  def requested(self, step: int, manager: ocp.CheckpointManager) -> bool:
    """Whether the loop should save and stop before iteration `step`.

    Called at every step on every host, as `reached_preemption` needs.
    """
    if manager.reached_preemption(step):
      self.reason = self.reason or 'a preemption notice'
    return bool(self.reason)


@jax.jit
def _finite_leaves(state: TrainState) -> jax.Array:
  return jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(state)])


def check_finite(
  pending: list[dict],
  first: int,
  last: int,
  state: TrainState,
  saved_step: int | None,
) -> dict[str, float]:
  """Means of the metrics of iterations first..last.

  Args:
    pending: the metrics of iterations first..last, on the device.
    first, last: the step range, for the message.
    state: the state after iteration `last`.
    saved_step: the last checkpoint's step (None if none), for the message.

  Raises:
    errors.DivergenceError: a metric or an array of the state (params,
      BatchNorm statistics, optimizer states, old and EMA params; not
      `extras`, which may hold NaN on purpose) holds NaN or inf. The
      metrics alone miss the arrays that no metric summarizes.
  """
  # Stacked on the device first: one read per metric, not per iteration.
  metric_names = list(pending[0]) if pending else []
  stacked = jax.device_get(
    {name: jnp.stack([m[name] for m in pending]) for name in metric_names}
  )
  summary, broken = {}, []
  for name in metric_names:
    values = np.asarray(stacked[name], np.float64)
    if np.all(np.isfinite(values)):
      summary[name] = float(values.mean())
    else:
      broken.append(name)
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


class WorkdirLock:
  """One run per workdir: `workdir/LOCK` names the host and pid that hold it.

  A second run (another terminal, a scheduler's retry while the first still
  runs) is refused before it writes anything; Orbax alone would let both
  write until one dies in a tensorstore error. A lock left by a process
  that no longer exists on this host (a SIGKILL, a crash) is taken over.
  Only process 0 of a multi-host run takes it.
  """

  NAME = 'LOCK'

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, self.NAME)
    self._held = False

  def __enter__(self) -> 'WorkdirLock':
    if jax.process_index() != 0:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    holder = {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'started': time.strftime('%Y-%m-%d %H:%M:%S'),
    }
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        self._refuse_or_clear()
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(holder, f)
      self._held = True
      return self
    raise errors.WorkdirError(f'Could not take the lock {self.path}.')

  def _refuse_or_clear(self) -> None:
    """Raises WorkdirError if a live process holds the lock, else removes
    the stale lock."""
    try:
      with open(self.path) as f:
        holder = json.load(f)
    except (OSError, ValueError):
      holder = {}
    host, pid = holder.get('host'), holder.get('pid')
    if host == socket.gethostname() and isinstance(pid, int):
      try:
        os.kill(pid, 0)
      except ProcessLookupError:
        logging.warning(
          'Taking over the lock of process %d, which no longer runs.', pid
        )
        os.remove(self.path)
        return
      except PermissionError:
        pass  # It exists, under another user.
    raise errors.WorkdirError(
      f'Another run is using this workdir: process {pid} on host {host},'
      f' started {holder.get("started", "?")} ({self.path}). Wait for it to'
      f' finish, use another --workdir, or, if that run is gone, delete'
      f' {self.path}.'
    )

  def __exit__(self, *exc_info) -> None:
    if self._held:
      os.remove(self.path)
      self._held = False
