"""Classifies the emotion of every face in ordinary photos.

Each face is found with OpenCV's Haar cascade, cropped and converted exactly as the training data
(`emotion_tfds.serve.predict`). Prints one line per face (file, box, top emotion and probability, all
probabilities); a photo without a face is reported as "no face", an unreadable file as an error,
and the run goes on. Exit code 0 when every file could be read, 1 otherwise.

Run:
  python predict_main.py --model_path=runs/default/saved_model \
      photo.jpg photos/ 'more/*.png' [--output=predictions.json|.csv] \
      [--annotate_dir=/tmp/annotated] [--montage=/tmp/montage.png]
`--model_path` is a SavedModel directory (train_main, export_main), a .keras or a .tflite file, or
several of them, comma-separated: an ensemble, whose probabilities are the mean of its members'.
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

from absl import flags

from emotion_tfds.serve import predict

_MODEL_PATH = flags.DEFINE_list(
    "model_path", None,
    "SavedModel directory, .keras file or .tflite file of a trained model; several, "
    "comma-separated, are one ensemble (the mean of their probabilities; they must predict the "
    "same classes).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Also write the predictions to this .json or .csv file.")
_ANNOTATE_DIR = flags.DEFINE_string(
    "annotate_dir", None, "Write copies of the photos with face boxes and labels drawn here.")
_MONTAGE = flags.DEFINE_string(
    "montage", None, "Also write one image (e.g. .png): a 2-column grid of the annotated photos.")
_LABEL_NAMES = flags.DEFINE_list(
    "label_names", None,
    "Class names in model output order. Default: the model's own (the SavedModel's labels.txt "
    "asset, or the labels.txt beside a .keras or .tflite file).")

flags.register_validator(
    "output", lambda v: v is None or v.lower().endswith((".json", ".csv")),
    message="--output must end in .json or .csv")


def main(argv: list[str]) -> int:
  return predict.run(_MODEL_PATH.value, argv[1:], _OUTPUT.value, _ANNOTATE_DIR.value,
                     _LABEL_NAMES.value, _MONTAGE.value)


if __name__ == "__main__":
  flags.mark_flag_as_required("model_path")
  quiet.run(main)
