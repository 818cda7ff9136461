"""Tests for emotion_tfds.train.config: the checks of a run's settings and the fingerprint a resumed
run must match (budget settings: budget_test)."""

from __future__ import annotations

import dataclasses

from absl.testing import absltest
import support
import train_support

from emotion_tfds.data import augment
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import stages


class ConfigTest(absltest.TestCase):

  def test_bad_config(self):
    schedule = tuple(stages.parse_stages("all:1:1e-3:8"))
    with self.assertRaisesRegex(ValueError, "Unknown strategy"):
      config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule, strategy="gpu")
    with self.assertRaisesRegex(ValueError, "Unknown augment_on"):
      config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule, augment_on="tpu")
    pretrain_only = tuple(stages.parse_stages("all:1:1e-3:8", dataset="generated_faces/fer7"))
    with self.assertRaisesRegex(ValueError, "not on the target dataset generated_faces/seed6"):
      config_lib.TrainConfig(model_dir="m", data_dir="d", stages=pretrain_only)
    with self.assertRaisesRegex(ValueError, "Unknown precision 'half'"):
      config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule, precision="half")
    for steps in ((0, 2), (3, 2)):
      with self.assertRaisesRegex(ValueError, "expected FIRST,LAST with 1 <= FIRST <= LAST"):
        config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule, profile_steps=steps)
    # Neither the precision nor profiling is part of what a resumed run must match.
    config = config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule)
    self.assertEqual(config.fingerprint(), config_lib.TrainConfig(
        model_dir="m", data_dir="d", stages=schedule, precision="bfloat16",
        profile_steps=(2, 3)).fingerprint())

  def test_more_bad_settings_name_the_value_and_the_choices(self):
    schedule = tuple(stages.parse_stages("all:1:1e-3:8"))
    cases = {"model": ("resnet", r"Unknown model 'resnet'; expected one of \[.*'base_cnn'"),
             "keep_best": ("loss", r"Unknown keep_best 'loss'; expected one of \('none', "),
             "final_tta": ("rotate", r"Unknown final_tta 'rotate'; expected one of \('none', "),
             "stages": ((), "The run has no stages")}
    for field, (value, message) in cases.items():
      with self.subTest(field):
        settings = {"stages": schedule, field: value}
        with self.assertRaisesRegex(ValueError, message):
          config_lib.TrainConfig(model_dir="m", data_dir="d", **settings)

  def test_augment_off_stage_and_fingerprint(self):
    config = train_support.train_config(str(support.tempdir(self)), "d",
                                        "all:1:1e-3:16:augment=off")
    self.assertIn("augment=off", config.fingerprint())
    other = config_lib.TrainConfig(**{**config.__dict__, "augment_params": augment.AugmentParams(
        crop=0.1)})
    self.assertNotEqual(config.fingerprint(), other.fingerprint())
    with self.assertRaisesRegex(ValueError, "keep_best needs"):
      config_lib.TrainConfig(**{**config.__dict__, "keep_best": "accuracy", "validate": False})

  def test_fingerprint_holds_what_shapes_the_training_and_not_where_or_how_it_runs(self):
    config = config_lib.TrainConfig(model_dir="m", data_dir="d",
                                    stages=tuple(stages.parse_stages("all:2:1e-3:8")))
    shaping = {"model": "fastnet_small", "pretrained": "base.keras", "seed": 1, "scale_lr": True,
               "reference_batch": 64, "augment_on": "host", "max_steps_per_epoch": 3,
               "keep_best": "accuracy", "time_budget": 5.0,
               "stages": tuple(stages.parse_stages("all:3:1e-3:8")),
               "dataset": "generated_faces/fer7"}  # The stages without a dataset follow it.
    for field, value in shaping.items():
      with self.subTest(field):
        other = dataclasses.replace(config, **{field: value})
        self.assertNotEqual(other.fingerprint(), config.fingerprint())
    # A resumed run may run elsewhere and otherwise report: none of these count.
    running = {"model_dir": "elsewhere", "data_dir": "other", "strategy": "mirrored",
               "jit_compile": True, "verbose": 2, "eval_split": "validation", "final_tta": "flip",
               "data_service_address": "grpc://localhost:5000", "generate_rows": 100}
    for field, value in running.items():
      with self.subTest(field):
        other = dataclasses.replace(config, **{field: value})
        self.assertEqual(other.fingerprint(), config.fingerprint())

  def test_stages_train_on_the_target_unless_they_name_a_dataset(self):
    pretrain = stages.parse_stages("all:1:1e-3:8", prefix="pretrain",
                                   dataset="generated_faces/fer7")
    schedule = tuple(stages.with_pretraining(stages.parse_stages("head:1:1e-3:8"), pretrain))
    config = config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule)
    self.assertEqual([config.stage_dataset(s) for s in config.stages],
                     ["generated_faces/fer7", "generated_faces/seed6"])


if __name__ == "__main__":
  absltest.main()
