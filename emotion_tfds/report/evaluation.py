"""Evaluation of a network in memory: the per-emotion report on a split, with optional TTA.

Training's final evaluation and the per-epoch validation use it; eval_main evaluates model files
through `emotion_tfds.serve.evaluate`, which shares the streaming report and the TTA views.
"""

from __future__ import annotations

import os

from absl import logging
import keras
import tensorflow as tf

from emotion_tfds import preprocess
from emotion_tfds import tta as tta_lib
from emotion_tfds.data import datasets
from emotion_tfds.data import pipeline
from emotion_tfds.report import metrics


def report_split(builder, split: str) -> str:
  """`split` if the dataset has it, else "validation" (real FER-2013 has no PrivateTest rows)."""
  if split in builder.info.splits:
    return split
  logging.warning("%s has no %r split; evaluating on 'validation'.", builder.info.full_name, split)
  return "validation"


def evaluate_network(net: keras.Model, builder, split: str, strategy: tf.distribute.Strategy,
                     tta: str = "none") -> metrics.EmotionReport:
  """Per-emotion report of a network in training (float [0, 1] input) on `split` of `builder`
  (`report_split`), streamed in full padded batches and summed over the strategy's replicas.

  `tta` is applied as for a loaded model (`tta.with_tta`, the same code path as eval_main --tta).
  """
  evaluator = metrics.StreamingEvaluator(tta_lib.with_tta(preprocess.predict_fn(net), tta),
                                         datasets.label_names(builder), strategy=strategy)
  split = report_split(builder, split)
  return evaluator.evaluate(
      lambda context: pipeline.make_eval_dataset(builder, split, input_context=context)[0])


def write_text_summary(report: metrics.EmotionReport, logdir: str | os.PathLike) -> None:
  """Writes the report's markdown table and confusion image to a TensorBoard run folder (step 0)."""
  writer = tf.summary.create_file_writer(str(logdir))
  with writer.as_default():
    metrics.write_summaries(report, step=0)
  writer.close()
