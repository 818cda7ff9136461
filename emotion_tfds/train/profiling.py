"""A TensorBoard profile of chosen training steps (`--profile_steps=FIRST,LAST`).

`tf.profiler.experimental` records steps FIRST to LAST (1-based, counted from the start of a
stage's `fit`, so across its epochs) of the first stage that runs at least LAST steps, into that
stage's TensorBoard folder: `<model_dir>/tb/<stage>/plugins/profile/<time>/<host>.xplane.pb`.
TensorBoard's Profile tab (the `xprof` plugin, pinned in requirements.txt) shows it: the trace
viewer (every op of each step on a timeline, the input pipeline's threads beside the step's) and
the input-pipeline analyzer (the share of each step spent waiting for input: input- or
compute-bound), which needs the step markers this callback writes around each profiled step.
Start after the first steps: the first one traces and compiles the step function.
"""

from __future__ import annotations

import pathlib

import keras
import tensorflow as tf

PROFILE_DIR = "plugins/profile"  # Below the log folder: where TensorBoard's profile plugin looks.


class StepProfiler(keras.callbacks.Callback):
  """Profiles one run's steps `first` to `last` of the first stage that gets to `last`."""

  def __init__(self, first: int, last: int, announce: bool = True):
    """Steps `first` <= `last`, 1-based; `announce`: print where the profile went."""
    super().__init__()
    self._first = first
    self._last = last
    self._announce = announce
    self._logdir: pathlib.Path | None = None
    self._step = 0
    self._trace: tf.profiler.experimental.Trace | None = None
    self._written = False

  def for_stage(self, logdir: pathlib.Path, steps: int) -> list[keras.callbacks.Callback]:
    """[self], profiling into `logdir`, for a stage whose `fit` runs `steps` steps, when that
    reaches `last` and no profile is written yet; else []."""
    if self._written or steps < self._last:
      return []
    self._logdir = logdir
    return [self]

  def on_train_begin(self, logs=None):
    self._step = 0

  def on_train_batch_begin(self, batch, logs=None):
    self._step += 1
    if self._step == self._first:
      tf.profiler.experimental.start(str(self._logdir))
    if self._first <= self._step <= self._last:
      # A step marker, as Keras 2's fit wrote (Keras 3 writes none): the profile's step time and
      # input-pipeline analysis need it.
      self._trace = tf.profiler.experimental.Trace("train", step_num=self._step, _r=1)
      self._trace.__enter__()

  def on_train_batch_end(self, batch, logs=None):
    if self._trace is None:
      return
    self._trace.__exit__(None, None, None)
    self._trace = None
    if self._step == self._last:
      tf.profiler.experimental.stop()
      self._written = True
      if self._announce:
        print(f"Profiled training steps {self._first}-{self._last} into "
              f"{self._logdir / PROFILE_DIR} (TensorBoard: Profile tab).", flush=True)
