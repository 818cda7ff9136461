"""Tests for emotion_tfds.models.complexity: parameters and multiply-adds of a small network counted
by hand, a nested model's included. (The project's fastnets by hand: fastnet_test.)"""

from __future__ import annotations

from absl.testing import absltest
import keras
from keras import layers

from emotion_tfds.models import complexity


class ComplexityTest(absltest.TestCase):

  def test_convolutions_and_dense_layers_by_hand(self):
    inner = keras.Sequential([keras.Input((12, 12, 4)), layers.Conv2D(8, 3)], name="inner")
    inputs = keras.Input((48, 48, 1))
    x = layers.Conv2D(4, 3, strides=2, padding="same")(inputs)  # 24x24x4.
    x = layers.BatchNormalization()(x)  # Elementwise: no multiply-adds counted.
    x = layers.MaxPooling2D(2)(x)  # 12x12x4.
    x = inner(x)  # 10x10x8.
    outputs = layers.Dense(7)(layers.Flatten()(x))
    stats = complexity.complexity(keras.Model(inputs, outputs))
    macs = 24 * 24 * 9 * 1 * 4 + 10 * 10 * 9 * 4 * 8 + 800 * 7
    self.assertEqual(stats.macs, macs)
    self.assertEqual(stats.params, (9 * 4 + 4) + 4 * 4 + (9 * 4 * 8 + 8) + (800 * 7 + 7))
    self.assertAlmostEqual(stats.mflops, 2 * macs / 1e6)


if __name__ == "__main__":
  absltest.main()
