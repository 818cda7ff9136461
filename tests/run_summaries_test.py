"""Tests for emotion_tfds.report.run_summaries: a run's HParams trial, result and layout, read back."""

from __future__ import annotations

from absl.testing import absltest
import support
import tensorflow as tf

from emotion_tfds import labels
from emotion_tfds.report import metrics
from emotion_tfds.report import run_summaries


class RunSummariesTest(absltest.TestCase):

  def test_result_holds_final_best_and_per_emotion_f1(self):
    logdir = support.tempdir(self)
    report = metrics.EmotionReport(labels.SEED6)
    report.update([0, 2, 2, 3], tf.one_hot([0, 2, 3, 3], 6).numpy())
    run_summaries.write_run_result(logdir, report, best_accuracy=0.9, step=13)
    events = support.read_run_folder(logdir)
    value = lambda tag: float(tf.make_ndarray(events[tag][0][1].tensor))  # noqa: E731
    self.assertEqual(events[run_summaries.FINAL_ACCURACY][0][0], 13)
    self.assertAlmostEqual(value(run_summaries.FINAL_ACCURACY), 0.75)
    self.assertAlmostEqual(value(run_summaries.BEST_ACCURACY), 0.9)
    self.assertAlmostEqual(value("run/f1/happy"), 2 / 3)
    self.assertNotIn("run/f1/sad", events)  # No sad image in the split.
    self.assertTrue(all(v.metadata.summary_description for vs in events.values() for _, v in vs))
    with self.assertRaisesRegex(ValueError, "expected one HParams experiment"):
      run_summaries.read_trial(logdir)  # A result without a start.
