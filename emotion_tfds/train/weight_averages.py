"""An exponential moving average (EMA) of the weights as the network that is evaluated and kept.

A stage with `ema=M` trains with the Keras optimizer's own EMA (`use_ema`, momentum M: after each
step, average = M * average + (1 - M) * weight, starting from the first step's weights). The
averages are optimizer variables, so the stage checkpoint holds them and a resumed run continues
them exactly. `EvaluateAverages` puts them into the network at each epoch end, for the callbacks
between its two halves (validation, TensorBoard, keep-best), and takes the trained weights back
before the checkpoint is written. After the stage's last epoch the averages stay in the network:
they are what the next stage starts from and what the final evaluation sees, and the stage's
closing checkpoint holds them as the network (Keras' own end-of-fit overwrite is then a no-op).

Keras averages trainable variables only, so the network's BatchNorm statistics (moving mean and
variance) get their own averages with the same momentum (`BatchNormAverages`, updated after every
optimizer step, as timm's ModelEmaV2 and the CIFAR-10 speedruns average a network's buffers):
averaged weights evaluated with the trained weights' statistics are mismatched whenever the
weights move fast, and classify near chance early in a high-learning-rate stage.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def averages(optimizer: keras.optimizers.Optimizer) -> list:
  """The optimizer's moving averages, in the order of the variables it was built with."""
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # A LossScaleOptimizer's (float16).
  if not optimizer.use_ema:
    raise ValueError(f"Optimizer {optimizer.name} keeps no moving averages (use_ema is off).")
  # Keras keeps them in a private list (its own SwapEMAWeights callback reads the same one).
  return list(optimizer._model_variables_moving_average)  # pylint: disable=protected-access


def _batch_norm_layers(model: keras.Model):
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      yield layer
    elif isinstance(layer, keras.Model):
      yield from _batch_norm_layers(layer)


def batch_norm_statistics(model: keras.Model) -> list:
  """Every BatchNormalization layer's moving mean and variance in `model` and its sub-models."""
  return [v for layer in _batch_norm_layers(model)
          for v in (layer.moving_mean, layer.moving_variance)]


class BatchNormAverages:
  """Moving averages of a network's BatchNorm statistics, updated after each optimizer step."""

  def __init__(self, net: keras.Model, momentum: float):
    """Averages of `batch_norm_statistics(net)`, starting from their values now. Create under the
    strategy's scope."""
    self.statistics = batch_norm_statistics(net)
    self.averages = [keras.Variable(v.numpy(), trainable=False, name=f"average_{i}")
                     for i, v in enumerate(self.statistics)]
    self._momentum = momentum

  @property
  def variables(self) -> dict:
    """Checkpoint entries (`tf.train.Checkpoint(**variables)`): resumed runs continue them."""
    return {"batch_norm_averages": self.averages}

  def update(self, iterations: tf.Tensor) -> None:
    """`iterations`: the optimizer's step count after this step; the first step copies (as the
    optimizer's own EMA does)."""
    momentum = tf.cast(iterations > 1, tf.float32) * self._momentum
    for average, statistic in zip(self.averages, self.statistics):
      average.assign(momentum * average + (1.0 - momentum) * statistic)


class EvaluateAverages:
  """Two callbacks: `put_in` (first at each epoch end) and `take_out` (before the checkpoint)."""

  def __init__(self, trainer: keras.Model, epochs: int,
               batch_norm: BatchNormAverages | None = None):
    """`trainer`: the compiled model whose optimizer has `use_ema`; `epochs`: the stage's;
    `batch_norm`: the averages of the network's BatchNorm statistics, swapped in too."""
    self._variables = list(trainer.trainable_variables)
    self._averages = averages(trainer.optimizer)
    if len(self._variables) != len(self._averages):
      raise ValueError(f"{len(self._averages)} moving averages for {len(self._variables)} "
                       "trainable variables: build the optimizer on the trainer's variables.")
    if batch_norm is not None:
      self._variables += batch_norm.statistics
      self._averages += batch_norm.averages
    self._last_epoch = epochs - 1
    self._trained: list[np.ndarray] | None = None
    self.put_in = _AtEpochEnd(self._put_in)
    self.take_out = _AtEpochEnd(self._take_out)

  def _put_in(self, epoch: int) -> None:
    del epoch
    self._trained = [v.numpy() for v in self._variables]
    for variable, average in zip(self._variables, self._averages):
      variable.assign(average)

  def _take_out(self, epoch: int) -> None:
    if self._trained is None:
      raise RuntimeError("take_out ran at an epoch end without put_in before it.")
    if epoch != self._last_epoch:
      for variable, value in zip(self._variables, self._trained):
        variable.assign(value)
    self._trained = None


class _AtEpochEnd(keras.callbacks.Callback):
  """Calls `action(epoch)` at each epoch end."""

  def __init__(self, action):
    super().__init__()
    self._action = action

  def on_epoch_end(self, epoch, logs=None):
    self._action(epoch)
