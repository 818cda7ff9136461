"""Tests for emotion_tfds.train.losses against Keras' own cross-entropy."""

from __future__ import annotations

from absl.testing import absltest
import keras
import numpy as np

from emotion_tfds.train import losses


class SmoothedCrossEntropyTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 6)).astype(np.float32)
    self.probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    self.labels = rng.integers(0, 6, size=16)

  def test_no_smoothing_is_sparse_cross_entropy(self):
    want = keras.losses.SparseCategoricalCrossentropy()(self.labels, self.probs)
    got = losses.SmoothedCrossEntropy()(self.labels, self.probs)
    self.assertAlmostEqual(float(got), float(want), places=5)

  def test_smoothing_matches_keras_categorical(self):
    onehot = np.eye(6, dtype=np.float32)[self.labels]
    want = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(onehot, self.probs)
    got = losses.SmoothedCrossEntropy(0.2)(self.labels, self.probs)
    self.assertAlmostEqual(float(got), float(want), places=5)

  def test_class_weights_scale_each_example(self):
    weights = np.arange(1, 7, dtype=np.float32)
    per_example = -np.log(self.probs[np.arange(16), self.labels])
    got = losses.SmoothedCrossEntropy(0.0, weights)(self.labels, self.probs)
    self.assertAlmostEqual(float(got), float(np.mean(per_example * weights[self.labels])),
                           places=5)


class ClassWeightsTest(absltest.TestCase):

  def test_fer7_train_counts(self):
    counts = [3995, 436, 4097, 7215, 4830, 3171, 4965]  # BUILD.md, real fer7 train.
    weights = losses.class_weights(counts, "weights")
    # Every class weighs the same in total: n / K.
    np.testing.assert_allclose(weights * counts, sum(counts) / 7, rtol=1e-5)
    self.assertAlmostEqual(float(weights[1]), 28709 / (7 * 436), places=3)  # disgust: 9.41
    np.testing.assert_allclose(losses.class_weights(counts, "sqrt"), np.sqrt(weights), rtol=1e-6)
    self.assertIsNone(losses.class_weights(counts, "none"))

  def test_empty_class_gets_zero(self):
    np.testing.assert_allclose(losses.class_weights([4, 0, 4], "weights"), [1.0, 0.0, 1.0])

  def test_unknown(self):
    with self.assertRaisesRegex(ValueError, "Unknown balance"):
      losses.class_weights([1, 2], "oversample")
