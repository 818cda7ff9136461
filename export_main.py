"""Exports a trained model (SavedModel + float, dynamic-range and int8 TFLite) and checks parity.

Writes <out_dir>/saved_model, model_float.tflite, model_dynamic.tflite and model_int8.tflite (all
take uint8 images; the preprocessing is inside each), calibrating int8 on training images of the
dataset, then prints a markdown table comparing every export with the Keras model on a split
(default: validation), and writes it to <out_dir>/parity.md and parity.json.

Run:
  python export_main.py --model_path=/tmp/emotion_run/model.keras --out_dir=/tmp/emotion_export \
      --data_dir=/tmp/emotion_data --dataset=fer2013/fer7
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from absl import app
from absl import flags
import keras

from emotion_tfds import datasets
from emotion_tfds import export
from emotion_tfds import pipeline

_MODEL_PATH = flags.DEFINE_string("model_path", None, "Trained Keras model (.keras).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for the SavedModel and TFLite files.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding the built dataset.")
_DATASET = flags.DEFINE_string(
    "dataset", "fer2013/fer7", "TFDS dataset/config the model was trained on (its label scheme).")
_PARITY_SPLIT = flags.DEFINE_string("parity_split", "validation", "Split for the parity check.")
_NUM_REPRESENTATIVE = flags.DEFINE_integer(
    "num_representative", 500, "Training images for int8 calibration.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("export_batch_size", 256, "Batch size of the parity run.",
                                   lower_bound=1)


def run(model_path: str, out_dir: str, data_dir: str, dataset: str,
        parity_split: str = "validation", num_representative: int = 500,
        batch_size: int = 256) -> export.ParityReport:
  """Exports `model_path` into `out_dir` and returns (and writes) the parity report.

  Raises:
    ValueError: when the model's number of classes differs from the dataset's.
  """
  model = export.float32_model(keras.models.load_model(model_path, compile=False))
  builder = datasets.get_builder(dataset, data_dir)
  names = datasets.label_names(builder)
  if int(model.output_shape[-1]) != len(names):
    raise ValueError(f"{model_path} has {model.output_shape[-1]} outputs but {dataset} has "
                     f"{len(names)} classes {names}.")
  train, _ = pipeline.make_dataset(builder, "train", batch_size, training=True, seed=0)
  representative, count = [], 0  # Shuffled training images: every emotion, not the first rows.
  for images, _ in train.as_numpy_iterator():
    representative.append(images[:num_representative - count])
    count += len(representative[-1])
    if count >= num_representative:
      break
  paths = export.export_all(model, out_dir, representative, names)
  evaluation, _ = pipeline.make_dataset(builder, parity_split, batch_size, training=False)
  report = export.parity_report(model, paths, evaluation.as_numpy_iterator())
  out = pathlib.Path(out_dir)
  (out / "parity.md").write_text(report.to_markdown() + "\n")
  (out / "parity.json").write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
  return report


def main(argv: list[str]) -> None:
  del argv
  report = run(_MODEL_PATH.value, _OUT_DIR.value, _DATA_DIR.value, _DATASET.value,
               _PARITY_SPLIT.value, _NUM_REPRESENTATIVE.value, _BATCH_SIZE.value)
  print(f"Exports in {_OUT_DIR.value}; parity on {_DATASET.value} {_PARITY_SPLIT.value}:")
  print(report.to_markdown())


if __name__ == "__main__":
  flags.mark_flags_as_required(["model_path", "out_dir", "data_dir"])
  app.run(main)
