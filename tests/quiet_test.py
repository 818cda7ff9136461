"""Tests of emotion_tfds.quiet: the start-up line filter, the log filter, and a whole quiet run of
train_main with the environment cleared of TF_CPP_MIN_LOG_LEVEL (which .ci/run sets)."""

from __future__ import annotations

import logging
import os
import pathlib
import re
import subprocess
import sys

from absl.testing import absltest
import support

from emotion_tfds import quiet

REPO = pathlib.Path(__file__).resolve().parents[1]
# What TensorFlow 2.21's C++ libraries print while they load on a CPU machine (twice over), then
# at the device listing (cuInit), whatever TF_CPP_MIN_LOG_LEVEL says.
_STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796477511.774044   27343 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796477511.774384   27343 cudart_stub.cc:31] Could not find cuda drivers on your machine
W0000 00:00:1796477511.774400   27343 some.cc:1] a warning
E0000 00:00:1796477515.832625   27343 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA
E0000 00:00:1796477515.832700   27343 other.cc:9] a real error
Traceback (most recent call last):
"""
_CPP_LINE = re.compile(r"^[IWEF]\d{4} ", re.MULTILINE)


def _record(path: pathlib.Path, level: int) -> logging.LogRecord:
  return logging.LogRecord("absl", level, str(path), 1, "message", None, None)


class StartupLinesTest(absltest.TestCase):

  def test_level_0_keeps_everything(self):
    self.assertEqual(quiet.kept_startup_lines(_STARTUP, 0), _STARTUP)

  def test_level_2_keeps_errors_but_the_expected_cuinit_failure(self):
    kept = quiet.kept_startup_lines(_STARTUP, 2)
    self.assertEqual(kept, "E0000 00:00:1796477515.832700   27343 other.cc:9] a real error\n"
                           "Traceback (most recent call last):\n")

  def test_level_1_keeps_warnings(self):
    kept = quiet.kept_startup_lines(_STARTUP, 1)
    self.assertEqual([line[:1] for line in _CPP_LINE.findall(kept)], ["W", "E"])
    self.assertNotIn("absl::InitializeLog", kept)

  def test_cuinit_failure_on_a_machine_with_a_driver_is_kept(self):
    with_driver = "".join(line for line in _STARTUP.splitlines(keepends=True)
                          if "cudart_stub" not in line)
    self.assertIn("failed call to cuInit", quiet.kept_startup_lines(with_driver, 2))


class LogFilterTest(absltest.TestCase):

  def test_project_warnings_and_everybodys_errors_pass(self):
    keep = quiet._ProjectWarningsAndErrors().filter  # pylint: disable=protected-access
    library = pathlib.Path(logging.__file__)
    self.assertTrue(keep(_record(REPO / "emotion_tfds" / "report" / "evaluation.py",
                                 logging.WARNING)))
    self.assertTrue(keep(_record(REPO / "builders" / "fer2013" / "x.py", logging.WARNING)))
    self.assertTrue(keep(_record(REPO / "ravdess_main.py", logging.WARNING)))
    self.assertTrue(keep(_record(library, logging.ERROR)))
    self.assertFalse(keep(_record(library, logging.WARNING)))
    self.assertFalse(keep(_record(REPO / ".venv" / "lib" / "tfds.py", logging.WARNING)))
    self.assertFalse(keep(_record(REPO / "emotion_tfds" / "quiet.py", logging.INFO)))


class QuietRunTest(absltest.TestCase):
  """The default output of a small run, as a fresh shell sees it: no TensorFlow log lines."""

  def test_a_healthy_cpu_run_prints_no_log_lines_and_one_line_per_epoch(self):
    root = support.tempdir(self)
    env = {k: v for k, v in os.environ.items() if k != quiet.CPP_LOG_LEVEL}
    done = subprocess.run(
        [sys.executable, str(REPO / "train_main.py"), f"--data_dir={root / 'data'}",
         f"--model_dir={root / 'run'}", "--generate_rows=300", "--pretrain_stages=",
         "--stages=head:1:1e-3:16", "--max_steps_per_epoch=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertEqual(done.stderr, "")
    self.assertNotRegex(done.stdout, _CPP_LINE)
    # Not a terminal: Keras's one line per epoch, no progress bar.
    self.assertRegex(done.stdout, r"\n2/2 - \d+s - .*accuracy: ")
    self.assertNotIn("\u2501", done.stdout)
    self.assertIn("Evaluation of the final model", done.stdout)


if __name__ == "__main__":
  absltest.main()
