"""Errors a user can fix, and the mains' way of reporting them: one line with the fix, no traceback.

Library code raises a `UserError` subclass where the cause is in the user's hands (data not built,
a checkpoint of another run, a strategy this machine cannot run); each also derives from the
built-in exception it refines, so callers catching `FileNotFoundError` or `ValueError` keep working.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import sys


class UserError(Exception):
  """An error whose message tells the user what to change."""


class DataNotBuiltError(UserError, FileNotFoundError):
  """A dataset the run needs is not built in the data_dir."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder named on the command line does not exist or holds nothing usable."""


class DamagedDataError(UserError, OSError):
  """A built dataset has a file that cannot be read (truncated or corrupted): rebuild it."""


class CheckpointMismatchError(UserError, ValueError):
  """model_dir holds a checkpoint written by a run with other settings."""


class UnusableModelError(UserError, ValueError):
  """A model file that cannot serve as the network (wrong input, no classifier, other layers)."""


class ConfigError(UserError, ValueError):
  """Settings that cannot work together or with the data (e.g. a batch larger than the split)."""


class StrategyUnavailableError(UserError, RuntimeError):
  """The requested tf.distribute strategy cannot run on this machine."""


class NonFiniteLossError(UserError, FloatingPointError):
  """Training diverged: the loss became NaN or infinite (too high a learning rate, 16-bit range)."""


def exit_on_user_error(main: Callable) -> Callable:
  """Wraps an absl main: a `UserError` prints "error: <message>" to stderr and exits with 1."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(1)

  return wrapped
