"""Tests for emotion_tfds.models: the architectures and the head swap (pretrained files:
weights_test)."""

from __future__ import annotations

import keras
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import models


class ArchitectureTest(tf.test.TestCase):

  def test_base_cnn_is_the_emotion_detection_network(self):
    model = models.build_base_cnn(7)
    self.assertEqual(model.count_params(), 2_345_607)
    weighted = [(layer.name, tuple(layer.weights[0].shape)) for layer in model.layers if layer.weights]
    self.assertEqual(weighted, [
        ("block1_conv1", (3, 3, 1, 32)), ("block1_conv2", (3, 3, 32, 64)),
        ("block2_conv1", (3, 3, 64, 128)), ("block3_conv1", (3, 3, 128, 128)),
        ("fc1", (2048, 1024)), ("predictions", (1024, 7))])
    self.assertEqual(model.get_layer("block3_dropout").output.shape, (None, 4, 4, 128))
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    self.assertEqual(rates, [0.25, 0.25, 0.5])

  def test_models_output_float32_probabilities_under_mixed_precision(self):
    for name, build in models.MODELS.items():
      with self.subTest(name):
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
          model = build(6, name=f"{name}_mixed")
        finally:
          keras.mixed_precision.set_global_policy("float32")
        self.assertEqual(model.name, f"{name}_mixed")
        self.assertEqual(model.input.dtype, "float32")
        first_conv = next(layer for layer in model.layers
                          if isinstance(layer, keras.layers.Conv2D))
        self.assertEqual(first_conv.compute_dtype, "float16")
        probs = model(support.random_float_images(4), training=False)
        self.assertEqual(probs.dtype, tf.float32)
        self.assertEqual(probs.shape, (4, 6))
        self.assertAllClose(tf.reduce_sum(probs, axis=-1), np.ones(4), atol=1e-3)

  def test_vgg_builds_runs_and_is_trainable_size(self):
    model = models.MODELS["vgg"](7)
    self.assertBetween(model.count_params(), 1_000_000, 3_000_000)
    self.assertTrue(any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers))
    self.assertEqual(model.get_layer("predictions").dtype_policy.name, "float32")
    probs = model(support.random_float_images(4), training=True)
    self.assertEqual(probs.shape, (4, 7))
    self.assertAllClose(tf.reduce_sum(probs, axis=-1), np.ones(4), atol=1e-5)


class HeadTest(tf.test.TestCase):

  def test_head_and_base_layers_split(self):
    model = models.build_base_cnn(7)
    self.assertEqual([layer.name for layer in models.head_layers(model)],
                     ["head_dropout", "predictions"])
    base = models.base_layers(model)
    self.assertEqual(base[0].name, "block1_conv1")
    self.assertEqual(base[-1].name, "fc1")
    self.assertLen(base + models.head_layers(model), len(model.layers) - 1)  # - the InputLayer

  def test_replace_head_shares_base_and_has_new_class_count(self):
    model = models.build_vgg(7)
    old_weights = {layer.name: layer.get_weights() for layer in models.base_layers(model)}
    new = models.replace_head(model, 6)

    self.assertEqual(new.output_shape, (None, 6))
    self.assertEqual(new.name, model.name)
    self.assertEqual(model.output_shape, (None, 7))  # the original is untouched
    for old_layer, new_layer in zip(models.base_layers(model), models.base_layers(new)):
      self.assertIs(new_layer, old_layer)
      for before, now in zip(old_weights[old_layer.name], new_layer.get_weights()):
        self.assertAllEqual(before, now)
    self.assertIsNot(new.get_layer("predictions"), model.get_layer("predictions"))
    self.assertIsNot(new.get_layer("head_dropout"), model.get_layer("head_dropout"))
    self.assertEqual(new.get_layer("predictions").dtype_policy.name, "float32")

    # Features equal: the old and new heads see the same base output.
    features = keras.Model(new.input, new.get_layer("head_dropout").input)
    old_features = keras.Model(model.input, model.get_layer("head_dropout").input)
    images = support.random_float_images(4)
    self.assertAllClose(features(images), old_features(images))

  def test_freezing_the_base_leaves_only_the_new_softmax_trainable(self):
    new = models.replace_head(models.build_base_cnn(7), 6)
    for layer in models.base_layers(new):
      layer.trainable = False
    self.assertEqual([w.path for w in new.trainable_weights],
                     ["predictions/kernel", "predictions/bias"])
