"""Tests for ensembles: the Keras ensemble network, `loader.load_ensemble` on real generated faces,
and a two-member `train_main.py --ensemble_members=2` run in a subprocess."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import errors
from emotion_tfds import labels
from emotion_tfds import models
from emotion_tfds import preprocess
from emotion_tfds.data import datasets
from emotion_tfds.models import ensemble
from emotion_tfds.serve import export
from emotion_tfds.serve import loader

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASET = "generated_faces/seed6"
_TIMEOUT_S = 300


def _split_arrays(data_dir: pathlib.Path, dataset: str, split: str
                  ) -> tuple[np.ndarray, np.ndarray]:
  """All (uint8 images, labels) of a split, in the split's order."""
  builder = datasets.get_builder(dataset, data_dir)
  return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))


def _train_member(images: np.ndarray, labels_: np.ndarray, seed: int) -> keras.Model:
  """support.small_cnn after one epoch on the given faces, from the initialisation of `seed`."""
  keras.utils.set_random_seed(seed)
  net = support.small_cnn(len(labels.SEED6))
  net.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
  net.fit(preprocess.to_model_input(images), labels_, batch_size=32, epochs=1, verbose=0)
  return net


@functools.cache
def members() -> dict:
  """Two seed6 members trained here (each in its own folder with labels.txt), their files as
  .keras, SavedModel and .tflite, and validation faces."""
  images, train_labels = _split_arrays(support.generated_data_dir(), DATASET, "train")
  root = support.process_tempdir("members")
  nets, paths = [], []
  for k in range(2):
    nets.append(_train_member(images, train_labels, seed=k))
    folder = root / f"member_{k}"
    folder.mkdir()
    nets[-1].save(folder / loader.MODEL_FILE)
    loader.write_label_names(folder, labels.SEED6)
    paths.append(folder / loader.MODEL_FILE)
  export.export_saved_model(nets[1], root / "member_1" / loader.SAVED_MODEL_DIR, labels.SEED6)
  export.export_tflite(root / "member_1" / loader.SAVED_MODEL_DIR, root / "member_1" / "m.tflite")
  return {"nets": nets, "paths": paths, "root": root,
          "saved_model": root / "member_1" / loader.SAVED_MODEL_DIR,
          "tflite": root / "member_1" / "m.tflite",
          "images": _split_arrays(support.generated_data_dir(), DATASET, "validation")[0][:64]}


class AverageNetworksTest(absltest.TestCase):

  def test_members_of_one_architecture_are_averaged(self):
    nets = [models.build_fastnet_small(7) for _ in range(3)]  # All three named "fastnet_small".
    averaged = ensemble.average_networks(nets)
    self.assertEqual([layer.name for layer in averaged.layers],
                     ["image", "member_0", "member_1", "member_2", "predictions"])
    self.assertEqual(averaged.output_shape, (None, 7))
    inputs = np.random.default_rng(0).random((4, 48, 48, 1), np.float32)
    expected = np.mean([net(inputs, training=False) for net in nets], axis=0)
    np.testing.assert_allclose(averaged(inputs, training=False), expected, atol=1e-6)
    self.assertLen(averaged.weights, sum(len(net.weights) for net in nets))  # Shared, not copied.

  def test_refuses_one_network_and_different_shapes(self):
    with self.assertRaisesRegex(ValueError, "at least two networks, got 1"):
      ensemble.average_networks([support.small_cnn(6)])
    with self.assertRaisesRegex(ValueError, r"Member 1 .*\(None, 7\), member 0 .*\(None, 6\)"):
      ensemble.average_networks([support.small_cnn(6), support.small_cnn(7)])

  def test_mixed_precision_members_export_as_float32(self):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
      nets = [models.build_base_cnn(6) for _ in range(2)]
      averaged = ensemble.average_networks(nets)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    float32 = export.float32_model(averaged)
    self.assertEqual({layer.dtype_policy.name for member in float32.layers[1:3]
                      for layer in member.layers[1:]}, {"float32"})
    images = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1), dtype=np.uint8)
    expected = np.mean([export.float32_model(net)(preprocess.to_model_input(images))
                        for net in nets], axis=0)
    np.testing.assert_allclose(float32(preprocess.to_model_input(images)), expected, atol=1e-6)


class LoadEnsembleTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.m = members()

  def test_probabilities_are_the_mean_of_the_members(self):
    images = self.m["images"]
    single = [loader.load(path).predict(images) for path in self.m["paths"]]
    self.assertGreater(np.abs(single[0] - single[1]).max(), 1e-2, "the members must differ")
    both = loader.load_ensemble(self.m["paths"])
    self.assertEqual((both.num_classes, both.label_names), (6, labels.SEED6))
    self.assertEqual(both.source, ",".join(str(p) for p in self.m["paths"]))
    np.testing.assert_allclose(both.predict(images), np.mean(single, axis=0), atol=1e-6)
    # Any kinds of member: a .keras file and a SavedModel, in a graph as eval_main runs it.
    mixed = loader.load_ensemble([self.m["paths"][0], self.m["saved_model"]])
    np.testing.assert_allclose(tf.function(mixed.predict_fn)(tf.constant(images)),
                               np.mean(single, axis=0), atol=1e-6)
    with_tflite = loader.load_ensemble([self.m["paths"][0], self.m["tflite"]])
    np.testing.assert_allclose(with_tflite.predict(images), np.mean(single, axis=0), atol=1e-5)

  def test_one_path_is_the_model_itself(self):
    path = self.m["paths"][0]
    for paths in (path, str(path), [path]):
      model = loader.load_ensemble(paths)
      self.assertEqual(model.source, str(path))
      np.testing.assert_allclose(model.predict(self.m["images"]),
                                 loader.load(path).predict(self.m["images"]), atol=0)
    with self.assertRaisesRegex(errors.ConfigError, "No model path given: pass --model_path="):
      loader.load_ensemble([])

  def test_members_with_other_classes_are_refused(self):
    other = self.m["root"] / "reordered"
    other.mkdir(exist_ok=True)
    self.m["nets"][1].save(other / loader.MODEL_FILE)
    reordered = labels.SEED6[1:] + labels.SEED6[:1]
    loader.write_label_names(other, reordered)
    first, second = self.m["paths"][0], other / loader.MODEL_FILE
    expected = (rf"Ensemble member {second} predicts \({', '.join(reordered)}\), but {first} "
                rf"predicts \({', '.join(labels.SEED6)}\): the members of an ensemble must "
                "predict the same classes in the same order.$")
    for load in (loader.load_ensemble, loader.load_keras_models):
      with self.assertRaisesRegex(errors.UnusableModelError, expected):
        load([first, second])
    (other / loader.LABELS_ASSET).unlink()  # A member that does not name its classes.
    with self.assertRaisesRegex(
        errors.UnusableModelError, rf"{second} predicts 6 unnamed classes \(no labels.txt beside"):
      loader.load_ensemble([first, second])

  def test_keras_members_and_their_names(self):
    nets, names = loader.load_keras_models(self.m["paths"])
    self.assertLen(nets, 2)
    self.assertEqual(names, labels.SEED6)
    np.testing.assert_array_equal(nets[1].get_weights()[0], self.m["nets"][1].get_weights()[0])


class EnsembleTrainMainTest(support.WithGeneratedData, absltest.TestCase):

  def test_two_members_and_the_ensemble_saved_model(self):
    model_dir = support.tempdir(self) / "run"
    command = [sys.executable, str(REPO / "train_main.py"), f"--data_dir={self.data_dir}",
               f"--model_dir={model_dir}", "--dataset=generated_faces/fer7",
               "--model=fastnet_small",
               "--pretrain_stages=", "--stages=main:all:1:1e-3:16", "--max_steps_per_epoch=3",
               "--novalidate", "--ensemble_members=2", "--progress=none",
               "--precision=float32"]  # Compared to 1e-5 below: not what "auto" picks.
    done = subprocess.run(command, cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                          capture_output=True, text=True, timeout=_TIMEOUT_S)
    self.assertEqual(done.returncode, 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    self.assertIn(f"Ensemble member 2/2 (seed 1) in {model_dir / 'member_1'}", done.stdout)
    self.assertIn("Evaluation of the ensemble of 2 on generated_faces/fer7 test", done.stdout)

    images, true = _split_arrays(pathlib.Path(self.data_dir), "generated_faces/fer7", "test")
    member_probabilities = []
    for k in range(2):
      member_dir = model_dir / f"member_{k}"
      self.assertTrue((member_dir / "saved_model" / "saved_model.pb").exists())
      member = loader.load(member_dir / "model.keras")
      self.assertEqual(member.label_names, labels.FER7)
      member_probabilities.append(member.predict(images))
    self.assertGreater(np.abs(member_probabilities[0] - member_probabilities[1]).max(), 1e-3,
                       "the members' seeds differ")
    saved = loader.load(model_dir / "saved_model")
    self.assertEqual(saved.label_names, labels.FER7)
    self.assertEqual(loader.read_label_names(model_dir / "labels.txt"), labels.FER7)
    expected = np.mean(member_probabilities, axis=0)
    np.testing.assert_allclose(saved.predict(images), expected, atol=1e-5)

    report = json.loads((model_dir / "eval_test.json").read_text())
    self.assertAlmostEqual(report["totals"]["mean_confidence"],
                           float(expected[np.arange(len(true)), true].mean()), delta=1e-5)
    accuracies = [json.loads((model_dir / f"member_{k}" / "eval_test.json").read_text())
                  ["totals"]["accuracy"] for k in range(2)]
    self.assertIn(f"accuracy: members {accuracies[0]:.2%}, {accuracies[1]:.2%}; ensemble "
                  f"{report['totals']['accuracy']:.2%}", done.stdout)
    # The ensemble's manifest names its members (each member has its own) and its data.
    written = json.loads((model_dir / "manifest.json").read_text())
    self.assertEqual(json.loads((model_dir / "saved_model" / "assets" / "manifest.json")
                                .read_text()), written)
    self.assertEqual([m["seed"] for m in written["ensemble"]], [0, 1])
    self.assertEqual((written["flags"]["ensemble_members"], list(written["data"])),
                     (2, ["generated_faces/fer7"]))
    self.assertEqual(json.loads((model_dir / "member_1" / "manifest.json").read_text())
                     ["config"]["seed"], 1)


if __name__ == "__main__":
  absltest.main()
