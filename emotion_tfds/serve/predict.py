"""Photo -> faces -> emotions: finds every face, crops it like the training data and classifies it.

The path of one face is `faces.detect_faces` -> `faces.crop_face` (uint8 48x48 gray, the RAVDESS
extraction's crop) -> `preprocess.to_model_input` (the training conversion) -> model, for all three
kinds of model file `loader.load` accepts (a SavedModel directory, a `.keras` or a `.tflite` file),
and for an ensemble of several (the mean of their probabilities, `loader.load_ensemble`).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
import csv
import dataclasses
import glob
import json
import os
import pathlib
import sys
from typing import TextIO

import cv2
import numpy as np

from emotion_tfds import errors
from emotion_tfds import faces
from emotion_tfds import image_spec
from emotion_tfds.serve import loader

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_ERROR = "error"
_GLOB_CHARS = frozenset("*?[")


def load_classifier(model_path: loader.ModelPaths,
                    label_names: Sequence[str] | None = None) -> loader.LoadedModel:
  """`loader.load_ensemble`, with the class names resolved.

  Args:
    model_path: a SavedModel directory, a `.keras` or a `.tflite` file, or several (an ensemble).
    label_names: class names in output order. Default: the model's own (a SavedModel's
      `labels.txt` asset, the `labels.txt` beside a .keras or .tflite file).

  Raises:
    errors.MissingFileError: when `model_path` does not exist.
    errors.UnusableModelError: for another kind of model file, ensemble members that predict
      different classes, or a model that does not name its classes when `label_names` is not
      given.
    errors.ConfigError: `label_names` of another length than the model's outputs.
  """
  model = loader.load_ensemble(model_path)
  names = tuple(label_names) if label_names else model.emotions()
  if len(names) != model.num_classes:
    raise errors.ConfigError(f"{len(names)} label names {names} for {model.source}, which has "
                             f"{model.num_classes} outputs.")
  return dataclasses.replace(model, label_names=names)


@dataclasses.dataclass(frozen=True)
class FacePrediction:
  """One face: box (x, y, w, h) in photo pixels, top emotion and all probabilities."""
  box: tuple[int, int, int, int]
  emotion: str
  probability: float
  probabilities: dict[str, float]


@dataclasses.dataclass(frozen=True)
class PhotoResult:
  """The outcome for one input file."""
  file: str
  status: str  # STATUS_OK, STATUS_NO_FACE or STATUS_ERROR.
  faces: tuple[FacePrediction, ...] = ()
  error: str | None = None

  def to_json(self) -> dict:
    out = {"file": self.file, "status": self.status,
           "faces": [dataclasses.asdict(f) for f in self.faces]}
    if self.error is not None:
      out["error"] = self.error
    return out


def expand_inputs(inputs: Iterable[str]) -> list[str]:
  """Files, folders (their image files, sorted) and globs -> file paths, in the order given.

  Paths that neither exist nor match anything are kept, so that they are reported as errors.
  """
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      paths.extend(sorted(
          os.path.join(item, name) for name in os.listdir(item)
          if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, name))))
    elif not os.path.exists(item) and _GLOB_CHARS & set(item):
      matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
      paths.extend(matches or [item])
    else:
      paths.append(item)
  return paths


def read_image(path: str | os.PathLike) -> np.ndarray:
  """Reads a photo as uint8 BGR [H, W, 3] (gray and alpha photos converted, EXIF rotation applied).

  Raises:
    ValueError: naming the file, when it is missing or cannot be decoded as an image.
  """
  try:
    data = np.fromfile(os.fspath(path), dtype=np.uint8)
  except OSError as e:
    raise ValueError(f"{path}: cannot read file ({e.strerror or e}).") from None
  image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  if image is None:
    raise ValueError(f"{path}: not a readable image ({data.size} bytes could not be decoded).")
  return image


def face_crops(image: np.ndarray) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
  """All faces of a BGR or gray photo: boxes and uint8 crops [N, 48, 48, 1] (as in training)."""
  boxes = faces.detect_faces(image)
  crops = np.stack([faces.crop_face(image, box) for box in boxes]) if boxes else np.zeros(
      (0, image_spec.IMAGE_SIZE, image_spec.IMAGE_SIZE), np.uint8)
  return boxes, crops[..., np.newaxis]


def classify_image(classifier: loader.LoadedModel, image: np.ndarray, file: str) -> PhotoResult:
  """Finds and classifies every face of a decoded photo."""
  boxes, crops = face_crops(image)
  if not boxes:
    return PhotoResult(file=file, status=STATUS_NO_FACE)
  probabilities = classifier.predict(crops)
  predictions = []
  for box, probs in zip(boxes, probabilities):
    top = int(np.argmax(probs))
    predictions.append(FacePrediction(
        box=tuple(box), emotion=classifier.label_names[top], probability=float(probs[top]),
        probabilities={name: float(p) for name, p in zip(classifier.label_names, probs)}))
  return PhotoResult(file=file, status=STATUS_OK, faces=tuple(predictions))


def predict_file(classifier: loader.LoadedModel, path: str) -> tuple[PhotoResult, np.ndarray | None]:
  """Reads and classifies one file; an unreadable file gives an error result, not an exception.

  Returns:
    The result and the decoded BGR image (None when it could not be read).
  """
  try:
    image = read_image(path)
  except ValueError as e:
    return PhotoResult(file=path, status=STATUS_ERROR, error=str(e)), None
  return classify_image(classifier, image, path), image


def format_result(result: PhotoResult) -> list[str]:
  """Human-readable lines for one file: one per face, or its status."""
  if result.status == STATUS_ERROR:
    return [f"ERROR {result.error}"]
  if result.status == STATUS_NO_FACE:
    return [f"{result.file}: no face"]
  lines = []
  for i, face in enumerate(result.faces, start=1):
    vector = " ".join(f"{name}={p:.3f}" for name, p in face.probabilities.items())
    lines.append(f"{result.file}: face {i}/{len(result.faces)} box={list(face.box)} "
                 f"{face.emotion} {face.probability:.3f} [{vector}]")
  return lines


def write_json(results: Sequence[PhotoResult], path: str | os.PathLike) -> None:
  """Writes a JSON list of {file, status, faces: [{box, emotion, probability, probabilities}],
  error?}."""
  pathlib.Path(path).write_text(json.dumps([r.to_json() for r in results], indent=2) + "\n")


def write_csv(results: Sequence[PhotoResult], path: str | os.PathLike,
              label_names: Sequence[str]) -> None:
  """Writes one row per face (and one per file without faces), one column per emotion."""
  header = ["file", "status", "face", "x", "y", "w", "h", "emotion", "probability",
            *label_names, "error"]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for r in results:
      if not r.faces:
        writer.writerow([r.file, r.status] + [""] * (len(header) - 3) + [r.error or ""])
      for i, face in enumerate(r.faces, start=1):
        writer.writerow([r.file, r.status, i, *face.box, face.emotion, f"{face.probability:.6f}",
                         *(f"{face.probabilities[n]:.6f}" for n in label_names), ""])


def write_results(results: Sequence[PhotoResult], path: str | os.PathLike,
                  label_names: Sequence[str]) -> None:
  """Writes `results` as JSON or CSV, chosen by the file extension.

  Raises:
    ValueError: for an extension other than .json or .csv.
  """
  suffix = pathlib.Path(path).suffix.lower()
  if suffix == ".json":
    write_json(results, path)
  elif suffix == ".csv":
    write_csv(results, path, label_names)
  else:
    raise ValueError(f"Output {path}: expected a .json or .csv file name.")


def annotate(image: np.ndarray, result: PhotoResult) -> np.ndarray:
  """A copy of the BGR photo with each face's box and "emotion 0.87" label drawn."""
  out = image.copy()
  for face in result.faces:
    x, y, w, h = face.box
    thickness = max(1, round(w / 60))
    text_thickness = max(1, round(w / 120))
    scale = max(0.35, w / 250)
    text = f"{face.emotion} {face.probability:.2f}"
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, text_thickness)
    cv2.rectangle(out, (x, y), (x + w, y + h), (0, 255, 0), thickness)
    top = y - th - baseline - 2 if y - th - baseline - 2 >= 0 else y + h
    cv2.rectangle(out, (x, top), (x + tw + 2, top + th + baseline + 2), (0, 255, 0), cv2.FILLED)
    cv2.putText(out, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                text_thickness, cv2.LINE_AA)
  return out


def write_annotated(image: np.ndarray, result: PhotoResult, out_dir: str | os.PathLike,
                    taken: set[str]) -> pathlib.Path:
  """Writes the annotated photo to out_dir under the input's file name.

  Args:
    image: the decoded BGR photo.
    result: its predictions.
    out_dir: destination folder (created if needed).
    taken: file names already written in this run; a repeated name gets a `_N` suffix.

  Raises:
    ValueError: when OpenCV cannot encode the file.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  name = pathlib.Path(result.file).name
  stem, suffix = os.path.splitext(name)
  if suffix.lower() not in IMAGE_EXTENSIONS:
    suffix = ".png"
  name, n = stem + suffix, 1
  while name in taken:
    name, n = f"{stem}_{n}{suffix}", n + 1
  taken.add(name)
  ok, encoded = cv2.imencode(suffix, annotate(image, result))
  if not ok:
    raise ValueError(f"Could not encode the annotated copy of {result.file} as {suffix}.")
  path = out_dir / name
  encoded.tofile(os.fspath(path))
  return path


def make_montage(images: Sequence[np.ndarray], columns: int = 2,
                 tile_width: int = 320) -> np.ndarray:
  """Tiles BGR images (scaled to `tile_width`, padded black to equal height) into a grid.

  Raises:
    ValueError: when `images` is empty.
  """
  if not images:
    raise ValueError("make_montage needs at least one image.")
  sizes = [(tile_width, max(1, round(image.shape[0] * tile_width / image.shape[1])))
           for image in images]
  tiles = [cv2.resize(image, size, interpolation=cv2.INTER_AREA)
           for image, size in zip(images, sizes)]
  height = max(tile.shape[0] for tile in tiles)
  tiles = [cv2.copyMakeBorder(tile, 0, height - tile.shape[0], 0, 0, cv2.BORDER_CONSTANT)
           for tile in tiles]
  columns = min(columns, len(tiles))
  tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
  rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
  return np.concatenate(rows, axis=0)


def write_montage(images: Sequence[np.ndarray], path: str | os.PathLike) -> None:
  """Writes `make_montage(images)` to `path` (format by extension, e.g. .png).

  Raises:
    errors.ConfigError: when OpenCV cannot write the file.
  """
  if not cv2.imwrite(os.fspath(path), make_montage(images)):
    raise errors.ConfigError(f"Could not write the montage {path}.")


def run(model_path: loader.ModelPaths, inputs: Sequence[str], output: str | None = None,
        annotate_dir: str | None = None, label_names: Sequence[str] | None = None,
        montage: str | None = None, stream: TextIO = sys.stdout) -> int:
  """predict_main: classifies every face of `inputs`, prints the results and writes the files.

  Args:
    model_path: SavedModel directory, .keras or .tflite file, or several (see `load_classifier`).
    inputs: files, folders and globs (see `expand_inputs`).
    output: optional .json or .csv file for all results.
    annotate_dir: optional folder for annotated copies of the photos.
    label_names: class names in output order (default: see `load_classifier`).
    montage: optional image file with a grid of all annotated photos.
    stream: where the per-face lines and the summary are printed.

  Returns:
    The exit code: 0 when every file was read, 1 when any could not be (or none was given).

  Raises:
    errors.UserError: for a bad model path, output file name or --label_names.
  """
  if output and pathlib.Path(output).suffix.lower() not in (".json", ".csv"):
    raise errors.ConfigError(f"Output {output}: expected a .json or .csv file name.")
  classifier = load_classifier(model_path, label_names)
  paths = expand_inputs(inputs)
  if not paths:
    print("No input photos given.", file=stream)
    return 1
  results, taken, annotated = [], set(), []
  for path in paths:
    result, image = predict_file(classifier, path)
    results.append(result)
    for line in format_result(result):
      print(line, file=stream, flush=True)
    if annotate_dir and image is not None:
      write_annotated(image, result, annotate_dir, taken)
    if montage and image is not None:
      annotated.append(annotate(image, result))
  if output:
    write_results(results, output, classifier.label_names)
  if montage and annotated:
    write_montage(annotated, montage)
  counts = {status: sum(r.status == status for r in results)
            for status in (STATUS_OK, STATUS_NO_FACE, STATUS_ERROR)}
  print(f"{len(results)} files: {counts[STATUS_OK]} with faces "
        f"({sum(len(r.faces) for r in results)} faces), {counts[STATUS_NO_FACE]} without a face, "
        f"{counts[STATUS_ERROR]} unreadable.", file=stream)
  for written in (output, annotate_dir, montage):
    if written:
      print(f"Wrote {written}", file=stream)
  return 1 if counts[STATUS_ERROR] else 0
