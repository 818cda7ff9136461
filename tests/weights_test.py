"""Tests for emotion_tfds.models.weights: pretrained `.keras` models and Keras 2 `.h5` files, the
head fitted to the target's classes, and the errors that name an unusable file."""

from __future__ import annotations

import pathlib
import shutil
import zipfile

from absl.testing import absltest
import h5py
import keras
from keras import layers
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import labels
from emotion_tfds import models

# Class i of the Emotion-detection release (alphabetical, "surprise" for FER's surprised).
_RELEASE_INDEX = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "neutral": 4, "sad": 5,
                  "surprise": 6}


def _user_sequential(head: str) -> keras.Model:
  """A small CNN as a user's own script writes it: a Sequential with default layer names."""
  classifier = {"softmax": [layers.Dense(7, activation="softmax")],
                "logits": [layers.Dense(7)],
                "logits+softmax": [layers.Dense(7), layers.Softmax()],
                "no classifier": [layers.Dense(7, activation="relu")]}[head]
  return keras.Sequential([keras.Input((48, 48, 1)), layers.Conv2D(8, 3, activation="relu"),
                           layers.MaxPooling2D(4), layers.Flatten(), layers.Dropout(0.5),
                           *classifier])


class LoadPretrainedTest(tf.test.TestCase):
  """Files written by other tools: real Keras 2 (tf-keras) .h5 files, plain Keras 3 Sequentials."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.keras2 = support.keras2_files()

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(1)
    self.tmp = support.tempdir(self)
    self.images = np.load(self.keras2 / "images.npy")
    self.probabilities = np.load(self.keras2 / "probabilities.npy")

  def test_keras_round_trip(self):
    model = models.build_vgg(6)
    path = self.tmp / "model.keras"
    model.save(path)

    same = models.load_pretrained(path, num_classes=6)
    images = support.random_float_images(4)
    self.assertAllClose(same(images, training=False), model(images, training=False))

    swapped = models.load_pretrained(path, num_classes=7)
    self.assertEqual(swapped.output_shape, (None, 7))
    self.assertAllEqual(swapped.get_layer("block4_conv2").get_weights()[0],
                        model.get_layer("block4_conv2").get_weights()[0])

  def test_keras2_files_predict_as_keras2_did(self):
    for name in ("weights.h5", "model.h5"):
      with self.subTest(name):
        loaded = models.load_pretrained(self.keras2 / name, num_classes=7)
        self.assertAllClose(loaded(self.images, training=False), self.probabilities,
                            rtol=1e-5, atol=1e-6)

  def test_keras2_head_replaced_without_label_names(self):
    loaded = models.load_pretrained(self.keras2 / "weights.h5", num_classes=3)
    self.assertEqual(loaded.output_shape, (None, 3))
    kept = models.load_pretrained(self.keras2 / "weights.h5", num_classes=7)
    self.assertAllEqual(loaded.get_layer("fc1").get_weights()[0],
                        kept.get_layer("fc1").get_weights()[0])

  def test_release_order_follows_the_label_names(self):
    # The order comes from the names, whatever the dataset config is called (the default fer2013
    # config and the fer7 mixture have the fer7 names): fer7's, and any other order of them.
    shuffled = ("neutral", "happy", "angry", "surprise", "sad", "fear", "disgust")
    for names in (labels.get_scheme("fer7"), shuffled):
      for file_name in ("weights.h5", "model.h5"):
        with self.subTest(names=names, file=file_name):
          loaded = models.load_pretrained(self.keras2 / file_name, num_classes=7, label_names=names)
          expected = self.probabilities[:, [_RELEASE_INDEX[n] for n in names]]
          self.assertAllClose(loaded(self.images, training=False), expected, rtol=1e-5, atol=1e-6)

    # seed6 drops fear: the six remaining classes keep their relative odds.
    seed6 = models.load_pretrained(self.keras2 / "model.h5", num_classes=6,
                                   label_names=labels.SEED6)
    kept = self.probabilities[:, [_RELEASE_INDEX[n] for n in labels.SEED6]]
    self.assertAllClose(seed6(self.images, training=False), kept / kept.sum(axis=1, keepdims=True),
                        rtol=1e-5, atol=1e-6)

  def test_user_sequential_keras_file_becomes_a_base_and_head(self):
    for head in ("softmax", "logits", "logits+softmax"):
      with self.subTest(head):
        user = _user_sequential(head)
        path = self.tmp / f"{head}.keras"
        user.save(path)
        images = support.random_float_images(4)
        expected = user(images, training=False)
        if head == "logits":
          expected = tf.nn.softmax(expected)

        loaded = models.load_pretrained(path, num_classes=7)
        self.assertEqual(loaded.layers[-1].name, "predictions")
        self.assertAllClose(loaded(images, training=False), expected, rtol=1e-5, atol=1e-6)
        self.assertEqual([layer.name for layer in models.head_layers(loaded)], ["predictions"])
        self.assertEqual([type(layer).__name__ for layer in models.base_layers(loaded)],
                         ["Conv2D", "MaxPooling2D", "Flatten", "Dropout"])

        swapped = models.load_pretrained(path, num_classes=6)
        self.assertEqual(swapped.output_shape, (None, 6))
        self.assertAllEqual(swapped.layers[1].get_weights()[0], user.layers[0].get_weights()[0])

  def _assert_each_refused(self, cases: dict[pathlib.Path, str]) -> None:
    """`load_pretrained` refuses each file with an UnusableModelError matching its message."""
    for path, message in cases.items():
      with self.subTest(path.name):
        with self.assertRaisesRegex(errors.UnusableModelError, message):
          models.load_pretrained(path, num_classes=7)

  def test_unusable_models_name_the_file_and_the_reason(self):
    no_classifier = self.tmp / "relu_head.keras"
    _user_sequential("no classifier").save(no_classifier)
    rgb = self.tmp / "rgb.keras"
    keras.Sequential([keras.Input((48, 48, 3)), layers.Flatten(), layers.Dense(7)]).save(rgb)
    features = self.tmp / "features.keras"
    keras.Sequential([keras.Input((48, 48, 1)), layers.Conv2D(4, 3)]).save(features)
    cases = {
        no_classifier: r"relu_head\.keras: its last layer, Dense '\w+', has activation 'relu'",
        rgb: r"rgb\.keras: the model takes inputs of shape \(48, 48, 3\); expected \(48, 48, 1\)",
        features: r"features\.keras: its last layer '\w+' is a Conv2D; expected a Dense"}
    self._assert_each_refused(cases)

  def test_files_that_are_not_models_name_the_file_and_the_formats(self):
    text = self.tmp / "notes.keras"
    text.write_text("not a model")
    archive = self.tmp / "archive.keras"
    with zipfile.ZipFile(archive, "w") as f:
      f.writestr("readme.txt", "hello")
    pickled = self.tmp / "weights.h5"
    pickled.write_bytes(b"\x80\x04 not HDF5")
    formats = r"expected a \.keras model or a Keras 2 \.h5 model or weights file\.$"
    cases = {text: rf"notes\.keras is not a Keras model \(a \.keras file is the zip archive .*"
                   rf"{formats}",
             archive: rf"archive\.keras is a zip archive but not a Keras model \(it has no "
                      rf"config\.json\); {formats}",
             pickled: rf"weights\.h5 is not an HDF5 file; {formats}"}
    self._assert_each_refused(cases)

  def test_mismatching_h5_names_file_and_layer(self):
    path = self.tmp / "other.h5"
    shutil.copy(self.keras2 / "model.h5", path)
    with h5py.File(path, "r+") as f:
      del f["model_weights/dense/dense/kernel:0"]
      f["model_weights/dense/dense/kernel:0"] = np.zeros((2048, 512), np.float32)
    with self.assertRaisesRegex(errors.UnusableModelError,
                                r"other\.h5: layer 'dense' .*\(2048, 512\).*'fc1'"):
      models.load_pretrained(path, num_classes=7)

  def test_h5_of_another_architecture_names_both_layer_lists(self):
    with self.assertRaisesRegex(errors.UnusableModelError,
                                r"weights\.h5: the file has 6 layers .* model 'vgg' has 19"):
      models.load_pretrained(self.keras2 / "weights.h5", num_classes=7, build_fn=models.build_vgg)

  def test_bad_inputs_raise_clear_errors(self):
    not_keras2 = self.tmp / "plain.h5"
    with h5py.File(not_keras2, "w") as f:
      f["x"] = np.zeros(3)
    with self.assertRaisesRegex(errors.UnusableModelError, r"plain\.h5: not a Keras 2 HDF5"):
      models.load_pretrained(not_keras2, num_classes=7)
    with self.assertRaisesRegex(errors.UnusableModelError,
                                r"model\.pt: expected a \.keras model or a Keras 2 \.h5"):
      models.load_pretrained(self.tmp / "model.pt", num_classes=7)
    with self.assertRaisesRegex(errors.MissingFileError, r"absent\.keras: no such model file"):
      models.load_pretrained(self.tmp / "absent.keras", num_classes=7)
    with self.assertRaisesRegex(ValueError, r"has 6 emotions, but num_classes=7"):
      models.load_pretrained(not_keras2, num_classes=7, label_names=labels.SEED6)


if __name__ == "__main__":
  absltest.main()
