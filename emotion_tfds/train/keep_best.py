"""The best validation epoch of a run: its value and place in the checkpointed counters, its weights
in `<model_dir>/best.weights.h5`, loaded as the final network with `keep_best`.

The run's best validation accuracy is kept whatever `keep_best` says (`TrackBestAccuracy`), so the
run's summary needs nothing read back from TensorBoard.
"""

from __future__ import annotations

import os
import pathlib

import keras

from emotion_tfds.data import datasets
from emotion_tfds.train import checkpoints
from emotion_tfds.train import config as config_lib

BEST_WEIGHTS = "best.weights.h5"  # <model_dir>/best.weights.h5: the best epoch's network.


def keep_best_from(config: config_lib.TrainConfig, builders: dict) -> int:
  """Index of the first stage whose epochs keep_best compares: from there on, every stage has the
  target's label names (no head swap), so any of their epochs' weights fit the final network."""
  target = datasets.label_names(builders[config.dataset])
  index = len(config.stages)
  while index > 0 and datasets.label_names(
      builders[config.stage_dataset(config.stages[index - 1])]) == target:
    index -= 1
  return index


class KeepBest(keras.callbacks.Callback):
  """Writes `net`'s weights to `path` whenever the epoch's `monitor` beats the best so far.

  The best value and its (stage, epoch) live in the checkpointed `counters`; the weights are written
  to a temporary file and renamed, so `path` always holds one whole epoch's network. Placed before
  the checkpoint callback: a kill in between repeats the epoch, which may then overwrite `path`.
  """

  def __init__(self, net: keras.Model, monitor: str, counters: checkpoints.Counters, stage_index: int,
               path: pathlib.Path):
    super().__init__()
    self._net = net
    self._monitor = monitor
    self._counters = counters
    self._stage_index = stage_index
    self._path = path

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self._monitor)
    if value is None:
      raise ValueError(f"keep_best needs {self._monitor!r} in the epoch logs (a validation "
                       "split and validate=True).")
    if value <= float(self._counters.best_value.numpy()):
      return
    partial = self._path.with_name("best-partial.weights.h5")
    self._net.save_weights(partial)
    os.replace(partial, self._path)
    self._counters.best_value.assign(value)
    self._counters.best_stage.assign(self._stage_index)
    self._counters.best_epoch.assign(epoch + 1)


class TrackBestAccuracy(keras.callbacks.Callback):
  """Keeps the best `eval_accuracy` of the epochs in the checkpointed `counters.best_accuracy`."""

  def __init__(self, counters: checkpoints.Counters):
    super().__init__()
    self._counters = counters

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get("eval_accuracy")
    if value is not None and value > float(self._counters.best_accuracy.numpy()):
      self._counters.best_accuracy.assign(value)


def load_best(net: keras.Model, config: config_lib.TrainConfig, counters: checkpoints.Counters,
              write_dir: pathlib.Path, announce: bool) -> None:
  """Loads the best epoch's weights (`KeepBest`) into `net`, which the final evaluation then uses.

  Raises:
    ValueError: no best epoch was recorded (no validation split).
  """
  path = write_dir / BEST_WEIGHTS
  if int(counters.best_stage.numpy()) < 0 or not path.exists():
    raise ValueError(f"keep_best={config.keep_best}: no best epoch was recorded in "
                     f"{write_dir} (is there a validation split?).")
  net.load_weights(path)
  if announce:
    stage = config.stages[int(counters.best_stage.numpy())]
    print(f"\nFinal model: the best epoch by validation {config.keep_best}, {stage.name} epoch "
          f"{int(counters.best_epoch.numpy())} ({float(counters.best_value.numpy()):.4f}).",
          flush=True)
