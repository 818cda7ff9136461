"""A whole training run as train_main runs it, composed above training, reporting and serving:
`train.loop.train` up to the final network, then its evaluation on the report split (per-emotion
table, `eval_<split>.json`/`.md`, the run's TensorBoard result) and the saved files (`model.keras`
and the uint8-input SavedModel).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import shutil

import keras
import tensorflow as tf

from emotion_tfds.data import datasets
from emotion_tfds.data import integrity
from emotion_tfds.report import evaluation
from emotion_tfds.report import metrics
from emotion_tfds.report import run_summaries
from emotion_tfds.serve import export
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import loop

REPORT_PREFIX = "eval_"  # <model_dir>/eval_<split>.json and .md: the final evaluation.


@dataclasses.dataclass
class RunResult:
  """What `run_experiment` returns.

  Attributes:
    model: the final network (float32 [0, 1] input, softmax output).
    report: per-emotion evaluation on the report split.
    history: one dict per epoch trained by this call: stage, epoch, the Keras logs, images_per_s.
    resumed_from: (stage index, epochs done) of the checkpoint this call started from, or None.
  """
  model: keras.Model
  report: metrics.EmotionReport
  history: list[dict]
  resumed_from: tuple[int, int] | None


def run_experiment(config: config_lib.TrainConfig,
                   strategy: tf.distribute.Strategy | None = None,
                   extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> RunResult:
  """Trains (`loop.train`, same arguments and errors), evaluates and saves the final network.

  Raises:
    errors.DamagedDataError: a file of the run's datasets cannot be read (`integrity`).
  """
  used = [config.dataset] + [config.stage_dataset(stage) for stage in config.stages]
  with integrity.naming_damaged_files(used, config.data_dir):
    trained = loop.train(config, strategy, extra_callbacks)
    report = evaluate_final(trained, config)
  export.save_trained(trained.network, trained.write_dir, datasets.label_names(trained.target),
                      announce=trained.chief)
  if not trained.chief:
    shutil.rmtree(trained.write_dir, ignore_errors=True)
  return RunResult(model=trained.network, report=report, history=trained.history,
                   resumed_from=trained.resumed_from)


def evaluate_final(trained: loop.TrainedRun,
                   config: config_lib.TrainConfig) -> metrics.EmotionReport:
  """Evaluates the final network on `config.eval_split` (validation when the dataset has no such
  split) with `config.final_tta`; prints the table and writes the report and summary (chief)."""
  split = evaluation.report_split(trained.target, config.eval_split)
  report = evaluation.evaluate_network(trained.network, trained.target, split, trained.strategy,
                                       tta=config.final_tta)
  for suffix in (".json", ".md"):
    report.save(trained.write_dir / f"{REPORT_PREFIX}{split}{suffix}")
  if trained.chief:
    print(f"\nEvaluation of the final model on {config.dataset} {split} (TTA "
          f"{config.final_tta}):\n{report.format_table()}", flush=True)
    run_summaries.write_run_result(trained.write_dir / loop.TENSORBOARD_DIR, report,
                                   trained.best_validation_accuracy,
                                   step=sum(s.epochs for s in config.stages))
  return report
