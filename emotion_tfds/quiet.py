"""Quiet mains: a main prints its own lines; TensorFlow's and the libraries' log lines wait behind
the usual switches. A main imports this module first, before anything that imports TensorFlow, and
runs with `quiet.run(main)`:

  - TensorFlow's C++ log level, TF_CPP_MIN_LOG_LEVEL, is 2 unless set: errors only, none of the
    INFO and WARNING lines (XLA, tf.data, oneDNN...). TF_CPP_MIN_LOG_LEVEL=0 shows them all.
  - The lines TensorFlow's C++ libraries print while they load, before that level applies ("WARNING:
    All log messages before absl::InitializeLog() ...", the oneDNN and CUDA-stub INFO lines, twice)
    are held back until `import tensorflow` and the device listing are done, then written out
    filtered by the same level. The "failed call to cuInit" ERROR line is dropped too when
    TensorFlow has just said that the machine has no CUDA driver: on a CPU machine it is expected.
  - Python logging (absl, TensorFlow, TFDS; Python warnings are routed to it) shows the warnings
    this project's code logs and everybody's errors; absl's --verbosity (0: INFO, -1: warnings) or
    --logger_levels puts absl's own levels back.
  - A `errors.UserError` ends the main with one `error:` line (`errors.exit_on_user_error`).
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import functools
import importlib.abc
import importlib.util
import logging
import os
import pathlib
import re
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging as absl_logging

from emotion_tfds import errors

CPP_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_CPP_LOG_LEVEL = "2"
# A C++ log line: severity letter, then MMDD (absl's format).
_CPP_LINE = re.compile(r"([IWEF])\d{4} ")
_CPP_SEVERITIES = "IWEF"  # Index = the TF_CPP_MIN_LOG_LEVEL that hides it.
_EARLY_LOG_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
_NO_CUDA_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT_FAILED = "failed call to cuInit"
_ROOT = pathlib.Path(__file__).resolve().parents[1]
_PROJECT_FOLDERS = ("emotion_tfds", "builders")


def run(main: Callable, **kwargs) -> None:
  """`app.run(main, **kwargs)` with quiet Python logging and one line for a user error."""
  app.run(errors.exit_on_user_error(_with_quiet_logging(main)), **kwargs)


def kept_startup_lines(text: str, level: int) -> str:
  """The lines of `text` (TensorFlow's output while it loads) that log level `level` shows."""
  no_driver = _NO_CUDA_DRIVER in text
  kept = []
  for line in text.splitlines(keepends=True):
    severity = _CPP_LINE.match(line)
    if severity and _CPP_SEVERITIES.index(severity[1]) < level:
      continue
    if level >= 1 and (line.startswith(_EARLY_LOG_NOTICE) or
                       (no_driver and _CUINIT_FAILED in line)):
      continue
    kept.append(line)
  return "".join(kept)


def _with_quiet_logging(main: Callable) -> Callable:

  @functools.wraps(main)
  def wrapped(argv):
    if not (flags.FLAGS["verbosity"].present or flags.FLAGS["logger_levels"].present):
      absl_logging.set_verbosity(absl_logging.WARNING)
      logging.captureWarnings(True)  # Through the filter: a library's warnings.warn waits too.
      only_ours = _ProjectWarningsAndErrors()
      for handler in (absl_logging.get_absl_handler(), *logging.getLogger("tensorflow").handlers):
        handler.addFilter(only_ours)
    return main(argv)

  return wrapped


class _ProjectWarningsAndErrors(logging.Filter):
  """Passes errors, and warnings logged by this project's code (not the libraries')."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    if record.levelno < logging.WARNING:
      return False
    try:
      parts = pathlib.Path(record.pathname).resolve().relative_to(_ROOT).parts
    except ValueError:
      return False
    return len(parts) == 1 or parts[0] in _PROJECT_FOLDERS


def _cpp_log_level() -> int:
  try:
    return int(os.environ.get(CPP_LOG_LEVEL, "0"))
  except ValueError:
    return 0


@contextlib.contextmanager
def _startup_lines_filtered():
  """Holds back what is written to file descriptor 2, then writes out `kept_startup_lines`."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      sys.stderr.write(kept_startup_lines(held.read().decode(errors="replace"), _cpp_log_level()))
      sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
  """TensorFlow's own loader, run inside `_startup_lines_filtered` with the device listing."""

  def __init__(self, loader: importlib.abc.Loader):
    self._loader = loader

  def __getattr__(self, name: str):
    return getattr(self._loader, name)

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module) -> None:
    with _startup_lines_filtered():
      self._loader.exec_module(module)
      module.config.list_physical_devices()  # CUDA start-up (cuInit) happens here.


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` once, with `_QuietLoader` as its loader."""

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name != "tensorflow":
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


os.environ.setdefault(CPP_LOG_LEVEL, DEFAULT_CPP_LOG_LEVEL)
if "tensorflow" not in sys.modules:
  sys.meta_path.insert(0, _QuietTensorFlowFinder())
