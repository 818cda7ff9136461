"""Tests for emotion_tfds.serve.loader: one loader for .keras files, SavedModels and .tflite files,
their class names, and the errors that name an unusable file. (Ensembles: ensemble_test.)"""

from __future__ import annotations

import gc
import zipfile

from absl.testing import absltest
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import labels
from emotion_tfds import preprocess
from emotion_tfds.serve import export
from emotion_tfds.serve import loader


class LoadModelTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = support.tempdir(self)

  def test_keras_and_saved_model_predict_the_same(self):
    model = support.small_cnn(6)
    model.save(self.tmp / "m.keras")
    export.export_saved_model(model, self.tmp / "sm", label_names=labels.SEED6)
    images = support.random_images(5)
    expected = model(preprocess.to_model_input(images)).numpy()
    from_keras = loader.load(self.tmp / "m.keras")
    from_saved = loader.load(self.tmp / "sm")
    self.assertEqual((from_keras.num_classes, from_keras.label_names), (6, None))
    self.assertEqual((from_saved.num_classes, from_saved.label_names), (6, labels.SEED6))
    np.testing.assert_allclose(from_keras.predict_fn(tf.constant(images)), expected, atol=1e-6)
    gc.collect()  # The SavedModel's variables must outlive the load (they are used in graphs).
    np.testing.assert_allclose(tf.function(from_saved.predict_fn)(tf.constant(images)), expected,
                               atol=1e-6)
    # A .keras file names its classes only through the labels.txt beside it; nothing is guessed.
    with self.assertRaisesRegex(errors.UnusableModelError,
                                r"m\.keras does not name its classes .*--label_names"):
      from_keras.emotions()
    loader.write_label_names(self.tmp, labels.FER7)
    with self.assertRaisesRegex(errors.UnusableModelError,
                                r"labels\.txt names 7 classes .* but .*m\.keras has 6 outputs"):
      loader.load(self.tmp / "m.keras")
    loader.write_label_names(self.tmp, labels.SEED6)
    self.assertEqual(loader.load(self.tmp / "m.keras").emotions(), labels.SEED6)

  def test_bad_model_paths(self):
    with self.assertRaisesRegex(FileNotFoundError, "nope.keras does not exist"):
      loader.load(self.tmp / "nope.keras")
    (self.tmp / "old.h5").write_bytes(b"")
    with self.assertRaisesRegex(ValueError, r"old\.h5.*load_pretrained"):
      loader.load(self.tmp / "old.h5")

  def test_files_that_are_not_models_name_the_file_and_the_formats(self):
    (self.tmp / "notes.keras").write_text("not a model")
    with zipfile.ZipFile(self.tmp / "archive.keras", "w") as archive:
      archive.writestr("readme.txt", "hello")
    (self.tmp / "junk.tflite").write_text("not a model")
    (self.tmp / "folder").mkdir()
    formats = r"expected a \.keras model, a SavedModel directory or a \.tflite file\.$"
    cases = {"notes.keras": rf"notes\.keras is not a Keras model .*; {formats}",
             "archive.keras": rf"archive\.keras is a zip archive but not a Keras model .*; "
                              rf"{formats}",
             "junk.tflite": rf"junk\.tflite is not a TFLite model \(.*\); {formats}",
             "folder": rf"folder is a folder but not a SavedModel \(it has no saved_model\.pb\); "
                       rf"{formats}"}
    for name, message in cases.items():
      with self.subTest(name):
        with self.assertRaisesRegex(errors.UnusableModelError, message):
          loader.load(self.tmp / name)
    with self.assertRaisesRegex(errors.UnusableModelError,
                                r"notes\.keras is not a Keras model .*; expected a \.keras "
                                r"model\.$"):
      loader.load_keras_model(self.tmp / "notes.keras")


if __name__ == "__main__":
  absltest.main()
