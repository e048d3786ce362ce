"""Errors that mean "the user must change something", with what to change.

`main` prints these as one clear message instead of a traceback; anything
else is a bug and keeps its traceback.
"""


class VIGenError(Exception):
  """Base class: a problem with the user's input, not with the code."""


class ConfigError(VIGenError, ValueError):
  """A config value is invalid or inconsistent."""


def require(ok: bool, message: str) -> None:
  """Raises ConfigError(message) unless `ok`: every config rule's form."""
  if not ok:
    raise ConfigError(message)


class DataError(VIGenError):
  """A dataset is missing or unreadable."""


class CheckpointError(VIGenError):
  """The workdir holds checkpoints that this run cannot use."""


class DivergenceError(VIGenError, FloatingPointError):
  """A loss, a gradient, or an array of the train state became NaN or inf."""


class WorkdirError(VIGenError):
  """The workdir cannot be written (permissions, a file in the way)."""


class DiskFullError(WorkdirError):
  """The workdir's disk has no room for the next checkpoint."""
