"""Helpers of the tests that train through `emotion_tfds.train.loop`: a run's config, and
callbacks that crash a run or record the state a checkpoint must bring back.

Apart from `support` because they import Keras (and so TensorFlow), which `support` does not.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from emotion_tfds.train import config as config_lib
from emotion_tfds.train import stages

STEPS = 2  # Steps per epoch of every run made with `train_config`.


def train_config(model_dir: str | os.PathLike, data_dir: str, spec: str, pretrain: str = "",
                 **kwargs) -> config_lib.TrainConfig:
  """The run of stages `spec` (after pretraining stages `pretrain` on generated_faces/fer7):
  STEPS steps per epoch, no validation unless asked, silent, float32."""
  pretraining = (stages.parse_stages(pretrain, prefix="pretrain", dataset="generated_faces/fer7")
                 if pretrain else [])
  schedule = stages.with_pretraining(stages.parse_stages(spec), pretraining)
  # float32: these tests compare numbers exactly, which "auto" could change on an AMX machine.
  defaults = dict(validate=False, max_steps_per_epoch=STEPS, verbose=0, precision="float32")
  defaults.update(kwargs)
  return config_lib.TrainConfig(model_dir=str(model_dir), data_dir=data_dir,
                                stages=tuple(schedule), **defaults)


def layer_weights(net: keras.Model) -> dict[str, list[np.ndarray]]:
  """Copies of the weights of `net`'s layers that have any, by layer name."""
  return {layer.name: [w.numpy().copy() for w in layer.weights]
          for layer in net.layers if layer.weights}


def optimizer_state(trainer: keras.Model) -> dict:
  """What a checkpoint of a training model holds: the optimizer's step counter and variables, the
  network's weights and the BatchNorm statistics' averages."""
  optimizer = trainer.optimizer
  return {"iterations": int(optimizer.iterations.numpy()),
          # Paths without the optimizer's own name ("adam_3/..."), which counts optimizers made.
          "variables": {v.path.split("/", 1)[1]: v.numpy().copy() for v in optimizer.variables},
          "weights": layer_weights(trainer.net),
          "batch_norm_averages": [v.numpy().copy() for v in trainer.batch_norm_averages.averages]
                                 if trainer.batch_norm_averages else []}


class StopAt(keras.callbacks.Callback):
  """Raises at the end of epoch `epoch` (0-based) of the `fit_index`-th fit (stage).

  That is a crash just before the epoch's checkpoint. Records the optimizer state at the end of
  the epoch before (the one the last checkpoint holds).
  """

  class Stop(Exception):
    pass

  def __init__(self, fit_index: int, epoch: int):
    super().__init__()
    self._fit_index = fit_index
    self._epoch = epoch
    self._fits = 0
    self.saved_state = None

  def on_train_begin(self, logs=None):
    self._fits += 1

  def on_epoch_end(self, epoch, logs=None):
    if self._fits != self._fit_index:
      return
    if epoch == self._epoch - 1:
      self.saved_state = optimizer_state(self.model)
    if epoch == self._epoch:
      raise self.Stop()


class FirstState(keras.callbacks.Callback):
  """The optimizer state (`optimizer_state`) at the start of the first fit of a run."""

  def __init__(self):
    super().__init__()
    self.state = None

  def on_train_begin(self, logs=None):
    if self.state is None:
      self.state = optimizer_state(self.model)
