"""Helpers shared by the tests; pytest puts tests/ on sys.path, so they import it as `support`."""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import unittest


def tempdir(test: unittest.TestCase) -> pathlib.Path:
  """A new empty folder, removed when `test` ends (absltest's create_tempdir needs parsed flags,
  which pytest does not parse)."""
  path = pathlib.Path(tempfile.mkdtemp(prefix=f"{type(test).__name__}_"))
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path
