"""Tests for emotion_tfds.train.budget: the epoch-count arithmetic, the budget's settings, the
process's start, and a real budgeted run on generated faces that fits its budget, resumes with the
chosen count and trains as the recipe with that count would."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import time
from unittest import mock

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from emotion_tfds import errors
from emotion_tfds import experiment
from emotion_tfds.report import callbacks
from emotion_tfds.train import budget
from emotion_tfds.train import checkpoints
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import loop
from emotion_tfds.train import schedules
from emotion_tfds.train import stages

_STEPS = 8  # Steps per epoch of the runs.
# Seconds: a 10-minute budget, 60 s gone, 10 s to start the stage, 20 s per epoch, 50 s after it.
_ESTIMATE = budget.Estimate(budget=600, elapsed=60, stage_start=10, epoch=20, after=50,
                            images_per_second=1230)


def _config(spec: str, pretrain: str = "", **kwargs) -> config_lib.TrainConfig:
  schedule = stages.with_pretraining(
      stages.parse_stages(spec),
      stages.parse_stages(pretrain, prefix="pretrain", dataset="generated_faces/fer7")
      if pretrain else [])
  return config_lib.TrainConfig(model_dir="unused", data_dir="unused", stages=tuple(schedule),
                                **kwargs)


class ChooseEpochsTest(absltest.TestCase):

  def test_the_most_epochs_that_fit(self):
    # 600 - 60 (margin) - 60 - 10 - 50 = 420 s of room: 21 epochs of 20 s.
    self.assertEqual(_ESTIMATE.margin, 60)
    self.assertEqual(budget.choose_epochs(_ESTIMATE, "main"), 21)
    # 419 s of room: 20 (the count rounds down).
    self.assertEqual(budget.choose_epochs(dataclasses.replace(_ESTIMATE, elapsed=61), "main"), 20)

  def test_warmup_epochs_are_the_minimum(self):
    tight = dataclasses.replace(_ESTIMATE, elapsed=480)  # 0 s of room.
    with self.assertRaisesRegex(errors.ConfigError, r"cannot fit 1 epoch\(s\) of stage main"):
      budget.choose_epochs(tight, "main")
    three = dataclasses.replace(_ESTIMATE, elapsed=435, min_epochs=3)  # Room for 2.25 epochs.
    with self.assertRaisesRegex(errors.ConfigError, r"cannot fit 3 epoch\(s\)"):
      budget.choose_epochs(three, "main")
    self.assertEqual(budget.choose_epochs(dataclasses.replace(three, elapsed=420), "main"), 3)

  def test_too_small_a_budget_names_the_numbers_and_the_budget_that_fits(self):
    small = dataclasses.replace(_ESTIMATE, budget=120)  # Less than what was already spent + after.
    with self.assertRaises(errors.ConfigError) as raised:
      budget.choose_epochs(small, "main")
    message = str(raised.exception)
    self.assertNotIn("\n", message)
    for part in ("--time_budget=2 (minutes) cannot fit 1 epoch(s) of stage main",
                 "60 s had passed", "one epoch takes 20.0 s (1,230 images/s",
                 "starting it 10 s", "saving) 50 s", "the 10% margin 12 s"):
      self.assertIn(part, message)
    # (60 + 10 + 20 + 50) / 0.9 = 155.6 s: 2.6 minutes, rounded up to a tenth.
    self.assertEndsWith(message, "Give at least --time_budget=2.6.")
    self.assertEqual(budget.choose_epochs(dataclasses.replace(small, budget=2.6 * 60), "main"), 1)

  def test_an_epoch_takes_time(self):
    with self.assertRaisesRegex(ValueError, "An epoch must take some time"):
      budget.choose_epochs(dataclasses.replace(_ESTIMATE, epoch=0.0), "main")

  def test_estimate_from_the_measurements(self):
    config = _config("main:all:5:0.1:16:schedule=cosine:warmup=1.5:budget=on,tail:head:2:1e-3:32",
                     time_budget=10, final_tta="ten-crop")
    main = budget.StageTiming(trace=9.0, start=2.0, step=0.5, checkpoint=0.25, steps=40,
                              global_batch=16)
    tail = budget.StageTiming(trace=6.0, start=1.5, step=0.25, checkpoint=0.25, steps=20,
                              global_batch=32)
    validation = budget.EvaluationTiming(tracing=3.0, seconds=3.5, images=350)  # 0.01 s an image.
    estimate = budget.make_estimate(config, [main, tail], validation, validates=True,
                                    final_images=200, elapsed=70.0)
    self.assertEqual(estimate, budget.Estimate(
        budget=600.0, elapsed=70.0,
        stage_start=2.0 + 3.0,  # The split's read, the first validation's tracing.
        epoch=40 * 0.5 + 3.5 + 0.25, images_per_second=16 / 0.5, min_epochs=2,
        # The tail stage (tracing, start, 2 epochs), the final evaluation (10 views), saving.
        after=(6.0 + 1.5 + 3.0 + 2 * (20 * 0.25 + 3.5 + 0.25)) + (3.0 + 10 * 200 * 0.01)
        + budget.EXPORT_SECONDS))
    unvalidated = budget.make_estimate(
        dataclasses.replace(config, stages=config.stages[:1]), [main], validation,
        validates=False, final_images=200, elapsed=70.0)
    self.assertEqual((unvalidated.stage_start, unvalidated.epoch, unvalidated.after),
                     (2.0, 40 * 0.5 + 0.25, 3.0 + 10 * 200 * 0.01 + budget.EXPORT_SECONDS))

  def test_note(self):
    self.assertEqual(budget.epochs_note(10, 1230.4),
                     "chosen for a budget of 10 minutes at 1,230 images/s")


class BudgetSettingsTest(absltest.TestCase):

  def test_budgeted_stage_and_its_epochs(self):
    config = _config("head:1:1e-3:16,main:all:5:0.1:16:schedule=cosine:warmup=1",
                     time_budget=10)
    self.assertEqual(config.budgeted_index(), 1)  # The last stage by default.
    marked = _config("head:1:1e-3:16:budget=on,all:1:1e-3:16", time_budget=10)
    self.assertEqual(marked.budgeted_index(), 0)
    chosen = budget.with_epochs(config, 12)
    self.assertEqual([s.epochs for s in chosen.stages], [1, 12])
    self.assertEqual(chosen.stages[0], config.stages[0])
    # The cosine runs to 0 over the chosen epochs: 0 at the stage's last step's end.
    lr = schedules.learning_rate(chosen.stages[1], 0.1, 7)
    np.testing.assert_allclose(float(lr(7 + 11 * 7 // 2)), 0.05, rtol=0.05)  # Mid-cosine.
    self.assertGreater(float(lr(12 * 7 - 1)), 0.0)
    self.assertLess(float(lr(12 * 7 - 1)), 0.1 * 1e-3)
    self.assertEqual(float(lr(12 * 7)), 0.0)

  def test_fingerprint_holds_the_budget_not_the_count(self):
    plain = _config("main:all:5:0.1:16:schedule=cosine")
    self.assertNotIn("time_budget", plain.fingerprint())
    config = dataclasses.replace(plain, time_budget=10, budget_start=123.0)
    self.assertTrue(config.fingerprint().endswith(";time_budget=10"))
    self.assertEqual(dataclasses.replace(config, budget_start=5.0).fingerprint(),
                     config.fingerprint())
    self.assertEqual(checkpoints.fingerprint_difference(plain.fingerprint(), config.fingerprint()),
                     "time_budget: (none) -> 10")

  def test_settings_it_refuses(self):
    cases = {
        "head:1:1e-3:16:budget=on,all:1:1e-3:16:budget=on": (
            0, "Only one stage may set budget=on; stage1_head, stage2_all do"),
        "all:1:1e-3:16": (-1, "--time_budget must be >= 0"),
        "all:4:0.1:16:sgd:schedule=step:drops=2": (10, "whose schedule=step drops at fixed"),
    }
    for spec, (minutes, message) in cases.items():
      with self.subTest(spec), self.assertRaisesRegex(errors.ConfigError, message):
        _config(spec, time_budget=minutes)
    _config("all:4:0.1:16:sgd:schedule=step:drops=2")  # Fine without a budget.
    with self.assertRaisesRegex(errors.ConfigError, "the budgeted stage pretrain1_all trains on "
                                "generated_faces/fer7 and the later stage stage1_all on "
                                "generated_faces/seed6"):
      _config("all:1:1e-3:16", pretrain="all:1:1e-3:16:budget=on", time_budget=10)

  def test_not_for_an_ensemble(self):
    config = dataclasses.replace(_config("all:1:1e-3:16"), time_budget=10)
    with self.assertRaisesRegex(errors.ConfigError, "--time_budget sizes a single network's run"):
      experiment.run_ensemble(config, 2)

  def test_process_started(self):
    # `ps` reads the process's age (whole seconds) on its own.
    age = int(subprocess.run(["ps", "-o", "etimes=", "-p", str(os.getpid())], check=True,
                             capture_output=True, text=True).stdout)
    self.assertAlmostEqual(time.monotonic() - budget.process_started(), age, delta=1.5)


class _Snapshot(keras.callbacks.Callback):
  """The network's weights at the end of its first epoch."""

  def __init__(self):
    super().__init__()
    self.first_epoch = None

  def on_epoch_end(self, epoch, logs=None):
    if self.first_epoch is None:
      self.first_epoch = self.model.net.get_weights()


class _StopAfterFirstEpoch(keras.callbacks.Callback):

  class Stop(Exception):
    pass

  def on_epoch_end(self, epoch, logs=None):
    raise self.Stop()


class BudgetedRunTest(support.WithGeneratedData, absltest.TestCase):
  """A budgeted run (per-epoch validation, flip TTA) with a budget of four times what the recipe
  with one epoch takes on this machine now, plus the measurements' timed windows; resumed from its
  second-to-last epoch; the recipe with the chosen epochs beside it."""

  # A loaded 2-core machine: the load can change after the measurements (seen here: runs at load
  # 7-9 that took 1.28 and 1.36 times their budget).
  _TOLERANCE = 1.5

  def setUp(self):
    super().setUp()
    # The deterministic runs turn op determinism on for the process (TF has no public way back).
    self.addCleanup(tf_config.disable_op_determinism)

  def test_fits_its_budget_resumes_with_the_chosen_count_and_matches_the_recipe(self):
    root = support.tempdir(self)
    recipe = config_lib.TrainConfig(
        model_dir=str(root / "one_epoch"), data_dir=self.data_dir,
        stages=tuple(stages.parse_stages("main:all:1:2e-3:16:schedule=cosine")),
        max_steps_per_epoch=_STEPS, deterministic=True, final_tta="flip", verbose=0,
        precision="float32")  # Compared exactly: not what "auto" picks on another machine.
    begin = time.monotonic()
    experiment.run_experiment(recipe)
    # Four times that, and the measurements' timed windows (as long on any machine), rounded up
    # to 0.05 minutes.
    minutes = math.ceil((4 * (time.monotonic() - begin) + 2 * budget.MIN_SECONDS) / 3) / 20

    started = time.monotonic()
    config = dataclasses.replace(recipe, model_dir=str(root / "budgeted"), time_budget=minutes,
                                 budget_start=started)
    snapshot = _Snapshot()
    result = experiment.run_experiment(config, extra_callbacks=[snapshot])
    seconds = time.monotonic() - started

    # It chose a count (the spec says 1) and ended within the budget.
    epochs = len(result.history)
    self.assertGreaterEqual(epochs, 2)
    self.assertLessEqual(seconds, self._TOLERANCE * minutes * 60, "epochs' training seconds: "
                         f"{[round(h['epoch_seconds'], 1) for h in result.history]}")
    ckpt_dir = root / "budgeted" / checkpoints.CKPT_DIR
    progress = checkpoints.read_progress(str(ckpt_dir))
    self.assertEqual((progress.stage, progress.epoch, progress.budget_epochs),
                     (0, epochs, epochs))
    self.assertGreater(progress.budget_images_per_second, 0)
    # The cosine runs over the chosen epochs: after the first of them, and 0 after the last.
    learning_rates = [h["learning_rate"] for h in result.history]
    np.testing.assert_allclose(learning_rates[0], 1e-3 * (1 + np.cos(np.pi / epochs)), rtol=1e-4)
    self.assertGreater(learning_rates[-2], 0.0)
    self.assertEqual(learning_rates[-1], 0.0)
    # TensorBoard's stage note says how the count came about.
    events = support.read_run_folder(root / "budgeted" / loop.TENSORBOARD_DIR / "main")
    note = tf.make_ndarray(events[callbacks.STAGE_TAG][0][1].tensor).item().decode()
    self.assertRegex(note, rf"main:all:{epochs}:.*\(chosen for a budget of {minutes:g} minutes at "
                     r"[\d,]+ images/s\)")

    # Killed after its second-to-last epoch (the older of the two checkpoints kept) and started
    # again an hour after the budget's start: the count comes from the checkpoint (measured again,
    # this budget would not fit one epoch) and the run ends as it did uninterrupted.
    previous = tf.train.get_checkpoint_state(str(ckpt_dir)).all_model_checkpoint_paths[-2]
    tf.compat.v1.train.update_checkpoint_state(str(ckpt_dir), previous,
                                               all_model_checkpoint_paths=[previous])
    late = dataclasses.replace(config, budget_start=time.monotonic() - 3600)
    resumed = experiment.run_experiment(late)
    self.assertEqual(resumed.resumed_from, (0, epochs - 1))
    self.assertEqual([(h["stage"], h["epoch"]) for h in resumed.history], [("main", epochs)])
    self.assertEqual(resumed.history[-1]["learning_rate"], 0.0)
    for a, b in zip(resumed.model.get_weights(), result.model.get_weights(), strict=True):
      np.testing.assert_array_equal(a, b)

    # The recipe with the chosen epochs and no budget trains the same: measuring left no trace.
    reference = _Snapshot()
    with self.assertRaises(_StopAfterFirstEpoch.Stop):
      loop.train(budget.with_epochs(dataclasses.replace(recipe, model_dir=str(root / "recipe")),
                                    epochs),
                 extra_callbacks=[reference, _StopAfterFirstEpoch()])
    for a, b in zip(reference.first_epoch, snapshot.first_epoch, strict=True):
      np.testing.assert_array_equal(a, b)


  def test_measures_a_later_stage_and_refuses_a_budget_too_small(self):
    """The budgeted stage is not the last: the tail stage gets a trainer of its own (head only)
    to measure; 3 seconds cannot fit anything."""
    config = config_lib.TrainConfig(
        model_dir=str(support.tempdir(self)), data_dir=self.data_dir,
        stages=tuple(stages.parse_stages("main:all:3:1e-3:16:schedule=cosine:budget=on,"
                                         "tail:head:2:1e-3:16")),
        max_steps_per_epoch=_STEPS, verbose=0, time_budget=0.05)
    with (mock.patch.object(budget, "MIN_SECONDS", 0.5),  # Only the path matters here.
          self.assertRaises(errors.ConfigError) as raised):
      loop.train(config)
    self.assertRegex(str(raised.exception),
                     r"^--time_budget=0.05 \(minutes\) cannot fit 1 epoch\(s\) of stage main: "
                     r"[^\n]* Give at least --time_budget=\d+(\.\d)?\.$")


if __name__ == "__main__":
  absltest.main()
