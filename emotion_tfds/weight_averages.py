"""An exponential moving average (EMA) of the weights as the network that is evaluated and kept.

A stage with `ema=M` trains with the Keras optimizer's own EMA (`use_ema`, momentum M: after each
step, average = M * average + (1 - M) * weight, starting from the first step's weights). The
averages are optimizer variables, so the stage checkpoint holds them and a resumed run continues
them exactly. `EvaluateAverages` puts them into the network at each epoch end, for the callbacks
between its two halves (validation, TensorBoard, keep-best), and takes the trained weights back
before the checkpoint is written. After the stage's last epoch the averages stay in the network:
they are what the next stage starts from and what the final evaluation sees, and the stage's
closing checkpoint holds them as the network (Keras' own end-of-fit overwrite is then a no-op).

BatchNorm statistics are not averaged (Keras averages trainable variables only); they are the
trained weights' running statistics.
"""

from __future__ import annotations

import keras
import numpy as np


def averages(optimizer: keras.optimizers.Optimizer) -> list:
  """The optimizer's moving averages, in the order of the variables it was built with."""
  if not optimizer.use_ema:
    raise ValueError(f"Optimizer {optimizer.name} keeps no moving averages (use_ema is off).")
  # Keras keeps them in a private list (its own SwapEMAWeights callback reads the same one).
  return list(optimizer._model_variables_moving_average)  # pylint: disable=protected-access


class EvaluateAverages:
  """Two callbacks: `put_in` (first at each epoch end) and `take_out` (before the checkpoint)."""

  def __init__(self, trainer: keras.Model, epochs: int):
    """`trainer`: the compiled model whose optimizer has `use_ema`; `epochs`: the stage's."""
    self._variables = list(trainer.trainable_variables)
    self._averages = averages(trainer.optimizer)
    if len(self._variables) != len(self._averages):
      raise ValueError(f"{len(self._averages)} moving averages for {len(self._variables)} "
                       "trainable variables: build the optimizer on the trainer's variables.")
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
