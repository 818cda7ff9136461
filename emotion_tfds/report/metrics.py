"""Streaming per-emotion evaluation: confusion counts -> accuracy, precision, F1, confidence.

The accumulated state is small and exact: confusion counts `[num_labels, num_predicted]` (int64) and,
per true emotion, the summed probability the model gave to that emotion. Everything else is derived
from them, so batches (or replicas, or workers) add up by plain summation and no prediction is kept.

Labels and predictions may use different schemes (a seed6 model evaluated on fer7 data): a true
emotion the model cannot predict (fear) is "not covered": its images are counted with their
prediction distribution, but get no accuracy, and every other number (precision, F1, totals) is
computed over the covered images only.

Definitions (also printed under each table):
  accuracy         of an emotion: the share of its images predicted as it (its recall).
  precision        of an emotion: the share of the (covered) images predicted as it that are it.
  F1               2 * TP / (2 * TP + FP + FN); undefined only for an emotion never seen nor predicted.
  mean confidence  the mean probability the model gave to the true emotion (not to its prediction).
  macro-F1         mean F1 over the predicted emotions present in the labels or the predictions.
  balanced acc.    mean accuracy over the emotions present in the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
import csv
import dataclasses
import io
import json
import pathlib

import numpy as np
import tensorflow as tf

from emotion_tfds import labels as labels_lib

NOT_COVERED = "not covered"
DEFINITIONS = (
    "accuracy = share of the emotion's images predicted as it (recall); "
    "precision = share of the images predicted as the emotion that are it;\n"
    "avg confidence = mean probability the model gave to the TRUE emotion; "
    "total row: accuracy over all covered images, f1 = macro-F1 over the emotions present.")
OUTPUT_SUFFIXES = (".md", ".json", ".csv")
CONFUSION_TAG = "eval/confusion_matrix"
REPORT_TAG = "eval/report"


@dataclasses.dataclass(frozen=True)
class EmotionRow:
  """One true emotion's line of the report. Ratios are None where undefined (0/0 or not covered)."""
  name: str
  count: int
  covered: bool
  accuracy: float | None
  precision: float | None
  f1: float | None
  mean_confidence: float | None
  distribution: tuple[int, ...]  # How many of its images were predicted as each predicted emotion.


@dataclasses.dataclass(frozen=True)
class Totals:
  """Whole-split numbers; ratios cover the `covered_count` images whose emotion the model has."""
  count: int
  covered_count: int
  accuracy: float | None
  macro_f1: float | None
  balanced_accuracy: float | None
  mean_confidence: float | None
  distribution: tuple[int, ...]


def _ratio(numerator: float, denominator: float) -> float | None:
  return float(numerator) / float(denominator) if denominator > 0 else None


def _mean(values: Iterable[float | None]) -> float | None:
  present = [v for v in values if v is not None]
  return sum(present) / len(present) if present else None


@dataclasses.dataclass(eq=False)  # Holds numpy arrays: compare their fields, not reports.
class EmotionReport:
  """Accumulates per-emotion counts over batches and renders the report.

  Attributes:
    label_names: the true-label scheme (the dataset's), one row each.
    pred_names: the model's output scheme (its softmax order); defaults to `label_names`.
    confusion: int64 [len(label_names), len(pred_names)] counts, row = true, column = predicted.
    true_prob_sum: float64 [len(label_names)] summed probability given to the true emotion
      (0 for rows not covered by `pred_names`).
  """
  label_names: Sequence[str]
  pred_names: Sequence[str] | None = None
  confusion: np.ndarray | None = None
  true_prob_sum: np.ndarray | None = None

  def __post_init__(self):
    self.label_names = tuple(self.label_names)
    self.pred_names = self.label_names if self.pred_names is None else tuple(self.pred_names)
    for names in (self.label_names, self.pred_names):
      if len(set(names)) != len(names):
        raise ValueError(f"Emotion names must be unique, got {names}.")
    shape = (len(self.label_names), len(self.pred_names))
    if self.confusion is None:
      self.confusion = np.zeros(shape, np.int64)
    if self.true_prob_sum is None:
      self.true_prob_sum = np.zeros(shape[0], np.float64)
    self.confusion = np.asarray(self.confusion, np.int64)
    self.true_prob_sum = np.asarray(self.true_prob_sum, np.float64)
    if self.confusion.shape != shape or self.true_prob_sum.shape != shape[:1]:
      raise ValueError(
          f"Counts of shape {self.confusion.shape} / {self.true_prob_sum.shape} do not fit "
          f"{shape[0]} label and {shape[1]} predicted emotions.")

  @property
  def label_to_pred(self) -> np.ndarray:
    """int64 [num_labels]: the predicted-scheme id of each true emotion, -1 if not covered."""
    return labels_lib.mapping(self.label_names, self.pred_names)

  def update(self, labels: np.ndarray, probs: np.ndarray) -> None:
    """Adds a batch: int labels [B] (label scheme) and probabilities [B, num_predicted]."""
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs)
    num_labels, num_pred = self.confusion.shape
    if probs.ndim != 2 or probs.shape[1] != num_pred or probs.shape[0] != labels.shape[0]:
      raise ValueError(
          f"Expected probabilities of shape [{labels.shape[0]}, {num_pred}] "
          f"({num_pred} predicted emotions {self.pred_names}), got {probs.shape}.")
    bad = (labels < 0) | (labels >= num_labels)
    if bad.any():
      raise ValueError(
          f"Label {labels[bad][0]} (batch position {int(np.argmax(bad))}) is outside "
          f"0..{num_labels - 1} ({self.label_names}).")
    labels = labels.astype(np.int64)
    preds = probs.argmax(axis=1)
    self.confusion += np.bincount(
        labels * num_pred + preds, minlength=num_labels * num_pred).reshape(num_labels, num_pred)
    target = self.label_to_pred[labels]
    covered = target >= 0
    self.true_prob_sum += np.bincount(
        labels[covered], weights=probs[covered, target[covered]].astype(np.float64),
        minlength=num_labels)

  def add_counts(self, confusion: np.ndarray, true_prob_sum: np.ndarray) -> None:
    """Adds already-reduced counts (e.g. from `batch_counts` summed over replicas)."""
    confusion = np.asarray(confusion)
    true_prob_sum = np.asarray(true_prob_sum)
    if confusion.shape != self.confusion.shape or true_prob_sum.shape != self.true_prob_sum.shape:
      raise ValueError(
          f"Counts of shape {confusion.shape} / {true_prob_sum.shape} do not fit this report's "
          f"{self.confusion.shape} / {self.true_prob_sum.shape}.")
    self.confusion += confusion.astype(np.int64)
    self.true_prob_sum += true_prob_sum.astype(np.float64)

  # ---------------------------------------------------------------------------------------------
  # Derived numbers.

  def _per_predicted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per predicted emotion over covered images: true positives, predicted count, actual count."""
    covered = self.label_to_pred >= 0
    rows = np.nonzero(covered)[0]
    cols = self.label_to_pred[covered]
    num_pred = len(self.pred_names)
    tp = np.zeros(num_pred, np.int64)
    actual = np.zeros(num_pred, np.int64)
    tp[cols] = self.confusion[rows, cols]
    actual[cols] = self.confusion[rows].sum(axis=1)
    predicted = self.confusion[covered].sum(axis=0)
    return tp, predicted, actual

  @property
  def rows(self) -> list[EmotionRow]:
    """One `EmotionRow` per true emotion, in label order."""
    tp, predicted, actual = self._per_predicted()
    out = []
    for i, name in enumerate(self.label_names):
      count = int(self.confusion[i].sum())
      j = int(self.label_to_pred[i])
      distribution = tuple(int(c) for c in self.confusion[i])
      if j < 0:
        out.append(EmotionRow(name, count, False, None, None, None, None, distribution))
        continue
      out.append(EmotionRow(
          name=name, count=count, covered=True,
          accuracy=_ratio(tp[j], actual[j]),
          precision=_ratio(tp[j], predicted[j]),
          f1=_ratio(2 * tp[j], predicted[j] + actual[j]),
          mean_confidence=_ratio(self.true_prob_sum[i], count),
          distribution=distribution))
    return out

  @property
  def totals(self) -> Totals:
    """Whole-split numbers (see the module docstring for the definitions)."""
    tp, predicted, actual = self._per_predicted()
    covered = self.label_to_pred >= 0
    covered_count = int(actual.sum())
    return Totals(
        count=int(self.confusion.sum()),
        covered_count=covered_count,
        accuracy=_ratio(tp.sum(), covered_count),
        macro_f1=_mean(_ratio(2 * t, p + a) for t, p, a in zip(tp, predicted, actual)),
        balanced_accuracy=_mean(_ratio(t, a) for t, a in zip(tp, actual)),
        mean_confidence=_ratio(self.true_prob_sum[covered].sum(), covered_count),
        distribution=tuple(int(c) for c in self.confusion.sum(axis=0)))

  def in_display_order(self) -> "EmotionReport":
    """The same counts with true and predicted emotions in `labels.display_order`, so that a
    seed6 report and a fer7 one list the emotions they share in one order (views use it; the
    JSON keeps the label order)."""
    rows = [self.label_names.index(n) for n in labels_lib.display_order(self.label_names)]
    cols = [self.pred_names.index(n) for n in labels_lib.display_order(self.pred_names)]
    return EmotionReport(tuple(self.label_names[i] for i in rows),
                         tuple(self.pred_names[j] for j in cols),
                         confusion=self.confusion[np.ix_(rows, cols)],
                         true_prob_sum=self.true_prob_sum[rows])

  def row_normalized(self) -> np.ndarray:
    """float64 confusion with each true emotion's row divided by its count (0 for empty rows)."""
    counts = self.confusion.sum(axis=1, keepdims=True)
    return self.confusion / np.maximum(counts, 1)

  # ---------------------------------------------------------------------------------------------
  # Output.

  def to_dict(self) -> dict:
    """JSON-ready dict: label/pred names, per-emotion rows, totals and the definitions."""
    def row_dict(row: EmotionRow) -> dict:
      out = dataclasses.asdict(row)
      out["distribution"] = dict(zip(self.pred_names, row.distribution))
      return out
    totals = dataclasses.asdict(self.totals)
    totals["distribution"] = dict(zip(self.pred_names, self.totals.distribution))
    return {
        "label_names": list(self.label_names),
        "pred_names": list(self.pred_names),
        "emotions": [row_dict(r) for r in self.rows],
        "totals": totals,
        "definitions": DEFINITIONS,
    }

  def to_json(self) -> str:
    """The report as JSON (undefined ratios are null)."""
    return json.dumps(self.to_dict(), indent=2)

  def _table(self) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the console and markdown forms, in display order."""
    shown = self.in_display_order()
    header = ["label", "num image", "accuracy", "precision", "f1", "avg confidence"]
    header += [f"pred {name}" for name in shown.pred_names]
    body = []
    for row in shown.rows:
      label = row.name if row.covered else f"{row.name} ({NOT_COVERED})"
      body.append([label, str(row.count)] + [
          _fmt(v) for v in (row.accuracy, row.precision, row.f1, row.mean_confidence)
      ] + [str(c) for c in row.distribution])
    t = shown.totals
    body.append(["total", str(t.count), _fmt(t.accuracy), "-", _fmt(t.macro_f1),
                 _fmt(t.mean_confidence)] + [str(c) for c in t.distribution])
    return header, body

  def _notes(self) -> list[str]:
    t = self.totals
    notes = [f"balanced accuracy {_fmt(t.balanced_accuracy)}, macro-F1 {_fmt(t.macro_f1)}.",
             DEFINITIONS]
    if t.covered_count != t.count:
      uncovered = [r.name for r in self.rows if not r.covered]
      notes.append(
          f"{t.count - t.covered_count} images of {', '.join(uncovered)} are {NOT_COVERED}: the "
          f"model predicts {', '.join(self.pred_names)}; ratios cover the other "
          f"{t.covered_count} images.")
    return notes

  def format_table(self) -> str:
    """Seed-style console table: label, num image, accuracy, avg confidence, distribution."""
    header, body = self._table()
    shown_names = self.in_display_order().pred_names  # The order of the body's counts.
    num_fixed = 6
    fixed = [r[:num_fixed] for r in [header] + body]
    widths = [max(len(r[k]) for r in fixed) for k in range(num_fixed)]
    lines = []
    for k, row in enumerate([header[:num_fixed] + ["distribution"]] + body):
      cells = [row[c].ljust(widths[c]) if c == 0 else row[c].rjust(widths[c])
               for c in range(num_fixed)]
      if k == 0:
        cells.append(row[num_fixed])
      else:
        cells.append(" ".join(f"{n}:{c}" for n, c in zip(shown_names, row[num_fixed:])))
      lines.append("  ".join(cells))
    return "\n".join(lines + [""] + self._notes())

  def to_markdown(self, confusion: bool = True) -> str:
    """Markdown table (with `confusion`, one column per predicted emotion: the confusion row) and
    notes. Without the confusion columns it fits a TensorBoard text card."""
    header, body = self._table()
    if not confusion:
      header, body = header[:6], [row[:6] for row in body]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines + [""] + self._notes()) + "\n"

  def to_csv(self) -> str:
    """CSV: one row per true emotion plus `total`; empty cells where a ratio is undefined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "num_images", "covered", "accuracy", "precision", "f1",
                     "mean_confidence", "balanced_accuracy"] +
                    [f"pred_{name}" for name in self.pred_names])
    for r in self.rows:
      writer.writerow([r.name, r.count, int(r.covered)] +
                      [_csv(v) for v in (r.accuracy, r.precision, r.f1, r.mean_confidence)] +
                      [""] + list(r.distribution))
    t = self.totals
    writer.writerow(["total", t.count, t.covered_count] +
                    [_csv(v) for v in (t.accuracy, None, t.macro_f1, t.mean_confidence,
                                       t.balanced_accuracy)] + list(t.distribution))
    return out.getvalue()

  def save(self, path: str | pathlib.Path) -> pathlib.Path:
    """Writes the report to `path` as markdown, JSON or CSV chosen by its suffix."""
    path = pathlib.Path(path)
    writers = {".md": self.to_markdown, ".json": self.to_json, ".csv": self.to_csv}
    if path.suffix not in writers:
      raise ValueError(f"Cannot write report {path}: suffix must be one of {OUTPUT_SUFFIXES}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(writers[path.suffix]())
    return path


def _fmt(value: float | None) -> str:
  return "-" if value is None else f"{value:.3f}"


def _csv(value: float | None) -> str:
  return "" if value is None else repr(round(value, 6))


# -------------------------------------------------------------------------------------------------
# TensorFlow side: per-batch counts that sum across replicas and workers.


def batch_counts(labels: tf.Tensor, probs: tf.Tensor, mask: tf.Tensor,
                 label_to_pred: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
  """One batch's report counts, as TF ops (runs inside `strategy.run` or a tf.function).

  Args:
    labels: int [B] true labels (label scheme).
    probs: float [B, num_predicted] probabilities.
    mask: [B], nonzero for an example, 0 for padding (`pipeline.padded_batches`), which adds
      nothing to any count.
    label_to_pred: int [num_labels] predicted-scheme id per label id, -1 where not covered
      (`EmotionReport.label_to_pred`).

  Returns:
    (int32 confusion [num_labels, num_predicted], float32 true-probability sums [num_labels]);
    summing these over batches/replicas and `EmotionReport.add_counts` gives the report.
  """
  num_labels = len(label_to_pred)
  num_pred = probs.shape[-1]
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
  tf.debugging.assert_non_negative(labels, message="negative label")
  tf.debugging.assert_less(labels, num_labels, message=f"label outside 0..{num_labels - 1}")
  real = tf.reshape(mask, [-1]) != 0
  preds = tf.argmax(probs, axis=-1, output_type=tf.int32)
  confusion = tf.math.unsorted_segment_sum(
      tf.cast(real, tf.int32), labels * num_pred + preds, num_labels * num_pred)
  target = tf.gather(tf.constant(label_to_pred, tf.int32), labels)
  true_prob = tf.gather(tf.cast(probs, tf.float32), tf.maximum(target, 0), batch_dims=1)
  true_prob = tf.where(real & (target >= 0), true_prob, 0.0)
  prob_sum = tf.math.unsorted_segment_sum(true_prob, labels, num_labels)
  return tf.reshape(confusion, [num_labels, num_pred]), prob_sum


class StreamingEvaluator:
  """Runs a prediction function over padded evaluation batches into an EmotionReport.

  The input is a dataset function for `strategy.distribute_datasets_from_function` whose batches
  are (images, labels, mask), as `pipeline.make_eval_dataset` and `pipeline.padded_batches` make
  them: every replica gets a full batch of one static shape at every step, and the mask leaves the
  padding out of every count. The per-batch step (prediction + `batch_counts`) is one tf.function
  run under `strategy` (the counts are summed with `strategy.reduce(SUM)`, across workers too),
  traced once per evaluator so calling `evaluate` every epoch does not retrace. Only the small
  counts leave the device.
  """

  def __init__(self, predict_fn: Callable[[tf.Tensor], tf.Tensor], label_names: Sequence[str],
               pred_names: Sequence[str] | None = None,
               strategy: tf.distribute.Strategy | None = None):
    """Creates the evaluator.

    Args:
      predict_fn: images batch (as the dataset yields them) -> probabilities [B, num_predicted].
      label_names: the dataset's emotions (true-label scheme).
      pred_names: the model's emotions (default `label_names`).
      strategy: distribution strategy of the model (default: the current one).
    """
    self._label_names = tuple(label_names)
    self._pred_names = None if pred_names is None else tuple(pred_names)
    self._strategy = strategy or tf.distribute.get_strategy()
    label_to_pred = EmotionReport(self._label_names, self._pred_names).label_to_pred

    def replica_step(images, labels, mask):
      return batch_counts(labels, predict_fn(images), mask, label_to_pred)

    def step(images, labels, mask):
      per_replica = self._strategy.run(replica_step, args=(images, labels, mask))
      return tuple(self._strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None)
                   for t in per_replica)

    self._step = tf.function(step, reduce_retracing=True)

  def evaluate(self, dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset]
               ) -> EmotionReport:
    """One pass over the (images, labels, mask) batches of `dataset_fn` -> a new report."""
    report = EmotionReport(self._label_names, self._pred_names)
    for images, labels, mask in self._strategy.distribute_datasets_from_function(dataset_fn):
      confusion, prob_sum = self._step(images, labels, mask)
      report.add_counts(confusion.numpy(), prob_sum.numpy())
    return report


# -------------------------------------------------------------------------------------------------
# Picture.


def confusion_image(report: EmotionReport, title: str | None = None,
                    compact: bool = False) -> bytes:
  """PNG bytes of the row-normalised confusion matrix with emotion names on both axes.

  `compact` draws it for a TensorBoard card (shown about 250 px wide): a small canvas with large
  type, percentages as whole numbers and no colour bar, so names and values stay legible there.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  report = report.in_display_order()
  matrix = report.row_normalized()
  rows = [f"{r.name}\n({NOT_COVERED})" if not r.covered else r.name for r in report.rows]
  counts = report.confusion.sum(axis=1)
  cells = max(len(rows), len(report.pred_names))
  if compact:
    fig = Figure(figsize=(1.3 + 0.36 * cells, 1.1 + 0.36 * cells), dpi=100, layout="constrained")
  else:
    size = 2.5 + 0.6 * cells
    fig = Figure(figsize=(size + 1.5, size), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
  if compact:
    ax.set_xticks(range(len(report.pred_names)), labels=[n[:3] for n in report.pred_names],
                  fontsize=12)
    ax.set_yticks(range(len(rows)), labels=[r.name for r in report.rows], fontsize=12)
    ax.set_xlabel("predicted (% of row)", fontsize=11)
  else:
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true emotion's images")
    ax.set_xticks(range(len(report.pred_names)), labels=report.pred_names, rotation=45,
                  ha="right")
    ax.set_yticks(range(len(rows)), labels=[f"{n} ({c})" for n, c in zip(rows, counts)])
    ax.set_xlabel("predicted emotion")
    ax.set_ylabel("true emotion (images)")
  for i in range(matrix.shape[0]):
    for j in range(matrix.shape[1]):
      text = f"{100 * matrix[i, j]:.0f}" if compact else f"{matrix[i, j]:.2f}"
      ax.text(j, i, text, ha="center", va="center", fontsize=10 if compact else 8,
              color="white" if matrix[i, j] > 0.5 else "black")
  t = report.totals
  fig.suptitle(title or f"accuracy {_fmt(t.accuracy)}, macro-F1 {_fmt(t.macro_f1)}",
               fontsize=11 if compact else None)
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  return buffer.getvalue()


def confusion_png(report: EmotionReport, path: str | pathlib.Path, title: str | None = None
                  ) -> pathlib.Path:
  """Writes `confusion_image(report, title)` to `path` (e.g. docs/confusion_matrix.png)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(confusion_image(report, title))
  return path


def write_summaries(report: EmotionReport, step: int) -> None:
  """Writes the confusion-matrix image (CONFUSION_TAG) and the markdown table (REPORT_TAG) to the
  default `tf.summary` writer."""
  png = confusion_image(report, compact=True)
  tf.summary.image(CONFUSION_TAG, tf.io.decode_png(png, channels=3)[tf.newaxis], step=step,
                   description="Row-normalised confusion matrix: true emotion (row) against "
                   "predicted emotion (column).")
  tf.summary.text(REPORT_TAG, report.to_markdown(confusion=False), step=step,
                  description="Per-emotion report: images, recall, precision, F1, confidence.")
