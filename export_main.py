"""Exports a trained model (SavedModel + float, dynamic-range and int8 TFLite) and checks parity.

Writes <out_dir>/saved_model, model_float.tflite, model_dynamic.tflite and model_int8.tflite (all
take uint8 images; the preprocessing is inside each), calibrating int8 on training images of the
dataset, then prints a markdown table comparing every export with the Keras model on a split
(default: validation), also written to <out_dir>/parity.md and parity.json:

  python export_main.py --model_path=runs/default/model.keras --out_dir=runs/default/export \
      --data_dir=data/tfds --dataset=fer2013/seed6

Several comma-separated .keras files are exported as one ensemble: the SavedModel and each TFLite
file hold all the members and average their probabilities; the parity check compares them with the
mean of the Keras members' probabilities.
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

from absl import flags

from emotion_tfds import labels
from emotion_tfds.data import datasets
from emotion_tfds.serve import evaluate
from emotion_tfds.serve import export
from emotion_tfds.serve import loader

_MODEL_PATH = flags.DEFINE_list(
    "model_path", None,
    "Trained Keras model (.keras); several, comma-separated, are exported as one ensemble (the "
    "mean of their probabilities; they must predict the same classes).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for the SavedModel and TFLite files.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir holding the built dataset (default: $TFDS_DATA_DIR or "
    "./data/tfds, like train_main).")
_DATASET = flags.DEFINE_string(
    "dataset", None, "TFDS dataset/config the model was trained on. Default: the one its "
    "manifest.json names, else the default dataset of the model's classes (its labels.txt; e.g. "
    "generated_faces/seed6 for a seed6 model), else train_main's --dataset.")
_PARITY_SPLIT = flags.DEFINE_string("parity_split", "validation", "Split of the parity check.")
_NUM_REPRESENTATIVE = flags.DEFINE_integer(
    "num_representative", 500, "Training images for the int8 calibration.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per batch.", lower_bound=1)


def main(argv: list[str]) -> None:
  del argv
  first_member = loader.model_path_list(_MODEL_PATH.value)[0]
  dataset = _DATASET.value or evaluate.default_dataset(
      first_member, labels.scheme_of(loader.label_names_beside(first_member)))
  report = export.run(_MODEL_PATH.value, _OUT_DIR.value,
                      _DATA_DIR.value or datasets.default_data_dir(), dataset,
                      _PARITY_SPLIT.value, _NUM_REPRESENTATIVE.value, _BATCH_SIZE.value)
  print(f"Exports in {_OUT_DIR.value}; parity on {dataset} {_PARITY_SPLIT.value}:")
  print(report.to_markdown())


if __name__ == "__main__":
  flags.mark_flags_as_required(["model_path", "out_dir"])
  quiet.run(main)
