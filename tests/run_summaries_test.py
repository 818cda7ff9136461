"""Tests for emotion_tfds.run_summaries: a run's HParams trial, result and layout, read back."""

from __future__ import annotations

import dataclasses
import pathlib

from absl.testing import absltest
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import api_pb2

from emotion_tfds import augment
from emotion_tfds import curves
from emotion_tfds import labels
from emotion_tfds import metrics
from emotion_tfds import run_summaries
from emotion_tfds import stages
from emotion_tfds import training

import support


def read_run_folder(logdir: pathlib.Path) -> dict[str, list]:
  """tag -> [(step, summary value)] of the event files directly in `logdir` (not below it)."""
  out: dict[str, list] = {}
  for event in curves.read_events(logdir):
    for value in event.summary.value:
      out.setdefault(value.tag, []).append((event.step, value))
  return out


def _config(model_dir: str) -> training.TrainConfig:
  schedule = stages.build_schedule(
      stages.parse_stages("head:2:1e-3:32,main:all:8:0.05:64:nesterov:schedule=cosine:smooth=0.1"),
      stages.parse_stages("all:3:1e-3:64", prefix="pretrain", dataset="fer2013/fer7"))
  return training.TrainConfig(model_dir=model_dir, data_dir="unused", schedule=tuple(schedule),
                              dataset="fer2013/seed6", seed=7,
                              augment_params=augment.AugmentParams(rotate=10.0))


class RunSummariesTest(absltest.TestCase):

  def test_trial_is_the_recipe_with_declared_domains_and_metrics(self):
    logdir = support.tempdir(self)
    config = _config(str(logdir / "my_run"))
    run_summaries.write_run_start(logdir, config, labels.SEED6)
    experiment, start = run_summaries.read_trial(logdir)

    self.assertEqual(start.group_name, str((logdir / "my_run").resolve()))
    declared = {info.name: info for info in experiment.hparam_infos}
    # Named by rank so that TensorBoard's name-sorted columns start with the telling ones.
    self.assertEqual([declared[n].display_name for n in sorted(declared)][:5],
                     ["model", "dataset", "epochs", "lr", "batch"])
    values = {declared[name].display_name: value for name, value in start.hparams.items()}
    self.assertEqual(values["model"].string_value, "base_cnn")
    self.assertEqual(values["epochs"].number_value, 13)  # 3 + 2 + 8 over the stages.
    self.assertEqual(values["optimizer"].string_value, "nesterov")  # The last stage's.
    self.assertEqual(values["schedule"].string_value, "cosine")
    self.assertAlmostEqual(values["label_smoothing"].number_value, 0.1)
    self.assertEqual(values["augment_rotate"].number_value, 10.0)
    self.assertEqual(values["seed"].number_value, 7)
    self.assertTrue(values["stages"].string_value.startswith(
        "pretrain1_all:all:3:0.001:64:adam@fer2013/fer7 stage1_head:"), values["stages"])

    declared = {info.display_name: info for info in experiment.hparam_infos}
    self.assertEqual(set(declared), set(values))
    self.assertIn("fastnet", [v.string_value for v in declared["model"].domain_discrete.values])
    self.assertEqual(declared["batch"].domain_interval.min_value, 1)
    self.assertEqual(declared["optimizer"].type, api_pb2.DATA_TYPE_STRING)
    metric_tags = [m.name.tag for m in experiment.metric_infos]
    self.assertEqual(metric_tags[:3], [run_summaries.FINAL_ACCURACY, run_summaries.BEST_ACCURACY,
                                       run_summaries.FINAL_MACRO_F1])
    self.assertEqual(metric_tags[3:], [f"run/f1/{name}" for name in labels.SEED6])

    (_, layout_value), = read_run_folder(logdir)[custom_scalar_metadata.CONFIG_SUMMARY_TAG]
    layout = layout_pb2.Layout.FromString(tf.make_ndarray(layout_value.tensor).item())
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    self.assertEqual(charts["recall per emotion"], [r"^per_emotion/recall/"])
    self.assertIn("validation accuracy, every stage", charts)

  def test_result_holds_final_best_and_per_emotion_f1(self):
    logdir = support.tempdir(self)
    report = metrics.EmotionReport(labels.SEED6)
    report.update([0, 2, 2, 3], tf.one_hot([0, 2, 3, 3], 6).numpy())
    run_summaries.write_run_result(logdir, report, best_accuracy=0.9, step=13)
    events = read_run_folder(logdir)
    value = lambda tag: float(tf.make_ndarray(events[tag][0][1].tensor))  # noqa: E731
    self.assertEqual(events[run_summaries.FINAL_ACCURACY][0][0], 13)
    self.assertAlmostEqual(value(run_summaries.FINAL_ACCURACY), 0.75)
    self.assertAlmostEqual(value(run_summaries.BEST_ACCURACY), 0.9)
    self.assertAlmostEqual(value("run/f1/happy"), 2 / 3)
    self.assertNotIn("run/f1/sad", events)  # No sad image in the split.
    self.assertTrue(all(v.metadata.summary_description for vs in events.values() for _, v in vs))
    with self.assertRaisesRegex(ValueError, "expected one HParams experiment"):
      run_summaries.read_trial(logdir)  # A result without a start.

  def test_every_augmentation_strength_is_in_the_recipe(self):
    fields = {f.name for f in dataclasses.fields(augment.AugmentParams)}
    self.assertEqual(set(augment.LIMITS), fields)
    recipe = run_summaries.recipe(_config("x"))
    self.assertEqual({k for k in recipe if k.startswith("augment_")} - {"augment_on"},
                     {f"augment_{f}" for f in fields})
