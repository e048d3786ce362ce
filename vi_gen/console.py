"""What a training run prints: its config, readably, one progress line per
log step, with an ETA from training time alone, and how it ended."""

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import ml_collections
from absl import logging
from flax import traverse_util

from vi_gen import checkpoint

BUNDLED_SPLIT = 'the bundled 10k MNIST test images (data.split is not used)'


def _hidden_fields(data: ml_collections.ConfigDict) -> set[str]:
  """The data fields that the data `data.name` names does not read."""
  if data.name == 'celeb_a':
    return {'source'}  # mnist only.
  celeba_only = {'crop_size', 'resize', 'shuffle_buffer'}
  if data.name == 'mnist':
    return celeba_only
  # A 2-D mixture is drawn, not read: no split, size or source.
  return celeba_only | {'source', 'split', 'image_size'}


def config_lines(config: ml_collections.ConfigDict) -> list[str]:
  """`section.field = value`, one per line, the top-level fields first and
  then section by section, leaving out the data fields that the chosen
  data does not use (they would claim a crop on MNIST); the bundled
  MNIST's split is named as what it is."""
  hidden = {f'data.{name}' for name in _hidden_fields(config.data)}
  flat = traverse_util.flatten_dict(config.to_dict(), sep='.')
  lines = []
  for key, value in sorted(flat.items(), key=lambda kv: ('.' in kv[0], kv[0])):
    if key in hidden:
      continue
    if key == 'data.split' and config.data.source == 'bundled':
      lines.append(f'{key}: {BUNDLED_SPLIT}')
    else:
      lines.append(f'{key} = {value!r}')
  return lines


def _clock(seconds: float) -> str:
  """'1h 02m', '9m 55s', '7s'."""
  seconds = round(seconds)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f'{hours}h {minutes:02d}m'
  return f'{minutes}m {seconds:02d}s' if minutes else f'{seconds}s'


class Progress:
  """Iterations per second and the ETA from training time alone.

  clu's ReportProgress divides by the wall time since its last report,
  including the checkpoints, pictures and evaluations in between (its
  `timed` blocks only show their share), so its ETA jumped (26 min at step
  500, 4 min at 1600 in the quickstart). Here the time spent in `timed`
  blocks, and the first iteration's compilation, is left out.
  """

  def __init__(
    self,
    num_steps: int,
    step: int,
    clock: Callable[[], float] = time.monotonic,
  ):
    self._num_steps = num_steps
    self._clock = clock
    self._step, self._time, self._excluded = step, clock(), 0.0

  @contextlib.contextmanager
  def timed(self) -> Iterator[None]:
    """Leaves the block's wall time out of the rate."""
    start = self._clock()
    try:
      yield
    finally:
      self._excluded += self._clock() - start

  def report(self, step: int) -> tuple[float, str]:
    """(iterations per second since the last report, the progress text)."""
    now = self._clock()
    seconds = max(now - self._time - self._excluded, 1e-9)
    rate = (step - self._step) / seconds
    self._step, self._time, self._excluded = step, now, 0.0
    eta = (self._num_steps - step) / rate if rate > 0 else float('inf')
    return rate, (
      f'{100 * step / self._num_steps:.1f}% ({step}/{self._num_steps}),'
      f' {rate:.3g} it/s, ETA {_clock(eta) if eta < 1e9 else "?"}'
    )


def progress_line(text: str, metrics: dict[str, float]) -> str:
  """The one line of a log step: the progress, then the metrics (the
  parameter norms stay in TensorBoard)."""
  shown = ', '.join(
    f'{name} {value:.4g}'
    for name, value in sorted(metrics.items())
    if not name.endswith('param_norm')
  )
  return f'{text}; {shown}' if shown else text


def log_end(
  config: ml_collections.ConfigDict,
  workdir: str,
  step: int,
  saved_step: int | None,
  seconds: float,
  summary: dict[str, float],
) -> None:
  """Logs one block that says how the run ended (the step, the last
  checkpoint, the wall time in this process, the last metrics) and where
  everything went."""
  done = step >= config.run.num_steps
  status = 'complete' if done else 'stopped early'
  shown = {k: v for k, v in summary.items() if not k.endswith('param_norm')}
  pictures = sorted(
    name
    for name in os.listdir(workdir)
    if os.path.isdir(os.path.join(workdir, name))
    and any(f.endswith('.png') for f in os.listdir(os.path.join(workdir, name)))
  )
  logging.info(
    'Run %s: step %d of %d (last checkpoint: step %s), %.0f s in this'
    ' process.%s\n  workdir: %s\n  checkpoints: %s\n  pictures: %s\n'
    '  evaluations: %s\n  TensorBoard: tensorboard --logdir %s',
    status,
    step,
    config.run.num_steps,
    saved_step,
    seconds,
    (' Last metrics: ' + ', '.join(f'{k} {v:.4g}' for k, v in shown.items()))
    if shown
    else '',
    os.path.abspath(workdir),
    checkpoint.checkpoint_dir(workdir),
    ', '.join(f'{d}/step_*.png' for d in pictures) or 'none',
    'eval_<step>.json'
    if config.run.eval_every_steps
    else 'off (eval_every_steps=0)',
    os.path.abspath(workdir),
  )
