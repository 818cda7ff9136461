"""Tests for emotion_tfds.train.weight_averages: the BatchNorm statistics' averages and the swap."""

from __future__ import annotations

from absl.testing import absltest
import keras
import numpy as np

from emotion_tfds import models
from emotion_tfds.train import stages
from emotion_tfds.train import training_model
from emotion_tfds.train import weight_averages

_MOMENTUM = 0.75


class _Statistics(keras.callbacks.Callback):
  """The BatchNorm statistics and their averages after every step and at every epoch end."""

  def __init__(self, batch_norm: weight_averages.BatchNormAverages):
    super().__init__()
    self._batch_norm = batch_norm
    self.steps: list[list[np.ndarray]] = []
    self.epoch_begins: list[list[np.ndarray]] = []
    self.epoch_ends: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch_begins.append([v.numpy().copy() for v in self._batch_norm.statistics])

  def on_train_batch_end(self, batch, logs=None):
    self.steps.append([v.numpy().copy() for v in self._batch_norm.statistics])

  def on_epoch_end(self, epoch, logs=None):
    self.epoch_ends.append(([v.numpy().copy() for v in self._batch_norm.statistics],
                            [v.numpy().copy() for v in self._batch_norm.averages]))


class BatchNormAveragesTest(absltest.TestCase):

  def test_averages_follow_each_step_and_are_swapped_in_at_epoch_ends(self):
    keras.utils.set_random_seed(0)
    net = models.MODELS["fastnet_small"](num_classes=7)
    batch_norm = weight_averages.BatchNormAverages(net, _MOMENTUM)
    # fastnet_small: a stem and two convolutions in each of 3 stages, each with a BatchNorm.
    self.assertLen(batch_norm.statistics, 2 * 7)
    self.assertLen(batch_norm.variables["batch_norm_averages"], 2 * 7)
    trainer = training_model.TrainingModel(net, None, stage_seed=0, batch_norm_averages=batch_norm)
    trainer.compile(optimizer=stages.make_optimizer("nesterov", 0.1, ema=_MOMENTUM),
                    loss="sparse_categorical_crossentropy")
    trainer.optimizer.build(trainer.trainable_variables)
    swap = weight_averages.EvaluateAverages(trainer, epochs=2, batch_norm=batch_norm)
    seen, at_swap = _Statistics(batch_norm), _Statistics(batch_norm)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 48, 48, 1), dtype=np.uint8)
    labels = rng.integers(0, 7, 64)
    # The recorder runs before put_in: it sees the trained statistics at each epoch end.
    trainer.fit(images, labels, batch_size=16, epochs=2, shuffle=False, verbose=0,
                callbacks=[seen, swap.put_in, at_swap, swap.take_out])

    # The average of each statistic over the 8 steps, the first step copied (Keras' own EMA rule).
    expected = seen.steps[0]
    for step in seen.steps[1:]:
      expected = [_MOMENTUM * a + (1 - _MOMENTUM) * s for a, s in zip(expected, step)]
    for got, want in zip(batch_norm.averages, expected, strict=True):
      np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    self.assertFalse(np.allclose(expected[0], seen.steps[-1][0]))
    # At each epoch end validation sees the averages (put_in), not the trained statistics.
    for (trained, _), (swapped, averages) in zip(seen.epoch_ends, at_swap.epoch_ends, strict=True):
      for s, a in zip(swapped, averages, strict=True):
        np.testing.assert_array_equal(s, a)
      self.assertFalse(all(np.array_equal(t, s) for t, s in zip(trained, swapped)))
    # After the first epoch the trained statistics came back; after the last the averages stay.
    for begin, trained in zip(seen.epoch_begins[1], seen.epoch_ends[0][0], strict=True):
      np.testing.assert_array_equal(begin, trained)
    for statistic, average in zip(batch_norm.statistics, batch_norm.averages, strict=True):
      np.testing.assert_array_equal(statistic.numpy(), average.numpy())


if __name__ == "__main__":
  absltest.main()
