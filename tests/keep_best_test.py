"""Tests for emotion_tfds.train.keep_best: which stages' epochs compete, the best epoch's weights
and place kept as the epochs end, its load as the final network, the best validation accuracy.
(In a real run that crashes and resumes: loop_test, weight_averages_test.)"""

from __future__ import annotations

import contextlib
import io

from absl.testing import absltest
import numpy as np
import support
import train_support

from emotion_tfds.data import datasets
from emotion_tfds.train import checkpoints
from emotion_tfds.train import keep_best


def _weights_file(path) -> list[np.ndarray]:
  net = support.small_cnn(6)
  net.load_weights(path)
  return net.get_weights()


def _assert_weights_equal(a: list[np.ndarray], b: list[np.ndarray]) -> None:
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)


class KeepBestFromTest(support.WithGeneratedData, absltest.TestCase):

  def test_the_stages_after_the_last_head_swap(self):
    builders = {name: datasets.get_builder(name, self.data_dir)
                for name in ("generated_faces/fer7", "generated_faces/seed6")}
    pretrained = train_support.train_config("m", self.data_dir, "head:1:1e-3:16,all:1:1e-3:16",
                                            pretrain="all:1:1e-3:16")
    self.assertEqual(keep_best.keep_best_from(pretrained, builders), 1)
    target_only = train_support.train_config("m", self.data_dir, "head:1:1e-3:16,all:1:1e-3:16")
    self.assertEqual(keep_best.keep_best_from(target_only, builders), 0)


class KeepBestTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = support.tempdir(self)
    self.path = self.dir / keep_best.BEST_WEIGHTS
    self.net = support.small_cnn(6)
    self.counters = checkpoints.Counters("f", "float32")
    self.config = train_support.train_config("m", "d", "head:1:1e-3:16,main:all:4:1e-3:16",
                                             validate=True, keep_best="accuracy")

  def _next_epoch_weights(self) -> list[np.ndarray]:
    """Changes the network's weights, as an epoch of training does; returns them."""
    self.net.set_weights([w + 0.01 for w in self.net.get_weights()])
    return self.net.get_weights()

  def test_only_a_better_epoch_replaces_the_weights_and_its_place(self):
    callback = keep_best.KeepBest(self.net, "eval_accuracy", self.counters, stage_index=1,
                                  path=self.path)
    first = self._next_epoch_weights()
    callback.on_epoch_end(0, {"eval_accuracy": 0.5})
    self._next_epoch_weights()
    callback.on_epoch_end(1, {"eval_accuracy": 0.5})  # Not better: a tie keeps the earlier epoch.
    self._next_epoch_weights()
    callback.on_epoch_end(2, {"eval_accuracy": 0.4})
    _assert_weights_equal(_weights_file(self.path), first)
    self.assertEqual((int(self.counters.best_stage.numpy()), int(self.counters.best_epoch.numpy()),
                      float(self.counters.best_value.numpy())), (1, 1, 0.5))
    best = self._next_epoch_weights()
    callback.on_epoch_end(3, {"eval_accuracy": 0.75})
    _assert_weights_equal(_weights_file(self.path), best)
    self.assertEqual((int(self.counters.best_epoch.numpy()),
                      float(self.counters.best_value.numpy())), (4, 0.75))
    self.assertEqual([p.name for p in self.dir.iterdir()], [keep_best.BEST_WEIGHTS])
    with self.assertRaisesRegex(ValueError, "keep_best needs 'eval_accuracy' in the epoch logs"):
      callback.on_epoch_end(4, {"loss": 1.0})

  def test_the_best_epoch_becomes_the_final_network(self):
    with self.assertRaisesRegex(ValueError, "keep_best=accuracy: no best epoch was recorded in"):
      keep_best.load_best(self.net, self.config, self.counters, self.dir, announce=False)
    callback = keep_best.KeepBest(self.net, "eval_accuracy", self.counters, stage_index=1,
                                  path=self.path)
    best = self._next_epoch_weights()
    callback.on_epoch_end(1, {"eval_accuracy": 0.625})
    self._next_epoch_weights()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      keep_best.load_best(self.net, self.config, self.counters, self.dir, announce=True)
    _assert_weights_equal(self.net.get_weights(), best)
    self.assertIn("Final model: the best epoch by validation accuracy, main epoch 2 (0.6250).",
                  printed.getvalue())

  def test_the_best_validation_accuracy_is_kept_without_keep_best(self):
    track = keep_best.TrackBestAccuracy(self.counters)
    for logs in ({"eval_accuracy": 0.5}, {"loss": 0.1}, {"eval_accuracy": 0.25}, None):
      track.on_epoch_end(0, logs)
    self.assertEqual(float(self.counters.best_accuracy.numpy()), 0.5)


if __name__ == "__main__":
  absltest.main()
