"""The RAVDESS crops folder: `manifest.csv` plus `Actor_NN/*.png` 48x48 grayscale face crops.

`emotion_tfds.ravdess.extract` writes such a folder from the RAVDESS videos; the `ravdess_crops` TFDS
builder (`builders/ravdess_crops`) reads it. This module is the format between the two, with no
video or Beam dependency. Paths go through `etils.epath`, so local and gs:// folders work.
"""

from __future__ import annotations

from collections.abc import Iterable
import csv
import dataclasses
import io
import struct
import uuid

from etils import epath

from emotion_tfds import image_spec
from emotion_tfds import labels

MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = (
    "crop_file", "emotion", "emotion_code", "intensity", "vocal_channel", "statement",
    "repetition", "actor", "source_video", "frame_index", "face_x", "face_y", "face_w", "face_h")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY = 0  # IHDR colour type of a grayscale image without alpha.


@dataclasses.dataclass(frozen=True)
class Crop:
  """One face crop: a manifest row. `crop_file` is relative to the crops folder, '/'-separated."""
  crop_file: str
  emotion: str  # FER-2013 emotion name (labels.FER7), e.g. "fear" for RAVDESS "fearful".
  emotion_code: int  # RAVDESS emotion code 1..8 (2 = calm, kept as "neutral" on request).
  intensity: int  # 1 normal, 2 strong.
  vocal_channel: int  # 1 speech, 2 song.
  statement: int
  repetition: int
  actor: int
  source_video: str  # Relative to the RAVDESS folder.
  frame_index: int  # 0-based frame number in the source video.
  face_x: int
  face_y: int
  face_w: int
  face_h: int


def write_manifest(crops_dir: str | epath.PathLike, crops: Iterable[Crop]) -> epath.Path:
  """Writes crops_dir/manifest.csv (rows sorted by crop_file) atomically; returns its path."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
  writer.writeheader()
  for crop in sorted(crops, key=lambda c: c.crop_file):
    writer.writerow(dataclasses.asdict(crop))
  path = epath.Path(crops_dir) / MANIFEST_NAME
  temp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
  temp.write_bytes(buffer.getvalue().encode("utf-8"))
  temp.rename(path)
  return path


def read_manifest(crops_dir: str | epath.PathLike) -> list[Crop]:
  """Reads crops_dir/manifest.csv.

  Raises:
    FileNotFoundError: if the manifest is missing.
    ValueError: naming the file and row for a bad header or value.
  """
  path = epath.Path(crops_dir) / MANIFEST_NAME
  if not path.exists():
    raise FileNotFoundError(f"RAVDESS crops manifest {path} does not exist.")
  reader = csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"), newline=""))
  if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
    raise ValueError(f"{path}: header {reader.fieldnames} != expected {list(MANIFEST_FIELDS)}")
  crops = []
  for row_number, row in enumerate(reader, start=1):
    try:
      crop = Crop(**{f.name: int(row[f.name]) if f.type == "int" else row[f.name]
                     for f in dataclasses.fields(Crop)})
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path}: row {row_number}: {e}") from None
    if crop.emotion not in labels.FER7:
      raise ValueError(f"{path}: row {row_number}: unknown emotion {crop.emotion!r}")
    crops.append(crop)
  return crops


def read_crop(crops_dir: str | epath.PathLike, crop: Crop) -> bytes:
  """The PNG bytes of `crop`, checked (from the PNG header) to be a 48x48 8-bit grayscale image.

  Raises:
    FileNotFoundError: if the PNG is missing.
    ValueError: naming the file if it is not a 48x48 8-bit grayscale PNG.
  """
  path = epath.Path(crops_dir).joinpath(*crop.crop_file.split("/"))
  if not path.exists():
    raise FileNotFoundError(f"RAVDESS crop {path} (listed in the manifest) does not exist.")
  data = path.read_bytes()
  size = image_spec.IMAGE_SIZE
  # Signature, then the IHDR chunk: length, b"IHDR", width, height, bit depth, colour type.
  if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
    raise ValueError(f"{path}: not a PNG file.")
  width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
  if (width, height, bit_depth, colour_type) != (size, size, 8, _PNG_GRAY):
    raise ValueError(f"{path}: expected a {size}x{size} 8-bit grayscale PNG, got {width}x{height}, "
                     f"bit depth {bit_depth}, colour type {colour_type}.")
  return data
