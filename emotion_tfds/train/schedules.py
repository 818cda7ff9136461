"""Learning-rate schedules within a stage: constant, warmup + cosine, step decay, reduce on plateau.

Constant, cosine and step are `keras.optimizers.schedules.LearningRateSchedule`s of the optimizer's
step counter, which the checkpoint holds, so a resumed stage continues on the same curve. A time
budget sets a cosine stage's length after its step was traced (`set_total_steps`). Plateau
keeps its state (the lr, the best validation accuracy so far, the epochs since) in tf.Variables that
`PlateauCallback.variables` hands to the checkpoint.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from emotion_tfds.train import stages as stages_lib


class StageSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0, then constant, half-cosine to 0, or step decay.

  Args:
    lr: peak learning rate.
    kind: "constant", "cosine" or "step".
    total_steps: steps of the stage.
    warmup_steps: steps of linear warmup (0: none).
    drop_steps: steps after which "step" multiplies the lr by `factor`.
    factor: see `drop_steps`.
  """

  def __init__(self, lr: float, kind: str, total_steps: int, warmup_steps: int = 0,
               drop_steps: tuple[int, ...] = (), factor: float = 0.1):
    if kind not in ("constant", "cosine", "step"):
      raise ValueError(f"StageSchedule kind must be constant, cosine or step, got {kind!r}.")
    self.lr = lr
    self.kind = kind
    self.warmup_steps = int(warmup_steps)
    self.drop_steps = tuple(int(s) for s in drop_steps)
    self.factor = factor
    # The cosine's steps after warmup, read by the traced step (`set_total_steps`).
    self._span = tf.Variable(1.0, trainable=False, name="cosine_span")
    self.set_total_steps(total_steps)

  def set_total_steps(self, total_steps: int) -> None:
    """Sets the stage's length, also after the training step was traced (a time budget's choice)."""
    self.total_steps = max(int(total_steps), 1)
    self._span.assign(float(max(self.total_steps - self.warmup_steps, 1)))

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    lr = tf.constant(self.lr, tf.float32)
    if self.kind == "cosine":
      done = tf.clip_by_value((step - self.warmup_steps) / self._span, 0.0, 1.0)
      lr = lr * 0.5 * (1.0 + tf.cos(math.pi * done))
    elif self.kind == "step":
      drops = tf.reduce_sum(tf.cast(step >= tf.constant(self.drop_steps, tf.float32), tf.float32))
      lr = lr * tf.pow(tf.constant(self.factor, tf.float32), drops)
    if self.warmup_steps:
      lr = lr * tf.minimum((step + 1.0) / self.warmup_steps, 1.0)
    return lr

  def get_config(self):
    return {"lr": self.lr, "kind": self.kind, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps, "drop_steps": self.drop_steps,
            "factor": self.factor}


def learning_rate(stage: stages_lib.Stage, lr: float, steps_per_epoch: int
                  ) -> float | StageSchedule:
  """The optimizer's learning_rate for `stage` (peak `lr`): a float for constant and plateau."""
  if stage.schedule == "plateau" or (stage.schedule == "constant" and not stage.warmup):
    return lr
  return StageSchedule(lr, stage.schedule, stage.epochs * steps_per_epoch,
                       warmup_steps=round(stage.warmup * steps_per_epoch),
                       drop_steps=tuple(d * steps_per_epoch for d in stage.drops),
                       factor=stage.lr_factor)


def set_total_steps(optimizer: keras.optimizers.Optimizer, total_steps: int) -> None:
  """Sets the length of `optimizer`'s StageSchedule, if it has one (constant and plateau lrs do not
  depend on it)."""
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # Under a LossScaleOptimizer.
  # Keras keeps the schedule in a private attribute (`learning_rate` is its current value).
  schedule = optimizer._learning_rate  # pylint: disable=protected-access
  if isinstance(schedule, StageSchedule):
    schedule.set_total_steps(total_steps)


class PlateauCallback(keras.callbacks.Callback):
  """Multiplies the optimizer's lr by `factor` after `patience` epochs without a better `monitor`.

  Reads `monitor` from the epoch's logs (e.g. "eval_accuracy", which `callbacks.EmotionTensorBoard`
  adds, so it must come after that callback). Its state lives in `variables` (checkpointed).
  """

  def __init__(self, factor: float, patience: int, monitor: str = "eval_accuracy",
               min_lr: float = 1e-6):
    super().__init__()
    self._factor = factor
    self._patience = patience
    self._monitor = monitor
    self._min_lr = min_lr
    self.best = tf.Variable(-math.inf, dtype=tf.float32, trainable=False, name="plateau_best")
    self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")

  @property
  def variables(self) -> dict:
    return {"plateau_best": self.best, "plateau_wait": self.wait}

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self._monitor)
    if value is None:
      raise ValueError(f"schedule=plateau needs {self._monitor!r} in the epoch logs: train with "
                       "a validation split and --validate.")
    if value > float(self.best.numpy()):
      self.best.assign(value)
      self.wait.assign(0)
      return
    self.wait.assign_add(1)
    if int(self.wait.numpy()) >= self._patience:
      lr = self.model.optimizer.learning_rate
      lr.assign(max(float(lr.numpy()) * self._factor, self._min_lr))
      self.wait.assign(0)
