"""Tests for evaluation: model loading, TTA views, scheme checks, and eval_main on generated faces."""

from __future__ import annotations

import csv
import functools
import gc
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import errors
from emotion_tfds import image_spec
from emotion_tfds import labels
from emotion_tfds import models
from emotion_tfds import preprocess
from emotion_tfds import tta
from emotion_tfds.serve import evaluate
from emotion_tfds.serve import export
from emotion_tfds.serve import loader

REPO = pathlib.Path(__file__).resolve().parents[1]


def _train(data_dir: pathlib.Path, dataset: str, steps: int = 3, seed: int = 0) -> keras.Model:
  """The base CNN, initialised from `seed`, trained for a few steps on `dataset`'s train split of
  generated faces."""
  from emotion_tfds.data import datasets
  from emotion_tfds.data import pipeline
  builder = datasets.get_builder(dataset, data_dir)
  train, _ = pipeline.make_dataset(builder, "train", 32, training=True)
  keras.utils.set_random_seed(seed)
  model = models.build_base_cnn(len(datasets.label_names(builder)))
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
  model.fit(train.take(steps).map(lambda x, y: (preprocess.to_model_input(x), y)), verbose=0)
  return model


@functools.cache
def trained_models() -> dict[str, pathlib.Path]:
  """Models trained here on generated faces: fer7 .keras, SavedModel and float .tflite, a second
  fer7 .keras (another seed), seed6 .keras."""
  generated_data_dir = support.generated_data_dir()
  out = support.process_tempdir("trained")
  fer7 = _train(generated_data_dir, "generated_faces/fer7")
  fer7.save(out / "fer7.keras")
  export.export_saved_model(fer7, out / "fer7_saved_model", label_names=labels.FER7)
  export.export_tflite(out / "fer7_saved_model", out / "fer7.tflite")
  _train(generated_data_dir, "generated_faces/fer7", seed=1).save(out / "fer7_seed1.keras")
  _train(generated_data_dir, "generated_faces/seed6").save(out / "seed6.keras")
  return {"fer7": out / "fer7.keras", "fer7_saved": out / "fer7_saved_model",
          "fer7_tflite": out / "fer7.tflite", "fer7_seed1": out / "fer7_seed1.keras",
          "seed6": out / "seed6.keras"}


def _images(n: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, *image_spec.IMAGE_SHAPE), dtype=np.uint8)


class LoadModelTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, self.tmp)

  def test_keras_and_saved_model_predict_the_same(self):
    model = support.small_cnn(6)
    model.save(self.tmp / "m.keras")
    export.export_saved_model(model, self.tmp / "sm", label_names=labels.SEED6)
    images = _images(5)
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


class SchemeCheckTest(absltest.TestCase):

  def _model(self, num_classes: int, names=None) -> loader.LoadedModel:
    return loader.LoadedModel(lambda x: x, num_classes, names, "m.keras")

  def test_class_count_mismatch_names_both(self):
    with self.assertRaisesRegex(
        ValueError, r"Model m\.keras has 6 classes, but dataset fer2013/fer7 has 7 emotions "
        r"\(angry, disgust, fear.*--model_scheme"):
      evaluate.model_emotions(self._model(6), "fer2013/fer7", labels.FER7)
    with self.assertRaisesRegex(ValueError, "7 classes, but --model_scheme=seed6 has 6"):
      evaluate.model_emotions(self._model(7), "fer2013/fer7", labels.FER7, "seed6")

  def test_scheme_sources(self):
    self.assertEqual(evaluate.model_emotions(self._model(7), "d", labels.FER7), labels.FER7)
    self.assertEqual(evaluate.model_emotions(self._model(6), "d", labels.FER7, "seed6"),
                     labels.SEED6)
    self.assertEqual(evaluate.model_emotions(self._model(6, labels.SEED6), "d", labels.FER7),
                     labels.SEED6)
    with self.assertRaisesRegex(ValueError, "none of which is in dataset d"):
      evaluate.model_emotions(self._model(2, ("calm", "bored")), "d", labels.FER7)


class TtaTest(absltest.TestCase):

  def test_views_and_average(self):
    seen = []

    def predict_fn(images):
      seen.append(images.numpy())
      # A "model" that looks at the left half of the picture only: mirror images differ.
      left = tf.reduce_mean(tf.cast(images[:, :, :24, 0], tf.float32), axis=[1, 2]) / 255.0
      return tf.stack([left, 1.0 - left], axis=1)

    images = _images(3)
    flip = tta.with_tta(predict_fn, "flip")(tf.constant(images)).numpy()
    views = seen[-1]
    self.assertEqual(views.shape, (6, *image_spec.IMAGE_SHAPE))
    np.testing.assert_array_equal(views[3:], images[:, :, ::-1])
    left = images[:, :, :24, 0].mean(axis=(1, 2)) / 255.0
    right = images[:, :, 24:, 0].mean(axis=(1, 2)) / 255.0
    np.testing.assert_allclose(flip[:, 0], (left + right) / 2, rtol=1e-5)

    ten = tta.with_tta(predict_fn, "ten-crop")(tf.constant(images)).numpy()
    views = seen[-1]
    self.assertEqual((views.shape, views.dtype), ((30, *image_spec.IMAGE_SHAPE), np.uint8))
    self.assertEqual(ten.shape, (3, 2))
    np.testing.assert_allclose(ten.sum(axis=1), 1.0, rtol=1e-6)
    center = tf.image.resize(images[:, 4:44, 4:44].astype(np.float32), (48, 48))
    np.testing.assert_array_equal(views[12:15], np.round(center.numpy()).astype(np.uint8))
    np.testing.assert_array_equal(views[15:18], views[0:3, :, ::-1])  # Mirror of the top-left.
    top_right = tf.image.resize(images[:, 0:40, 8:48].astype(np.float32), (48, 48))
    np.testing.assert_array_equal(views[3:6], np.round(top_right.numpy()).astype(np.uint8))
    constant = np.full((1, *image_spec.IMAGE_SHAPE), 77, np.uint8)
    tta.with_tta(predict_fn, "ten-crop")(tf.constant(constant))
    np.testing.assert_array_equal(seen[-1], 77)

  def test_unknown_mode(self):
    with self.assertRaisesRegex(ValueError, "Unknown TTA 'rotate'"):
      tta.with_tta(lambda x: x, "rotate")


class EvalMainTest(absltest.TestCase):
  """eval_main and evaluation.run on the generated-faces dataset with models trained here."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = support.generated_data_dir()
    cls.models = trained_models()

  def setUp(self):
    super().setUp()
    self.tmp = support.tempdir(self)

  def _split_labels(self, config: str, split: str = "test") -> np.ndarray:
    from emotion_tfds.data import datasets
    builder = datasets.get_builder(f"generated_faces/{config}", self.data_dir)
    ds = builder.as_dataset(split=split, as_supervised=True)
    return np.array([int(y) for _, y in ds.as_numpy_iterator()])

  def test_eval_main_prints_all_emotions_and_writes_md(self):
    output = self.tmp / "report.md"
    result = subprocess.run(
        [sys.executable, str(REPO / "eval_main.py"), f"--model_path={self.models['fer7']}",
         f"--data_dir={self.data_dir}", "--dataset=generated_faces/fer7", f"--output={output}",
         f"--logdir={self.tmp / 'tb'}", f"--confusion_png={self.tmp / 'cm.png'}"],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    table = result.stdout
    self.assertRegex(table, r"(?m)^Data: generated_faces/fer7 1\.0\.0: generated faces, 1,400 "
                     r"rows, seed 0 \(fer2013\.csv sha256 [0-9a-f]{12}\), train 1,120 / "
                     "validation 140 / test 140$")
    self.assertIn("label", table)
    for word in ("num image", "accuracy", "avg confidence", "distribution", "TRUE emotion"):
      self.assertIn(word, table)
    test_labels = self._split_labels("fer7")
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    for i, emotion in enumerate(labels.FER7):
      self.assertEqual(int(rows[emotion][1]), int((test_labels == i).sum()), emotion)
    self.assertEqual(int(rows["total"][1]), len(test_labels))
    markdown = output.read_text()
    self.assertEqual(sum(line.startswith("| ") for line in markdown.splitlines()), 1 + 7 + 1)
    self.assertGreater(tf.io.decode_png((self.tmp / "cm.png").read_bytes()).shape[0], 100)
    self.assertTrue(list((self.tmp / "tb").glob("events.out.tfevents.*")))

  def test_eval_main_with_two_models_evaluates_the_mean_of_their_probabilities(self):
    paths = [self.models["fer7"], self.models["fer7_seed1"]]
    output = self.tmp / "ensemble.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "eval_main.py"), f"--model_path={paths[0]},{paths[1]}",
         f"--data_dir={self.data_dir}", "--dataset=generated_faces/fer7", f"--output={output}"],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn(f"{paths[0]},{paths[1]} on generated_faces/fer7 test", result.stdout)
    from emotion_tfds.data import datasets
    builder = datasets.get_builder("generated_faces/fer7", self.data_dir)
    images, true = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1,
                                                    as_supervised=True))
    # The mean probability of the true emotion: the members' own, and their average's.
    confidences = [loader.load(path).predict(images)[np.arange(len(true)), true]
                   for path in paths]
    self.assertGreater(np.max(np.abs(confidences[0] - confidences[1])), 1e-3)  # They differ.
    report = json.loads(output.read_text())
    self.assertEqual(report["totals"]["count"], len(true))
    self.assertAlmostEqual(report["totals"]["mean_confidence"],
                           float(np.mean(confidences)), delta=1e-6)

  def test_run_writes_json_and_csv_with_tta(self):
    json_report = evaluate.evaluate_file(
        model_path=self.models["fer7_saved"], dataset="generated_faces/fer7",
        data_dir=self.data_dir, tta="flip", output=self.tmp / "r.json")
    data = json.loads((self.tmp / "r.json").read_text())
    self.assertEqual([e["name"] for e in data["emotions"]], list(labels.FER7))
    self.assertEqual(data["totals"]["count"], json_report.totals.count)
    self.assertEqual(sum(e["count"] for e in data["emotions"]), len(self._split_labels("fer7")))

    evaluate.evaluate_file(model_path=self.models["fer7"], dataset="generated_faces/fer7",
                           data_dir=self.data_dir, split="validation", output=self.tmp / "r.csv")
    rows = list(csv.DictReader((self.tmp / "r.csv").open()))
    self.assertEqual([r["label"] for r in rows], list(labels.FER7) + ["total"])
    self.assertEqual(int(rows[-1]["num_images"]), len(self._split_labels("fer7", "validation")))
    for row in rows:
      if row["accuracy"]:
        self.assertBetween(float(row["accuracy"]), 0.0, 1.0)

  def test_tflite_model_reports_what_its_keras_model_does(self):
    # 140 test images in batches of 64: the LiteRT interpreter gets 3 full batches, 52 padded.
    tflite, keras_file = (
        evaluate.evaluate_file(model_path=self.models[name], dataset="generated_faces/fer7",
                               data_dir=self.data_dir, batch_size=64, tta="flip")
        for name in ("fer7_tflite", "fer7"))
    np.testing.assert_array_equal(
        tflite.confusion.sum(axis=1),
        np.bincount(self._split_labels("fer7"), minlength=len(labels.FER7)))
    np.testing.assert_array_equal(tflite.confusion, keras_file.confusion)
    np.testing.assert_allclose(tflite.true_prob_sum, keras_file.true_prob_sum, rtol=1e-4)

  def test_ten_crop_on_a_trained_model(self):
    from emotion_tfds.data import datasets
    from emotion_tfds.data import pipeline
    builder = datasets.get_builder("generated_faces/fer7", self.data_dir)
    # The first 32 images of the split (read in order): both passes see the same ones.
    def first_two_batches(context):
      return pipeline.make_eval_dataset(builder, "test", 16, context)[0].take(2)
    model = loader.load(self.models["fer7"])
    plain = evaluate.evaluate_dataset(model, first_two_batches, labels.FER7, labels.FER7)
    ten = evaluate.evaluate_dataset(model, first_two_batches, labels.FER7, labels.FER7,
                                    "ten-crop")
    self.assertEqual(ten.totals.count, 32)
    np.testing.assert_array_equal(ten.confusion.sum(axis=1), plain.confusion.sum(axis=1))
    self.assertBetween(ten.totals.mean_confidence, 0.0, 1.0)
    self.assertNotAlmostEqual(ten.totals.mean_confidence, plain.totals.mean_confidence, places=6)

  def test_without_a_dataset_the_model_s_own_classes_choose_it(self):
    from emotion_tfds.data import datasets
    for scheme in ("seed6", "fer7"):
      with self.subTest(scheme):
        folder = self.tmp / scheme
        folder.mkdir()
        shutil.copy(self.models[scheme], folder / loader.MODEL_FILE)
        loader.write_label_names(folder, labels.SCHEMES[scheme])
        report = evaluate.evaluate_file(model_path=folder / loader.MODEL_FILE,
                                        data_dir=self.data_dir)
        self.assertEqual((report.label_names, report.pred_names),
                         (labels.SCHEMES[scheme], labels.SCHEMES[scheme]))
        self.assertEqual(report.totals.count, len(self._split_labels(scheme)))
    # A model that does not name its classes: train_main's default dataset.
    report = evaluate.evaluate_file(model_path=self.models["seed6"], data_dir=self.data_dir)
    default = datasets.get_builder(datasets.DEFAULT_DATASET, self.data_dir)
    self.assertEqual(report.label_names, datasets.label_names(default))

  def test_without_a_dataset_the_run_s_manifest_chooses_it(self):
    from emotion_tfds import manifest
    from emotion_tfds.data import datasets
    folder = self.tmp / "fer7_run"
    folder.mkdir()
    shutil.copy(self.models["fer7"], folder / loader.MODEL_FILE)  # No labels.txt beside it.
    manifest.write(folder / manifest.MANIFEST_FILE,
                   {"config": {"dataset": f"{datasets.GENERATED_FACES}/fer7"}})
    report = evaluate.evaluate_file(model_path=folder / loader.MODEL_FILE, data_dir=self.data_dir)
    self.assertEqual(report.label_names, labels.FER7)
    self.assertEqual(report.totals.count, len(self._split_labels("fer7")))

  def test_seed6_model_on_fer7_data_reports_fear_as_not_covered(self):
    with self.assertRaisesRegex(ValueError,
                                r"6 classes, but dataset generated_faces/fer7 has 7 emotions"):
      evaluate.evaluate_file(model_path=self.models["seed6"], dataset="generated_faces/fer7",
                             data_dir=self.data_dir)
    report = evaluate.evaluate_file(model_path=self.models["seed6"], dataset="generated_faces/fer7",
                          data_dir=self.data_dir, model_scheme="seed6")
    test_labels = self._split_labels("fer7")
    fear = report.rows[labels.FER7.index("fear")]
    self.assertFalse(fear.covered)
    self.assertEqual(fear.count, int((test_labels == labels.FER7.index("fear")).sum()))
    self.assertIsNone(fear.accuracy)
    self.assertEqual(report.totals.covered_count, len(test_labels) - fear.count)
    self.assertEqual(report.pred_names, labels.SEED6)
