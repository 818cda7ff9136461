"""Tests for emotion_tfds.report.evaluation: the report of a network in memory on a whole split
(of `support.generated_data_dir`), the split it falls back to, and the report as a TensorBoard
run. (With flip TTA in a real run: loop_test; under MirroredStrategy: distribute_test.)"""

from __future__ import annotations

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import image_spec
from emotion_tfds.data import datasets
from emotion_tfds.report import evaluation
from emotion_tfds.report import metrics

_SLOPES = np.arange(6, dtype=np.float32)  # The network's logits: these times the mean pixel.


def _brightness_network() -> keras.Model:
  """A seed6 network whose logits are _SLOPES times the image's mean pixel (in [0, 1]): it always
  predicts the last class, with probabilities that differ from image to image."""
  inputs = keras.Input(image_spec.IMAGE_SHAPE)
  dense = keras.layers.Dense(6, activation="softmax",
                             kernel_initializer=keras.initializers.Constant(_SLOPES[np.newaxis]),
                             bias_initializer="zeros")
  return keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))


class EvaluateNetworkTest(support.WithGeneratedData, absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.builder = datasets.get_builder("generated_faces/seed6", cls.data_dir)

  def test_every_image_of_the_split_counted_once_with_the_networks_probabilities(self):
    report = evaluation.evaluate_network(_brightness_network(), self.builder, "test",
                                         tf.distribute.get_strategy())
    images, true = tfds.as_numpy(self.builder.as_dataset(split="test", batch_size=-1,
                                                         as_supervised=True))
    logits = images.mean(axis=(1, 2, 3))[:, np.newaxis] / 255 * _SLOPES
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    per_emotion = np.bincount(true, minlength=6)
    np.testing.assert_array_equal(report.confusion[:, 5], per_emotion)  # Always the last class.
    self.assertEqual(report.confusion[:, :5].sum(), 0)
    self.assertEqual(report.totals.count, len(true))
    self.assertAlmostEqual(report.totals.accuracy, per_emotion[5] / len(true))
    want = np.bincount(true, weights=probabilities[np.arange(len(true)), true], minlength=6)
    np.testing.assert_allclose(report.true_prob_sum, want, rtol=1e-5)

  def test_a_split_the_dataset_lacks_falls_back_to_validation(self):
    self.assertEqual(evaluation.report_split(self.builder, "test"), "test")
    with self.assertLogs(level="WARNING") as logs:
      self.assertEqual(evaluation.report_split(self.builder, "private"), "validation")
    self.assertRegex(logs.output[0], r"generated_faces/seed6/.* has no 'private' split; "
                     "evaluating on 'validation'")

  def test_text_summary_is_the_table_and_the_confusion_image_at_step_0(self):
    report = metrics.EmotionReport(("happy", "sad"))
    report.update(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]))
    logdir = support.tempdir(self)
    evaluation.write_text_summary(report, logdir)
    written = support.read_run_folder(logdir)
    self.assertEqual(sorted(written), sorted([metrics.CONFUSION_TAG, metrics.REPORT_TAG]))
    ((step, table),) = written[metrics.REPORT_TAG]
    self.assertEqual(step, 0)
    self.assertEqual(tf.make_ndarray(table.tensor).item().decode(),
                     report.to_markdown(confusion=False))
    self.assertEqual([step for step, _ in written[metrics.CONFUSION_TAG]], [0])


if __name__ == "__main__":
  absltest.main()
