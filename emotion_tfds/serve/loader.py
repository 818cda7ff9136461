"""A trained model behind one interface: uint8 faces [B, 48, 48, 1] -> class probabilities.

`load` reads every kind of model file the project writes, and gives a `LoadedModel`:
  - a Keras `.keras` file (float [0, 1] input: `preprocess.predict_fn` applies the conversion),
  - a SavedModel directory from `export.export_saved_model` (the conversion is in its graph; its
    `assets/labels.txt` names its classes),
  - a `.tflite` file from `export.export_tflite`, run in the LiteRT runtime.
A `.keras` or `.tflite` file has no place for its class names: the project writes them beside it,
as `labels.txt` in the same folder (`write_label_names`), and `load` reads them from there.
`load_ensemble` reads several files of any of these kinds as one model that averages their
probabilities (their classes must agree); `load_keras_models` reads several `.keras` files as
networks (export_main makes them one network, `models.ensemble`).
The names below are the exported format's.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import os
import pathlib

from ai_edge_litert import interpreter as litert
import keras
import numpy as np
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import image_spec

# Registers the custom layers (fastnet's SpaceToDepth) that load_model must find.
from emotion_tfds import models  # noqa: F401
from emotion_tfds import preprocess
from emotion_tfds.models import weights

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
SERVING_KEY = "serving_default"
PHOTOS_KEY = "serve_photos"
LABEL_NAMES_KEY = "label_names"
IMAGES_KEY = "images"
PROBABILITIES_KEY = "probabilities"
LABEL_KEY = "label"
LABELS_ASSET = "labels.txt"
FORMATS = "a .keras model, a SavedModel directory or a .tflite file"
MODEL_PATHS_SEPARATOR = ","  # The mains' --model_path lists an ensemble's files so; sources too.

# One model file, or the files of an ensemble.
ModelPaths = str | os.PathLike | Sequence[str | os.PathLike]


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A model file behind one interface.

  Attributes:
    predict_fn: uint8 images [B, 48, 48, 1] -> probabilities [B, num_classes] (tensors or arrays).
    num_classes: outputs of the model.
    label_names: its emotions in output order, when the model names them (a SavedModel's asset,
      the labels.txt beside a .keras or .tflite file), else None.
    source: the file it was loaded from.
  """
  predict_fn: preprocess.PredictFn
  num_classes: int
  label_names: tuple[str, ...] | None
  source: str

  def predict(self, images: np.ndarray) -> np.ndarray:
    """uint8 [N, 48, 48, 1] -> float32 probabilities [N, num_classes], checked."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != image_spec.IMAGE_SHAPE:
      raise ValueError(f"Expected uint8 images [N, 48, 48, 1], got {images.dtype} {images.shape}.")
    probabilities = np.asarray(self.predict_fn(images), dtype=np.float32)
    if probabilities.shape != (len(images), self.num_classes):
      raise ValueError(f"{self.source} returned probabilities of shape {probabilities.shape} for "
                       f"{len(images)} images and {self.num_classes} classes.")
    return probabilities

  def emotions(self) -> tuple[str, ...]:
    """`label_names`, or an error when the model does not name its classes.

    Raises:
      errors.UnusableModelError: without `label_names`, naming the file and the remedy.
    """
    if self.label_names is None:
      raise errors.UnusableModelError(
          f"{self.source} does not name its classes (no {LABELS_ASSET} beside it): pass their "
          "names in output order (--label_names).")
    return self.label_names


def load(model_path: str | os.PathLike) -> LoadedModel:
  """Loads a `.keras` file, a SavedModel directory or a `.tflite` file.

  Raises:
    errors.MissingFileError: `model_path` does not exist.
    errors.UnusableModelError: another kind of file, a file that is not a model of its kind, or a
      SavedModel or TFLite model without the uint8 `serving_default` signature of `export`.
  """
  path = _existing(model_path)
  if path.is_dir():
    return _load_saved_model(path)
  if path.suffix == ".keras":
    model, names = _keras_model(path, FORMATS)
    return LoadedModel(preprocess.predict_fn(model), int(model.output_shape[-1]), names, str(path))
  if path.suffix == ".tflite":
    loaded = _load_tflite(path)
    return dataclasses.replace(loaded, label_names=_names_beside(path, loaded.num_classes))
  hint = (" For a Keras 2 .h5 file, load it with models.load_pretrained and save it as .keras."
          if path.suffix == ".h5" else "")
  raise errors.UnusableModelError(f"Cannot load {path}: expected {FORMATS}.{hint}")


def load_keras_model(model_path: str | os.PathLike) -> tuple[keras.Model, tuple[str, ...] | None]:
  """A `.keras` file as a Keras network (float [0, 1] input) and the class names of the
  labels.txt beside it (None without one).

  Raises:
    errors.MissingFileError: `model_path` does not exist.
    errors.UnusableModelError: not a `.keras` model, or a labels.txt of another class count.
  """
  path = _existing(model_path)
  if path.suffix != ".keras":
    raise errors.UnusableModelError(f"Cannot load {path} as a Keras network: expected a .keras "
                                    "model.")
  return _keras_model(path, "a .keras model")


def _keras_model(path: pathlib.Path, formats: str) -> tuple[keras.Model, tuple[str, ...] | None]:
  model = weights.load_keras_file(path, formats)
  return model, _names_beside(path, int(model.output_shape[-1]))


def load_ensemble(model_paths: ModelPaths) -> LoadedModel:
  """Several model files as one model: the mean of their probabilities. One path: `load` itself.

  Each member is read by `load` (the kinds may differ). The members must name the same classes in
  the same order (or all name none and have as many outputs).

  Returns:
    A LoadedModel whose `source` lists the members' files, comma-separated.

  Raises:
    errors.MissingFileError: a member does not exist.
    errors.UnusableModelError: a member `load` refuses, or one whose classes differ from the first
      member's (naming that file and both class lists).
    errors.ConfigError: no path.
  """
  paths = model_path_list(model_paths)
  loaded = [load(path) for path in paths]
  if len(loaded) == 1:
    return loaded[0]
  _check_same_classes([(m.source, m.label_names, m.num_classes) for m in loaded])
  predict_fns = [m.predict_fn for m in loaded]

  def predict_fn(images):
    return tf.add_n([tf.cast(fn(images), tf.float32) for fn in predict_fns]) / len(predict_fns)

  first = loaded[0]
  return LoadedModel(predict_fn, first.num_classes, first.label_names,
                     MODEL_PATHS_SEPARATOR.join(m.source for m in loaded))


def load_keras_models(model_paths: ModelPaths
                      ) -> tuple[list[keras.Model], tuple[str, ...] | None]:
  """`.keras` files (an ensemble's members, or one network) as Keras networks, and their class
  names (`load_keras_model`), which must agree as in `load_ensemble`.

  Raises:
    errors.MissingFileError: a file does not exist.
    errors.UnusableModelError: as `load_keras_model`, or members whose classes differ.
    errors.ConfigError: no path.
  """
  paths = model_path_list(model_paths)
  loaded = [(path, *load_keras_model(path)) for path in paths]
  _check_same_classes([(str(path), names, int(net.output_shape[-1]))
                       for path, net, names in loaded])
  return [net for _, net, _ in loaded], loaded[0][2]


def model_path_list(model_paths: ModelPaths) -> list[str | os.PathLike]:
  """One path or several as a list.

  Raises:
    errors.ConfigError: no path.
  """
  paths = [model_paths] if isinstance(model_paths, (str, os.PathLike)) else list(model_paths)
  if not paths:
    raise errors.ConfigError("No model path given: pass --model_path=FILE (or FILE,FILE,... for "
                             "an ensemble).")
  return paths


def _check_same_classes(members: Sequence[tuple[str, tuple[str, ...] | None, int]]) -> None:
  """Refuses ensemble members (source, label names, class count) whose classes differ from the
  first member's."""

  def described(names: tuple[str, ...] | None, num_classes: int) -> str:
    return (f"({', '.join(names)})" if names is not None
            else f"{num_classes} unnamed classes (no {LABELS_ASSET} beside it)")

  first_source, first_names, first_count = members[0]
  for source, names, num_classes in members[1:]:
    if (names, num_classes) != (first_names, first_count):
      raise errors.UnusableModelError(
          f"Ensemble member {source} predicts {described(names, num_classes)}, but {first_source} "
          f"predicts {described(first_names, first_count)}: the members of an ensemble must "
          "predict the same classes in the same order.")


def _existing(model_path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(model_path)
  if not path.exists():
    raise errors.MissingFileError(f"Model {path} does not exist.")
  return path


def label_names_beside(model_path: str | os.PathLike) -> tuple[str, ...] | None:
  """The class names of the labels.txt beside a `.keras` or `.tflite` file, or None."""
  names_file = pathlib.Path(model_path).parent / LABELS_ASSET
  return read_label_names(names_file) if names_file.exists() else None


def _names_beside(path: pathlib.Path, num_classes: int) -> tuple[str, ...] | None:
  """The class names of the labels.txt beside a model file, checked against its outputs."""
  names = label_names_beside(path)
  if names is not None and len(names) != num_classes:
    raise errors.UnusableModelError(
        f"{path.parent / LABELS_ASSET} names {len(names)} classes {names}, but {path} has "
        f"{num_classes} outputs.")
  return names


def write_label_names(folder: str | os.PathLike, names: Sequence[str]) -> pathlib.Path:
  """Writes `folder/labels.txt`: the class names in output order, one per line."""
  path = pathlib.Path(folder) / LABELS_ASSET
  path.write_text("".join(f"{name}\n" for name in names))
  return path


def read_label_names(path: str | os.PathLike) -> tuple[str, ...]:
  """The class names of a labels.txt written by `write_label_names`."""
  return tuple(line for line in pathlib.Path(path).read_text().splitlines() if line)


def saved_model_label_names(path: str | os.PathLike) -> tuple[str, ...]:
  """The class names of a SavedModel written by `export.export_saved_model`."""
  return read_label_names(pathlib.Path(path) / "assets" / LABELS_ASSET)


def _load_saved_model(path: pathlib.Path) -> LoadedModel:
  if not any((path / name).is_file() for name in SAVED_MODEL_FILES):
    raise errors.UnusableModelError(f"{path} is a folder but not a SavedModel (it has no "
                                    f"{SAVED_MODEL_FILES[0]}); expected {FORMATS}.")
  loaded = tf.saved_model.load(str(path))
  if SERVING_KEY not in loaded.signatures:
    raise errors.UnusableModelError(f"SavedModel {path} has no {SERVING_KEY!r} signature "
                                    f"(it has {sorted(loaded.signatures)}).")
  serve = loaded.signatures[SERVING_KEY]
  inputs = serve.structured_input_signature[1]
  if len(inputs) != 1 or next(iter(inputs.values())).dtype != tf.uint8:
    raise errors.UnusableModelError(
        f"SavedModel {path}: {SERVING_KEY} must take one uint8 image input, it takes {inputs}.")
  input_key = next(iter(inputs))
  outputs = serve.structured_outputs
  if PROBABILITIES_KEY not in outputs:
    raise errors.UnusableModelError(f"SavedModel {path}: {SERVING_KEY} has no "
                                    f"{PROBABILITIES_KEY!r} output (it has {sorted(outputs)}).")
  num_classes = outputs[PROBABILITIES_KEY].shape[-1]
  names_file = path / "assets" / LABELS_ASSET
  names = saved_model_label_names(path) if names_file.exists() else None

  def predict_fn(images: tf.Tensor) -> tf.Tensor:
    # Through `loaded`, which must stay alive: the signature alone does not keep its variables.
    return loaded.signatures[SERVING_KEY](**{input_key: images})[PROBABILITIES_KEY]

  return LoadedModel(predict_fn, int(num_classes), names, str(path))


def _load_tflite(path: pathlib.Path) -> LoadedModel:
  try:
    interpreter = litert.Interpreter(model_path=os.fspath(path))
  except ValueError as e:  # The runtime's "not a valid Flatbuffer" and the like.
    raise errors.UnusableModelError(f"{path} is not a TFLite model ({e}); expected "
                                    f"{FORMATS}.") from None
  if SERVING_KEY not in interpreter.get_signature_list():
    raise errors.UnusableModelError(f"TFLite model {path} has no {SERVING_KEY!r} signature.")
  runner = interpreter.get_signature_runner(SERVING_KEY)
  num_classes = int(runner.get_output_details()[PROBABILITIES_KEY]["shape"][-1])

  def predict_fn(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.uint8)
    return np.asarray(runner(**{IMAGES_KEY: images})[PROBABILITIES_KEY], dtype=np.float32)

  return LoadedModel(predict_fn, num_classes, None, str(path))

