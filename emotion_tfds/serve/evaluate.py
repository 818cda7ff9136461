"""Evaluates a model file on a dataset split: the per-emotion report, with optional TTA.

Models: any file `loader.load` reads (a `.keras` file, a SavedModel directory from
`export.export_saved_model`, whose `assets/labels.txt` names its classes, or a `.tflite` file), or
several, evaluated as an ensemble: the mean of their probabilities (`loader.load_ensemble`).
Either way the evaluation feeds the stored uint8 images, in full batches of one size (the last
one padded; the padding is left out of the report).

Label schemes: the model's emotions are, in this order of precedence, `model_scheme` when given,
the model's own label names (labels.txt), else the dataset's. A model whose class count does not
match them is refused. Without a dataset, the evaluation uses the dataset the model's run trained
on (its manifest.json), else the default dataset of the model's scheme (`datasets.default_dataset`:
a seed6 model on generated_faces/seed6). When the model's emotions differ from the dataset's (a
seed6 model on fer7 data), the report maps labels by emotion name and lists the dataset emotions
the model lacks as not covered.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import os
import pathlib

import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import labels
from emotion_tfds import manifest
from emotion_tfds import preprocess
from emotion_tfds import tta as tta_lib
from emotion_tfds.data import datasets
from emotion_tfds.data import integrity
from emotion_tfds.data import pipeline
from emotion_tfds.report import evaluation
from emotion_tfds.report import metrics
from emotion_tfds.serve import loader


def model_emotions(model: loader.LoadedModel, dataset: str, label_names: Sequence[str],
                   model_scheme: str | None = None) -> tuple[str, ...]:
  """The model's emotions in output order, checked against its class count.

  Raises:
    errors.ConfigError: the class count does not match (the message names the model, the dataset
      and both counts), or the model shares no emotion with the dataset.
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
    raise errors.ConfigError(
        f"Model {model.source} has {model.num_classes} classes, but {origin} has {len(names)} "
        f"emotions ({', '.join(names)}).{hint}")
  if not set(names) & set(label_names):
    raise errors.ConfigError(f"Model {model.source} predicts {names}, none of which is in "
                             f"dataset {dataset} ({tuple(label_names)}).")
  return tuple(names)


def evaluate_dataset(model: loader.LoadedModel,
                     dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
                     label_names: Sequence[str], pred_names: Sequence[str],
                     tta: str = "none") -> metrics.EmotionReport:
  """Streams the (uint8 images, labels, mask) batches of `dataset_fn` (full and padded:
  `pipeline.make_eval_dataset`) through the model into a report."""
  evaluator = metrics.StreamingEvaluator(tta_lib.with_tta(_tensor_predict_fn(model), tta),
                                         label_names, pred_names)
  return evaluator.evaluate(dataset_fn)


def _tensor_predict_fn(model: loader.LoadedModel) -> preprocess.PredictFn:
  """`model.predict_fn` as TF ops. A LiteRT interpreter runs on numpy arrays: it is called through
  `tf.numpy_function` (the padded batches' one static size spares it a resize per batch)."""
  if pathlib.Path(model.source).suffix != ".tflite":
    return model.predict_fn

  def predict(images: tf.Tensor) -> tf.Tensor:
    probs = tf.numpy_function(model.predict_fn, [images], tf.float32)
    return tf.ensure_shape(probs, [images.shape[0], model.num_classes])

  return predict


def default_dataset(model_paths: loader.ModelPaths, scheme: str | None) -> str:
  """The dataset of a model given none (eval_main, export_main): the one its run trained on (the
  first member's manifest), else the default dataset of label scheme `scheme` (the model's classes:
  `datasets.default_dataset`)."""
  first = loader.model_path_list(model_paths)[0]
  return manifest.trained_dataset(first) or datasets.default_dataset(scheme)


def evaluate_file(*, model_path: loader.ModelPaths, data_dir: str | os.PathLike,
        dataset: str | None = None,
        split: str = "test", batch_size: int = pipeline.EVAL_BATCH, tta: str = "none",
        model_scheme: str | None = None, output: str | os.PathLike | None = None,
        logdir: str | os.PathLike | None = None,
        confusion_png: str | os.PathLike | None = None) -> metrics.EmotionReport:
  """Evaluates `model_path` on `split` of `dataset`, prints the table and writes what is asked.

  Args:
    model_path: `.keras` file or SavedModel directory, or several: an ensemble.
    dataset: TFDS name with config, e.g. "fer2013/fer7"; None: `default_dataset` (the dataset of
      the model's manifest, else of its scheme: `model_scheme`, else its labels.txt).
    data_dir: TFDS data_dir holding the built dataset.
    split: split to evaluate.
    batch_size: images per batch (the last one padded, so every batch has this size).
    tta: one of tta.TTA_MODES.
    model_scheme: the model's label scheme when it is not the dataset's (and not in a SavedModel).
    output: report file; `.md`, `.json` or `.csv` by suffix.
    logdir: TensorBoard folder for the table as a text summary (and the confusion image).
    confusion_png: PNG file for the confusion-matrix picture.

  Returns:
    The report.

  Raises:
    errors.UserError: a model, dataset, split or output that cannot be used (the message says
      which), or a damaged dataset file.
  """
  if output is not None and pathlib.Path(output).suffix not in metrics.OUTPUT_SUFFIXES:
    raise errors.ConfigError(f"--output {output}: suffix must be one of "
                             f"{metrics.OUTPUT_SUFFIXES}.")
  model = loader.load_ensemble(model_path)
  dataset = dataset or default_dataset(model_path,
                                       model_scheme or labels.scheme_of(model.label_names))
  builder = datasets.require_built(dataset, data_dir)
  print(f"Data: {datasets.describe(builder)}", flush=True)
  label_names = tuple(datasets.label_names(builder))
  if split not in builder.info.splits:
    raise errors.ConfigError(f"Dataset {dataset} in {data_dir} has no split {split!r}; it has "
                             f"{sorted(builder.info.splits)}.")
  pred_names = model_emotions(model, dataset, label_names, model_scheme)
  with integrity.naming_damaged_files([dataset], data_dir):
    report = evaluate_dataset(
        model, lambda context: pipeline.make_eval_dataset(builder, split, batch_size, context)[0],
        label_names, pred_names, tta)
  print(f"{model.source} on {dataset} {split} ({report.totals.count} images, TTA {tta}):")
  print(report.format_table(), flush=True)
  if output is not None:
    print(f"Wrote {report.save(output)}")
  if confusion_png is not None:
    print(f"Wrote {metrics.confusion_png(report, confusion_png)}")
  if logdir is not None:
    evaluation.write_text_summary(report, logdir)
    print(f"Wrote the report to TensorBoard run {logdir}")
  return report
