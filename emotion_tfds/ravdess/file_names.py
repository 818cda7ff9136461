"""The RAVDESS file-name convention: `MM-VV-EE-II-SS-RR-AA.mp4` -> its seven fields and labels.

Pure name logic (no OpenCV, no Beam): parsing and checking a name, the video modalities, RAVDESS
emotion code -> FER-2013 emotion name (via `labels.RAVDESS_EMOTIONS`), and picking the videos out of
a list of paths. `emotion_tfds.ravdess.extract` uses it to label the crops it extracts.
"""

from __future__ import annotations

from collections.abc import Iterable
import dataclasses
import re

from emotion_tfds import labels

VIDEO_SUFFIXES = (".mp4", ".avi")
# Modality field of a RAVDESS file name: 01 full audio-video, 02 video-only (the same video
# without sound), 03 audio-only.
VIDEO_MODALITIES = (1, 2)
# RAVDESS: 24 actors; emotion 01-08; intensity 01 normal / 02 strong; statement, repetition 01-02.
_NAME_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_FIELD_RANGES = {
    "modality": (1, 3), "vocal_channel": (1, 2), "emotion": (1, 8), "intensity": (1, 2),
    "statement": (1, 2), "repetition": (1, 2), "actor": (1, 24)}


@dataclasses.dataclass(frozen=True)
class RavdessName:
  """The seven fields of a RAVDESS file name, as integers."""
  modality: int
  vocal_channel: int
  emotion: int
  intensity: int
  statement: int
  repetition: int
  actor: int


def parse_name(file_name: str) -> RavdessName:
  """Parses 'MM-VV-EE-II-SS-RR-AA.mp4' (any folder, any video suffix).

  Raises:
    ValueError: naming the file and the field when the name is not RAVDESS-shaped.
  """
  match = _NAME_RE.match(stem(file_name))
  if not match:
    raise ValueError(f"{file_name}: name is not RAVDESS-shaped (MM-VV-EE-II-SS-RR-AA)")
  values = dict(zip(_FIELD_RANGES, (int(v) for v in match.groups())))
  for field, (low, high) in _FIELD_RANGES.items():
    if not low <= values[field] <= high:
      raise ValueError(f"{file_name}: {field} {values[field]:02d} is outside {low:02d}..{high:02d}")
  return RavdessName(**values)


def emotion_name(code: int, calm_as_neutral: bool) -> str | None:
  """RAVDESS emotion code -> FER-2013 emotion name, or None when the code is dropped (calm)."""
  fer_id = labels.ravdess_to("fer7", calm_as_neutral).get(code)
  return None if fer_id is None else labels.FER7[fer_id]


def video_paths(paths: Iterable[str]) -> list[str]:
  """The .mp4/.avi files among `paths`, sorted.

  Raises:
    ValueError: if two videos share a file name (their crops would collide).
  """
  videos = sorted(p for p in paths if p.lower().endswith(VIDEO_SUFFIXES))
  seen = {}
  for path in videos:
    name = stem(path)
    if name in seen:
      raise ValueError(f"Two videos named {name}: {seen[name]} and {path}.")
    seen[name] = path
  return videos


def basename(path: str) -> str:
  """The file name of a '/'-separated path."""
  return path.rstrip("/").rsplit("/", 1)[-1]


def stem(path: str) -> str:
  """The file name without its folder and suffix: 'Actor_01/NAME.mp4' -> 'NAME'."""
  return basename(path).rsplit(".", 1)[0]
