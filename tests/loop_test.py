"""Tests for emotion_tfds.train.loop: the options of a recipe wired into one real run that crashes
and resumes, and the checks the loop makes before it trains.

Real runs of a few steps on the generated faces of `support.generated_data_dir`. The stage
semantics (frozen base, head swap) are checked on experiment_test's run, resuming a crashed run in
checkpoints_test, the weight averages in weight_averages_test, profiling in profiling_test and
the tf.data service in inputs_test.
"""

from __future__ import annotations

from absl.testing import absltest
import numpy as np
import support
import tensorflow as tf
import train_support

from emotion_tfds import experiment
from emotion_tfds import models
from emotion_tfds.report import evaluation
from emotion_tfds.train import checkpoints
from emotion_tfds.train import inputs
from emotion_tfds.train import keep_best
from emotion_tfds.train import loop


class RecipeOptionsTest(support.WithGeneratedData, absltest.TestCase):
  """Plateau lr, weight decay, smoothing, class weights, keep_best and flip TTA in one real run."""

  def test_keep_best_with_plateau_survives_a_crash(self):
    model_dir = support.tempdir(self)
    config = train_support.train_config(
        model_dir, self.data_dir,
        "all:4:1e-3:16:adam:schedule=plateau:patience=1:factor=0.5:wd=1e-4:smooth=0.1"
        ":balance=weights", validate=True, keep_best="accuracy",
        final_tta="flip")
    with self.assertRaises(train_support.StopAt.Stop):
      loop.train(config, extra_callbacks=[train_support.StopAt(fit_index=1, epoch=2)])
    self.assertEqual(checkpoints.read_progress(str(model_dir / checkpoints.CKPT_DIR)).epoch, 2)
    result = experiment.run_experiment(config)
    self.assertEqual(result.resumed_from, (0, 2))

    # The plateau state came back: the lr of epochs 3-4 follows from the checkpointed best/wait.
    rates = [h["learning_rate"] for h in result.history]
    allowed = 1e-3 * 0.5 ** np.arange(4)
    self.assertTrue(all(np.isclose(r, allowed, rtol=1e-6).any() for r in rates), rates)
    # The final network is the best epoch's, not the last one's.
    best = models.MODELS["base_cnn"](num_classes=6)
    best.load_weights(model_dir / keep_best.BEST_WEIGHTS)
    for name, weights in train_support.layer_weights(best).items():
      for a, b in zip(weights, train_support.layer_weights(result.model)[name], strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # The report is of that network with flip TTA (the eval_main code path).
    builder = inputs.built_dataset("generated_faces/seed6", self.data_dir, 0)
    plain = evaluation.evaluate_network(result.model, builder, "test", tf.distribute.get_strategy())
    flip = evaluation.evaluate_network(result.model, builder, "test", tf.distribute.get_strategy(),
                                       tta="flip")
    np.testing.assert_allclose(result.report.true_prob_sum, flip.true_prob_sum, rtol=1e-5)
    self.assertFalse(np.array_equal(result.report.true_prob_sum, plain.true_prob_sum))


class ChecksTest(support.WithGeneratedData, absltest.TestCase):

  def test_batch_larger_than_split(self):
    config = train_support.train_config(str(support.tempdir(self)), self.data_dir,
                                        "all:1:1e-3:4096")
    with self.assertRaisesRegex(ValueError, "global batch 4096 is larger than the training split"):
      loop.train(config)


if __name__ == "__main__":
  absltest.main()
