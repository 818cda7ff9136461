"""Tests for eval_main and evaluate.evaluate_file on generated faces with models trained here."""

from __future__ import annotations

import csv
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import labels
from emotion_tfds import models
from emotion_tfds import preprocess
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
