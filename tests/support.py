"""Helpers shared by the tests; pytest puts tests/ on sys.path, so they import it as `support`."""

from __future__ import annotations

import pathlib
import shutil
import tempfile
from typing import TYPE_CHECKING
import unittest

from emotion_tfds import image_spec

if TYPE_CHECKING:
  import keras


def tempdir(test: unittest.TestCase) -> pathlib.Path:
  """A new empty folder, removed when `test` ends (absltest's create_tempdir needs parsed flags,
  which pytest does not parse)."""
  path = pathlib.Path(tempfile.mkdtemp(prefix=f"{type(test).__name__}_"))
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def small_cnn(num_classes: int) -> keras.Model:
  """A ~10k-parameter CNN on float32 [0, 1] input, named as the project's models (input "image",
  softmax head "predictions"): learns the generated faces (~85% on seed6 in 6 epochs) in seconds,
  with enough weights that int8 TFLite is under half the float size."""
  import keras  # Not at the top: ravdess_test imports this module and no TensorFlow.
  inputs = keras.Input(image_spec.IMAGE_SHAPE, name="image")
  x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(inputs)
  x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
  x = keras.layers.MaxPooling2D(2)(x)
  x = keras.layers.Flatten()(x)
  outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
  return keras.Model(inputs, outputs)


def read_run_folder(logdir: pathlib.Path) -> dict[str, list]:
  """tag -> [(step, summary value)] of the event files directly in `logdir` (not below it)."""
  from emotion_tfds.report import curves  # Not at the top: support imports no TensorFlow.
  out: dict[str, list] = {}
  for event in curves.read_events(logdir):
    for value in event.summary.value:
      out.setdefault(value.tag, []).append((event.step, value))
  return out


def tensorboard_runs(logdir: pathlib.Path) -> list[str]:
  """The runs TensorBoard lists for `--logdir=logdir`, in its order (by first event, then name),
  which is the order it colours them in."""
  from tensorboard import context
  from tensorboard.backend.event_processing import data_provider
  from tensorboard.backend.event_processing import plugin_event_multiplexer
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(logdir))
  multiplexer.Reload()
  runs = data_provider.MultiplexerDataProvider(multiplexer, str(logdir)).list_runs(
      context.RequestContext(), experiment_id="")
  return [run.run_name for run in sorted(runs, key=lambda run: (run.start_time, run.run_name))]
