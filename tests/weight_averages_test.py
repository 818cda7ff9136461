"""Tests for emotion_tfds.train.weight_averages: the BatchNorm statistics' averages and the swap,
and a real run with ema= that crashes and resumes (on `support.generated_data_dir`)."""

from __future__ import annotations

from absl.testing import absltest
import keras
import numpy as np
import support
import train_support

from emotion_tfds import models
from emotion_tfds.train import keep_best
from emotion_tfds.train import loop
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


def _network_state(net: keras.Model) -> list[np.ndarray]:
  """The trainable weights, then the BatchNorm statistics."""
  return [v.numpy().copy() for v in
          [*net.trainable_variables, *weight_averages.batch_norm_statistics(net)]]


class _Averages(keras.callbacks.Callback):
  """Per epoch end: the network's state (`_network_state`) and the averages of the same."""

  def __init__(self):
    super().__init__()
    self.epochs: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

  def on_epoch_end(self, epoch, logs=None):
    averages = [*weight_averages.averages(self.model.optimizer),
                *self.model.batch_norm_averages.averages]
    self.epochs.append((_network_state(self.model.net), [v.numpy().copy() for v in averages]))


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class AveragedWeightsTest(support.WithGeneratedData, absltest.TestCase):
  """ema=M: validation and keep-best see the averages (of the weights and the BatchNorm
  statistics), checkpoints resume them, the stage ends with them."""

  def test_ema_is_evaluated_kept_resumed_and_final(self):
    model_dir = support.tempdir(self)
    config = train_support.train_config(model_dir, self.data_dir,
                                        "all:4:1e-2:16:nesterov:ema=0.5", validate=True,
                                        keep_best="accuracy", model="fastnet_small")
    crashed, stop = _Averages(), train_support.StopAt(fit_index=1, epoch=2)
    with self.assertRaises(train_support.StopAt.Stop):
      loop.train(config, extra_callbacks=[crashed, stop])
    # Between epochs the network holds its trained weights, not the averages.
    for trained, averaged in crashed.epochs:
      self.assertFalse(_same(trained, averaged))
    # The checkpoint of epoch 2 brings back the trained weights and statistics and the averages
    # (optimizer variables and the statistics' averages) exactly.
    first, resumed = train_support.FirstState(), _Averages()
    result = loop.train(config, extra_callbacks=[first, resumed])
    self.assertEqual(result.resumed_from, (0, 2))
    self.assertTrue(any("average" in path for path in stop.saved_state["variables"]))
    for path, value in stop.saved_state["variables"].items():
      np.testing.assert_array_equal(first.state["variables"][path], value, err_msg=path)
    for name, weights in stop.saved_state["weights"].items():
      for a, b in zip(first.state["weights"][name], weights, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    self.assertLen(stop.saved_state["batch_norm_averages"], 2 * 7)
    for a, b in zip(first.state["batch_norm_averages"], stop.saved_state["batch_norm_averages"],
                    strict=True):
      np.testing.assert_array_equal(a, b)
    # After the last epoch (only) the averages stay in the network.
    self.assertEqual([_same(*epoch) for epoch in resumed.epochs], [False, True])
    # Keep-best saved the averages of its epoch, not trained weights.
    best = models.MODELS["fastnet_small"](num_classes=6)
    best.load_weights(model_dir / keep_best.BEST_WEIGHTS)
    kept = _network_state(best)
    every_average = [averaged for _, averaged in crashed.epochs + resumed.epochs]
    self.assertTrue(any(_same(kept, averaged) for averaged in every_average))
    self.assertFalse(any(_same(kept, trained) for trained, _ in crashed.epochs))
    self.assertTrue(_same(_network_state(result.network), kept))


if __name__ == "__main__":
  absltest.main()
