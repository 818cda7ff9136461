"""Tests for the streaming per-emotion report: hand-computed numbers, streaming, outputs, strategy."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import labels
from emotion_tfds.data import pipeline
from emotion_tfds.report import metrics

# A 5-emotion example small enough to compute by hand. Disgust is never predicted (precision
# undefined, like the seed's disgust row), sad never occurs in the labels but is predicted once,
# surprise neither occurs nor is predicted.
NAMES = ("angry", "disgust", "happy", "sad", "surprise")
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PREDS = np.array([0, 0, 2, 0, 3, 2, 2, 0])
TRUE_PROB = np.array([0.9, 0.6, 0.3, 0.1, 0.2, 0.8, 0.7, 0.4])


def _probs(preds: np.ndarray, true_prob: np.ndarray, labels_: np.ndarray, num: int) -> np.ndarray:
  """Probabilities whose argmax is `preds` and whose entry at the true label is `true_prob`."""
  probs = np.zeros((len(preds), num))
  for k, (p, t, y) in enumerate(zip(preds, true_prob, labels_)):
    probs[k, y] = t
    if p != y:
      probs[k, p] = max(1.0 - t, t + 0.01)
    rest = 1.0 - probs[k].sum()
    others = [c for c in range(num) if c not in (p, y)]
    probs[k, others] = rest / len(others)
  return probs


class EmotionReportTest(absltest.TestCase):

  def _hand_report(self) -> metrics.EmotionReport:
    report = metrics.EmotionReport(NAMES)
    report.update(LABELS, _probs(PREDS, TRUE_PROB, LABELS, len(NAMES)))
    return report

  def test_hand_computed_example(self):
    report = self._hand_report()
    np.testing.assert_array_equal(report.confusion, [
        [2, 0, 1, 0, 0],
        [1, 0, 0, 1, 0],
        [1, 0, 2, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ])
    rows = {r.name: r for r in report.rows}
    self.assertEqual([r.count for r in report.rows], [3, 2, 3, 0, 0])
    # angry: TP 2 of 3 images, 4 predicted angry.
    np.testing.assert_allclose(
        [rows["angry"].accuracy, rows["angry"].precision, rows["angry"].f1,
         rows["angry"].mean_confidence], [2 / 3, 2 / 4, 4 / 7, (0.9 + 0.6 + 0.3) / 3])
    # disgust: never predicted -> precision undefined, recall and F1 0.
    self.assertEqual(rows["disgust"].accuracy, 0.0)
    self.assertIsNone(rows["disgust"].precision)
    self.assertEqual(rows["disgust"].f1, 0.0)
    np.testing.assert_allclose(rows["disgust"].mean_confidence, 0.15)
    self.assertEqual(rows["disgust"].distribution, (1, 0, 0, 1, 0))
    np.testing.assert_allclose([rows["happy"].accuracy, rows["happy"].precision, rows["happy"].f1],
                        [2 / 3, 2 / 3, 2 / 3])
    # sad: absent from the labels, predicted once -> no accuracy, precision 0, F1 0.
    self.assertIsNone(rows["sad"].accuracy)
    self.assertEqual(rows["sad"].precision, 0.0)
    self.assertEqual(rows["sad"].f1, 0.0)
    self.assertIsNone(rows["sad"].mean_confidence)
    # surprise: neither seen nor predicted -> everything undefined, left out of macro-F1.
    self.assertIsNone(rows["surprise"].f1)
    totals = report.totals
    self.assertEqual((totals.count, totals.covered_count), (8, 8))
    np.testing.assert_allclose(totals.accuracy, 4 / 8)
    np.testing.assert_allclose(totals.macro_f1, (4 / 7 + 0 + 2 / 3 + 0) / 4)
    np.testing.assert_allclose(totals.balanced_accuracy, (2 / 3 + 0 + 2 / 3) / 3)
    np.testing.assert_allclose(totals.mean_confidence, TRUE_PROB.mean())
    self.assertEqual(totals.distribution, (4, 0, 3, 1, 0))

  def test_not_covered_rows_when_model_scheme_lacks_an_emotion(self):
    # A seed6 model on fer7 data: fear images are counted but have no accuracy; totals skip them.
    fer7_labels = np.array([2, 2, 2, 3, 3, 6, 0])  # fear x3, happy x2, neutral, angry
    seed6_preds = np.array([2, 4, 0, 2, 3, 3, 0])  # seed6 ids: happy, sad, angry, happy, ...
    probs = np.full((len(fer7_labels), 6), 0.01)
    probs[np.arange(len(fer7_labels)), seed6_preds] = 0.95
    report = metrics.EmotionReport(labels.FER7, labels.SEED6)
    report.update(fer7_labels, probs)
    rows = {r.name: r for r in report.rows}
    fear = rows["fear"]
    self.assertFalse(fear.covered)
    self.assertEqual(fear.count, 3)
    self.assertEqual(fear.distribution, (1, 0, 1, 0, 1, 0))
    self.assertIsNone(fear.accuracy)
    self.assertIsNone(fear.mean_confidence)
    self.assertEqual(rows["happy"].accuracy, 0.5)
    self.assertEqual(rows["happy"].precision, 1.0)  # The fear image predicted happy is not counted.
    self.assertEqual(rows["neutral"].accuracy, 1.0)
    np.testing.assert_allclose(rows["neutral"].mean_confidence, 0.95)
    totals = report.totals
    self.assertEqual((totals.count, totals.covered_count), (7, 4))
    np.testing.assert_allclose(totals.accuracy, 3 / 4)
    self.assertIn("3 images of fear are not covered", report.format_table())
    self.assertIn("fear (not covered)", report.to_markdown())

  def test_streaming_over_batches_equals_one_shot(self):
    rng = np.random.default_rng(1)
    labels_ = rng.integers(0, 7, size=1000)
    probs = rng.dirichlet(np.ones(7), size=1000).astype(np.float32)
    one_shot = metrics.EmotionReport(labels.FER7)
    one_shot.update(labels_, probs)
    streamed = metrics.EmotionReport(labels.FER7)
    for start in range(0, 1000, 64):
      streamed.update(labels_[start:start + 64], probs[start:start + 64])
    np.testing.assert_array_equal(streamed.confusion, one_shot.confusion)
    np.testing.assert_allclose(streamed.true_prob_sum, one_shot.true_prob_sum)
    self.assertEqual(streamed.to_json(), one_shot.to_json())
    # The TF path (per-batch counts under the default strategy) gives the same report.
    examples = tf.data.Dataset.from_tensor_slices((probs, labels_))
    evaluated = metrics.StreamingEvaluator(lambda x: x, labels.FER7).evaluate(
        lambda context: pipeline.padded_batches(examples, 64, context))  # 16 batches, 24 padded.
    np.testing.assert_array_equal(evaluated.confusion, one_shot.confusion)
    np.testing.assert_allclose(evaluated.true_prob_sum, one_shot.true_prob_sum, rtol=1e-5)

  def test_padding_adds_nothing_to_any_count(self):
    fer7_labels = np.array([3, 0, 0, 5, 0])
    probs = np.eye(7, dtype=np.float32)[[3, 0, 1, 5, 0]]
    mask = np.array([1.0, 0.0, 1.0, 1.0, 0.0], np.float32)  # Padding: label 0, predicted 0.
    confusion, prob_sum = metrics.batch_counts(fer7_labels, probs, mask, np.arange(7))
    real = mask > 0
    expected = metrics.EmotionReport(labels.FER7)
    expected.update(fer7_labels[real], probs[real])
    np.testing.assert_array_equal(confusion, expected.confusion)
    np.testing.assert_allclose(prob_sum, expected.true_prob_sum)
    self.assertEqual(int(np.sum(confusion)), 3)
    self.assertEqual(float(prob_sum[0]), 0.0)  # The real angry image was predicted disgust.

  def test_tf_counts_cover_the_scheme_mapping(self):
    fer7_labels = np.array([2, 2, 3, 6, 0])
    probs = np.eye(6, dtype=np.float32)[[0, 2, 2, 3, 1]] * 0.9 + 0.1 / 6
    numpy_report = metrics.EmotionReport(labels.FER7, labels.SEED6)
    numpy_report.update(fer7_labels, probs)
    examples = tf.data.Dataset.from_tensor_slices((probs, fer7_labels))
    tf_report = metrics.StreamingEvaluator(lambda x: x, labels.FER7, labels.SEED6).evaluate(
        lambda context: pipeline.padded_batches(examples, 2, context))
    np.testing.assert_array_equal(tf_report.confusion, numpy_report.confusion)
    np.testing.assert_allclose(tf_report.true_prob_sum, numpy_report.true_prob_sum)
    self.assertEqual(tf_report.true_prob_sum[2], 0.0)  # fear: not covered.

  def test_console_distribution_names_its_counts_in_display_order(self):
    # seed6's label order (neutral before sad) differs from its display order (neutral last).
    report = metrics.EmotionReport(labels.SEED6)
    true = np.repeat(np.arange(6), np.arange(1, 7))
    report.update(true, np.eye(6, dtype=np.float32)[true])  # Every image predicted right.
    for i, name in enumerate(labels.SEED6):
      row = next(line for line in report.format_table().splitlines() if line.startswith(name))
      self.assertIn(f" {name}:{i + 1} ", f"{row} ", row)

  def test_outputs_are_valid_and_agree(self):
    report = self._hand_report()
    table = report.format_table()
    for name in NAMES + ("total", "num image", "avg confidence", "TRUE emotion"):
      self.assertIn(name, table)
    self.assertIn("angry:2 disgust:0 happy:1 sad:0 surprise:0", table)

    data = json.loads(report.to_json())
    self.assertEqual([e["name"] for e in data["emotions"]], list(NAMES))
    self.assertIsNone(data["emotions"][1]["precision"])
    self.assertEqual(data["emotions"][1]["distribution"]["sad"], 1)
    np.testing.assert_allclose(data["totals"]["macro_f1"], report.totals.macro_f1)

    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    self.assertEqual([r["label"] for r in rows], list(NAMES) + ["total"])
    self.assertEqual(rows[1]["precision"], "")
    self.assertEqual(rows[0]["pred_happy"], "1")
    np.testing.assert_allclose(float(rows[-1]["balanced_accuracy"]), 4 / 9, atol=1e-6)

    markdown = report.to_markdown().splitlines()
    self.assertTrue(markdown[0].startswith("| label | num image | accuracy |"))
    self.assertEqual(len(markdown[0].split("|")), len(markdown[2].split("|")))
    self.assertEqual(sum(line.startswith("| ") for line in markdown), 1 + len(NAMES) + 1)

  def test_save_by_suffix(self):
    report = self._hand_report()
    tmp = str(support.tempdir(self))
    self.assertEqual(json.loads(report.save(f"{tmp}/r.json").read_text())["pred_names"],
                     list(NAMES))
    self.assertIn("| total | 8 |", report.save(f"{tmp}/r.md").read_text())
    self.assertTrue(report.save(f"{tmp}/sub/r.csv").read_text().startswith("label,num_images"))
    with self.assertRaisesRegex(ValueError, r"r\.txt.*\.md"):
      report.save(f"{tmp}/r.txt")

  def test_bad_input_is_refused_with_the_problem(self):
    report = metrics.EmotionReport(NAMES)
    with self.assertRaisesRegex(ValueError, r"Label 5 \(batch position 1\) is outside 0\.\.4"):
      report.update([0, 5], np.full((2, 5), 0.2))
    with self.assertRaisesRegex(ValueError, r"shape \[2, 5\].*got \(2, 4\)"):
      report.update([0, 1], np.full((2, 4), 0.25))
    with self.assertRaisesRegex(ValueError, "do not fit"):
      report.add_counts(np.zeros((4, 5)), np.zeros(5))

  def test_confusion_png_decodes(self):
    report = metrics.EmotionReport(labels.FER7, labels.SEED6)
    report.update(np.arange(7), np.eye(6)[[0, 1, 2, 3, 4, 5, 3]])
    path = metrics.confusion_png(report, f"{str(support.tempdir(self))}/cm.png")
    image = tf.io.decode_png(path.read_bytes()).numpy()
    self.assertEqual(image.ndim, 3)
    self.assertGreater(image.shape[0], 200)
    self.assertGreater(image.std(), 10)  # Not a blank picture.
    np.testing.assert_allclose(report.row_normalized()[6], [0, 0, 0, 1, 0, 0])


# Runs in a fresh interpreter: logical devices must be configured before TF initialises them.
# 51 examples in steps of 10: the last step has one example, so the split's last batch would leave
# the second replica empty; padded, each replica gets 5 every step.
_MIRRORED_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from emotion_tfds import labels
    from emotion_tfds.data import pipeline
    from emotion_tfds.report import metrics
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(3)
    images = rng.dirichlet(np.ones(6), size=51).astype(np.float32)
    fer7_labels = rng.integers(0, 7, size=51)
    with strategy.scope():
      scale = tf.Variable(2.0)  # A mirrored variable in the prediction, like a model's weights.
    traced_batches = []
    def predict(x):
      traced_batches.append(x.shape[0])  # The static batch size the step is traced with.
      tf.debugging.assert_equal(tf.shape(x)[0], 5, message="not a full per-replica batch")
      return tf.nn.softmax(tf.math.log(x) * scale / 2.0)
    examples = tf.data.Dataset.from_tensor_slices((images, fer7_labels))
    evaluator = metrics.StreamingEvaluator(predict, labels.FER7, labels.SEED6, strategy=strategy)
    report = evaluator.evaluate(lambda c: pipeline.padded_batches(examples, 10, c))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "traced": traced_batches,
                      "confusion": report.confusion.tolist(),
                      "true_prob_sum": report.true_prob_sum.tolist(),
                      "images": images.tolist(), "labels": fer7_labels.tolist()}))
""")


class DisplayOrderTest(absltest.TestCase):

  def test_seed6_and_fer7_views_list_shared_emotions_in_one_order(self):
    self.assertEqual(labels.display_order(labels.SEED6),
                     ("angry", "disgust", "happy", "sad", "surprise", "neutral"))
    self.assertEqual(labels.display_order(labels.FER7), labels.FER7)
    self.assertEqual(labels.display_order(("calm", "sad", "angry")), ("angry", "sad", "calm"))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 200)
    probs = rng.dirichlet(np.ones(6), 200)
    report = metrics.EmotionReport(labels.SEED6)
    report.update(y, probs)
    shown = report.in_display_order()
    self.assertEqual(shown.label_names, labels.display_order(labels.SEED6))
    # The same numbers, moved: each (true, predicted) pair keeps its count.
    for i, true in enumerate(report.label_names):
      for j, predicted in enumerate(report.pred_names):
        self.assertEqual(shown.confusion[shown.label_names.index(true),
                                         shown.pred_names.index(predicted)],
                         report.confusion[i, j])
    for field in ("count", "accuracy", "macro_f1", "balanced_accuracy", "mean_confidence"):
      self.assertAlmostEqual(getattr(shown.totals, field), getattr(report.totals, field), 12)
    lines = [l.split(" | ")[0].strip("| ") for l in report.to_markdown().splitlines()[2:8]]
    self.assertEqual(tuple(lines), labels.display_order(labels.SEED6))
    self.assertEqual(report.to_dict()["label_names"], list(labels.SEED6))  # JSON: label order.


class MirroredStrategyTest(absltest.TestCase):

  def test_counts_sum_over_two_replicas(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True,
                            text=True, env=env, timeout=120, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    self.assertEqual(out["replicas"], 2)
    self.assertEqual(set(out["traced"]), {5})  # Static: the full per-replica batch.
    expected = metrics.EmotionReport(labels.FER7, labels.SEED6)
    expected.update(np.array(out["labels"]), np.array(out["images"]))
    np.testing.assert_array_equal(out["confusion"], expected.confusion)
    self.assertEqual(np.sum(out["confusion"]), 51)
    np.testing.assert_allclose(out["true_prob_sum"], expected.true_prob_sum, rtol=1e-5)
