"""Tests for emotion_tfds.train.hparams: a run's recipe as its HParams trial, read back."""

from __future__ import annotations

import dataclasses

from absl.testing import absltest
import support
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import api_pb2
import tensorflow as tf

from emotion_tfds import labels
from emotion_tfds.data import augment
from emotion_tfds.report import run_summaries
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import hparams
from emotion_tfds.train import stages


def _config(model_dir: str) -> config_lib.TrainConfig:
  schedule = stages.with_pretraining(
      stages.parse_stages("head:2:1e-3:32,main:all:8:0.05:64:nesterov:schedule=cosine:smooth=0.1"),
      stages.parse_stages("all:3:1e-3:64", prefix="pretrain", dataset="fer2013/fer7"))
  return config_lib.TrainConfig(model_dir=model_dir, data_dir="unused", stages=tuple(schedule),
                              dataset="fer2013/seed6", seed=7,
                              augment_params=augment.AugmentParams(rotate=10.0))


class HParamsTest(absltest.TestCase):

  def test_trial_is_the_recipe_with_declared_domains_and_metrics(self):
    logdir = support.tempdir(self)
    config = _config(str(logdir / "my_run"))
    hparams.write_run_start(logdir, config, labels.SEED6)
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

    (_, layout_value), = support.read_run_folder(logdir / run_summaries.RUN_DIR)[
        custom_scalar_metadata.CONFIG_SUMMARY_TAG]
    layout = layout_pb2.Layout.FromString(tf.make_ndarray(layout_value.tensor).item())
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    self.assertEqual(charts["recall per emotion"], [r"^per_emotion/recall$"])
    self.assertIn("validation accuracy, every stage", charts)

  def test_every_augmentation_strength_is_in_the_recipe(self):
    fields = {f.name for f in dataclasses.fields(augment.AugmentParams)}
    self.assertEqual(set(augment.LIMITS), fields)
    recipe = hparams.recipe(_config("x"))
    self.assertEqual({k for k in recipe if k.startswith("augment_")} - {"augment_on"},
                     {f"augment_{f}" for f in fields})
