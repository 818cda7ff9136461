"""Video decoding with OpenCV: K evenly spaced frames of a local video file, and the largest face.

No Beam here: `emotion_tfds.ravdess.extract` copies remote videos to a local file first, then calls
`read_sampled_frames` and `largest_face` for each video (faces found by `emotion_tfds.faces`).
"""

from __future__ import annotations

import cv2
import numpy as np

from emotion_tfds import faces

# Containers report frame counts; a non-positive or absurd count means "count by decoding".
_MAX_PLAUSIBLE_FRAMES = 10_000_000


class VideoError(Exception):
  """A video that cannot be opened or decoded up to a sampled frame."""


def sample_indices(num_frames: int, k: int) -> list[int]:
  """K indices spread evenly over `num_frames` (centres of K equal parts); all if fewer frames."""
  k = min(k, num_frames)
  return [int((i + 0.5) * num_frames / k) for i in range(k)]


def read_sampled_frames(local_path: str, k: int) -> list[tuple[int, np.ndarray]]:
  """Decodes a local video front to back and keeps K evenly spaced (index, BGR frame) pairs.

  Raises:
    VideoError: if the file cannot be opened, has no frames, or ends before a sampled frame.
  """
  num_frames = _frame_count(local_path)
  wanted = set(sample_indices(num_frames, k))
  capture = cv2.VideoCapture(local_path)
  try:
    frames, index = [], 0
    while wanted:
      if not capture.grab():
        raise VideoError(f"truncated: decoding stopped at frame {index} of {num_frames}")
      if index in wanted:
        ok, frame = capture.retrieve()
        if not ok or frame is None:
          raise VideoError(f"frame {index} of {num_frames} could not be decoded")
        frames.append((index, frame))
        wanted.discard(index)
      index += 1
  finally:
    capture.release()
  return frames


def largest_face(frame: np.ndarray, max_side: int) -> tuple[int, int, int, int] | None:
  """Largest face box in full-frame pixels, detected on a copy shrunk to at most `max_side`."""
  scale = min(1.0, max_side / max(frame.shape[:2]))
  small = frame if scale == 1.0 else cv2.resize(
      frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
  boxes = faces.detect_faces(small)
  if not boxes:
    return None
  return tuple(int(round(v / scale)) for v in boxes[0])


def _frame_count(local_path: str) -> int:
  """The container's frame count, or the number of decodable frames when it gives none."""
  capture = cv2.VideoCapture(local_path)
  try:
    if not capture.isOpened():
      raise VideoError("cannot be opened as a video (corrupt, truncated or not a video)")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not 0 < count < _MAX_PLAUSIBLE_FRAMES:
      count = 0
      while capture.grab():
        count += 1
  finally:
    capture.release()
  if count == 0:
    raise VideoError("no decodable frames")
  return count
