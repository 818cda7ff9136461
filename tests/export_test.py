"""Tests for emotion_tfds.serve.export: SavedModel signatures, TFLite parity, quantisation.

A small CNN is trained once per module on generated faces (generated_faces/seed6) and exported
by `export.run` (what export_main runs), as a user would; the tests check what it wrote. With a
second one (another seed), export_main exports their ensemble.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

from ai_edge_litert import interpreter as litert
import keras
import numpy as np
import support
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import labels
from emotion_tfds import models
from emotion_tfds import preprocess
from emotion_tfds.data import datasets
from emotion_tfds.serve import export
from emotion_tfds.serve import loader

DATASET = "generated_faces/seed6"
REPO = pathlib.Path(__file__).resolve().parents[1]


def split_arrays(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """All (uint8 images, labels) of a split as numpy arrays."""
  return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))


def train_small_model(builder, epochs: int, seed: int = 0) -> keras.Model:
  """Plain `model.fit` on `preprocess.to_model_input` images of the train split."""
  keras.utils.set_random_seed(seed)
  images, labels = split_arrays(builder, "train")
  model = support.small_cnn(datasets.num_classes(builder))
  model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
  model.fit(preprocess.to_model_input(images), labels, batch_size=32, epochs=epochs, verbose=0)
  return model


def assert_names_the_classes(test: tf.test.TestCase, saved, path, names) -> None:
  """The SavedModel `saved` (loaded from `path`) names `names` in its signature and its asset."""
  test.assertEqual(
      [n.decode() for n in saved.signatures[loader.LABEL_NAMES_KEY]()["label_names"].numpy()],
      list(names))
  test.assertEqual(loader.saved_model_label_names(path), names)


@functools.cache
def exported() -> tuple:
  """(builder, keras model, out_dir, parity report) after export.run on a trained model."""
  generated_data_dir = support.generated_data_dir()
  builder = datasets.get_builder(DATASET, generated_data_dir)
  model = train_small_model(builder, epochs=6)
  root = support.process_tempdir("export")
  model.save(root / "model.keras")
  out_dir = root / "out"
  report = export.run(root / "model.keras", out_dir, generated_data_dir, DATASET,
                      num_representative=200, batch_size=64)
  return builder, model, out_dir, report


class ExportRunTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.builder, cls.model, cls.out_dir, cls.report = exported()


  def test_writes_all_exports_and_reports(self):
    for name in ("saved_model/saved_model.pb", "saved_model/assets/labels.txt",
                 "model_float.tflite", "model_dynamic.tflite", "model_int8.tflite", "parity.md"):
      self.assertTrue((self.out_dir / name).exists(), name)
    written = json.loads((self.out_dir / "parity.json").read_text())
    self.assertEqual(written["num_examples"], self.builder.info.splits["validation"].num_examples)
    self.assertEqual(written["accuracy"], self.report.accuracy)
    # The TFLite models name their classes through the labels.txt beside them.
    names = datasets.label_names(self.builder)
    for quantization in export.QUANTIZATIONS:
      self.assertEqual(loader.load(self.out_dir / export.TFLITE_FILES[quantization]).emotions(),
                       names, quantization)

  def test_model_learned(self):
    # Otherwise the quantisation comparison below would compare near-uniform outputs.
    self.assertGreater(self.report.accuracy["keras"], 0.5)

  def test_tflite_float_matches_keras(self):
    self.assertLess(self.report.max_abs_diff["float"], 1e-4)
    self.assertLess(self.report.max_abs_diff["saved_model"], 1e-5)
    self.assertEqual(self.report.agreement["float"], 1.0)

  def test_quantised_accuracy_within_one_point_of_float(self):
    for quantization in ("dynamic", "int8"):
      self.assertAllClose(self.report.accuracy[quantization], self.report.accuracy["float"],
                          atol=0.01, msg=quantization)
      self.assertLess(self.report.sizes[quantization], self.report.sizes["float"] / 2)

  def test_int8_model_has_integer_activations(self):
    interpreter = litert.Interpreter(model_path=str(self.out_dir / "model_int8.tflite"))
    dtypes = {d["dtype"] for d in interpreter.get_tensor_details()}
    self.assertIn(np.int8, dtypes)
    # Tensors carry the signature's names, for apps that do not use the signature API.
    self.assertEqual({d["name"] for d in interpreter.get_output_details()},
                     {loader.PROBABILITIES_KEY, loader.LABEL_KEY})
    self.assertEqual([d["name"] for d in interpreter.get_input_details()], [loader.IMAGES_KEY])
    # The uint8 input of the model stays uint8: no float scaling left to the app.
    runner = interpreter.get_signature_runner(loader.SERVING_KEY)
    self.assertEqual(runner.get_input_details()[loader.IMAGES_KEY]["dtype"], np.uint8)

  def test_saved_model_signatures(self):
    images, _ = split_arrays(self.builder, "validation")
    images = images[:16]
    loaded = tf.saved_model.load(str(self.out_dir / "saved_model"))
    expected = self.model(preprocess.to_model_input(images), training=False).numpy()
    served = loaded.signatures[loader.SERVING_KEY](images=tf.constant(images))
    self.assertAllClose(served[loader.PROBABILITIES_KEY], expected, atol=1e-6)
    self.assertAllEqual(served[loader.LABEL_KEY], expected.argmax(-1))
    serve_photos = loaded.signatures[loader.PHOTOS_KEY]
    # Gray 48x48 crops, and the same crops as 96x96 RGB photos, give the same probabilities.
    self.assertAllClose(serve_photos(images=tf.constant(images))[loader.PROBABILITIES_KEY],
                        expected, atol=1e-6)
    rgb_96 = np.repeat(np.repeat(np.repeat(images, 2, axis=1), 2, axis=2), 3, axis=3)
    self.assertAllClose(serve_photos(images=tf.constant(rgb_96))[loader.PROBABILITIES_KEY],
                        expected, atol=1e-6)
    assert_names_the_classes(self, loaded, self.out_dir / "saved_model",
                             datasets.label_names(self.builder))

  def test_serve_photos_rejects_two_channels(self):
    loaded = tf.saved_model.load(str(self.out_dir / "saved_model"))
    with self.assertRaises(tf.errors.InvalidArgumentError):
      loaded.signatures[loader.PHOTOS_KEY](images=tf.zeros([1, 48, 48, 2], tf.uint8))


class ExportArgumentsTest(tf.test.TestCase):
  """Bad arguments and mixed precision; uses the module's trained model only for its shape."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.builder, cls.model, cls.out_dir, cls.report = exported()

  def test_label_names_must_match_outputs(self):
    with self.assertRaisesRegex(ValueError, "5 label names"):
      export.export_saved_model(self.model, self.get_temp_dir(), label_names=("a",) * 5)

  def test_unknown_quantization_and_int8_without_data(self):
    with self.assertRaisesRegex(ValueError, "Unknown quantization"):
      export.export_tflite(self.out_dir / "saved_model", self.get_temp_dir() + "/m.tflite", "fp16")
    with self.assertRaisesRegex(ValueError, "representative_images"):
      export.export_tflite(self.out_dir / "saved_model", self.get_temp_dir() + "/m.tflite", "int8")

  def test_mixed_precision_base_cnn_exports_float32(self):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
      mixed = models.build_base_cnn(6)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    path = self.get_temp_dir() + "/saved_model"
    export.export_saved_model(mixed, path, labels.SEED6)
    images = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1), dtype=np.uint8)
    probabilities = tf.saved_model.load(path).signatures[loader.SERVING_KEY](
        images=tf.constant(images))[loader.PROBABILITIES_KEY]
    float32 = export.float32_model(mixed)
    self.assertEqual({layer.dtype_policy.name for layer in float32.layers}, {"float32"})
    self.assertAllClose(probabilities, float32(preprocess.to_model_input(images)), atol=1e-6)
    self.assertAllClose(probabilities, mixed(preprocess.to_model_input(images)), atol=2e-2)
    self.assertEqual(loader.saved_model_label_names(path), labels.SEED6)

  def test_manifest_is_an_asset_only_when_given(self):
    run_manifest = {"code": {"commit": "abc"}, "data": {"generated_faces/seed6": {"splits": {}}}}
    with_manifest, without = self.get_temp_dir() + "/with", self.get_temp_dir() + "/without"
    export.export_saved_model(self.model, with_manifest, labels.SEED6, manifest=run_manifest)
    export.export_saved_model(self.model, without, labels.SEED6)
    written = pathlib.Path(with_manifest, "assets", "manifest.json")
    self.assertEqual(json.loads(written.read_text()), run_manifest)
    self.assertFalse(pathlib.Path(without, "assets", "manifest.json").exists())
    self.assertEqual(loader.saved_model_label_names(with_manifest), labels.SEED6)


@functools.cache
def exported_ensemble() -> tuple:
  """(the two Keras members, out_dir, export_main's stdout) after export_main on the module's
  model and a second one trained from another seed."""
  builder, first, _, _ = exported()
  second = train_small_model(builder, epochs=2, seed=1)
  root = support.process_tempdir("ensemble")
  paths = [root / "first.keras", root / "second.keras"]
  first.save(paths[0])
  second.save(paths[1])
  out_dir = root / "out"
  done = subprocess.run(
      [sys.executable, str(REPO / "export_main.py"), f"--model_path={paths[0]},{paths[1]}",
       f"--out_dir={out_dir}", f"--data_dir={support.generated_data_dir()}", f"--dataset={DATASET}",
       "--num_representative=64", "--batch_size=64"],
      capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  if done.returncode != 0:
    raise RuntimeError(f"export_main failed:\n{done.stderr[-3000:]}")
  return (first, second), out_dir, done.stdout


class ExportEnsembleMainTest(tf.test.TestCase):
  """export_main with two models: one SavedModel and one TFLite file per quantisation average
  them."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.builder, _, _, cls.report = exported()
    cls.members, cls.ensemble_dir, cls.stdout = exported_ensemble()

  def _mean_of_members(self, images: np.ndarray) -> np.ndarray:
    probabilities = [member(preprocess.to_model_input(images), training=False).numpy()
                     for member in self.members]
    self.assertGreater(np.abs(probabilities[0] - probabilities[1]).max(), 1e-2)
    return np.mean(probabilities, axis=0)

  def test_saved_model_averages_the_members(self):
    images, _ = split_arrays(self.builder, "validation")
    expected = self._mean_of_members(images)
    saved = tf.saved_model.load(str(self.ensemble_dir / "saved_model"))
    served = saved.signatures[loader.SERVING_KEY](images=tf.constant(images))
    self.assertAllClose(served[loader.PROBABILITIES_KEY], expected, atol=1e-5)
    self.assertAllEqual(served[loader.LABEL_KEY], expected.argmax(-1))
    assert_names_the_classes(self, saved, self.ensemble_dir / "saved_model",
                             datasets.label_names(self.builder))

  def test_float_tflite_averages_the_members_and_holds_them_all(self):
    images, _ = split_arrays(self.builder, "validation")
    tflite = loader.load(self.ensemble_dir / export.TFLITE_FILES["float"])
    self.assertEqual(tflite.emotions(), datasets.label_names(self.builder))
    self.assertAllClose(tflite.predict(images), self._mean_of_members(images), atol=1e-5)
    written = json.loads((self.ensemble_dir / "parity.json").read_text())
    self.assertLess(written["max_abs_diff"]["float"], 1e-5)
    self.assertEqual(written["agreement"]["float"], 1.0)
    # Both members' weights are in the one file: twice the single model's size, within 10%.
    self.assertBetween(written["sizes"]["float"], 1.8 * self.report.sizes["float"],
                       2.2 * self.report.sizes["float"])
    self.assertIn(f"parity on {DATASET} validation", self.stdout)
