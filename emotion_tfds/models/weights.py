"""Pretrained weights: `.keras` models and Keras 2 `.h5` files (e.g. the Emotion-detection release).

Keras 3 cannot always read Keras 2 HDF5 files, so `.h5` files are read with h5py: the weights of the
layers that have any are taken in file order (from the `model_weights` group of a full-model save, or
the root of a `save_weights` file) and assigned, shape-checked, to the weighted layers of a freshly
built model in model order.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Sequence

import h5py
import keras
import numpy as np

from emotion_tfds import labels
from emotion_tfds.models import base_cnn
from emotion_tfds.models import heads


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
    ValueError: unknown suffix, `label_names` inconsistent with `num_classes`, or an `.h5` file whose
      layers do not match the architecture (the message names the file and the layer).
  """
  path = pathlib.Path(path)
  if label_names is not None and len(label_names) != num_classes:
    raise ValueError(f"label_names {tuple(label_names)} has {len(label_names)} emotions, but "
                     f"num_classes={num_classes}.")
  if path.suffix == ".keras":
    model = keras.models.load_model(path, compile=False)
  elif path.suffix == ".h5":
    model = _load_keras2_h5(path, build_fn)
    if label_names is not None and (
        model.output_shape[-1] == len(labels.EMOTION_DETECTION_RELEASE)):
      model = _reorder_head(model, labels.release_to(tuple(label_names)), num_classes)
  else:
    raise ValueError(f"{path}: expected a .keras or .h5 file.")
  if model.output_shape[-1] != num_classes:
    model = heads.replace_head(model, num_classes)
  return model


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
  with h5py.File(path, "r") as f:
    root = f["model_weights"] if "model_weights" in f else f
    layer_names = _attr_strings(root, "layer_names")
    if layer_names is None:
      raise ValueError(f"{path}: not a Keras 2 HDF5 model or weights file (no 'layer_names' "
                       "attribute at the root or in 'model_weights').")
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
    raise ValueError(f"{path}: the file holds no layer weights.")
  num_classes = file_layers[-1][1][-1][1].shape[-1]
  model = build_fn(num_classes)
  model_layers = [layer for layer in model.layers if layer.weights]
  if len(model_layers) != len(file_layers):
    raise ValueError(
        f"{path}: the file has {len(file_layers)} layers with weights "
        f"({', '.join(n for n, _ in file_layers)}) but model {model.name!r} has {len(model_layers)} "
        f"({', '.join(layer.name for layer in model_layers)}).")
  for layer, (file_layer, file_weights) in zip(model_layers, file_layers):
    expected = [tuple(w.shape) for w in layer.weights]
    found = [a.shape for _, a in file_weights]
    if expected != found:
      raise ValueError(
          f"{path}: layer {file_layer!r} has weights "
          f"{[(n, a.shape) for n, a in file_weights]} but model layer {layer.name!r} expects shapes "
          f"{expected}.")
    layer.set_weights([a for _, a in file_weights])
  return model
