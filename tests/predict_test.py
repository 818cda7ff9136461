"""Tests for emotion_tfds.serve.predict and predict_main on real photographs.

The photos are the real RAVDESS frames (one face each) when the shared data is present, else
scikit-image's astronaut (`support.real_face_frames`). A small CNN is trained once per module on the
generated faces and saved as .keras, SavedModel and float TFLite; a second one (another seed) as
.keras, for ensembles.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import pathlib
import subprocess
import sys

import cv2
import keras
import numpy as np
import support
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import models
from emotion_tfds import preprocess
from emotion_tfds.data import datasets
from emotion_tfds.data import pipeline
from emotion_tfds.serve import export
from emotion_tfds.serve import loader
from emotion_tfds.serve import predict
from emotion_tfds.train import training_model

DATASET = "generated_faces/seed6"
_REPO = pathlib.Path(__file__).resolve().parents[1]


@functools.cache
def trained() -> dict:
  """Model files (keras, saved_model, tflite; a second model's keras), label names and the photo
  folders."""
  real_face_frames = support.real_face_frames()
  builder = datasets.get_builder(DATASET, support.generated_data_dir())
  images, labels = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1,
                                                    as_supervised=True))
  trained_models = []
  for seed in (0, 1):
    keras.utils.set_random_seed(seed)
    trained_models.append(support.small_cnn(datasets.num_classes(builder)))
    trained_models[-1].compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    trained_models[-1].fit(preprocess.to_model_input(images), labels, batch_size=32, epochs=2,
                           verbose=0)
  model = trained_models[0]

  root = support.process_tempdir("predict")
  paths = {"keras": root / "model.keras", "saved_model": root / "saved_model",
           "tflite": root / "model.tflite"}
  model.save(paths["keras"])
  loader.write_label_names(root, datasets.label_names(builder))  # As training saves model.keras.
  (root / "second").mkdir()
  trained_models[1].save(root / "second" / "model.keras")
  loader.write_label_names(root / "second", datasets.label_names(builder))
  export.export_saved_model(model, paths["saved_model"], datasets.label_names(builder))
  export.export_tflite(paths["saved_model"], paths["tflite"])

  photos = root / "photos"  # The real photos, losslessly.
  photos.mkdir()
  for name, frame in real_face_frames.items():
    cv2.imwrite(str(photos / f"{name}.png"), frame)
  others = root / "others"
  others.mkdir()
  first = next(iter(real_face_frames.values()))
  cv2.imwrite(str(others / "blank.png"), np.full_like(first, 200))
  cv2.imwrite(str(others / "gray.jpg"), cv2.cvtColor(first, cv2.COLOR_BGR2GRAY))
  (others / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
  return {"model": model, "paths": paths, "second": root / "second" / "model.keras",
          "names": datasets.label_names(builder),
          "photos": photos, "others": others, "frames": real_face_frames, "root": root}


class _WithTrained:
  """Test-class mixin: `cls.t`, the module's `trained()` models and photos."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.t = trained()


def _run(*args, **kwargs) -> tuple[int, str]:
  """predict.run (what predict_main runs) and what it printed."""
  out = io.StringIO()
  code = predict.run(*args, stream=out, **kwargs)
  return code, out.getvalue()


class PredictRunTest(_WithTrained, tf.test.TestCase):

  def test_real_photos_one_face_each_json_and_annotated(self):
    output = self.get_temp_dir() + "/predictions.json"
    annotate_dir = pathlib.Path(self.get_temp_dir()) / "annotated"
    code, printed = _run(str(self.t["paths"]["saved_model"]), [str(self.t["photos"])], output,
                         str(annotate_dir))
    self.assertEqual(code, 0, printed)
    results = json.loads(pathlib.Path(output).read_text())
    frames = self.t["frames"]
    self.assertEqual(sorted(pathlib.Path(r["file"]).stem for r in results), sorted(frames))
    for r in results:
      self.assertEqual(r["status"], "ok", r)
      self.assertLen(r["faces"], 1, r["file"])
      face = r["faces"][0]
      x, y, w, h = face["box"]
      height, width = frames[pathlib.Path(r["file"]).stem].shape[:2]
      self.assertTrue(0 <= x and 0 <= y and x + w <= width and y + h <= height, face["box"])
      self.assertEqual(list(face["probabilities"]), list(self.t["names"]))
      self.assertAlmostEqual(sum(face["probabilities"].values()), 1.0, places=4)
      self.assertEqual(face["emotion"], max(face["probabilities"], key=face["probabilities"].get))
      self.assertEqual(face["probability"], max(face["probabilities"].values()))
      self.assertIn(f"{face['emotion']} {face['probability']:.3f}", printed)

      original = frames[pathlib.Path(r["file"]).stem]
      annotated = cv2.imread(str(annotate_dir / pathlib.Path(r["file"]).name))
      self.assertEqual(annotated.shape, original.shape)
      changed = np.any(annotated != original, axis=-1)
      self.assertTrue(changed[y, x:x + w].all())  # The box's top edge is drawn...
      self.assertFalse(changed[:, :max(0, x - 2)].any())  # ...and nothing left of the box.

  def test_csv_output(self):
    output = self.get_temp_dir() + "/predictions.csv"
    code, _ = _run(str(self.t["paths"]["keras"]), [str(self.t["photos"] / "*.png")], output)
    self.assertEqual(code, 0)
    with open(output, newline="") as f:
      rows = list(csv.DictReader(f))
    self.assertLen(rows, len(self.t["frames"]))
    for row in rows:
      self.assertEqual(row["status"], "ok")
      self.assertEqual(row["face"], "1")
      probabilities = {name: float(row[name]) for name in self.t["names"]}
      self.assertAlmostEqual(sum(probabilities.values()), 1.0, places=4)
      self.assertEqual(row["emotion"], max(probabilities, key=probabilities.get))

  def test_no_face_corrupt_and_missing_files_are_reported(self):
    others = self.t["others"]
    output = self.get_temp_dir() + "/mixed.json"
    inputs = [str(others / "corrupt.jpg"), str(others / "blank.png"), str(others / "gray.jpg"),
              str(others / "missing.png")]
    code, printed = _run(str(self.t["paths"]["saved_model"]), inputs, output)
    self.assertEqual(code, 1)
    results = {pathlib.Path(r["file"]).name: r
               for r in json.loads(pathlib.Path(output).read_text())}
    self.assertEqual({name: r["status"] for name, r in results.items()},
                     {"corrupt.jpg": "error", "blank.png": "no_face", "gray.jpg": "ok",
                      "missing.png": "error"})
    self.assertIn("corrupt.jpg", results["corrupt.jpg"]["error"])
    self.assertIn("missing.png", results["missing.png"]["error"])
    self.assertLen(results["gray.jpg"]["faces"], 1)
    self.assertIn(f"{others / 'blank.png'}: no face", printed)
    self.assertIn("4 files: 1 with faces (1 faces), 1 without a face, 2 unreadable.", printed)

  def test_command_line_exit_code(self):
    photo = next(self.t["photos"].glob("*.png"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, str(_REPO / "predict_main.py"),
         f"--model_path={self.t['paths']['tflite']}", str(self.t["others"] / "corrupt.jpg"),
         str(photo)], capture_output=True, text=True, env=env, timeout=120, check=False)
    self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
    self.assertIn("ERROR", proc.stdout)
    self.assertIn(f"{photo}: face 1/1", proc.stdout)

  def test_command_line_ensemble_of_two_models(self):
    photo = next(self.t["photos"].glob("*.png"))
    output = self.get_temp_dir() + "/ensemble.json"
    paths = [self.t["paths"]["saved_model"], self.t["second"]]
    proc = subprocess.run(
        [sys.executable, str(_REPO / "predict_main.py"), f"--model_path={paths[0]},{paths[1]}",
         f"--output={output}", str(photo)], capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=120, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    face, = json.loads(pathlib.Path(output).read_text())[0]["faces"]
    self.assertEqual(list(face["probabilities"]), list(self.t["names"]))
    crops = predict.face_crops(self.t["frames"][photo.stem])[1]
    single = [predict.load_classifier(path).predict(crops)[0] for path in paths]
    self.assertGreater(np.abs(single[0] - single[1]).max(), 1e-3, "the two models must differ")
    self.assertAllClose(list(face["probabilities"].values()), np.mean(single, axis=0), atol=1e-6)


class PredictLibraryTest(_WithTrained, tf.test.TestCase):

  def test_keras_saved_model_and_tflite_agree(self):
    crops = np.concatenate(
        [predict.face_crops(frame)[1] for frame in self.t["frames"].values()])
    classifiers = {kind: predict.load_classifier(path) for kind, path in self.t["paths"].items()}
    for kind, classifier in classifiers.items():
      self.assertEqual(classifier.label_names, self.t["names"], kind)
    expected = classifiers["keras"].predict(crops)
    self.assertAllClose(classifiers["saved_model"].predict(crops), expected, atol=1e-6)
    self.assertAllClose(classifiers["tflite"].predict(crops), expected, atol=1e-5)

  def test_same_preprocessing_on_every_path(self):
    for module in (loader, export, training_model):  # predict and evaluate go through loader.
      self.assertIs(module.preprocess, preprocess, module.__name__)
    photo = next(iter(self.t["frames"].values()))
    model = self.t["model"]

    # (a) The prediction path: photo -> Haar box -> training crop -> to_model_input -> model, with
    # the Keras model and with the SavedModel's serving_default.
    boxes, crops = predict.face_crops(photo)
    self.assertLen(boxes, 1)
    self.assertEqual((crops.dtype, crops.shape), (np.uint8, (1, 48, 48, 1)))
    keras_classifier = predict.load_classifier(self.t["paths"]["keras"])
    predicted = keras_classifier.predict(crops)
    predicted_served = predict.load_classifier(self.t["paths"]["saved_model"]).predict(crops)

    # (b) The SavedModel's serve_photos signature (any-size photo preprocessing) on the crop.
    loaded = tf.saved_model.load(str(self.t["paths"]["saved_model"]))
    served = loaded.signatures[loader.PHOTOS_KEY](images=tf.constant(crops))

    # (c) The training path: the crop as a fer2013.csv row -> TFDS builder -> pipeline batch ->
    # to_model_input (as loop.py feeds the network).
    manual_dir = pathlib.Path(self.get_temp_dir()) / "manual"
    manual_dir.mkdir()
    pixels = " ".join(str(v) for v in crops[0].ravel())
    (manual_dir / "fer2013.csv").write_text(
        "emotion,pixels,Usage\n" +
        "".join(f"3,{pixels},{usage}\n" for usage in ("Training", "PublicTest", "PrivateTest")))
    builder = datasets.build("fer2013/fer7", self.get_temp_dir() + "/tfds", manual_dir)
    dataset, count = pipeline.make_dataset(builder, "validation", 1, training=False)
    self.assertEqual(count, 1)
    (images, _), = dataset.as_numpy_iterator()
    trained_on = model(preprocess.to_model_input(images), training=False).numpy()

    self.assertAllEqual(images, crops)  # The stored example is the crop, byte for byte.
    self.assertAllEqual(predicted, trained_on)
    self.assertAllClose(predicted_served, trained_on, atol=1e-6)
    self.assertAllClose(served[loader.PROBABILITIES_KEY], trained_on, atol=1e-6)
    # The probabilities depend on the crop: a shifted crop gives different ones.
    self.assertNotAllClose(keras_classifier.predict(np.roll(crops, 6, axis=2)), predicted,
                           atol=1e-4)

  def test_expand_inputs(self):
    photos, others = self.t["photos"], self.t["others"]
    pngs = sorted(str(p) for p in photos.glob("*.png"))
    self.assertEqual(predict.expand_inputs([str(photos)]), pngs)
    self.assertEqual(predict.expand_inputs([str(others / "*.jpg")]),
                     [str(others / "corrupt.jpg"), str(others / "gray.jpg")])
    self.assertEqual(predict.expand_inputs([str(others / "nothing*.png"), "missing.png"]),
                     [str(others / "nothing*.png"), "missing.png"])

  def test_every_model_loads_in_a_fresh_process(self):
    """A main that imports only `serving` loads every registered model's `.keras` file (custom
    layers such as fastnet's SpaceToDepth must be registered without the training code)."""
    paths = []
    for name, build in models.MODELS.items():
      paths.append(str(pathlib.Path(self.get_temp_dir()) / f"{name}.keras"))
      build(num_classes=7).save(paths[-1])
    script = ("import sys\nfrom emotion_tfds.serve import loader\n"
              "print([loader.load(p).num_classes for p in sys.argv[1:]])")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True,
                          env=env, timeout=300, check=False, cwd=_REPO)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(str([7] * len(paths)), proc.stdout)

  def test_unknown_model_file(self):
    path = pathlib.Path(self.get_temp_dir()) / "model.onnx"
    path.write_bytes(b"")
    with self.assertRaisesRegex(ValueError, "model.onnx"):
      predict.load_classifier(path)
    with self.assertRaisesRegex(FileNotFoundError, "nowhere"):
      predict.load_classifier("nowhere/model.keras")
    with self.assertRaisesRegex(ValueError, "out.txt"):
      predict.run(self.t["paths"]["keras"], [str(self.t["photos"])], output="out.txt")
