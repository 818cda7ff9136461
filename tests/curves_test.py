"""Tests of emotion_tfds.report.curves and curves_main.py on real TensorBoard event files written here.

(The curves of a real train_main run are read back in train_main_test.DefaultRunTest.)
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

from absl.testing import absltest
import support
import tensorflow as tf

from emotion_tfds.report import curves

REPO = pathlib.Path(__file__).resolve().parents[1]


def _write(logdir: pathlib.Path, tag_values: dict[str, list[float]], first_step: int = 0) -> None:
  writer = tf.summary.create_file_writer(str(logdir))
  with writer.as_default():
    for tag, values in tag_values.items():
      for step, value in enumerate(values, start=first_step):
        tf.summary.scalar(tag, value, step=step)
  writer.close()


class CurvesTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model_dir = support.tempdir(self)
    tb = self.model_dir / "tb"
    # Written first, named to sort last: read_run must order stages by time, not by name.
    _write(tb / "z_pretrain", {curves.TRAIN_ACCURACY: [0.3, 0.5, 0.6],
                               curves.EVAL_ACCURACY: [0.35, 0.45, 0.55]})
    time.sleep(0.05)
    # Its epochs count on from the pretraining's three (steps 3, 4).
    _write(tb / "a_head", {curves.TRAIN_ACCURACY: [0.7], curves.EVAL_ACCURACY: [0.6],
                           curves.EVAL_MACRO_F1: [0.5], "train/loss": [1.0]}, first_step=3)
    time.sleep(0.05)
    # A resumed run: a second event file rewrites the stage's first epoch (step 3) and adds one.
    _write(tb / "a_head", {curves.TRAIN_ACCURACY: [0.75, 0.8], curves.EVAL_ACCURACY: [0.65, 0.7],
                           curves.EVAL_MACRO_F1: [0.55, 0.6]}, first_step=3)
    (tb / "empty_stage").mkdir()
    # Runs that are no stage: the run-level summaries (in tb itself in runs written before they
    # got their folder) and an emotion's per-epoch scalars.
    _write(tb / "run", {"run/final_accuracy": [0.7]}, first_step=5)
    _write(tb, {"run/final_accuracy": [0.7]}, first_step=5)
    _write(tb / "per_emotion" / "happy", {"per_emotion/recall": [0.2, 0.4, 0.6, 0.8, 0.9]})

  def test_read_run_orders_stages_by_time_and_keeps_the_last_value_of_a_step(self):
    stages = curves.read_run(self.model_dir)
    self.assertEqual([s.name for s in stages], ["z_pretrain", "a_head"])
    self.assertEqual([s.epochs() for s in stages], [3, 2])
    head = stages[1].values
    self.assertSequenceAlmostEqual(head[curves.TRAIN_ACCURACY], [0.75, 0.8], places=6)
    self.assertSequenceAlmostEqual(head[curves.EVAL_ACCURACY], [0.65, 0.7], places=6)
    self.assertNotIn("train/loss", head)
    self.assertEqual(stages[0].values[curves.EVAL_MACRO_F1], [])
    self.assertEqual(stages[1].run_epochs(curves.EVAL_ACCURACY), [4, 5])

  def test_markdown_table_has_a_row_per_stage_epoch(self):
    table = curves.markdown_table(curves.read_run(self.model_dir))
    self.assertIn("| z_pretrain | 2 | 50.0% | 45.0% | - |", table)
    self.assertIn("| a_head | 5 | 80.0% | 70.0% | 0.600 |", table)
    self.assertLen(table.splitlines(), 2 + 3 + 2)

  def test_curves_main_prints_the_table_and_writes_a_png(self):
    png = self.model_dir / "out" / "curves.png"
    done = subprocess.run([sys.executable, str(REPO / "curves_main.py"),
                           f"--model_dir={self.model_dir}", f"--output={png}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    self.assertIn("| a_head | 4 | 75.0% | 65.0% | 0.550 |", done.stdout)
    image = tf.io.decode_png(png.read_bytes())
    self.assertGreater(image.shape[1], image.shape[0])  # Two panels side by side.

  def test_minutes_to_accuracy_and_the_compare_picture(self):
    run = support.tempdir(self)
    writer = tf.summary.create_file_writer(str(run / "tb" / "main"))
    with writer.as_default():
      tf.summary.scalar(curves.EPOCH_SECONDS, 6.0, step=0)
      tf.summary.scalar(curves.EVAL_ACCURACY, 0.3, step=0)
      writer.flush()
      time.sleep(0.3)
      tf.summary.scalar(curves.EVAL_ACCURACY, 0.5, step=1)
    writer.close()
    points = curves.minutes_to_accuracy(curves.read_run(run))
    self.assertLen(points, 2)
    self.assertAlmostEqual(points[0][0], 0.1, places=3)  # The first epoch's 6 s.
    self.assertGreater(points[1][0], points[0][0] + 0.3 / 60 - 1e-3)
    self.assertAlmostEqual(points[1][1], 0.5, places=6)
    png = self.model_dir / "out" / "time.png"
    done = subprocess.run([sys.executable, str(REPO / "curves_main.py"), f"--compare=a={run}",
                           "--baseline=ref=1:0.2,2:0.4", f"--output={png}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    self.assertIn("a: 0.1 min 30.0%", done.stdout)
    self.assertEqual(tf.io.decode_png(png.read_bytes()).shape[-1], 4)

  def test_a_folder_without_events_is_a_clear_error(self):
    empty = support.tempdir(self)
    with self.assertRaisesRegex(FileNotFoundError, r"/tb: no TensorBoard stage folder"):
      curves.read_run(empty)
    done = subprocess.run([sys.executable, str(REPO / "curves_main.py"), f"--model_dir={empty}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 1)
    self.assertRegex(done.stderr, r"^error: .*/tb: no TensorBoard stage folder .*\n$")
