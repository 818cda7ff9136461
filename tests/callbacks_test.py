"""Tests for the training callbacks: the TensorBoard event files of a real short training run."""

from __future__ import annotations

import contextlib
import io
import math
import pathlib

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import labels
from emotion_tfds import preprocess
from emotion_tfds.data import facegen
from emotion_tfds.data import pipeline
from emotion_tfds.report import callbacks
from emotion_tfds.report import metrics

BATCH = 32


def _datasets(num_rows: int = 448) -> tuple[tf.data.Dataset, callbacks.EvalDatasetFn, np.ndarray,
                                             np.ndarray]:
  """Generated faces: float training batches, and the eval dataset function of uint8 padded
  batches (128 images in 3 batches of 50) with its arrays."""
  images, fer_ids, _ = facegen.generate(num_rows, seed=0)
  images = images[..., np.newaxis]
  train_images, train_labels = images[:320], fer_ids[:320]
  eval_images, eval_labels = images[320:], fer_ids[320:]
  train = tf.data.Dataset.from_tensor_slices((train_images, train_labels)).batch(
      BATCH, drop_remainder=True).map(lambda x, y: (preprocess.to_model_input(x), y))
  examples = tf.data.Dataset.from_tensor_slices((eval_images, eval_labels))
  return (train, lambda context: pipeline.padded_batches(examples, 50, context), eval_images,
          eval_labels)


def read_events(logdir: str | pathlib.Path) -> dict[str, dict[int, tf.Tensor]]:
  """tag -> step -> tensor (plus "plugin:<tag>" -> plugin name) from every event file under logdir."""
  out: dict = {}
  for path in sorted(pathlib.Path(logdir).rglob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        out.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
        out[f"plugin:{value.tag}"] = value.metadata.plugin_data.plugin_name
        if value.metadata.summary_description:
          out[f"description:{value.tag}"] = value.metadata.summary_description
  return out


class GetCallbacksTest(absltest.TestCase):

  def test_training_run_writes_every_summary(self):
    keras.utils.set_random_seed(0)
    train, evaluation, eval_images, eval_labels = _datasets()
    model = support.small_cnn(len(labels.FER7))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  weighted_metrics=["accuracy"])  # Weighted by the eval batches' mask.
    tb = support.tempdir(self) / "tb"
    logdir = str(tb / "stage2_head")
    cbs = callbacks.get_callbacks(logdir=logdir, label_names=labels.FER7,
                                  eval_dataset_fn=evaluation,
                                  stage_note="head 2/3: head:2:0.003:32", epoch_offset=5,
                                  global_batch_size=BATCH)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
      # The mask is Keras's sample weight: the padding counts in no validation metric either.
      history = model.fit(train, epochs=2, validation_data=evaluation(None).map(
          lambda x, y, mask: (preprocess.to_model_input(x), y, mask)), callbacks=cbs, verbose=0)

    # TensorBoard lists the stage's run and one run per emotion (its own colour in every chart).
    self.assertCountEqual(support.tensorboard_runs(tb),
                          ["stage2_head", *(f"per_emotion/{e}" for e in labels.FER7)])
    events = read_events(logdir)
    per_emotion = {e: read_events(tb / "per_emotion" / e) for e in labels.FER7}
    self.assertEqual([t for t in events if t.startswith("per_emotion")], [])
    # Steps are the run's epochs: this stage follows five others.
    self.assertEqual(set(events["eval/accuracy"]), {5, 6})
    self.assertEqual(events[callbacks.STAGE_TAG][5].item().decode(), "head 2/3: head:2:0.003:32")
    self.assertLen(events[callbacks.STAGE_TAG], 1)
    for emotion in labels.FER7:
      # One tag per metric, the same in every emotion's run.
      self.assertEqual(sorted(t for t in per_emotion[emotion] if ":" not in t),
                       ["per_emotion/f1", "per_emotion/mean_confidence", "per_emotion/precision",
                        "per_emotion/recall"])
      for metric in callbacks.PER_EMOTION_TAGS:
        tag = f"per_emotion/{metric}"
        self.assertEqual(set(per_emotion[emotion][tag]), {5, 6}, tag)
        self.assertTrue(all(math.isfinite(float(v)) for v in per_emotion[emotion][tag].values()))
        self.assertEqual(per_emotion[emotion][f"description:{tag}"],
                         callbacks.PER_EMOTION_TAGS[metric][1])
    for step in (5, 6):
      for tag in ("eval/accuracy", "eval/macro_f1", "eval/balanced_accuracy", "eval/loss",
                  "train/loss", "train/accuracy", "train/learning_rate",
                  "train/images_per_second", "train/epoch_seconds"):
        self.assertTrue(math.isfinite(float(events[tag][step])), tag)
      self.assertEqual(events[f"plugin:{metrics.CONFUSION_TAG}"], "images")
    # Every tag says what it holds.
    tags = [t for t in events if not t.startswith(("plugin:", "description:"))]
    self.assertEqual([t for t in tags if f"description:{t}" not in events], [])
    self.assertIn("recall", per_emotion["happy"]["description:per_emotion/recall"])
    for step in (5, 6):
      width, height, png = events[metrics.CONFUSION_TAG][step][:3]
      picture = tf.io.decode_png(png).numpy()
      self.assertEqual(picture.shape[:2], (int(height), int(width)))
      self.assertGreater(picture.std(), 10)
      # Drawn for a TensorBoard card (~250 px wide) with large type, not scaled down from a page.
      self.assertLessEqual(int(width), 400)
      report_text = events[metrics.REPORT_TAG][step].item().decode()
      self.assertNotIn("pred ", report_text)  # Narrow enough for its card; the image has those.
      self.assertEqual(events[f"plugin:{metrics.REPORT_TAG}"], "text")
      for emotion in labels.FER7:
        self.assertIn(f"| {emotion} |", report_text)
    self.assertAlmostEqual(float(events["train/learning_rate"][6]), 3e-3, places=6)
    self.assertGreater(float(events["train/images_per_second"][5]), 0)

    # The last epoch's scalars are the final model's report on the eval split, computed here anew.
    expected = metrics.EmotionReport(labels.FER7)
    expected.update(eval_labels, model.predict(preprocess.to_model_input(eval_images), verbose=0))
    for row in expected.rows:
      for tag, (attribute, _) in callbacks.PER_EMOTION_TAGS.items():
        self.assertAlmostEqual(float(per_emotion[row.name][f"per_emotion/{tag}"][6]),
                               getattr(row, attribute) or 0.0, places=5, msg=f"{tag} {row.name}")
    self.assertAlmostEqual(float(events["eval/macro_f1"][6]), expected.totals.macro_f1, places=5)
    self.assertAlmostEqual(history.history["eval_macro_f1"][1], expected.totals.macro_f1, places=5)
    # Keras's own validation on the same images agrees with the report's accuracy.
    self.assertAlmostEqual(history.history["val_accuracy"][1], expected.totals.accuracy, places=5)

    lines = [line for line in stdout.getvalue().splitlines() if line.startswith("epoch ")]
    self.assertLen(lines, 2)
    self.assertRegex(lines[1], r"^epoch 2: .*eval_macro_f1 \d\.\d{4}.*\| lr 0\.003 \| [\d,]+ images/s")

  def test_resumed_stage_skips_its_note_and_non_chief_writes_nothing(self):
    train, evaluation, _, _ = _datasets(num_rows=384)
    model = support.small_cnn(len(labels.FER7))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    resumed, worker = support.tempdir(self) / "resumed", support.tempdir(self) / "worker"
    model.fit(train, epochs=2, initial_epoch=1, verbose=0, callbacks=callbacks.get_callbacks(
        logdir=str(resumed / "all"), label_names=labels.FER7, eval_dataset_fn=evaluation,
        stage_note="all", initial_epoch=1, epoch_line=False))
    events = read_events(resumed / "all")
    self.assertNotIn(callbacks.STAGE_TAG, events)
    self.assertEqual(set(events["eval/accuracy"]), {1})  # Steps are Keras's absolute epochs.
    self.assertNotIn("train/images_per_second", events)  # No global_batch_size given.

    # The same callbacks through two `fit` calls: the note once, steps continue, also in the
    # emotions' runs; an emotion without images (disgust) gets no scalars.
    again = support.tempdir(self)
    _, _, eval_images, eval_labels = _datasets(num_rows=384)
    keep = eval_labels != 1
    without_disgust = tf.data.Dataset.from_tensor_slices((eval_images[keep], eval_labels[keep]))
    cbs = callbacks.get_callbacks(
        logdir=str(again / "all"), label_names=labels.FER7,
        eval_dataset_fn=lambda context: pipeline.padded_batches(without_disgust, 50, context),
        stage_note="all", epoch_line=False)
    model.fit(train, epochs=1, verbose=0, callbacks=cbs)
    model.fit(train, epochs=2, initial_epoch=1, verbose=0, callbacks=cbs)
    events = read_events(again / "all")
    self.assertLen(events[callbacks.STAGE_TAG], 1)
    self.assertEqual(set(events["eval/macro_f1"]), {0, 1})
    self.assertEqual(set(read_events(again / "per_emotion" / "happy")["per_emotion/f1"]), {0, 1})
    self.assertEqual(read_events(again / "per_emotion" / "disgust"), {})

    model.fit(train, epochs=1, verbose=0, callbacks=callbacks.get_callbacks(
        logdir=str(worker / "all"), label_names=labels.FER7, eval_dataset_fn=evaluation,
        stage_note="all", is_chief=False, epoch_line=False))
    self.assertFalse(worker.exists())

  def test_emotion_runs_are_listed_before_the_stage_run(self):
    # TensorBoard colours runs in the order it lists them (by first event, then name): the
    # emotions' runs, made as the stage starts and ahead of its own run, follow one another.
    _, evaluation, _, _ = _datasets(num_rows=384)
    tb = support.tempdir(self)
    board = callbacks.EmotionTensorBoard(str(tb / "stage1_head"), labels.FER7,
                                         eval_dataset_fn=evaluation)
    board.set_model(support.small_cnn(len(labels.FER7)))
    board.on_train_begin()
    board.on_train_end()
    runs = support.tensorboard_runs(tb)
    self.assertCountEqual(runs[:-1], [f"per_emotion/{emotion}" for emotion in labels.FER7])
    self.assertEqual(runs[-1], "stage1_head")

  def test_float_or_unmasked_eval_dataset_is_refused(self):
    floats = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 48, 48, 1), np.float32), np.zeros(4, np.int64)))
    unmasked = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 48, 48, 1), np.uint8), np.zeros(4, np.int64))).batch(2)
    for dataset_fn in (lambda context: pipeline.padded_batches(floats, 2, context),
                       lambda context: unmasked):
      with self.assertRaisesRegex(ValueError, "uint8 images.*mask"):
        callbacks.get_callbacks(logdir=str(support.tempdir(self)), label_names=labels.FER7,
                                eval_dataset_fn=dataset_fn)
