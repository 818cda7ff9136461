"""Evaluates a trained model on a dataset split: the per-emotion report, with optional TTA.

Models: any file `serving.load` reads (a `.keras` file, a SavedModel directory from
`export.export_saved_model`, whose `assets/labels.txt` names its classes, or a `.tflite` file).
Either way the evaluation feeds the stored uint8 images.

Label schemes: the model's emotions are, in this order of precedence, `model_scheme` when given,
the SavedModel's own label names, else the dataset's. A model whose class count does not match them
is refused. When the model's emotions differ from the dataset's (a seed6 model on fer7 data), the
report maps labels by emotion name and lists the dataset emotions the model lacks as not covered.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from absl import logging
import keras
import tensorflow as tf

from emotion_tfds import datasets
from emotion_tfds import image_spec
from emotion_tfds import labels
from emotion_tfds import metrics
from emotion_tfds import pipeline
from emotion_tfds import serving

TTA_MODES = ("none", "flip", "ten-crop")
EVAL_BATCH = 256
CROP_SIZE = 40  # Ten-crop: 4 corners + center of 40x40, and their mirror images.



def with_tta(predict_fn: serving.PredictFn, tta: str) -> serving.PredictFn:
  """Wraps a uint8-in predict_fn with test-time augmentation; probabilities are averaged.

  Args:
    predict_fn: uint8 [B, 48, 48, 1] -> probabilities [B, C].
    tta: "none"; "flip": the image and its mirror; "ten-crop": the 4 corner and the center 40x40
      crops and their mirrors, each resized back to 48x48 (bilinear, rounded to uint8).
  """
  if tta not in TTA_MODES:
    raise ValueError(f"Unknown TTA {tta!r}; expected one of {TTA_MODES}.")
  if tta == "none":
    return predict_fn

  def averaged(images: tf.Tensor) -> tf.Tensor:
    views = _flip_views(images) if tta == "flip" else _ten_crop_views(images)
    probs = predict_fn(tf.concat(views, axis=0))
    num_classes = probs.shape[-1]
    probs = tf.reshape(probs, [len(views), -1, num_classes])
    return tf.reduce_mean(tf.cast(probs, tf.float32), axis=0)

  return averaged


def _flip_views(images: tf.Tensor) -> list[tf.Tensor]:
  return [images, tf.image.flip_left_right(images)]


def _ten_crop_views(images: tf.Tensor) -> list[tf.Tensor]:
  size = image_spec.IMAGE_SIZE
  far, mid = size - CROP_SIZE, (size - CROP_SIZE) // 2
  pixels = tf.cast(images, tf.float32)
  crops = [pixels[:, y:y + CROP_SIZE, x:x + CROP_SIZE, :]
           for y, x in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))]
  resized = tf.image.resize(tf.concat(crops, axis=0), (size, size), method="bilinear")
  resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
  views = tf.split(resized, len(crops), axis=0)
  return views + [tf.image.flip_left_right(v) for v in views]


def model_emotions(model: serving.LoadedModel, dataset: str, label_names: Sequence[str],
                   model_scheme: str | None = None) -> tuple[str, ...]:
  """The model's emotions in output order, checked against its class count.

  Raises:
    ValueError: the class count does not match (the message names the model, the dataset and both
      counts), or the model shares no emotion with the dataset.
  """
  if model_scheme is not None:
    names, origin = labels.get_scheme(model_scheme), f"--model_scheme={model_scheme}"
  elif model.label_names is not None:
    names, origin = model.label_names, "its labels.txt"
  else:
    names, origin = tuple(label_names), f"dataset {dataset}"
  if len(names) != model.num_classes:
    sizes = ", ".join(f"{k}: {len(v)}" for k, v in labels.SCHEMES.items())
    hint = ""
    if model_scheme is None and model.label_names is None:
      hint = (" To evaluate a model of another label scheme on these images through the label "
              f"mapping, pass --model_scheme ({sizes} classes).")
    raise ValueError(
        f"Model {model.source} has {model.num_classes} classes, but {origin} has {len(names)} "
        f"emotions ({', '.join(names)}).{hint}")
  if not set(names) & set(label_names):
    raise ValueError(f"Model {model.source} predicts {names}, none of which is in dataset "
                     f"{dataset} ({tuple(label_names)}).")
  return tuple(names)


def evaluate_dataset(model: serving.LoadedModel, dataset: tf.data.Dataset,
                     label_names: Sequence[str], pred_names: Sequence[str], tta: str = "none") -> metrics.EmotionReport:
  """Streams (uint8 images, labels) batches through the model into a report."""
  evaluator = metrics.StreamingEvaluator(with_tta(model.predict_fn, tta), label_names, pred_names)
  return evaluator.evaluate(dataset)


def report_split(builder, split: str) -> str:
  """`split` if the dataset has it, else "validation" (real FER-2013 has no PrivateTest rows)."""
  if split in builder.info.splits:
    return split
  logging.warning("%s has no %r split; evaluating on 'validation'.", builder.info.full_name, split)
  return "validation"


def evaluate_network(net: keras.Model, builder, split: str, strategy: tf.distribute.Strategy,
                     tta: str = "none") -> metrics.EmotionReport:
  """Per-emotion report of a network in training (float [0, 1] input) on `split` of `builder`
  (`report_split`), streamed and summed over the strategy's replicas.

  `tta` is applied as for a loaded model (`with_tta`, the same code path as eval_main --tta).
  """

  evaluator = metrics.StreamingEvaluator(with_tta(serving.network_predict_fn(net), tta),
                                         datasets.label_names(builder), strategy=strategy)
  images, _ = pipeline.make_dataset(builder, report_split(builder, split), EVAL_BATCH,
                                    training=False)
  return evaluator.evaluate(images)


def write_text_summary(report: metrics.EmotionReport, logdir: str | os.PathLike) -> None:
  """Writes the report's markdown table and confusion image to a TensorBoard run folder (step 0)."""
  writer = tf.summary.create_file_writer(str(logdir))
  with writer.as_default():
    metrics.write_summaries(report, step=0)
  writer.close()


def run(*, model_path: str | os.PathLike, dataset: str, data_dir: str | os.PathLike,
        split: str = "test", batch_size: int = EVAL_BATCH, tta: str = "none",
        model_scheme: str | None = None, output: str | os.PathLike | None = None,
        logdir: str | os.PathLike | None = None,
        confusion_png: str | os.PathLike | None = None) -> metrics.EmotionReport:
  """Evaluates `model_path` on `split` of `dataset`, prints the table and writes what is asked.

  Args:
    model_path: `.keras` file or SavedModel directory.
    dataset: TFDS name with config, e.g. "fer2013/fer7".
    data_dir: TFDS data_dir holding the built dataset.
    split: split to evaluate.
    batch_size: images per batch.
    tta: one of TTA_MODES.
    model_scheme: the model's label scheme when it is not the dataset's (and not in a SavedModel).
    output: report file; `.md`, `.json` or `.csv` by suffix.
    logdir: TensorBoard folder for the table as a text summary (and the confusion image).
    confusion_png: PNG file for the confusion-matrix picture.

  Returns:
    The report.
  """
  if output is not None and pathlib.Path(output).suffix not in metrics.OUTPUT_SUFFIXES:
    raise ValueError(f"--output {output}: suffix must be one of {metrics.OUTPUT_SUFFIXES}.")
  builder = datasets.get_builder(dataset, data_dir)
  label_names = tuple(datasets.label_names(builder))
  if split not in builder.info.splits:
    raise ValueError(f"Dataset {dataset} in {data_dir} has no split {split!r}; it has "
                     f"{sorted(builder.info.splits)}.")
  model = serving.load(model_path)
  pred_names = model_emotions(model, dataset, label_names, model_scheme)
  images, num_examples = pipeline.make_dataset(builder, split, batch_size, training=False)
  report = evaluate_dataset(model, images, label_names, pred_names, tta)
  print(f"{model.source} on {dataset} {split} ({num_examples} images, TTA {tta}):")
  print(report.format_table(), flush=True)
  if output is not None:
    print(f"Wrote {report.save(output)}")
  if confusion_png is not None:
    print(f"Wrote {metrics.confusion_png(report, confusion_png)}")
  if logdir is not None:
    write_text_summary(report, logdir)
    print(f"Wrote the report to TensorBoard run {logdir}")
  return report
