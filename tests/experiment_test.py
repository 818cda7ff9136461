"""Tests for emotion_tfds.experiment: a whole run (the loop's stages, then the final evaluation,
the manifest and the saved files; a rerun of a finished run) and the ensemble's arguments.

One real run of a few steps on the generated faces of `support.generated_data_dir` serves the
checks of the stages it trains and of what run_experiment adds to them.
"""

from __future__ import annotations

import json
import pathlib

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf
import train_support

from emotion_tfds import errors
from emotion_tfds import experiment
from emotion_tfds import labels
from emotion_tfds import models
from emotion_tfds.serve import loader
from emotion_tfds.train import checkpoints
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import stages


def _changed(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
  return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


class _Snapshots(keras.callbacks.Callback):
  """Network weights at the start and end of every `fit` call (one call per epoch)."""

  def __init__(self):
    super().__init__()
    self.fits: list[dict] = []

  def on_train_begin(self, logs=None):
    self.fits.append({"begin": train_support.layer_weights(self.model.net)})

  def on_train_end(self, logs=None):
    self.fits[-1]["end"] = train_support.layer_weights(self.model.net)


class RunExperimentTest(support.WithGeneratedData, absltest.TestCase):
  """One run: fer7 pretraining (all), head swap to seed6, a head stage, an all stage."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model_dir = support.process_tempdir("run_experiment")
    snapshots = _Snapshots()
    cls.config = train_support.train_config(cls.model_dir, cls.data_dir,
                                            "head:1:1e-2:16,all:1:1e-3:16",
                                            pretrain="all:1:1e-3:16")
    cls.result = experiment.run_experiment(cls.config, extra_callbacks=[snapshots])
    cls.fits = snapshots.fits

  def test_stage_semantics_and_head_swap(self):
    result, fits = self.result, self.fits
    self.assertLen(fits, 3)
    pretrain, head, everything = fits
    base = {layer.name for layer in models.base_layers(result.model) if layer.weights}
    self.assertIn("block1_conv1", base)

    # Pretraining on fer7 (7 classes) changes every weighted layer.
    self.assertEqual(pretrain["end"]["predictions"][0].shape[-1], 7)
    for name, weights in pretrain["begin"].items():
      self.assertTrue(_changed(weights, pretrain["end"][name]), name)

    # The head swap to seed6 keeps the base weights and gives a 6-class head.
    self.assertEqual(head["begin"]["predictions"][0].shape[-1], 6)
    for name in base:
      for a, b in zip(pretrain["end"][name], head["begin"][name], strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)

    # A head stage leaves the frozen base exactly as it was and trains the head.
    for name in base:
      self.assertFalse(_changed(head["begin"][name], head["end"][name]), name)
    self.assertTrue(_changed(head["begin"]["predictions"], head["end"]["predictions"]))

    # An all stage changes every weighted layer.
    for name, weights in everything["begin"].items():
      self.assertTrue(_changed(weights, everything["end"][name]), name)

  def test_evaluation_saved_files_manifest_and_a_rerun_that_trains_nothing(self):
    config, result = self.config, self.result
    # Evaluation, report files, model.keras and a uint8 SavedModel.
    self.assertEqual(result.report.totals.count, 120)  # seed6 test split of the generated data.
    self.assertTrue((self.model_dir / "eval_test.json").exists())
    self.assertEqual(loader.load(self.model_dir / loader.MODEL_FILE).emotions(), labels.SEED6)
    loaded = keras.models.load_model(self.model_dir / loader.MODEL_FILE)
    images = np.random.default_rng(0).random((4, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               result.model.predict(images, verbose=0), atol=1e-6)
    saved = tf.saved_model.load(str(self.model_dir / loader.SAVED_MODEL_DIR))
    signature = saved.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["images"]
    self.assertEqual((spec.dtype, spec.shape.as_list()), (tf.uint8, [None, 48, 48, 1]))
    out = signature(images=tf.zeros([2, 48, 48, 1], tf.uint8))
    self.assertEqual(out["probabilities"].shape, (2, 6))

    # The manifest: the data of both datasets, the precision; the same in the SavedModel's assets.
    written = json.loads((self.model_dir / "manifest.json").read_text())
    self.assertEqual(set(written["data"]), {"generated_faces/fer7", "generated_faces/seed6"})
    seed6 = written["data"]["generated_faces/seed6"]
    self.assertEqual((seed6["generator"]["num_rows"], seed6["splits"]["test"]), (1400, 120))
    self.assertEqual((written["precision"], written["flags"]), ("float32", None))
    self.assertEqual(written["config"]["dataset"], config.dataset)
    self.assertEqual(json.loads((self.model_dir / loader.SAVED_MODEL_DIR / "assets" /
                                 "manifest.json").read_text()), written)

    # Started again, the finished run trains nothing and reproduces the evaluation.
    again = experiment.run_experiment(config)
    self.assertEqual(again.history, [])
    self.assertEqual(again.resumed_from, (2, 1))
    # The same predictions; the summed probabilities to float rounding (the order of a
    # multi-threaded reduction varies with the machine's load).
    np.testing.assert_array_equal(again.report.confusion, result.report.confusion)
    np.testing.assert_allclose(again.report.true_prob_sum, result.report.true_prob_sum,
                               rtol=1e-6)


class RunEnsembleArgumentsTest(absltest.TestCase):

  def _config(self, model_dir: pathlib.Path) -> config_lib.TrainConfig:
    return config_lib.TrainConfig(model_dir=str(model_dir), data_dir=str(model_dir / "data"),
                                  stages=tuple(stages.parse_stages("all:1:1e-3:16")))

  def test_refuses_one_member_and_a_single_run_folder(self):
    model_dir = support.tempdir(self)
    with self.assertRaisesRegex(errors.ConfigError, "at least 2 members, not 1"):
      experiment.run_ensemble(self._config(model_dir), 1)
    (model_dir / checkpoints.CKPT_DIR).mkdir()
    with self.assertRaisesRegex(errors.ConfigError,
                                rf"{model_dir} holds the checkpoints of a single network's run"):
      experiment.run_ensemble(self._config(model_dir), 2)


if __name__ == "__main__":
  absltest.main()
