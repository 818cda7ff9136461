"""TensorBoard summaries of a whole training run: its HParams trial, its result, its chart layout.

`<model_dir>/tb` is the run's TensorBoard folder: each stage writes its per-epoch curves into a run
of its own (`tb/<stage>`) and each emotion its per-epoch scalars into another
(`tb/per_emotion/<emotion>`), on one epoch axis that counts on across stages (see
`emotion_tfds.report.callbacks`). This module writes the run-level summaries into one more run,
`tb/run` (RUN_DIR; not into `tb` itself, which TensorBoard would list as a run named "."):

  hparams         a declared experiment (the training's HParams with their domains, `metrics`
                  below) and one trial: the recipe of the run, named after its model_dir. The
                  HParams plugin makes the run holding the trial a session, and reads the
                  session's metrics from that same run.
  run/<metric>    the trial's metrics, written when the run ends: final and best validation
                  accuracy, final macro-F1 and the final F1 of each emotion.
  custom scalars  one chart per per-emotion metric with every emotion overlaid (the tag
                  per_emotion/<metric> of every emotion's run, one colour per emotion), and the
                  run's validation accuracy, macro-F1 and learning rate over all stages.

With several model_dirs under one logdir, HParams lists one row per model_dir.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import pathlib

from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
import tensorflow as tf

from emotion_tfds.report import callbacks
from emotion_tfds.report import curves
from emotion_tfds.report import metrics

RUN_DIR = "run"  # <model_dir>/tb/run: the run-level summaries.
FINAL_ACCURACY = "run/final_accuracy"
BEST_ACCURACY = "run/best_accuracy"
FINAL_MACRO_F1 = "run/final_macro_f1"
F1_PREFIX = "run/f1/"


def metric_tags(label_names: Sequence[str]) -> list[str]:
  """The declared metrics of a run with these emotions."""
  return [FINAL_ACCURACY, BEST_ACCURACY, FINAL_MACRO_F1,
          *(f"{F1_PREFIX}{name}" for name in label_names)]


def custom_scalar_layout() -> layout_pb2.Layout:
  """Per-emotion charts (all emotions overlaid) and the whole run's validation curves."""
  per_emotion = [
      layout_pb2.Chart(title=f"{metric} per emotion", multiline=layout_pb2.MultilineChartContent(
          tag=[rf"^{callbacks.per_emotion_tag(metric)}$"]))
      for metric in callbacks.PER_EMOTION_TAGS]
  run = [
      layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[regex]))
      for title, regex in (("validation accuracy, every stage", r"^eval/accuracy$"),
                           ("validation macro-F1, every stage", r"^eval/macro_f1$"),
                           ("learning rate, every stage", r"^train/learning_rate$"))]
  return layout_pb2.Layout(category=[layout_pb2.Category(title="per emotion", chart=per_emotion),
                                     layout_pb2.Category(title="run", chart=run)])


def write_run_start(logdir: str | pathlib.Path, hparams: Sequence[hp.HParam],
                    values: dict[str, bool | int | float | str], trial_id: str,
                    label_names: Sequence[str]) -> None:
  """Declares the experiment and writes the run's trial and chart layout into `logdir`/RUN_DIR.

  Args:
    logdir: the run's TensorBoard folder (`<model_dir>/tb`).
    hparams: the declared hyperparameters (`emotion_tfds.train.hparams.HPARAMS`).
    values: the run's value of each, keyed by display name.
    trial_id: the trial's name (the run's resolved model_dir).
    label_names: the run's emotions (one F1 metric each).
  """
  with tf.summary.create_file_writer(run_dir(logdir)).as_default() as writer:
    hp.hparams_config(hparams=list(hparams), metrics=[
        hp.Metric(tag, display_name=tag.removeprefix("run/"))
        for tag in metric_tags(label_names)])
    hp.hparams({hparam: values[hparam.display_name] for hparam in hparams}, trial_id=trial_id)
    tf.summary.experimental.write_raw_pb(
        custom_scalar_summary.pb(custom_scalar_layout()).SerializeToString(), step=0)
  writer.close()


def write_run_result(logdir: str | pathlib.Path, report: metrics.EmotionReport,
                     best_accuracy: float, step: int) -> None:
  """Writes the trial's metrics into `logdir`/RUN_DIR (logdir: `<model_dir>/tb`): the final
  report's accuracy, macro-F1 and F1 per emotion, and the best validation accuracy of any epoch
  (step: the run's number of epochs)."""
  values = {FINAL_ACCURACY: (report.totals.accuracy, "Final model's accuracy."),
            BEST_ACCURACY: (best_accuracy, "Best per-epoch validation accuracy of the run."),
            FINAL_MACRO_F1: (report.totals.macro_f1, "Final model's macro-F1.")}
  for row in report.rows:
    if row.covered and row.count:
      values[f"{F1_PREFIX}{row.name}"] = (row.f1 or 0.0, f"Final model's F1 on {row.name}.")
  with tf.summary.create_file_writer(run_dir(logdir)).as_default(step=step) as writer:
    for tag, (value, description) in values.items():
      if value is not None:
        tf.summary.scalar(tag, value, description=description)
  writer.close()


def run_dir(logdir: str | pathlib.Path) -> str:
  """The run folder of the run-level summaries in the run's TensorBoard folder `logdir`."""
  return os.path.join(str(logdir), RUN_DIR)


def read_trial(logdir: str | pathlib.Path
               ) -> tuple[api_pb2.Experiment, plugin_data_pb2.SessionStartInfo]:
  """(the declared experiment, the trial) that `write_run_start` wrote (logdir: `<model_dir>/tb`).

  Raises:
    ValueError: `logdir`/RUN_DIR holds no trial, or more than one.
  """
  found = {hparams_metadata.EXPERIMENT_TAG: [], hparams_metadata.SESSION_START_INFO_TAG: []}
  for event in curves.read_events(run_dir(logdir)):
    for value in event.summary.value:
      if value.tag in found:
        found[value.tag].append(value.metadata.plugin_data.content)
  if any(len(contents) != 1 for contents in found.values()):
    raise ValueError(f"{run_dir(logdir)}: expected one HParams experiment and one trial, found "
                     f"{ {tag: len(c) for tag, c in found.items()} }.")
  return (hparams_metadata.parse_experiment_plugin_data(
              found[hparams_metadata.EXPERIMENT_TAG][0]),
          hparams_metadata.parse_session_start_info_plugin_data(
              found[hparams_metadata.SESSION_START_INFO_TAG][0]))
