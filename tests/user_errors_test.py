"""User mistakes end in one `error:` line that names the problem and the fix, exit code 1 and no
traceback: the mains in subprocesses, and train_main's flag checks in this process."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import support

from emotion_tfds import errors
import train_main

REPO = pathlib.Path(__file__).resolve().parents[1]
_TIMEOUT_S = 300
_HEAD_ONLY = ("--pretrain_stages=", "--stages=head:1:1e-3:16", "--max_steps_per_epoch=2")


class _MainTestCase(absltest.TestCase):

  def run_main(self, main: str, *flag_list: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / main), *flag_list], cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
                          text=True, timeout=_TIMEOUT_S)

  def assert_one_error_line(self, done: subprocess.CompletedProcess, pattern: str) -> str:
    """Exit code 1, no traceback, exactly one `error:` line matching `pattern`; returns it."""
    self.assertEqual(done.returncode, 1, done.stderr[-3000:])
    self.assertNotIn("Traceback", done.stderr)
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    self.assertLen(error_lines, 1, done.stderr[-3000:])
    self.assertRegex(error_lines[0], pattern)
    return error_lines[0]


def _not_a_model(folder: pathlib.Path) -> pathlib.Path:
  path = folder / "notes.keras"
  path.write_text("not a model\n")
  return path


class TrainMainTest(_MainTestCase):

  def test_a_dataset_config_that_does_not_exist(self):
    root = support.tempdir(self)
    done = self.run_main("train_main.py", f"--data_dir={root}", f"--model_dir={root / 'run'}",
                         "--dataset=fer2013/fer9", *_HEAD_ONLY)
    self.assert_one_error_line(
        done, r"^error: Dataset 'fer2013/fer9': fer2013 has no config 'fer9'; use one of "
              r"fer2013/fer7, fer2013/seed6\.$")

  def test_a_malformed_stage_is_one_line_that_names_the_stage_once(self):
    root = support.tempdir(self)
    done = self.run_main("train_main.py", f"--data_dir={root}", f"--model_dir={root / 'run'}",
                         "--stages=main:all:x:0.05:64")
    line = self.assert_one_error_line(
        done, r"^error: --stages: stage 1 'main:all:x:0\.05:64': epochs must be an integer, got "
              r"'x'\.$")
    self.assertEqual(done.stderr, line + "\n", "no usage text")
    self.assertEqual(done.stdout, "")

  def test_a_pretrained_file_that_is_not_a_model(self):
    root = support.tempdir(self)
    done = self.run_main("train_main.py", f"--data_dir={root}", f"--model_dir={root / 'run'}",
                         f"--pretrained={_not_a_model(root)}", *_HEAD_ONLY)
    self.assert_one_error_line(
        done, r"notes\.keras is not a Keras model .*; expected a \.keras model or a Keras 2 \.h5 "
              r"model or weights file\.$")


class DamagedDataTest(_MainTestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = support.generated_data_dir()

  def test_a_truncated_shard_names_the_file_and_the_rebuild(self):
    data_dir = support.tempdir(self) / "data"
    shutil.copytree(self.data_dir, data_dir)
    (shard,) = data_dir.glob("*/seed6/*/*-train.tfrecord-00000-of-*")
    shard.write_bytes(shard.read_bytes()[:1000])
    done = self.run_main("train_main.py", f"--data_dir={data_dir}",
                         f"--model_dir={data_dir.parent / 'run'}", "--generate_rows=0",
                         *_HEAD_ONLY)
    line = self.assert_one_error_line(done, r"is damaged: .* \(truncated record at \d+\)\. "
                                            r"Rebuild it: `tfds build builders/\w+ --config=seed6 ")
    self.assertIn(str(shard), line)
    self.assertIn(f"--data_dir={data_dir} ", line)
    self.assertTrue(line.endswith(" --overwrite`."), line)


class ModelFileTest(_MainTestCase):
  """A .keras file that exists but is not a model: said so, never "File not found"."""

  def test_eval_main(self):
    root = support.tempdir(self)
    done = self.run_main("eval_main.py", f"--model_path={_not_a_model(root)}",
                         f"--data_dir={root}")
    self.assert_one_error_line(done, r"notes\.keras is not a Keras model .*; expected a \.keras "
                                     r"model, a SavedModel directory or a \.tflite file\.$")
    self.assertNotIn("not found", done.stderr)

  def test_export_main(self):
    root = support.tempdir(self)
    done = self.run_main("export_main.py", f"--model_path={_not_a_model(root)}",
                         f"--data_dir={root}", f"--out_dir={root / 'export'}")
    self.assert_one_error_line(done, r"notes\.keras is not a Keras model .*; expected a \.keras "
                                     r"model\.$")
    self.assertNotIn("not found", done.stderr)


class MakeConfigTest(parameterized.TestCase):
  """train_main's flags that cannot work: a ConfigError naming the flag (one line in the main)."""

  def tearDown(self):
    flags.FLAGS.unparse_flags()
    super().tearDown()

  @parameterized.parameters(
      (["--stages=all:1:0.05:64:foo=1"],
       r"^--stages: stage 1 'all:1:0\.05:64:foo=1': unknown option 'foo'; expected one of "),
      (["--stages=all:1:0.05:0"], r"^--stages: stage 1 'all:1:0\.05:0': global_batch must be >= 1, "
                                  r"got 0\.$"),
      (["--pretrain_stages=all:1:1e-3:32:lbfgs"],
       r"^--pretrain_stages: stage 1 'all:1:1e-3:32:lbfgs': optimizer must be one of "),
      (["--stages=a:head:1:1e-3:32", "--pretrain_stages=a:all:1:1e-3:32"],
       r"^--stages/--pretrain_stages: Stage names must be unique; repeated: \['a'\]"),
      (["--augment_crop=2"], r"^--augment_\*: "),
      (["--keep_best=accuracy", "--novalidate"],
       r"^keep_best needs the per-epoch validation: drop --novalidate or --keep_best\.$"),
  )
  def test_names_the_flag(self, flag_list, message):
    flags.FLAGS(["train_main", *flag_list])
    with self.assertRaisesRegex(errors.ConfigError, message):
      train_main.make_config()


if __name__ == "__main__":
  absltest.main()
