"""Tests for emotion_tfds.train.checkpoints: the progress a checkpoint records, resuming a crashed
run (optimizer state, TensorBoard, refusal of another run's checkpoint), the fingerprint's data.

The resumed runs are real runs of a few steps on the generated faces of
`support.generated_data_dir`.
"""

from __future__ import annotations

import pathlib

from absl.testing import absltest
import numpy as np
import support
import tensorflow as tf
import train_support

from emotion_tfds import errors
from emotion_tfds import experiment
from emotion_tfds import models
from emotion_tfds.report import callbacks
from emotion_tfds.report import curves
from emotion_tfds.report import run_summaries
from emotion_tfds.train import checkpoints
from emotion_tfds.train import inputs
from emotion_tfds.train import loop

_STEPS = train_support.STEPS  # Steps per epoch of every run here.


class ProgressTest(absltest.TestCase):
  """What the per-epoch save writes and `read_progress` reads back, without training."""

  def _manager(self, counters: checkpoints.Counters) -> tf.train.CheckpointManager:
    return tf.train.CheckpointManager(tf.train.Checkpoint(**counters.objects()),
                                      str(support.tempdir(self)), max_to_keep=2)

  def test_no_checkpoint_is_no_progress(self):
    self.assertIsNone(checkpoints.read_progress(str(support.tempdir(self))))

  def test_each_epoch_end_saves_the_epochs_done_and_the_global_step(self):
    counters = checkpoints.Counters("model=m;seed=3", "bfloat16")
    manager = self._manager(counters)
    counters.stage.assign(1)
    save = checkpoints.SaveCheckpoint(manager, counters, steps=5)
    save.on_epoch_end(0)
    save.on_epoch_end(1)
    progress = checkpoints.read_progress(manager.directory)
    self.assertEqual((progress.stage, progress.epoch, progress.global_step), (1, 2, 10))
    self.assertEqual(pathlib.Path(progress.path).name, "ckpt-10")  # Numbered by global step.
    self.assertEqual((progress.fingerprint, progress.precision), ("model=m;seed=3", "bfloat16"))
    self.assertEqual((progress.budget_epochs, progress.budget_images_per_second), (0, 0.0))

  def test_a_budget_choice_is_saved_only_by_budgeted_runs(self):
    budgeted = checkpoints.Counters("f", "float32", budgeted=True)
    self.assertEqual(budgeted.budget_choice(), (0, 0.0))
    budgeted.set_budget_choice(7, 123.5)
    manager = self._manager(budgeted)
    manager.save(checkpoint_number=1)
    progress = checkpoints.read_progress(manager.directory)
    self.assertEqual((progress.budget_epochs, progress.budget_images_per_second), (7, 123.5))

    plain = checkpoints.Counters("f", "float32")
    manager = self._manager(plain)
    manager.save(checkpoint_number=1)
    saved = {name for name, _ in tf.train.list_variables(manager.latest_checkpoint)}
    self.assertFalse([name for name in saved if name.startswith("budget")], saved)
    self.assertEqual(checkpoints.read_progress(manager.directory).budget_epochs, 0)

  def test_rng_states_are_every_dropout_layers_seed_generator(self):
    # The dropout masks' RNG is checkpointed through these; a Keras that renamed the variable would
    # leave them out and a resumed run would draw other masks than an uninterrupted one.
    net = models.build_base_cnn(7)
    dropouts = [layer for layer in net.layers if "dropout" in type(layer).__name__.lower()]
    self.assertNotEmpty(dropouts)
    self.assertLen(checkpoints.rng_states(net), len(dropouts))
    self.assertEqual(checkpoints.rng_states(support.small_cnn(6)), [])


class DataIdentityTest(support.WithGeneratedData, absltest.TestCase):

  def test_fingerprint_holds_the_data_and_names_what_differs(self):
    builder = inputs.built_dataset("generated_faces/seed6", self.data_dir, generate_rows=0)
    identity = checkpoints.data_identity({"generated_faces/seed6": builder})
    sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
    self.assertEqual(identity, f"generated_faces/seed6@{builder.info.version}:" + "/".join(
        f"{split}={sizes[split]}" for split in sorted(sizes)))
    self.assertEqual(checkpoints.fingerprint_difference("a=1;b=x=2;d=5", "a=1;b=x=3;c=4"),
                     "b: x=2 -> x=3; d: 5 -> (none); c: (none) -> 4")


class ResumeTest(support.WithGeneratedData, absltest.TestCase):

  def test_crashes_at_a_stage_end_and_mid_stage_resume_with_optimizer_state(self):
    model_dir = support.tempdir(self)
    ckpt_dir = model_dir / checkpoints.CKPT_DIR
    config = train_support.train_config(model_dir, self.data_dir, "head:1:1e-3:16,all:3:1e-3:16")

    # 1. Crash in the all stage's first epoch: the last checkpoint closes the head stage.
    with self.assertRaises(train_support.StopAt.Stop):
      loop.train(config, extra_callbacks=[train_support.StopAt(fit_index=2, epoch=0)])
    progress = checkpoints.read_progress(str(ckpt_dir))
    self.assertEqual((progress.stage, progress.epoch, progress.global_step), (0, 1, _STEPS))

    # 2. Resumed, the all stage starts with a fresh optimizer; crash before its 2nd checkpoint.
    first, stop = train_support.FirstState(), train_support.StopAt(fit_index=1, epoch=1)
    with self.assertRaises(train_support.StopAt.Stop):
      loop.train(config, extra_callbacks=[first, stop])
    self.assertEqual(first.state["iterations"], 0)
    progress = checkpoints.read_progress(str(ckpt_dir))
    self.assertEqual((progress.stage, progress.epoch, progress.global_step), (1, 1, 2 * _STEPS))

    # Leftovers of a checkpoint write killed half-way (newer number, never made current).
    (ckpt_dir / "ckpt-99_temp").mkdir()
    (ckpt_dir / "ckpt-99_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 7)
    data = next(ckpt_dir.glob(pathlib.Path(progress.path).name + ".data-*"))
    (ckpt_dir / "ckpt-99.data-00000-of-00001").write_bytes(data.read_bytes()[:100])
    self.assertEqual(checkpoints.read_progress(str(ckpt_dir)), progress)

    # 3. Resumed mid-stage: the stage's optimizer comes back (step counter, Adam moments) with
    # the weights, and the run finishes the stage.
    first = train_support.FirstState()
    result = experiment.run_experiment(config, extra_callbacks=[first])
    self.assertEqual(result.resumed_from, (1, 1))
    self.assertEqual([(h["stage"], h["epoch"]) for h in result.history],
                     [("stage2_all", 2), ("stage2_all", 3)])
    self.assertEqual(first.state["iterations"], _STEPS)
    self.assertEqual(first.state["variables"].keys(), stop.saved_state["variables"].keys())
    for path, value in stop.saved_state["variables"].items():
      np.testing.assert_array_equal(first.state["variables"][path], value, err_msg=path)
    for name, weights in stop.saved_state["weights"].items():
      for a, b in zip(first.state["weights"][name], weights, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    final = checkpoints.read_progress(str(ckpt_dir))
    self.assertEqual((final.stage, final.epoch, final.global_step), (1, 3, 4 * _STEPS))

    # TensorBoard reads the crashed and resumed run as one: epochs count on across stages, each
    # stage notes its start once, and the run folder holds one HParams trial and its result.
    tb = model_dir / loop.TENSORBOARD_DIR

    def steps(folder: pathlib.Path, tag: str) -> list[int]:
      return [e.step for e in curves.read_events(folder) if e.summary.value[0].tag == tag]

    self.assertEqual(sorted(set(steps(tb / "stage1_head", "train/loss"))), [0])
    self.assertEqual(sorted(set(steps(tb / "stage2_all", "train/loss"))), [1, 2, 3])
    # The note is at the stage's first epoch (written again by the run that restarted the stage
    # from its beginning, not by the one resumed mid-stage).
    self.assertEqual(steps(tb / "stage2_all", callbacks.STAGE_TAG), [1, 1])
    _, start = run_summaries.read_trial(tb)  # Exactly one trial, not rewritten on resume.
    self.assertEqual(start.group_name, str(model_dir.resolve()))
    final_accuracy = [e for e in curves.read_events(tb / run_summaries.RUN_DIR)
                      if e.summary.value[0].tag == run_summaries.FINAL_ACCURACY]
    self.assertEqual([e.step for e in final_accuracy], [4])
    self.assertAlmostEqual(float(tf.make_ndarray(final_accuracy[0].summary.value[0].tensor)),
                           result.report.totals.accuracy, places=6)

    # Another schedule must not continue this run's checkpoint.
    other = train_support.train_config(model_dir, self.data_dir, "head:1:1e-3:16,all:4:1e-3:16")
    with self.assertRaisesRegex(errors.CheckpointMismatchError,
                                r"another run; what differs: stages: .*all:3:.* -> .*all:4:"):
      loop.train(other)
    capped = train_support.train_config(model_dir, self.data_dir, "head:1:1e-3:16,all:3:1e-3:16",
                     max_steps_per_epoch=_STEPS + 1)
    with self.assertRaisesRegex(ValueError, r"what differs: max_steps_per_epoch: 2 -> 3\."):
      loop.train(capped)


if __name__ == "__main__":
  absltest.main()
