"""Tests for emotion_tfds.report.run_summaries: a run's HParams trial, result and layout, read back."""

from __future__ import annotations

import re

from absl.testing import absltest
import support
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import api as hp
import tensorflow as tf

from emotion_tfds import labels
from emotion_tfds.report import callbacks
from emotion_tfds.report import metrics
from emotion_tfds.report import run_summaries


def _report() -> metrics.EmotionReport:
  report = metrics.EmotionReport(labels.SEED6)
  report.update([0, 2, 2, 3], tf.one_hot([0, 2, 3, 3], 6).numpy())
  return report


class RunSummariesTest(absltest.TestCase):

  def test_result_holds_final_best_and_per_emotion_f1(self):
    logdir = support.tempdir(self)
    run_summaries.write_run_result(logdir, _report(), best_accuracy=0.9, step=13)
    events = support.read_run_folder(logdir / run_summaries.RUN_DIR)
    value = lambda tag: float(tf.make_ndarray(events[tag][0][1].tensor))  # noqa: E731
    self.assertEqual(events[run_summaries.FINAL_ACCURACY][0][0], 13)
    self.assertAlmostEqual(value(run_summaries.FINAL_ACCURACY), 0.75)
    self.assertAlmostEqual(value(run_summaries.BEST_ACCURACY), 0.9)
    self.assertAlmostEqual(value("run/f1/happy"), 2 / 3)
    self.assertNotIn("run/f1/sad", events)  # No sad image in the split.
    self.assertTrue(all(v.metadata.summary_description for vs in events.values() for _, v in vs))
    with self.assertRaisesRegex(ValueError, "expected one HParams experiment"):
      run_summaries.read_trial(logdir)  # A result without a start.

  def test_trial_result_and_layout_are_a_run_of_their_own_not_the_logdir(self):
    tb = support.tempdir(self) / "tb"
    model = hp.HParam("model", hp.Discrete(["base_cnn", "vgg"]), display_name="model")
    run_summaries.write_run_start(tb, [model], {"model": "vgg"}, trial_id="/runs/a",
                                  label_names=labels.SEED6)
    run_summaries.write_run_result(tb, _report(), best_accuracy=0.9, step=13)
    # TensorBoard lists them as the run "run" (HParams: the session holding the trial and its
    # metrics), not as "." (event files in the logdir itself).
    self.assertEqual(support.tensorboard_runs(tb), [run_summaries.RUN_DIR])
    self.assertEqual(list(tb.glob("events.out.tfevents.*")), [])
    experiment, start = run_summaries.read_trial(tb)
    self.assertEqual(start.group_name, "/runs/a")
    self.assertEqual([info.display_name for info in experiment.hparam_infos], ["model"])
    events = support.read_run_folder(tb / run_summaries.RUN_DIR)
    self.assertIn(run_summaries.FINAL_ACCURACY, events)
    (_, layout_value), = events[custom_scalar_metadata.CONFIG_SUMMARY_TAG]
    self.assertEqual(layout_pb2.Layout.FromString(tf.make_ndarray(layout_value.tensor).item()),
                     run_summaries.custom_scalar_layout())

  def test_per_emotion_charts_match_the_one_tag_of_every_emotion_run(self):
    charts = {chart.title: list(chart.multiline.tag)
              for category in run_summaries.custom_scalar_layout().category
              for chart in category.chart}
    # The tags of a stage's run and of an emotion's run (the custom scalars plugin matches a
    # chart's regexes against the tags of every run; it colours by run).
    tags = ["eval/accuracy", "train/learning_rate",
            *(callbacks.per_emotion_tag(metric) for metric in callbacks.PER_EMOTION_TAGS)]
    for metric in callbacks.PER_EMOTION_TAGS:
      regexes = charts[f"{metric} per emotion"]
      self.assertEqual([t for t in tags if any(re.search(r, t) for r in regexes)],
                       [f"per_emotion/{metric}"], metric)
