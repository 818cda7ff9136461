"""Pretrained weights: `.keras` models and Keras 2 `.h5` files (e.g. the Emotion-detection release).

Keras 3 cannot always read Keras 2 HDF5 files, so `.h5` files are read with h5py: the weights of the
layers that have any are taken in file order (from the `model_weights` group of a full-model save, or
the root of a `save_weights` file) and assigned, shape-checked, to the weighted layers of a freshly
built model in model order.

A `.keras` model need not follow the project's layer names (e.g. a plain `Sequential` of a user's
script): its classifier is found by structure, as the last layer when that is a Dense with a softmax
or linear (logits) activation, or a Dense followed by a softmax layer, and it becomes the
"predictions" head of `heads`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import os
import pathlib
import zipfile

import h5py
import keras
import numpy as np

from emotion_tfds import errors
from emotion_tfds import image_spec
from emotion_tfds import labels
from emotion_tfds.models import base_cnn
from emotion_tfds.models import heads

PRETRAINED_FORMATS = "a .keras model or a Keras 2 .h5 model or weights file"
_KERAS_CONFIG = "config.json"  # In every .keras archive.


def load_pretrained(path: str | os.PathLike, num_classes: int,
                    label_names: Sequence[str] | None = None,
                    build_fn: Callable[..., keras.Model] = base_cnn.build_base_cnn) -> keras.Model:
  """Loads a pretrained model and fits its head to `num_classes`.

  A `.h5` file with 7 classes is taken to be in the Emotion-detection release order
  (`labels.EMOTION_DETECTION_RELEASE`). When `label_names` (the target dataset's ClassLabel names)
  are given, such a head is kept and its columns are moved to those names' order by name (emotions
  the target lacks, e.g. fear for seed6, dropped). In every other case a head whose class count
  differs from `num_classes` is replaced by a new one (`heads.replace_head`).

  Args:
    path: a `.keras` model, or a Keras 2 `.h5` full model or weights file.
    num_classes: classes of the returned model's head.
    label_names: the emotions of the returned model's head, in order; `num_classes` of them.
    build_fn: builds the architecture of a `.h5` file: `build_fn(num_classes)`.

  Returns:
    The model, uncompiled.

  Raises:
    ValueError: `label_names` inconsistent with `num_classes`.
    errors.MissingFileError: `path` does not exist.
    errors.UnusableModelError: unknown suffix, a file that is not a model of its suffix, a model
      that cannot be a 48x48x1 classifier, or an `.h5` file whose layers do not match the
      architecture (the message names the file and the reason).
  """
  path = pathlib.Path(path)
  if label_names is not None and len(label_names) != num_classes:
    raise ValueError(f"label_names {tuple(label_names)} has {len(label_names)} emotions, but "
                     f"num_classes={num_classes}.")
  if path.suffix not in (".keras", ".h5"):
    raise errors.UnusableModelError(f"{path}: expected {PRETRAINED_FORMATS}.")
  if not path.is_file():
    raise errors.MissingFileError(f"{path}: no such model file.")
  if path.suffix == ".keras":
    model = with_predictions_head(load_keras_file(path, PRETRAINED_FORMATS), path)
  else:
    model = _load_keras2_h5(path, build_fn)
    if label_names is not None and (
        model.output_shape[-1] == len(labels.EMOTION_DETECTION_RELEASE)):
      model = _reorder_head(model, labels.release_to(tuple(label_names)), num_classes)
  if model.output_shape[-1] != num_classes:
    model = heads.replace_head(model, num_classes)
  return model


def load_keras_file(path: pathlib.Path, formats: str) -> keras.Model:
  """The model of a `.keras` file, uncompiled.

  Raises:
    errors.UnusableModelError: the file is not a Keras model archive; the message names the file
      and `formats`, what the caller reads.
  """
  if not zipfile.is_zipfile(path):
    raise errors.UnusableModelError(
        f"{path} is not a Keras model (a .keras file is the zip archive that Keras 3's model.save "
        f"writes); expected {formats}.")
  with zipfile.ZipFile(path) as archive:
    if _KERAS_CONFIG not in archive.namelist():
      raise errors.UnusableModelError(
          f"{path} is a zip archive but not a Keras model (it has no {_KERAS_CONFIG}); expected "
          f"{formats}.")
  return keras.models.load_model(path, compile=False)


def _classifier_of(model: keras.Model, path: pathlib.Path) -> keras.layers.Dense:
  """The Dense whose output (maybe through a final softmax layer) is `model`'s output."""
  last = model.layers[-1]
  activation = last.get_config().get("activation")
  if isinstance(last, keras.layers.Softmax) or (
      isinstance(last, keras.layers.Activation) and activation == "softmax"):
    if len(model.layers) < 2 or not isinstance(model.layers[-2], keras.layers.Dense):
      raise errors.UnusableModelError(
          f"{path}: its final softmax {last.name!r} does not follow a Dense layer, so the model "
          "has no classifier to fine-tune.")
    dense, activation = model.layers[-2], model.layers[-2].get_config()["activation"]
    if activation != "linear":
      raise errors.UnusableModelError(
          f"{path}: Dense {dense.name!r} has activation {activation!r} before the final softmax; "
          "expected logits (a linear Dense).")
    return dense
  if not isinstance(last, keras.layers.Dense):
    raise errors.UnusableModelError(
        f"{path}: its last layer {last.name!r} is a {type(last).__name__}; expected a Dense "
        "classifier (softmax or logits), optionally followed by a softmax layer.")
  if activation not in ("softmax", "linear"):
    raise errors.UnusableModelError(
        f"{path}: its last layer, Dense {last.name!r}, has activation {activation!r}; expected "
        "'softmax' or logits ('linear').")
  return last


def with_predictions_head(model: keras.Model, path: pathlib.Path) -> keras.Model:
  """`model` as a functional model whose classifier is the float32 softmax Dense "predictions".

  The project's own models are returned unchanged. Any other single-input model of 48x48x1 images
  whose classifier `_classifier_of` finds gets a "predictions" Dense with that classifier's kernel
  and bias (softmax of its logits when it had none), on the same base layers.

  Raises:
    errors.UnusableModelError: the model cannot be used; the message names `path` and the reason.
  """
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise errors.UnusableModelError(
        f"{path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
        "expected one image input and one class output.")
  if tuple(model.inputs[0].shape[1:]) != image_spec.IMAGE_SHAPE:
    raise errors.UnusableModelError(
        f"{path}: the model takes inputs of shape {tuple(model.inputs[0].shape[1:])}; expected "
        f"{image_spec.IMAGE_SHAPE} (48x48 grayscale faces).")
  if model.layers[-1].name == heads.PREDICTIONS:
    return model
  dense = _classifier_of(model, path)
  predictions = keras.layers.Dense(dense.units, activation="softmax", use_bias=dense.use_bias,
                                   dtype="float32", name=heads.PREDICTIONS)
  outputs = predictions(dense.input)
  predictions.set_weights(dense.get_weights())
  return keras.Model(model.inputs, outputs, name=model.name)


def _reorder_head(model: keras.Model, src_to_dst: np.ndarray, num_classes: int) -> keras.Model:
  """New head whose class `src_to_dst[i]` has the old class i's kernel column and bias (-1: dropped)."""
  kernel, bias = model.get_layer(heads.PREDICTIONS).get_weights()
  keep = src_to_dst >= 0
  new_kernel = np.zeros((kernel.shape[0], num_classes), kernel.dtype)
  new_bias = np.zeros((num_classes,), bias.dtype)
  new_kernel[:, src_to_dst[keep]] = kernel[:, keep]
  new_bias[src_to_dst[keep]] = bias[keep]
  model = heads.replace_head(model, num_classes)
  model.get_layer(heads.PREDICTIONS).set_weights([new_kernel, new_bias])
  return model


def _attr_strings(node: h5py.HLObject, name: str) -> list[str] | None:
  if name not in node.attrs:
    return None
  return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in node.attrs[name]]


def _read_keras2_weights(path: pathlib.Path) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
  """[(layer name, [(weight name, array), ...]), ...] of the weighted layers of a Keras 2 h5 file."""
  if not h5py.is_hdf5(path):
    raise errors.UnusableModelError(f"{path} is not an HDF5 file; expected {PRETRAINED_FORMATS}.")
  with h5py.File(path, "r") as f:
    root = f["model_weights"] if "model_weights" in f else f
    layer_names = _attr_strings(root, "layer_names")
    if layer_names is None:
      raise errors.UnusableModelError(
          f"{path}: not a Keras 2 HDF5 model or weights file (no 'layer_names' attribute at the "
          "root or in 'model_weights').")
    out = []
    for layer_name in layer_names:
      group = root[layer_name]
      weight_names = _attr_strings(group, "weight_names") or []
      if weight_names:
        out.append((layer_name, [(w, np.asarray(group[w])) for w in weight_names]))
    return out


def _load_keras2_h5(path: pathlib.Path, build_fn: Callable[..., keras.Model]) -> keras.Model:
  """Builds `build_fn`'s architecture with the file's class count and assigns the file's weights."""
  file_layers = _read_keras2_weights(path)
  if not file_layers:
    raise errors.UnusableModelError(f"{path}: the file holds no layer weights.")
  num_classes = file_layers[-1][1][-1][1].shape[-1]
  model = build_fn(num_classes)
  model_layers = [layer for layer in model.layers if layer.weights]
  if len(model_layers) != len(file_layers):
    raise errors.UnusableModelError(
        f"{path}: the file has {len(file_layers)} layers with weights "
        f"({', '.join(n for n, _ in file_layers)}) but model {model.name!r} has {len(model_layers)} "
        f"({', '.join(layer.name for layer in model_layers)}).")
  for layer, (file_layer, file_weights) in zip(model_layers, file_layers):
    expected = [tuple(w.shape) for w in layer.weights]
    found = [a.shape for _, a in file_weights]
    if expected != found:
      raise errors.UnusableModelError(
          f"{path}: layer {file_layer!r} has weights "
          f"{[(n, a.shape) for n, a in file_weights]} but model layer {layer.name!r} expects shapes "
          f"{expected}.")
    layer.set_weights([a for _, a in file_weights])
  return model
