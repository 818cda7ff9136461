"""Keras callbacks that report on training: per-emotion TensorBoard summaries, throughput and one
line per epoch.

`get_callbacks` is the factory the training loop calls once per stage. The step of every summary is
the run's epoch index: a stage that follows others starts at `epoch_offset` (the epochs before it),
so the stages' curves continue one another on one axis. What lands in TensorBoard, per epoch, with
`<tb>` the run's TensorBoard folder:

  <tb>/<stage>  (one run per stage)
    scalars  train/<log key> for each Keras log (loss, accuracy, learning_rate, images_per_second,
             epoch_seconds), eval/<key> for Keras's validation logs (val_loss -> eval/loss); with
             an `eval_dataset_fn`, eval/{accuracy,macro_f1,balanced_accuracy,mean_confidence} of
             the model on its split.
    image    eval/confusion_matrix: the row-normalised confusion matrix, emotion names on the axes.
    text     eval/report: the markdown table of `metrics.EmotionReport`; at the stage's first
             epoch, `stage`: the stage's name and spec (the boundary between stages).
  <tb>/per_emotion/<emotion>  (one run per emotion, shared by the run's stages)
    scalars  per_emotion/{recall,precision,f1,mean_confidence} of the emotion on that split.
             One tag across the emotions' runs, so TensorBoard (which colours by run) draws each
             emotion in its own colour on one chart, over all stages. The runs are made when the
             stage starts, before the stage's own run (see `EmotionTensorBoard.on_train_begin`).

Every tag has a description. The run's HParams trial and chart layout are
`emotion_tfds.report.run_summaries`'. Per-emotion values that are undefined (precision of an emotion
the model never predicted) are written as 0, like scikit-learn's `zero_division=0`; emotions without
images in the eval split get no per-emotion scalars (their runs stay empty), and emotions the model
cannot predict (not covered) get no run. Under multi-worker training every worker runs the
evaluation (its collective ops need all of them) but only the chief writes.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import os
import time

import keras
import tensorflow as tf

from emotion_tfds import preprocess
from emotion_tfds import workers
from emotion_tfds.report import metrics

# <tb>/PER_EMOTION_DIR/<emotion>: the run folder of an emotion's per_emotion/<metric> scalars.
PER_EMOTION_DIR = "per_emotion"
# Per-emotion metric -> (`metrics.EmotionRow` attribute, the description of per_emotion/<metric>).
PER_EMOTION_TAGS: dict[str, tuple[str, str]] = {
    "recall": ("accuracy", "Share of the emotion's validation images predicted as it (recall)."),
    "precision": ("precision", "Share of the predictions of the emotion that are right."),
    "f1": ("f1", "Harmonic mean of the emotion's precision and recall."),
    "mean_confidence": ("mean_confidence",
                        "Mean probability the model gives the emotion on its own images."),
}
# eval/<total> -> description.
EVAL_TOTALS: dict[str, str] = {
    "accuracy": "Share of the validation images classified right.",
    "macro_f1": "Mean F1 over the emotions.",
    "balanced_accuracy": "Mean recall over the emotions.",
    "mean_confidence": "Mean probability the model gives each image's true emotion.",
}
STAGE_TAG = "stage"
# Input context -> (images, labels, mask) batches, for `distribute_datasets_from_function`.
EvalDatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]
_LOG_DESCRIPTIONS: dict[str, str] = {
    "train/loss": "Training loss (with label smoothing and class weights) on augmented images.",
    "train/accuracy": "Training accuracy on augmented images.",
    "train/learning_rate": "Learning rate at the end of the epoch.",
    "train/images_per_second": "Training throughput of the epoch (all replicas).",
    "train/epoch_seconds": "Seconds of the epoch's training steps.",
    "eval/loss": "Validation loss (Keras).",
    STAGE_TAG: "The stage that starts here: its name and spec.",
}


def get_callbacks(*, logdir: str | None, label_names: Sequence[str],
                  eval_dataset_fn: EvalDatasetFn | None = None, stage_note: str | None = None,
                  initial_epoch: int = 0, epoch_offset: int = 0,
                  pred_names: Sequence[str] | None = None, global_batch_size: int | None = None,
                  epoch_line: bool = True, is_chief: bool | None = None
                  ) -> list[keras.callbacks.Callback]:
  """The training callbacks, in the order they must run.

  Args:
    logdir: the stage's TensorBoard run folder, `<tb>/<stage>` (the per-emotion runs go beside it,
      see `per_emotion_logdir`); None writes no summaries.
    label_names: the eval dataset's emotions (its label scheme).
    eval_dataset_fn: input context -> (uint8 images [b, 48, 48, 1], int labels [b], mask [b])
      batches evaluated at each epoch end (`pipeline.make_eval_dataset`, full padded batches);
      None skips the per-emotion report.
    stage_note: text written as STAGE_TAG at the stage's first epoch (e.g. its name and spec).
    initial_epoch: the epoch this stage starts at (Keras's `initial_epoch` of the first `fit`); a
      resumed stage (> 0) does not write its stage note again.
    epoch_offset: the run's epochs before this stage: summaries of Keras epoch e get step
      epoch_offset + e.
    pred_names: the model's emotions when they differ from `label_names` (default: the same).
    global_batch_size: images per training step (all replicas); needed for images/s.
    epoch_line: print one summary line per epoch.
    is_chief: whether this worker writes and prints; default: derived from the model's strategy.

  Returns:
    [EpochTimer, EmotionTensorBoard (if logdir), EpochLine (if epoch_line)].
  """
  callbacks: list[keras.callbacks.Callback] = [EpochTimer(global_batch_size)]
  if logdir is not None:
    callbacks.append(EmotionTensorBoard(
        logdir, label_names, eval_dataset_fn=eval_dataset_fn, pred_names=pred_names,
        stage_note=stage_note if initial_epoch == 0 else None, epoch_offset=epoch_offset,
        is_chief=is_chief))
  if epoch_line:
    callbacks.append(EpochLine(is_chief=is_chief))
  return callbacks


def current_learning_rate(model: keras.Model) -> float | None:
  """The optimizer's learning rate now (schedules evaluated at the current step), or None."""
  optimizer = getattr(model, "optimizer", None)
  if optimizer is None or not hasattr(optimizer, "learning_rate"):
    return None
  return float(tf.convert_to_tensor(optimizer.learning_rate))


class EpochTimer(keras.callbacks.Callback):
  """Adds `epoch_seconds`, `images_per_second` and `learning_rate` to the epoch's logs.

  The time runs from the epoch's start to the end of its training steps (Keras's validation inside
  `fit` is not counted). Images are steps x `global_batch_size`; without a known step count or batch
  size, `images_per_second` is left out. It needs no per-batch hook, so Keras keeps dispatching
  batches asynchronously.
  """

  def __init__(self, global_batch_size: int | None):
    super().__init__()
    self._global_batch_size = global_batch_size
    self._start = 0.0
    self._train_end: float | None = None

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()
    self._train_end = None

  def on_test_begin(self, logs=None):
    if self._train_end is None:  # Validation inside fit: the training steps are over.
      self._train_end = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    if logs is None:
      return
    seconds = (self._train_end or time.perf_counter()) - self._start
    logs["epoch_seconds"] = seconds
    steps = self.params.get("steps") if self.params else None
    if steps and self._global_batch_size and seconds > 0:
      logs["images_per_second"] = steps * self._global_batch_size / seconds
    learning_rate = current_learning_rate(self.model)
    if learning_rate is not None:
      logs["learning_rate"] = learning_rate


class EmotionTensorBoard(keras.callbacks.Callback):
  """Writes the epoch's logs and the per-emotion report on `eval_dataset_fn`'s split to TensorBoard.

  `logdir` is the stage's run folder, `<tb>/<stage>`; each emotion's scalars go to
  `per_emotion_logdir(logdir, emotion)`. Adds `eval_accuracy` and `eval_macro_f1` to the epoch's
  logs (for `EpochLine`, checkpoints or early stopping placed after it).
  """

  def __init__(self, logdir: str, label_names: Sequence[str], *,
               eval_dataset_fn: EvalDatasetFn | None = None,
               pred_names: Sequence[str] | None = None, stage_note: str | None = None,
               epoch_offset: int = 0, is_chief: bool | None = None):
    super().__init__()
    if eval_dataset_fn is not None:
      spec = eval_dataset_fn(tf.distribute.InputContext()).element_spec
      if len(spec) != 3 or spec[0].dtype != tf.uint8:
        raise ValueError("eval_dataset_fn must yield (uint8 images (the stored form), labels, "
                         f"mask) batches, got {spec}.")
    self._logdir = str(logdir)
    self._label_names = tuple(label_names)
    self._pred_names = None if pred_names is None else tuple(pred_names)
    self._eval_dataset_fn = eval_dataset_fn
    self._stage_note = stage_note
    self._epoch_offset = epoch_offset
    self._is_chief = is_chief
    self._writer: tf.summary.SummaryWriter | None = None
    self._emotion_writers: dict[str, tf.summary.SummaryWriter] = {}
    self._chief = True
    self._evaluator: metrics.StreamingEvaluator | None = None
    self.last_report: metrics.EmotionReport | None = None

  def on_train_begin(self, logs=None):
    strategy = self.model.distribute_strategy
    self._chief = (self._is_chief if self._is_chief is not None
                   else workers.is_chief_worker(strategy))
    if self._chief and self._eval_dataset_fn is not None:
      # Before the stage's run: TensorBoard lists runs by their first event (ties by name) and
      # colours them in that order from a palette (7 colours in 2.21), so the emotions' runs
      # follow one another (a colour each) and so do the stages'.
      covered = self._label_names if self._pred_names is None else self._pred_names
      self._emotion_writers = {
          emotion: tf.summary.create_file_writer(per_emotion_logdir(self._logdir, emotion))
          for emotion in self._label_names if emotion in covered}
    self._writer = (tf.summary.create_file_writer(self._logdir) if self._chief
                    else tf.summary.create_noop_writer())
    if self._stage_note:
      with self._writer.as_default(step=self._epoch_offset):
        tf.summary.text(STAGE_TAG, self._stage_note, description=_LOG_DESCRIPTIONS[STAGE_TAG])
      self._stage_note = None  # Once per stage, also when `fit` is called again.
    if self._eval_dataset_fn is not None and self._evaluator is None:
      self._evaluator = metrics.StreamingEvaluator(
          preprocess.predict_fn(self.model),
          self._label_names, self._pred_names, strategy=strategy)

  def on_epoch_end(self, epoch, logs=None):
    logs = logs if logs is not None else {}
    scalars = {(f"eval/{k[4:]}" if k.startswith("val_") else f"train/{k}"): float(v)
               for k, v in logs.items()}
    report = None
    if self._evaluator is not None:
      report = self._evaluator.evaluate(self._eval_dataset_fn)
      self.last_report = report
      scalars.update(report_scalars(report))
      logs["eval_accuracy"] = report.totals.accuracy or 0.0
      logs["eval_macro_f1"] = report.totals.macro_f1 or 0.0
    step = self._epoch_offset + epoch
    with self._writer.as_default(step=step):
      for tag, value in scalars.items():
        tf.summary.scalar(tag, value, description=describe(tag))
      if report is not None and self._chief:
        metrics.write_summaries(report, step=step)
    self._writer.flush()
    if report is not None and self._chief:
      for emotion, values in per_emotion_scalars(report).items():
        writer = self._emotion_writers[emotion]
        with writer.as_default(step=step):
          for tag, value in values.items():
            tf.summary.scalar(tag, value, description=describe(tag))
        writer.flush()

  def on_train_end(self, logs=None):
    for writer in (self._writer, *self._emotion_writers.values()):
      if writer is not None:
        writer.close()
    self._writer = None
    self._emotion_writers = {}


class EpochLine(keras.callbacks.Callback):
  """Prints one line per epoch with every log value, learning rate and throughput (chief only).

  With `label` and `epochs` the line reads "[label] epoch e/E: ...", else "epoch e: ...". With
  `history`, every worker also appends {"stage": stage, "epoch": e, **logs} to it.
  """

  def __init__(self, is_chief: bool | None = None, label: str | None = None,
               epochs: int | None = None, history: list | None = None, stage: str | None = None):
    super().__init__()
    self._is_chief = is_chief
    self._prefix = f"[{label}] " if label else ""
    self._epochs = f"/{epochs}" if epochs else ""
    self._history = history
    self._stage = stage

  def on_epoch_end(self, epoch, logs=None):
    logs = {k: float(v) for k, v in (logs or {}).items()}
    if self._history is not None:
      self._history.append({"stage": self._stage, "epoch": epoch + 1, **logs})
    chief = (self._is_chief if self._is_chief is not None
             else workers.is_chief_worker(self.model.distribute_strategy))
    if not chief:
      return
    rate = logs.pop("images_per_second", None)
    seconds = logs.pop("epoch_seconds", None)
    learning_rate = logs.pop("learning_rate", None)
    parts = [f"{self._prefix}epoch {epoch + 1}{self._epochs}:"]
    parts += [f"{k} {v:.4f}" for k, v in sorted(logs.items())]
    if learning_rate is not None:
      parts.append(f"| lr {learning_rate:.3g}")
    if rate is not None:
      parts.append(f"| {rate:,.0f} images/s")
    if seconds is not None:
      parts.append(f"({seconds:.1f} s of training)")
    print(" ".join(parts), flush=True)


def per_emotion_logdir(logdir: str, emotion: str) -> str:
  """The run folder of `emotion`'s scalars: `<tb>/per_emotion/<emotion>` for the stage run folder
  `logdir` = `<tb>/<stage>`."""
  return os.path.join(os.path.dirname(logdir.rstrip("/")), PER_EMOTION_DIR, emotion)


def per_emotion_tag(metric: str) -> str:
  """The scalar tag of a per-emotion metric (a key of PER_EMOTION_TAGS), the same in every
  emotion's run."""
  return f"{PER_EMOTION_DIR}/{metric}"


def per_emotion_scalars(report: metrics.EmotionReport) -> dict[str, dict[str, float]]:
  """emotion -> {per_emotion/<metric>: value} of a report's emotions that have images and are
  covered by the model."""
  out = {}
  for row in report.rows:
    if row.covered and row.count:
      values = {metric: getattr(row, attribute)
                for metric, (attribute, _) in PER_EMOTION_TAGS.items()}
      out[row.name] = {per_emotion_tag(metric): 0.0 if value is None else value
                       for metric, value in values.items()}
  return out


def report_scalars(report: metrics.EmotionReport) -> dict[str, float]:
  """The stage run's scalar tags of a report: eval/<total>."""
  totals = report.totals
  return {f"eval/{name}": getattr(totals, name) for name in EVAL_TOTALS
          if getattr(totals, name) is not None}


def describe(tag: str) -> str:
  """The description of a scalar tag this module writes."""
  group, _, rest = tag.partition("/")
  if group == PER_EMOTION_DIR:
    return PER_EMOTION_TAGS[rest][1]
  if group == "eval" and rest in EVAL_TOTALS:
    return EVAL_TOTALS[rest]
  return _LOG_DESCRIPTIONS.get(tag, f"Keras log {rest or tag} of the epoch.")
