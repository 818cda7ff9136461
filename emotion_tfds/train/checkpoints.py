"""The run's checkpoint: its progress counters, the per-epoch save, and what must match on resume.

The checkpoint (`tf.train.CheckpointManager` in `<model_dir>/ckpt`, written after every epoch)
holds the network, the stage's optimizer (slots and step counter; under float16 also its loss
scale), the Keras dropout seed-generator states, the stage index, the epochs done in it, the global
step, the best epoch so far, the best validation accuracy, the precision it was trained under, in
budgeted runs the epochs chosen for the budgeted stage (`budget`), and a fingerprint of the run's
settings and data (without the precision: a run may resume under another one). TF writes the data
and index files first and atomically replaces the small `checkpoint` state file last, so a kill
during a write leaves the previous checkpoint in use.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

CKPT_DIR = "ckpt"
_SEED_STATE = "seed_generator_state"  # Name of Keras' SeedGenerator state variables (dropout RNG).
_LOSS_SCALE = "loss_scale"  # Checkpoint entry of a float16 run's dynamic loss scale.
UNRECORDED = "unrecorded"  # The precision of a checkpoint written before it was recorded.
# Fingerprint fields that checkpoints of older versions hold and resumes no longer compare.
_RETIRED_FIELDS = ("mixed_precision",)


@dataclasses.dataclass(frozen=True)
class Progress:
  """Where a checkpoint stands: `epoch` epochs of stage `stage` are done.

  `budget_epochs` is the epoch count a time budget chose for the budgeted stage (0: none chosen
  yet, or no budget), at `budget_images_per_second`.
  """
  path: str
  stage: int
  epoch: int
  global_step: int
  fingerprint: str
  precision: str
  budget_epochs: int = 0
  budget_images_per_second: float = 0.0


def read_progress(ckpt_dir: str) -> Progress | None:
  """The latest checkpoint's progress in `ckpt_dir`, or None when there is none."""
  path = tf.train.latest_checkpoint(ckpt_dir)
  if path is None:
    return None
  reader = tf.train.load_checkpoint(path)

  def value(name, default=None):
    key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    return reader.get_tensor(key) if default is None or reader.has_tensor(key) else default

  recorded = reader.has_tensor("precision/.ATTRIBUTES/VARIABLE_VALUE")
  return Progress(path=path, stage=int(value("stage")), epoch=int(value("epoch")),
                  global_step=int(value("global_step")),
                  fingerprint=value("fingerprint").decode("utf8"),
                  precision=value("precision").decode("utf8") if recorded else UNRECORDED,
                  budget_epochs=int(value("budget_epochs", 0)),
                  budget_images_per_second=float(value("budget_images_per_second", 0.0)))


class Counters:
  """The checkpointed progress variables; with `budgeted`, also the time budget's choice."""

  def __init__(self, fingerprint: str, precision: str, budgeted: bool = False):
    self.stage = tf.Variable(0, dtype=tf.int64, trainable=False, name="stage")
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    self.fingerprint = tf.Variable(fingerprint, dtype=tf.string, trainable=False,
                                   name="fingerprint")
    # The precision of the last epoch written (`precision.PRECISIONS` without "auto").
    self.precision = tf.Variable(precision, dtype=tf.string, trainable=False, name="precision")
    # keep_best: the best validation value so far and where it was (stage index, epoch 1-based).
    self.best_value = tf.Variable(-np.inf, dtype=tf.float32, trainable=False, name="best_value")
    self.best_stage = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_stage")
    self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
    # The best validation accuracy of the stages on the target's classes, with or without keep_best.
    self.best_accuracy = tf.Variable(-np.inf, dtype=tf.float32, trainable=False,
                                     name="best_accuracy")
    # A time budget's epochs for the budgeted stage (0: not chosen yet) and the images/s they were
    # chosen at. Only in budgeted runs' checkpoints, so those of other runs keep their form.
    self._budget = {}
    if budgeted:
      self._budget = {
          "budget_epochs": tf.Variable(0, dtype=tf.int64, trainable=False, name="budget_epochs"),
          "budget_images_per_second": tf.Variable(0.0, dtype=tf.float32, trainable=False,
                                                  name="budget_images_per_second")}

  def objects(self) -> dict:
    return {"stage": self.stage, "epoch": self.epoch, "global_step": self.global_step,
            "fingerprint": self.fingerprint, "precision": self.precision,
            "best_value": self.best_value,
            "best_stage": self.best_stage, "best_epoch": self.best_epoch,
            "best_accuracy": self.best_accuracy, **self._budget}

  def budget_choice(self) -> tuple[int, float]:
    """(epochs, images/s) a time budget chose for the budgeted stage; (0, 0.0) before it chose."""
    if not self._budget:
      return 0, 0.0
    return (int(self._budget["budget_epochs"].numpy()),
            float(self._budget["budget_images_per_second"].numpy()))

  def set_budget_choice(self, epochs: int, images_per_second: float) -> None:
    """Records a time budget's choice (saved with the next checkpoint)."""
    self._budget["budget_epochs"].assign(epochs)
    self._budget["budget_images_per_second"].assign(images_per_second)


class SaveCheckpoint(keras.callbacks.Callback):
  """Saves the checkpoint at the end of every epoch (after the callbacks placed before it)."""

  def __init__(self, manager: tf.train.CheckpointManager, counters: Counters, steps: int):
    super().__init__()
    self._manager = manager
    self._counters = counters
    self._steps = steps

  def on_epoch_end(self, epoch, logs=None):
    self._counters.epoch.assign(epoch + 1)
    self._counters.global_step.assign_add(self._steps)
    self._manager.save(checkpoint_number=int(self._counters.global_step.numpy()))


def optimizer_objects(optimizer: keras.optimizers.Optimizer) -> dict:
  """Checkpoint entries of a stage's optimizer. A LossScaleOptimizer (float16) is checkpointed as
  its inner optimizer plus its loss scale, so every precision's checkpoint holds the same
  `optimizer` and a run can resume under another precision (`restore`)."""
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return {"optimizer": optimizer.inner_optimizer,
            _LOSS_SCALE: [optimizer.dynamic_scale, optimizer.step_counter]}
  return {"optimizer": optimizer}


def restore(objects: dict, progress: Progress) -> None:
  """Restores the checkpoint of `progress` into `objects` (`tf.train.Checkpoint` entries), every
  object matched, except the loss scale (a float16 checkpoint's is dropped under another precision,
  and a float16 run from another precision's checkpoint starts its scale afresh) and the precision
  a checkpoint of an older version did not record."""
  saved_scale = progress.precision == "float16"
  absent = set() if saved_scale else {_LOSS_SCALE}
  if progress.precision == UNRECORDED:
    absent.add("precision")
  matched = {name: value for name, value in objects.items() if name not in absent}
  status = tf.train.Checkpoint(**matched).restore(progress.path)
  if saved_scale and _LOSS_SCALE not in matched:
    status.expect_partial().assert_existing_objects_matched()
  else:
    status.assert_consumed()


def rng_states(net: keras.Model) -> list:
  """The Keras seed-generator states (dropout RNG): not tracked by tf.train.Checkpoint otherwise."""
  return [v for v in net.non_trainable_variables if v.name == _SEED_STATE]


def data_identity(builders: dict) -> str:
  """Each dataset's name, version and split sizes: what a resumed run must train on again."""
  return ",".join(
      f"{name}@{builder.info.version}:" + "/".join(
          f"{split}={info.num_examples}" for split, info in sorted(builder.info.splits.items()))
      for name, builder in sorted(builders.items()))


def fingerprint_difference(saved: str, current: str) -> str:
  """The settings that differ between two fingerprints, as "key: saved -> current; ..."; "" when
  the run may resume (retired fields of older versions' fingerprints do not count)."""
  def fields(fingerprint: str) -> dict[str, str]:
    pairs = (part.partition("=")[::2] for part in fingerprint.split(";"))
    return {key: value for key, value in pairs if key not in _RETIRED_FIELDS}
  a, b = fields(saved), fields(current)
  return "; ".join(f"{key}: {a.get(key, '(none)')} -> {b.get(key, '(none)')}"
                   for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key))
