"""Frontal-face detection and 48x48 grayscale face crops with OpenCV's Haar cascade.

Shared by the RAVDESS crop extraction (`emotion_tfds.ravdess.extract`) and prediction on photos, so a face
is found and cropped the same way everywhere.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from emotion_tfds import image_spec

CASCADE_FILE = "haarcascade_frontalface_default.xml"
# Defaults chosen on the 24 real RAVDESS frames (398x224): each gives exactly one face.
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_SIZE = (30, 30)

# One classifier per thread: OpenCV does not promise that detectMultiScale is thread-safe, and
# Beam's DirectRunner (like most runners) calls a DoFn from several threads.
_local = threading.local()


def _cascade() -> cv2.CascadeClassifier:
  """Returns this thread's frontal-face cascade, loading it on first use."""
  cascade = getattr(_local, "cascade", None)
  if cascade is None:
    path = cv2.data.haarcascades + CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
      raise RuntimeError(f"Could not load the Haar cascade {path}.")
    _local.cascade = cascade
  return cascade


def to_gray(image: np.ndarray) -> np.ndarray:
  """uint8 gray [H, W] / [H, W, 1], BGR [H, W, 3] or BGRA [H, W, 4] -> uint8 gray [H, W].

  Raises:
    ValueError: if the image is not uint8 or has an unsupported shape.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"Expected a uint8 image, got dtype {image.dtype}.")
  if image.ndim == 2:
    return image
  if image.ndim == 3 and image.shape[-1] == 1:
    return image[..., 0]
  if image.ndim == 3 and image.shape[-1] == 3:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
  if image.ndim == 3 and image.shape[-1] == 4:
    return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
  raise ValueError(
      f"Expected a gray [H, W(, 1)] or BGR(A) [H, W, 3|4] image, got shape {image.shape}.")


def detect_faces(
    image: np.ndarray,
    scale_factor: float = SCALE_FACTOR,
    min_neighbors: int = MIN_NEIGHBORS,
    min_size: tuple[int, int] = MIN_SIZE,
    equalize: bool = True,
) -> list[tuple[int, int, int, int]]:
  """Finds frontal faces with OpenCV's default Haar cascade.

  Args:
    image: uint8 image, gray [H, W(, 1)] or BGR(A) [H, W, 3|4] (OpenCV channel order).
    scale_factor: image-pyramid step of `detectMultiScale`.
    min_neighbors: overlapping detections needed to keep a face (higher: fewer false faces).
    min_size: smallest face (width, height) in pixels.
    equalize: equalize the gray histogram before detection (helps on dim or flat frames).

  Returns:
    Boxes (x, y, w, h) in pixels, largest area first; empty when no face is found.
  """
  gray = to_gray(image)
  if equalize:
    gray = cv2.equalizeHist(gray)
  boxes = _cascade().detectMultiScale(
      gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=tuple(min_size))
  boxes = [tuple(int(v) for v in box) for box in np.asarray(boxes).reshape(-1, 4)]
  return sorted(boxes, key=lambda b: (-b[2] * b[3], b[0], b[1]))


def crop_face(
    image: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.2,
    size: int = image_spec.IMAGE_SIZE) -> np.ndarray:
  """Cuts a square, margin-padded face out of `image` and scales it to size x size gray.

  The square is centred on the box, with side max(w, h) * (1 + 2 * margin). Parts of the square
  outside the image are filled by repeating the border pixels, so the face stays centred. Shrinking
  uses `cv2.INTER_AREA`; the rare enlargement (a face smaller than `size`) uses `cv2.INTER_LINEAR`.

  Args:
    image: uint8 gray or BGR(A) image, as for `detect_faces`.
    box: (x, y, w, h) face box in pixels, e.g. from `detect_faces`.
    margin: extra context on each side, as a fraction of the box side.
    size: output side in pixels.

  Returns:
    uint8 array [size, size].

  Raises:
    ValueError: for an empty box or a negative margin.
  """
  gray = to_gray(image)
  x, y, w, h = (int(v) for v in box)
  if w <= 0 or h <= 0:
    raise ValueError(f"Face box must have positive width and height, got {box}.")
  if margin < 0:
    raise ValueError(f"margin must be >= 0, got {margin}.")
  side = max(1, int(round(max(w, h) * (1.0 + 2.0 * margin))))
  left = int(round(x + w / 2.0 - side / 2.0))
  top = int(round(y + h / 2.0 - side / 2.0))
  height, width = gray.shape
  pad_top, pad_left = max(0, -top), max(0, -left)
  pad_bottom, pad_right = max(0, top + side - height), max(0, left + side - width)
  crop = gray[max(0, top):min(height, top + side), max(0, left):min(width, left + side)]
  if crop.size == 0:
    raise ValueError(f"Face box {box} lies outside the {width}x{height} image.")
  if pad_top or pad_left or pad_bottom or pad_right:
    crop = cv2.copyMakeBorder(crop, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_REPLICATE)
  interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
  return cv2.resize(crop, (size, size), interpolation=interpolation)
