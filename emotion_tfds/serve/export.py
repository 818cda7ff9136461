"""Exports a trained Keras model as a SavedModel and TFLite models, with the preprocessing inside.

Every exported model takes **uint8** images and applies `preprocess.network_probabilities` (after
`preprocess.photos_to_faces` for photos) in its own graph, so a serving client or a mobile app cannot get
the grayscale conversion, the resizing or the 0..1 scaling wrong.

SavedModel signatures:
  serving_default: images uint8 [B, 48, 48, 1] -> probabilities float32 [B, C], label int64 [B].
  serve_photos:    images uint8 [B, H, W, C], any H and W, C = 1 (gray) or 3 (RGB), already cropped
                   to the face -> the same outputs.
  label_names:     no input -> label_names string [C], the class names in output order.
The class names are also written as the asset `assets/labels.txt`, one per line, and a run's
manifest (`emotion_tfds.manifest`), when given, as `assets/manifest.json`.

TFLite models (converted from the `serving_default` signature, same uint8 input and outputs):
  float: no quantisation; "dynamic": dynamic-range (int8 weights); "int8": full integer
  quantisation of weights and activations calibrated on a representative set of training images.

An ensemble (`models.ensemble.average_networks`, what export_main makes of several `.keras` files)
is exported as one network: every file above holds all its members and averages their
probabilities in its own graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
import dataclasses
import json
import os
import pathlib
import tempfile

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

from emotion_tfds import errors
from emotion_tfds import image_spec
from emotion_tfds import manifest as manifest_lib
from emotion_tfds import preprocess
from emotion_tfds.data import datasets
from emotion_tfds.data import pipeline
from emotion_tfds.models import ensemble
from emotion_tfds.serve import loader

TFLITE_FILES = {"float": "model_float.tflite", "dynamic": "model_dynamic.tflite",
                "int8": "model_int8.tflite"}
QUANTIZATIONS = ("float", "dynamic", "int8")


def float32_model(model: keras.Model) -> keras.Model:
  """`model` itself when it computes in float32, else a float32 copy with the same weights.

  A model trained under a mixed-precision policy computes in float16/bfloat16; its exports (and the
  TFLite parity check) use float32 throughout, which every serving runtime and TFLite support.
  The networks nested in `model` (an ensemble's members) are converted too.
  """
  if all(layer.dtype_policy.name == "float32" for layer in _leaf_layers(model)):
    return model

  def clone_layer(layer):
    if isinstance(layer, keras.Model):
      return float32_model(layer)
    config = layer.get_config()
    config["dtype"] = "float32"
    return layer.__class__.from_config(config)

  clone = keras.models.clone_model(model, clone_function=clone_layer)
  clone.set_weights(model.get_weights())
  return clone


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
  """The layers of `model`, with those of its nested networks in place of the networks."""
  return [leaf for layer in model.layers
          for leaf in (_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])]


def save_trained(net: keras.Model, write_dir: pathlib.Path, label_names: Sequence[str],
                 announce: bool = True, manifest: dict | None = None) -> None:
  """Writes a trained network as `write_dir/model.keras` with its class names (labels.txt) and the
  uint8-input SavedModel beside it (with `manifest` in its assets)."""
  path = write_dir / loader.MODEL_FILE
  net.save(path)
  loader.write_label_names(write_dir, label_names)
  export_saved_model(net, write_dir / loader.SAVED_MODEL_DIR, label_names=label_names,
                     manifest=manifest)
  if announce:
    print(f"Saved {path} and {write_dir / loader.SAVED_MODEL_DIR}", flush=True)


class _ServingModule(tf.Module):
  """The exported object: the Keras model plus the uint8-in signatures."""

  def __init__(self, model: keras.Model, label_names: Sequence[str], labels_file: str,
               manifest_file: str | None = None):
    super().__init__()
    self.model = model
    # The underlying tf.Variables, tracked directly (as keras.export.ExportArchive does): without
    # them the TFLite converter cannot bind the captured variables and reads uninitialised ones.
    self.model_variables = [v.value for v in model.variables]
    self.labels_file = tf.saved_model.Asset(labels_file)
    if manifest_file is not None:
      self.manifest_file = tf.saved_model.Asset(manifest_file)
    self._label_names = list(label_names)

  def _outputs(self, probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
    probabilities = tf.cast(probabilities, tf.float32)
    return {
        loader.PROBABILITIES_KEY: probabilities,
        loader.LABEL_KEY: tf.argmax(probabilities, axis=-1, output_type=tf.int64),
    }

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, *image_spec.IMAGE_SHAPE], tf.uint8, name=loader.IMAGES_KEY)])
  def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """uint8 [B, 48, 48, 1] face crops -> probabilities and label."""
    return self._outputs(preprocess.network_probabilities(self.model, images))

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, None, None, None], tf.uint8, name=loader.IMAGES_KEY)])
  def serve_photos(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """uint8 [B, H, W, 1 or 3] face crops of any size -> probabilities and label."""
    # `photos_to_faces` needs a static channel count; pick the branch at run time.
    faces = tf.cond(
        tf.equal(tf.shape(images)[-1], 3),
        lambda: preprocess.photos_to_faces(tf.ensure_shape(images, [None, None, None, 3])),
        lambda: preprocess.photos_to_faces(tf.ensure_shape(images, [None, None, None, 1])))
    return self._outputs(preprocess.network_probabilities(self.model, faces))

  @tf.function(autograph=False, input_signature=[])
  def label_names(self) -> dict[str, tf.Tensor]:
    """The class names, in the order of the probabilities."""
    return {loader.LABEL_NAMES_KEY: tf.constant(self._label_names, dtype=tf.string)}


def export_saved_model(model: keras.Model, path: str | os.PathLike,
                       label_names: Sequence[str], manifest: dict | None = None) -> None:
  """Writes `model` as a SavedModel with uint8-input signatures (see the module docstring).

  Args:
    model: a built Keras model taking float32 [B, 48, 48, 1] in [0, 1] (the output of
      `preprocess.to_model_input`) and returning class probabilities [B, C]. A mixed-precision
      model is exported as its `float32_model`.
    path: the SavedModel directory to write.
    label_names: class names in output order.
    manifest: the run's manifest, written as the asset `assets/manifest.json` (none if None).

  Raises:
    ValueError: when `label_names` does not match the model's number of classes.
  """
  num_classes = int(model.output_shape[-1])
  names = tuple(label_names)
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} label names {names} for a model with {num_classes} outputs.")
  with tempfile.TemporaryDirectory() as tmp:
    labels_file = loader.write_label_names(tmp, names)  # Copied into the SavedModel's assets/.
    manifest_file = None
    if manifest is not None:
      manifest_file = os.fspath(manifest_lib.write(pathlib.Path(tmp) / manifest_lib.MANIFEST_FILE,
                                                   manifest))
    module = _ServingModule(float32_model(model), names, os.fspath(labels_file), manifest_file)
    signatures = {
        loader.SERVING_KEY: module.serve,
        loader.PHOTOS_KEY: module.serve_photos,
        loader.LABEL_NAMES_KEY: module.label_names,
    }
    tf.saved_model.save(module, os.fspath(path), signatures=signatures)


def export_tflite(saved_model_dir: str | os.PathLike, path: str | os.PathLike,
                  quantization: str = "float",
                  representative_images: Iterable[np.ndarray] | None = None) -> int:
  """Converts the `serving_default` signature of a SavedModel to a TFLite file.

  The TFLite model keeps the uint8 [B, 48, 48, 1] input (the 0..1 scaling is inside) and the
  float32 `probabilities` and int64 `label` outputs, with tensors named so too.

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
      os.fspath(saved_model_dir), signature_keys=[loader.SERVING_KEY])
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
          yield {loader.IMAGES_KEY: image[np.newaxis]}

    converter.representative_dataset = representative_dataset
  content = _name_signature_tensors(converter.convert())
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(content)
  return len(content)


def _name_signature_tensors(content: bytes) -> bytes:
  """The TFLite model with its signature's tensors named as the signature names them.

  The converter leaves graph names (`StatefulPartitionedCall_1:0`) on the input and output tensors;
  an app that reads the model without the signature API sees `images`, `probabilities` and `label`.
  """
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
  for signature in model.signatureDefs:
    tensors = model.subgraphs[signature.subgraphIndex].tensors
    for end in (*signature.inputs, *signature.outputs):
      tensors[end.tensorIndex].name = end.name
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def export_all(model: keras.Model, out_dir: str | os.PathLike,
               representative_images: Iterable[np.ndarray],
               label_names: Sequence[str]) -> dict[str, pathlib.Path]:
  """Writes out_dir/saved_model, the float, dynamic-range and int8 TFLite models and the class
  names beside them (out_dir/labels.txt).

  Args:
    model: the trained Keras model (float32 [0, 1] input).
    out_dir: destination folder.
    representative_images: uint8 batches [b, 48, 48, 1] of training images for int8 calibration.
    label_names: class names in output order.

  Returns:
    {"saved_model": dir, "float": file, "dynamic": file, "int8": file}.
  """
  out_dir = pathlib.Path(out_dir)
  paths = {"saved_model": out_dir / loader.SAVED_MODEL_DIR}
  export_saved_model(model, paths["saved_model"], label_names)
  loader.write_label_names(out_dir, label_names)
  representative_images = list(representative_images)
  for quantization, name in TFLITE_FILES.items():
    paths[quantization] = out_dir / name
    export_tflite(paths["saved_model"], paths[quantization], quantization,
                  representative_images if quantization == "int8" else None)
  return paths


@dataclasses.dataclass(frozen=True)
class ParityReport:
  """Each exported model against the Keras model on the same labelled images.

  Attributes:
    num_examples: images compared.
    accuracy: top-1 accuracy per model ("keras", "saved_model", "float", "dynamic", "int8").
    max_abs_diff: per exported model, the largest |p_export - p_keras| over all images and classes.
    agreement: per exported model, the share of images whose top-1 class equals the Keras one.
    sizes: file size in bytes of each TFLite model.
  """
  num_examples: int
  accuracy: dict[str, float]
  max_abs_diff: dict[str, float]
  agreement: dict[str, float]
  sizes: dict[str, int]

  def to_markdown(self) -> str:
    """A markdown table, one row per model."""
    rows = ["| model | accuracy | max abs prob diff vs Keras | top-1 agreement with Keras | size |",
            "|---|---:|---:|---:|---:|"]
    for name, acc in self.accuracy.items():
      diff = f"{self.max_abs_diff[name]:.2e}" if name in self.max_abs_diff else "-"
      agree = f"{self.agreement[name]:.2%}" if name in self.agreement else "-"
      size = f"{self.sizes[name] / 1024:.0f} KiB" if name in self.sizes else "-"
      rows.append(f"| {name} | {acc:.2%} | {diff} | {agree} | {size} |")
    return "\n".join(rows) + f"\n\n({self.num_examples} images)"


def parity_report(model: keras.Model, paths: dict[str, pathlib.Path],
                  batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> ParityReport:
  """Runs the Keras model and every export of `export_all` on the same labelled batches.

  Args:
    model: the Keras model that was exported.
    paths: the result of `export_all`.
    batches: (uint8 images [b, 48, 48, 1], int labels [b]) pairs, e.g. the validation split.

  Returns:
    The comparison; the Keras model is fed `preprocess.to_model_input(images)`, the exports the
    uint8 images themselves.
  """
  serve = tf.saved_model.load(os.fspath(paths["saved_model"])).signatures[loader.SERVING_KEY]
  tflite = {q: loader.load(paths[q]) for q in QUANTIZATIONS}
  probabilities = {name: [] for name in ("keras", "saved_model", *QUANTIZATIONS)}
  all_labels = []
  for images, batch_labels in batches:
    images = np.asarray(images)
    all_labels.append(np.asarray(batch_labels))
    probabilities["keras"].append(
        np.asarray(preprocess.predict_fn(model)(images), np.float32))
    probabilities["saved_model"].append(
        serve(**{loader.IMAGES_KEY: tf.constant(images)})[loader.PROBABILITIES_KEY].numpy())
    for q, classifier in tflite.items():
      probabilities[q].append(classifier.predict(images))
  if not all_labels:
    raise ValueError("parity_report got no batches.")
  true = np.concatenate(all_labels)
  probs = {name: np.concatenate(p) for name, p in probabilities.items()}
  top1 = {name: p.argmax(axis=-1) for name, p in probs.items()}
  exported = [name for name in probs if name != "keras"]
  return ParityReport(
      num_examples=int(true.size),
      accuracy={name: float(np.mean(t == true)) for name, t in top1.items()},
      max_abs_diff={n: float(np.max(np.abs(probs[n] - probs["keras"]))) for n in exported},
      agreement={n: float(np.mean(top1[n] == top1["keras"])) for n in exported},
      sizes={q: paths[q].stat().st_size for q in QUANTIZATIONS})


def run(model_path: loader.ModelPaths, out_dir: str | os.PathLike, data_dir: str | os.PathLike,
        dataset: str, parity_split: str = "validation", num_representative: int = 500,
        batch_size: int = 256) -> ParityReport:
  """export_main: exports a `.keras` model, or the ensemble of several, with `export_all` and
  checks parity on a split.

  The int8 model is calibrated on `num_representative` shuffled training images of `dataset`; the
  report (also written to out_dir/parity.md and parity.json) compares every export with the
  (float32) Keras model on `parity_split`, for an ensemble the mean of its members' probabilities.

  Raises:
    errors.UnusableModelError: as `loader.load_keras_models` (e.g. ensemble members that predict
      different classes).
    errors.DataNotBuiltError: `dataset` is not built in `data_dir`.
    errors.ConfigError: the model's classes differ from the dataset's, or no such parity split.
  """
  networks, model_names = loader.load_keras_models(model_path)
  model = float32_model(networks[0] if len(networks) == 1 else ensemble.average_networks(networks))
  source = loader.MODEL_PATHS_SEPARATOR.join(map(str, loader.model_path_list(model_path)))
  builder = datasets.get_builder(dataset, data_dir)
  if not builder.is_prepared():
    raise errors.DataNotBuiltError(f"Dataset {dataset} is not built in {data_dir}: pass the "
                                   "--data_dir that holds it, or build it (BUILD.md).")
  if parity_split not in builder.info.splits:
    raise errors.ConfigError(f"Dataset {dataset} in {data_dir} has no split {parity_split!r} "
                             f"(--parity_split); it has {sorted(builder.info.splits)}.")
  names = datasets.label_names(builder)
  if int(model.output_shape[-1]) != len(names):
    raise errors.ConfigError(f"{source} has {model.output_shape[-1]} outputs but {dataset} has "
                             f"{len(names)} classes {names}.")
  if model_names is not None and tuple(model_names) != tuple(names):
    raise errors.ConfigError(f"{source} predicts {model_names} (its labels.txt), but {dataset} "
                             f"has {names}: export it with the dataset it was trained on.")
  # Shuffled (every emotion, not just the first rows), deterministically (the same int8 model).
  train, _ = pipeline.make_dataset(builder, "train", batch_size, training=True, seed=0,
                                   deterministic=True, cache=False)
  representative, count = [], 0
  for images, _ in train.as_numpy_iterator():
    representative.append(images[:num_representative - count])
    count += len(representative[-1])
    if count >= num_representative:
      break
  paths = export_all(model, out_dir, representative, names)
  evaluation, _ = pipeline.make_dataset(builder, parity_split, batch_size, training=False,
                                        cache=False)
  report = parity_report(model, paths, evaluation.as_numpy_iterator())
  out_dir = pathlib.Path(out_dir)
  (out_dir / "parity.md").write_text(report.to_markdown() + "\n")
  (out_dir / "parity.json").write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
  return report
