"""Run guards: stop requests (SIGTERM, Ctrl-C, preemption) and the NaN/inf
check.

Both let the loop stop cleanly: a stop request at an iteration boundary
with a checkpoint of that step, a divergence before anything of the broken
step range is saved. This module knows no model and writes nothing.
"""

import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

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
    # Called at every step on every host, as reached_preemption needs.
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
  stacked = jax.device_get(pending)
  summary, broken = {}, []
  for name in stacked[0] if stacked else ():
    values = np.asarray([m[name] for m in stacked], np.float64)
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
