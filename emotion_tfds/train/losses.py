"""The training losses: cross-entropy on softmax outputs with label smoothing and class weights;
the distillation term of a stage with a teacher."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

_EPSILON = 1e-7


def class_weights(counts: Sequence[int], balance: str) -> np.ndarray | None:
  """Per-class loss weights from training-split class counts.

  "weights": n / (K * n_c), K the classes with examples (each class weighs as much in total and
  the mean weight per example is 1); "sqrt": its square root; "none": None. A class without
  examples gets weight 0.
  """
  if balance == "none":
    return None
  counts = np.asarray(counts, np.float64)
  present = np.count_nonzero(counts)
  weights = np.where(counts > 0, counts.sum() / (present * np.maximum(counts, 1)), 0.0)
  if balance == "sqrt":
    weights = np.sqrt(weights)
  elif balance != "weights":
    raise ValueError(f"Unknown balance {balance!r}; expected none, weights or sqrt.")
  return weights.astype(np.float32)


class SmoothedCrossEntropy(keras.losses.Loss):
  """Sparse cross-entropy of probabilities, with label smoothing and optional class weights.

  The target is (1 - s) on the label plus s / K on every class; with class weights, each example's
  loss is multiplied by its label's weight (the batch mean stays a plain mean).
  """

  def __init__(self, label_smoothing: float = 0.0, weights: Sequence[float] | None = None,
               name: str = "smoothed_cross_entropy"):
    super().__init__(name=name)
    self._smoothing = float(label_smoothing)
    self._weights = None if weights is None else [float(w) for w in weights]

  def call(self, y_true, y_pred):
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    log_p = _log(y_pred)
    nll = -tf.gather(log_p, labels, axis=1, batch_dims=1)
    loss = nll
    if self._smoothing:
      loss = (1.0 - self._smoothing) * nll - self._smoothing * tf.reduce_mean(log_p, axis=1)
    if self._weights is not None:
      loss *= tf.gather(tf.constant(self._weights, tf.float32), labels)
    return loss

  def get_config(self):
    return {"label_smoothing": self._smoothing, "weights": self._weights, "name": self.name}


class DistillationLoss(keras.losses.Loss):
  """T^2 * KL(teacher_T || student_T) per example, of two softmax outputs (Hinton et al., 2015).

  `y_true` is the teacher's probabilities, `y_pred` the student's. Each is softened by the
  temperature T as softmax(log(p) / T), the tempered distribution of the logits log(p) (clipped
  away from log 0). The T^2 factor keeps the term's gradients on the scale of the label loss's.
  """

  def __init__(self, temperature: float, name: str = "distillation"):
    super().__init__(name=name)
    self._temperature = float(temperature)

  def call(self, y_true, y_pred):
    teacher = tf.nn.log_softmax(_log(y_true) / self._temperature, axis=-1)
    student = tf.nn.log_softmax(_log(y_pred) / self._temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1)
    return self._temperature ** 2 * kl

  def get_config(self):
    return {"temperature": self._temperature, "name": self.name}


def _log(probabilities: tf.Tensor) -> tf.Tensor:
  """log(p), float32, with p clipped to [_EPSILON, 1]."""
  return tf.math.log(tf.clip_by_value(tf.cast(probabilities, tf.float32), _EPSILON, 1.0))
