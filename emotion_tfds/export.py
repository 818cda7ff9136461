"""Exports a trained Keras model as a SavedModel and as TFLite models, with the preprocessing inside.

Every exported model takes **uint8** images and applies `preprocess.to_model_input` (or
`preprocess.photo_to_model_input`) in its own graph, so a serving client or a mobile app cannot get
the grayscale conversion, the resizing or the 0..1 scaling wrong.

SavedModel signatures:
  serving_default: images uint8 [B, 48, 48, 1] -> probabilities float32 [B, C], label int64 [B].
  serve_photos:    images uint8 [B, H, W, C], any H and W, C = 1 (gray) or 3 (RGB), already cropped
                   to the face -> the same outputs.
  label_names:     no input -> label_names string [C], the class names in output order.
The class names are also written as the asset `assets/labels.txt`, one per line.

TFLite models (converted from the `serving_default` signature, same uint8 input and outputs):
  float: no quantisation; "dynamic": dynamic-range (int8 weights); "int8": full integer
  quantisation of weights and activations calibrated on a representative set of training images.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from emotion_tfds import labels
from emotion_tfds import preprocess

SERVING_KEY = "serving_default"
PHOTOS_KEY = "serve_photos"
LABEL_NAMES_KEY = "label_names"
IMAGES_KEY = "images"
PROBABILITIES_KEY = "probabilities"
LABEL_KEY = "label"
LABELS_ASSET = "labels.txt"
QUANTIZATIONS = ("float", "dynamic", "int8")


def default_label_names(num_classes: int) -> tuple[str, ...]:
  """The scheme whose size is `num_classes` (7 -> fer7, 6 -> seed6).

  Raises:
    ValueError: when no scheme has `num_classes` emotions.
  """
  for names in labels.SCHEMES.values():
    if len(names) == num_classes:
      return names
  raise ValueError(
      f"No label scheme has {num_classes} classes ({ {k: len(v) for k, v in labels.SCHEMES.items()} }); "
      "pass label_names explicitly.")


class _ServingModule(tf.Module):
  """The exported object: the Keras model plus the uint8-in signatures."""

  def __init__(self, model: keras.Model, label_names: Sequence[str]):
    super().__init__()
    self.model = model
    # The underlying tf.Variables, tracked directly (as keras.export.ExportArchive does): without
    # them the TFLite converter cannot bind the captured variables and reads uninitialised ones.
    self.model_variables = [v.value for v in model.variables]
    self.labels_file = tf.saved_model.Asset(_write_labels_file(label_names))
    self._label_names = list(label_names)

  def _outputs(self, model_input: tf.Tensor) -> dict[str, tf.Tensor]:
    probabilities = tf.cast(self.model(model_input, training=False), tf.float32)
    return {
        PROBABILITIES_KEY: probabilities,
        LABEL_KEY: tf.argmax(probabilities, axis=-1, output_type=tf.int64),
    }

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, *preprocess.IMAGE_SHAPE], tf.uint8, name=IMAGES_KEY)])
  def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """uint8 [B, 48, 48, 1] face crops -> probabilities and label."""
    return self._outputs(preprocess.to_model_input(images))

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, None, None, None], tf.uint8, name=IMAGES_KEY)])
  def serve_photos(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """uint8 [B, H, W, 1 or 3] face crops of any size -> probabilities and label."""
    # `photo_to_model_input` needs a static channel count; pick the branch at run time.
    model_input = tf.cond(
        tf.equal(tf.shape(images)[-1], 3),
        lambda: preprocess.photo_to_model_input(tf.ensure_shape(images, [None, None, None, 3])),
        lambda: preprocess.photo_to_model_input(tf.ensure_shape(images, [None, None, None, 1])))
    return self._outputs(model_input)

  @tf.function(autograph=False, input_signature=[])
  def label_names(self) -> dict[str, tf.Tensor]:
    """The class names, in the order of the probabilities."""
    return {LABEL_NAMES_KEY: tf.constant(self._label_names, dtype=tf.string)}


def _write_labels_file(label_names: Sequence[str]) -> str:
  """Writes the class names to a temporary labels.txt (copied into the SavedModel's assets)."""
  folder = tempfile.mkdtemp(prefix="emotion_tfds_labels_")
  path = os.path.join(folder, LABELS_ASSET)
  with open(path, "w") as f:
    f.write("".join(f"{name}\n" for name in label_names))
  return path


def export_saved_model(model: keras.Model, path: str | os.PathLike,
                       label_names: Sequence[str] | None = None) -> None:
  """Writes `model` as a SavedModel with uint8-input signatures (see the module docstring).

  Args:
    model: a built Keras model taking float32 [B, 48, 48, 1] in [0, 1] (the output of
      `preprocess.to_model_input`) and returning class probabilities [B, C].
    path: the SavedModel directory to write.
    label_names: class names in output order; by default the scheme with C classes.

  Raises:
    ValueError: when `label_names` does not match the model's number of classes.
  """
  num_classes = int(model.output_shape[-1])
  names = tuple(label_names) if label_names is not None else default_label_names(num_classes)
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} label names {names} for a model with {num_classes} outputs.")
  module = _ServingModule(model, names)
  signatures = {
      SERVING_KEY: module.serve,
      PHOTOS_KEY: module.serve_photos,
      LABEL_NAMES_KEY: module.label_names,
  }
  tf.saved_model.save(module, os.fspath(path), signatures=signatures)


def saved_model_label_names(path: str | os.PathLike) -> tuple[str, ...]:
  """Reads the class names from a SavedModel written by `export_saved_model`."""
  labels_path = pathlib.Path(path) / "assets" / LABELS_ASSET
  if not labels_path.exists():
    raise FileNotFoundError(f"{labels_path} not found: {path} was not written by export_saved_model.")
  return tuple(line for line in labels_path.read_text().splitlines() if line)


def export_tflite(saved_model_dir: str | os.PathLike, path: str | os.PathLike,
                  quantization: str = "float",
                  representative_images: Iterable[np.ndarray] | None = None) -> int:
  """Converts the `serving_default` signature of a SavedModel to a TFLite file.

  The TFLite model keeps the uint8 [B, 48, 48, 1] input (the 0..1 scaling is inside) and the
  float32 `probabilities` and int64 `label` outputs.

  Args:
    saved_model_dir: a SavedModel written by `export_saved_model`.
    path: the .tflite file to write.
    quantization: "float" (none), "dynamic" (dynamic-range, int8 weights) or "int8" (int8 weights
      and activations, calibrated on `representative_images`).
    representative_images: for "int8": uint8 batches [b, 48, 48, 1] of training images.

  Returns:
    The size of the written file in bytes.

  Raises:
    ValueError: for an unknown `quantization`, or "int8" without representative images.
  """
  if quantization not in QUANTIZATIONS:
    raise ValueError(f"Unknown quantization {quantization!r}; expected one of {QUANTIZATIONS}.")
  converter = tf.lite.TFLiteConverter.from_saved_model(
      os.fspath(saved_model_dir), signature_keys=[SERVING_KEY])
  if quantization in ("dynamic", "int8"):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == "int8":
    if representative_images is None:
      raise ValueError("int8 quantization needs representative_images (uint8 training batches).")
    batches = list(representative_images)
    if not batches:
      raise ValueError("representative_images is empty.")

    def representative_dataset():
      for batch in batches:
        for image in np.asarray(batch, dtype=np.uint8):
          yield {IMAGES_KEY: image[np.newaxis]}

    converter.representative_dataset = representative_dataset
  content = converter.convert()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(content)
  return len(content)


class TFLiteClassifier:
  """Runs a TFLite model written by `export_tflite` on uint8 batches."""

  def __init__(self, path: str | os.PathLike):
    self._interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
    self._runner = self._interpreter.get_signature_runner(SERVING_KEY)

  def predict(self, images: np.ndarray) -> np.ndarray:
    """uint8 [B, 48, 48, 1] -> float32 probabilities [B, C]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != preprocess.IMAGE_SHAPE:
      raise ValueError(
          f"Expected uint8 images [B, 48, 48, 1], got {images.dtype} {images.shape}.")
    return np.asarray(self._runner(**{IMAGES_KEY: images})[PROBABILITIES_KEY], dtype=np.float32)
