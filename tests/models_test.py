"""Tests for emotion_tfds.models: architectures, head swap, and .keras / Keras 2 .h5 loading."""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile

import h5py
import keras
import numpy as np
import tensorflow as tf

from emotion_tfds import labels
from emotion_tfds import models

# The Emotion-detection network (src/emotions.py) as Keras 2 names its Sequential layers, in order.
_KERAS2_LAYERS = (
    "conv2d", "conv2d_1", "max_pooling2d", "dropout", "conv2d_2", "max_pooling2d_1", "conv2d_3",
    "max_pooling2d_2", "dropout_1", "flatten", "dense", "dropout_2", "dense_1")


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).random((n, 48, 48, 1), dtype=np.float32)


def _write_keras2_h5(path: pathlib.Path, model: keras.Model, full_model: bool) -> pathlib.Path:
  """Writes `model`'s weights (a base CNN) in the HDF5 layout of Keras 2 `save`/`save_weights`."""
  weighted = iter([layer for layer in model.layers if layer.weights])
  with h5py.File(path, "w") as f:
    f.attrs["keras_version"] = b"2.4.0"
    f.attrs["backend"] = b"tensorflow"
    root = f
    if full_model:
      f.attrs["model_config"] = json.dumps({"class_name": "Sequential"}).encode()
      root = f.create_group("model_weights")
    root.attrs["layer_names"] = np.array([n.encode() for n in _KERAS2_LAYERS])
    for name in _KERAS2_LAYERS:
      group = root.create_group(name)
      if not name.startswith(("conv2d", "dense")):
        group.attrs["weight_names"] = np.array([], dtype="S1")
        continue
      layer = next(weighted)
      weight_names = [f"{name}/kernel:0", f"{name}/bias:0"]
      group.attrs["weight_names"] = np.array([w.encode() for w in weight_names])
      for weight_name, value in zip(weight_names, layer.get_weights()):
        group.create_dataset(weight_name, data=value)
  return path


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
        probs = model(_images(), training=False)
        self.assertEqual(probs.dtype, tf.float32)
        self.assertEqual(probs.shape, (4, 6))
        self.assertAllClose(tf.reduce_sum(probs, axis=-1), np.ones(4), atol=1e-3)

  def test_vgg_builds_runs_and_is_trainable_size(self):
    model = models.MODELS["vgg"](7)
    self.assertBetween(model.count_params(), 1_000_000, 3_000_000)
    self.assertTrue(any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers))
    self.assertEqual(model.get_layer("predictions").dtype_policy.name, "float32")
    probs = model(_images(), training=True)
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
    self.assertAllClose(features(_images()), old_features(_images()))

  def test_freezing_the_base_leaves_only_the_new_softmax_trainable(self):
    new = models.replace_head(models.build_base_cnn(7), 6)
    for layer in models.base_layers(new):
      layer.trainable = False
    self.assertEqual([w.path for w in new.trainable_weights],
                     ["predictions/kernel", "predictions/bias"])


class LoadPretrainedTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(1)
    self.tmp = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, self.tmp)

  def test_keras_round_trip(self):
    model = models.build_vgg(6)
    path = self.tmp / "model.keras"
    model.save(path)

    same = models.load_pretrained(path, num_classes=6)
    self.assertAllClose(same(_images(), training=False), model(_images(), training=False))

    swapped = models.load_pretrained(path, num_classes=7)
    self.assertEqual(swapped.output_shape, (None, 7))
    self.assertAllEqual(swapped.get_layer("block4_conv2").get_weights()[0],
                        model.get_layer("block4_conv2").get_weights()[0])

  def test_keras2_h5_matches_reference_model(self):
    reference = models.build_base_cnn(7)
    expected = reference(_images(), training=False)
    for full_model in (True, False):
      with self.subTest(full_model=full_model):
        path = _write_keras2_h5(self.tmp / f"model_{full_model}.h5", reference, full_model)
        loaded = models.load_pretrained(path, num_classes=7)
        self.assertAllClose(loaded(_images(), training=False), expected, rtol=1e-6, atol=1e-7)

  def test_keras2_h5_head_replaced_without_scheme(self):
    reference = models.build_base_cnn(7)
    path = _write_keras2_h5(self.tmp / "model.h5", reference, full_model=False)
    loaded = models.load_pretrained(path, num_classes=3)
    self.assertEqual(loaded.output_shape, (None, 3))
    self.assertAllEqual(loaded.get_layer("fc1").get_weights()[0],
                        reference.get_layer("fc1").get_weights()[0])

  def test_release_order_is_remapped_to_scheme(self):
    reference = models.build_base_cnn(7)
    kernel, _ = reference.get_layer("predictions").get_weights()
    release_bias = np.arange(10.0, 17.0, dtype=np.float32)  # class i of the release: bias 10 + i
    reference.get_layer("predictions").set_weights([kernel, release_bias])
    path = _write_keras2_h5(self.tmp / "release.h5", reference, full_model=True)
    release_index = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "neutral": 4, "sad": 5,
                     "surprise": 6}

    for scheme in ("fer7", "seed6"):
      with self.subTest(scheme):
        names = labels.get_scheme(scheme)
        loaded = models.load_pretrained(path, num_classes=len(names), label_names=names)
        new_kernel, new_bias = loaded.get_layer("predictions").get_weights()
        self.assertAllEqual(new_bias, [10 + release_index[n] for n in names])
        for i, name in enumerate(names):
          self.assertAllEqual(new_kernel[:, i], kernel[:, release_index[name]])

    # The order comes from the names, whatever the dataset config is called (e.g. the default
    # fer2013 config or fer7_ravdess, which have the fer7 names): any order of them is followed.
    shuffled = ("neutral", "happy", "angry", "surprise", "sad", "fear", "disgust")
    loaded = models.load_pretrained(path, num_classes=7, label_names=shuffled)
    self.assertAllEqual(loaded.get_layer("predictions").get_weights()[1],
                        [10 + release_index[n] for n in shuffled])

    # seed6 drops fear: the six remaining classes keep their relative odds.
    seed6 = models.load_pretrained(path, num_classes=6, label_names=labels.SEED6)
    full = reference(_images(), training=False).numpy()
    keep = [release_index[n] for n in labels.SEED6]
    expected = full[:, keep] / full[:, keep].sum(axis=1, keepdims=True)
    self.assertAllClose(seed6(_images(), training=False), expected, rtol=1e-5)

  def test_mismatching_h5_names_file_and_layer(self):
    path = _write_keras2_h5(self.tmp / "other.h5", models.build_base_cnn(7), full_model=True)
    with h5py.File(path, "r+") as f:
      del f["model_weights/dense/dense/kernel:0"]
      f["model_weights/dense/dense/kernel:0"] = np.zeros((2048, 512), np.float32)
    with self.assertRaisesRegex(ValueError, r"other\.h5: layer 'dense' .*\(2048, 512\).*'fc1'"):
      models.load_pretrained(path, num_classes=7)

  def test_h5_of_another_architecture_names_both_layer_lists(self):
    path = _write_keras2_h5(self.tmp / "cnn.h5", models.build_base_cnn(7), full_model=False)
    with self.assertRaisesRegex(ValueError, r"cnn\.h5: the file has 6 layers .* model 'vgg' has 19"):
      models.load_pretrained(path, num_classes=7, build_fn=models.build_vgg)

  def test_bad_inputs_raise_clear_errors(self):
    not_keras2 = self.tmp / "plain.h5"
    with h5py.File(not_keras2, "w") as f:
      f["x"] = np.zeros(3)
    with self.assertRaisesRegex(ValueError, r"plain\.h5: not a Keras 2 HDF5"):
      models.load_pretrained(not_keras2, num_classes=7)
    with self.assertRaisesRegex(ValueError, r"model\.pt: expected a \.keras or \.h5 file"):
      models.load_pretrained(self.tmp / "model.pt", num_classes=7)
    with self.assertRaisesRegex(ValueError, r"has 6 emotions, but num_classes=7"):
      models.load_pretrained(not_keras2, num_classes=7, label_names=labels.SEED6)


if __name__ == "__main__":
  tf.test.main()
