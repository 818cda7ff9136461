"""Tests for emotion_tfds.train.schedules: the in-stage lr curves and reduce-on-plateau."""

from __future__ import annotations

import os
import tempfile

from absl.testing import absltest
import keras
import numpy as np
import tensorflow as tf

from emotion_tfds.train import schedules
from emotion_tfds.train import stages


def _curve(spec: str, steps_per_epoch: int) -> np.ndarray:
  (stage,) = stages.parse_stages(spec)
  lr = schedules.learning_rate(stage, stage.lr, steps_per_epoch)
  return np.array([float(lr(step)) for step in range(stage.epochs * steps_per_epoch)])


class StageScheduleTest(absltest.TestCase):

  def test_constant_is_a_float(self):
    (stage,) = stages.parse_stages("all:3:0.1:32")
    self.assertEqual(schedules.learning_rate(stage, 0.1, 10), 0.1)

  def test_warmup_then_cosine_to_zero(self):
    curve = _curve("all:4:0.1:32:schedule=cosine:warmup=1", 10)
    np.testing.assert_allclose(curve[:10], 0.1 * np.arange(1, 11) / 10, rtol=1e-6)
    np.testing.assert_allclose(curve[10], 0.1, rtol=1e-6)  # The peak, right after warmup.
    self.assertTrue(np.all(np.diff(curve[10:]) < 0))
    # Half a cosine over the 30 steps after warmup: the midpoint is half the peak.
    np.testing.assert_allclose(curve[25], 0.05, rtol=1e-5)
    self.assertLess(curve[-1], 0.1 * 0.01)

  def test_step_decay(self):
    curve = _curve("all:6:0.1:32:sgd:schedule=step:drops=2/4:factor=0.5", 5)
    np.testing.assert_allclose(curve, np.repeat([0.1, 0.05, 0.025], 10), rtol=1e-6)

  def test_warmup_with_constant(self):
    curve = _curve("all:2:0.2:32:warmup=0.5", 4)
    np.testing.assert_allclose(curve, [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2], rtol=1e-6)

  def test_serializable(self):
    sched = schedules.StageSchedule(0.1, "cosine", 100, 10)
    again = schedules.StageSchedule.from_config(sched.get_config())
    self.assertAlmostEqual(float(sched(50)), float(again(50)))


  def test_total_steps_set_after_tracing(self):
    """A time budget sets a cosine stage's length after its training step was traced."""
    (stage,) = stages.parse_stages("all:2:0.1:32:schedule=cosine:warmup=1")
    optimizer = keras.optimizers.SGD(schedules.learning_rate(stage, stage.lr, 10))
    traced = tf.function(lambda step: optimizer._learning_rate(step))
    np.testing.assert_allclose(traced(tf.constant(15.0)), 0.05, rtol=1e-5)  # Half of 10 steps.
    schedules.set_total_steps(optimizer, 50)  # 5 epochs of 10 steps: 40 after the warmup.
    np.testing.assert_allclose(traced(tf.constant(30.0)), 0.05, rtol=1e-5)
    self.assertEqual(float(traced(tf.constant(50.0))), 0.0)
    self.assertGreater(float(traced(tf.constant(49.0))), 0.0)
    self.assertEqual(traced.experimental_get_tracing_count(), 1)
    self.assertEqual(optimizer._learning_rate.get_config()["total_steps"], 50)
    constant = keras.optimizers.SGD(schedules.learning_rate(stages.parse_stages("all:2:0.1:32")[0],
                                                            0.1, 10))
    schedules.set_total_steps(constant, 50)  # A float lr does not depend on the stage's length.
    self.assertAlmostEqual(float(constant.learning_rate), 0.1)

class PlateauTest(absltest.TestCase):

  def _callback(self, patience=2, factor=0.5):
    callback = schedules.PlateauCallback(factor, patience)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    callback.set_model(model)
    return callback, model

  def test_cuts_after_patience_and_resets(self):
    callback, model = self._callback()
    lrs = []
    for value in [0.5, 0.6, 0.6, 0.55, 0.7, 0.6, 0.6]:
      callback.on_epoch_end(0, {"eval_accuracy": value})
      lrs.append(float(model.optimizer.learning_rate.numpy()))
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025], rtol=1e-6)

  def test_state_round_trips_through_a_checkpoint(self):
    callback, model = self._callback()
    for value in [0.5, 0.4]:
      callback.on_epoch_end(0, {"eval_accuracy": value})
    with tempfile.TemporaryDirectory() as tmp:
      path = tf.train.Checkpoint(**callback.variables).write(os.path.join(tmp, "c"))
      fresh, _ = self._callback()
      tf.train.Checkpoint(**fresh.variables).read(path).assert_consumed()
    self.assertAlmostEqual(float(fresh.best.numpy()), 0.5)
    self.assertEqual(int(fresh.wait.numpy()), 1)

  def test_needs_the_validation_metric(self):
    callback, _ = self._callback()
    with self.assertRaisesRegex(ValueError, "eval_accuracy"):
      callback.on_epoch_end(0, {"loss": 1.0})
