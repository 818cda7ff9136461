"""Per-emotion evaluation of a trained model on a dataset split.

Prints the table (per true emotion: images, accuracy, precision, F1, mean confidence in the true
emotion, and how its images were predicted; then the totals) and writes it as md/json/csv:

  python eval_main.py --model_path=/tmp/emotion/model.keras --data_dir=data/tfds \
      --dataset=fer2013/fer7 --split=test --tta=ten-crop --output=/tmp/report.md

Without --dataset, the data is the dataset the model's run trained on (train_main's manifest.json
beside the model), else the default dataset of the model's own classes (its labels.txt): a seed6
model on generated_faces/seed6. A seed6 model on fer7 data (fear reported as not covered), to
compare the schemes on the same images:

  python eval_main.py --model_path=seed6/model.keras --dataset=fer2013/fer7

An ensemble (the mean of its members' probabilities), e.g. the members of train_main
--ensemble_members=2:

  python eval_main.py --model_path=run/member_0/model.keras,run/member_1/model.keras \
      --dataset=fer2013/fer7 --split=validation --tta=flip
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

from absl import flags

from emotion_tfds import labels
from emotion_tfds import tta
from emotion_tfds.data import datasets
from emotion_tfds.serve import evaluate

_MODEL_PATH = flags.DEFINE_list(
    "model_path", None,
    "Trained model: a .keras file or a SavedModel directory; several, comma-separated, are "
    "evaluated as one ensemble (the mean of their probabilities; they must predict the same "
    "classes).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "TFDS data_dir holding the built dataset (default: $TFDS_DATA_DIR or ./data/tfds, like "
    "train_main).")
_DATASET = flags.DEFINE_string(
    "dataset", None, "TFDS dataset and config whose labels are the truth. Default: the dataset "
    "the model's run trained on (its manifest.json), else the default dataset of the model's "
    "classes (--model_scheme, else its labels.txt; e.g. generated_faces/seed6 for a seed6 model), "
    "else train_main's --dataset.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per batch.", lower_bound=1)
_TTA = flags.DEFINE_enum(
    "tta", "none", tta.TTA_MODES,
    "Test-time augmentation, probabilities averaged: none; flip (image + mirror); ten-crop (4 "
    "corner and center 40x40 crops and their mirrors, each resized back to 48x48).")
_MODEL_SCHEME = flags.DEFINE_enum(
    "model_scheme", None, sorted(labels.SCHEMES),
    "Label scheme of the model's outputs (default: its labels.txt, else the dataset's); labels "
    "are mapped to the dataset's by emotion name.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Report file; its suffix picks the format: .md, .json or .csv.")
_LOGDIR = flags.DEFINE_string(
    "logdir", None, "TensorBoard folder to write the table (text) and confusion matrix (image) to.")
_CONFUSION_PNG = flags.DEFINE_string(
    "confusion_png", None, "PNG file for the row-normalised confusion-matrix picture.")


def main(argv: list[str]) -> None:
  del argv
  evaluate.evaluate_file(
      model_path=_MODEL_PATH.value, dataset=_DATASET.value,
      data_dir=_DATA_DIR.value or datasets.default_data_dir(), split=_SPLIT.value,
      batch_size=_BATCH_SIZE.value, tta=_TTA.value, model_scheme=_MODEL_SCHEME.value,
      output=_OUTPUT.value, logdir=_LOGDIR.value, confusion_png=_CONFUSION_PNG.value)


if __name__ == "__main__":
  flags.mark_flag_as_required("model_path")
  quiet.run(main)
