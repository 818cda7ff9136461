"""Classifies the emotion of every face in ordinary photos.

Each face is found with OpenCV's Haar cascade, cropped and converted exactly as the training data
(`emotion_tfds.predict`). Prints one line per face (file, box, top emotion and probability, all
probabilities); a photo without a face is reported as "no face", an unreadable file as an error,
and the run goes on. Exit code 0 when every file could be read, 1 otherwise.

Run:
  python predict_main.py --model_path=/tmp/emotion_run/saved_model \
      photo.jpg photos/ 'more/*.png' [--output=predictions.json|.csv] [--annotate_dir=/tmp/annotated] \
      [--montage=/tmp/montage.png]
`--model_path` is a SavedModel directory (export_main.py), a .keras file or a .tflite file.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from emotion_tfds import predict

_MODEL_PATH = flags.DEFINE_string(
    "model_path", None, "SavedModel directory, .keras file or .tflite file of a trained model.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Also write the predictions to this .json or .csv file.")
_ANNOTATE_DIR = flags.DEFINE_string(
    "annotate_dir", None, "Write copies of the photos with face boxes and labels drawn here.")
_MONTAGE = flags.DEFINE_string(
    "montage", None, "Also write one PNG/JPEG grid (2 columns) of all the annotated photos here.")
_LABEL_NAMES = flags.DEFINE_list(
    "label_names", None,
    "Class names in model output order. Default: the SavedModel's labels.txt, else the label "
    "scheme (fer7 or seed6) with as many classes as the model has outputs.")

flags.register_validator(
    "output", lambda v: v is None or v.lower().endswith((".json", ".csv")),
    message="--output must end in .json or .csv")


def run(model_path: str, inputs: list[str], output: str | None = None,
        annotate_dir: str | None = None, label_names: list[str] | None = None,
        montage: str | None = None) -> int:
  """Predicts on all `inputs` (files, folders, globs), prints and writes the results.

  Returns:
    The exit code: 0 when every file was read, 1 when any failed (or nothing was given).
  """
  classifier = predict.load_classifier(model_path, label_names)
  paths = predict.expand_inputs(inputs)
  if not paths:
    print("No input photos given.", file=sys.stderr)
    return 1
  results, taken, annotated = [], set(), []
  for path in paths:
    result, image = predict.predict_file(classifier, path)
    results.append(result)
    for line in predict.format_result(result):
      print(line, flush=True)
    if annotate_dir and image is not None:
      predict.write_annotated(image, result, annotate_dir, taken)
    if montage and image is not None:
      annotated.append(predict.annotate(image, result))
  if output:
    predict.write_results(results, output, classifier.label_names)
  if montage and annotated:
    predict.write_montage(annotated, montage)
  counts = {s: sum(r.status == s for r in results)
            for s in (predict.STATUS_OK, predict.STATUS_NO_FACE, predict.STATUS_ERROR)}
  print(f"{len(results)} files: {counts[predict.STATUS_OK]} with faces "
        f"({sum(len(r.faces) for r in results)} faces), {counts[predict.STATUS_NO_FACE]} without "
        f"a face, {counts[predict.STATUS_ERROR]} unreadable.")
  for written in (output, annotate_dir, montage):
    if written:
      print(f"Wrote {written}")
  return 1 if counts[predict.STATUS_ERROR] else 0


def main(argv: list[str]) -> int:
  return run(_MODEL_PATH.value, argv[1:], _OUTPUT.value, _ANNOTATE_DIR.value, _LABEL_NAMES.value,
             _MONTAGE.value)


if __name__ == "__main__":
  flags.mark_flag_as_required("model_path")
  app.run(main)
