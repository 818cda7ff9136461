"""RAVDESS videos -> 48x48 grayscale face crops + manifest + summary, in a loop or with Beam.

Extraction: every RAVDESS video (`Actor_NN/MM-VV-EE-II-SS-RR-AA.mp4`) of one video modality is
labelled from its file name (`emotion_tfds.ravdess.file_names`) and gives K evenly spaced frames
(`emotion_tfds.ravdess.video_frames`); the largest frontal face of each frame (OpenCV Haar cascade, see
`emotion_tfds.faces`) is cropped with a margin, turned into 48x48 gray and written as a PNG. A
`manifest.csv` lists the crops and `summary.json` counts what was read and skipped. The same
function, `extract_video`, runs in a plain loop (`extract_folder`) or as an Apache Beam pipeline
(`run_beam`, one element per video) on any Beam runner. Files are read and written through Beam's
`FileSystems` (imported on first use), so local paths and, with the matching Beam extra, gs:// or
hdfs:// paths work. The command is `ravdess_main.py` at the repository root.

The crops folder's format (manifest rows, reading crops) is `emotion_tfds.ravdess.crops_folder`; the
`ravdess_crops` TFDS dataset is built from it, and `emotion_tfds.data.mixtures` mixes it into FER-2013.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import json
import os
import shutil
import tempfile
import uuid

import cv2
import numpy as np

from emotion_tfds import errors
from emotion_tfds import faces
from emotion_tfds.ravdess import file_names
from emotion_tfds.ravdess import video_frames
from emotion_tfds.ravdess.crops_folder import Crop
from emotion_tfds.ravdess.crops_folder import write_manifest

# Video-only (see file_names.VIDEO_MODALITIES).
DEFAULT_MODALITY = 2
SUMMARY_NAME = "summary.json"

# Names of the counters in `Stats.counts`, in summary order, with their meaning.
COUNTERS = {
    "files": "video files found",
    "skipped_bad_name": "skipped: file name not RAVDESS-shaped",
    "skipped_other_modality": "skipped: not the chosen video modality",
    "skipped_calm": "skipped: calm (dropped; --calm_as_neutral keeps it as neutral)",
    "skipped_unreadable": "skipped: unreadable or truncated video",
    "videos_read": "videos read",
    "frames_sampled": "frames sampled",
    "faces_found": "faces found (= crops written)",
    "frames_without_face": "frames without a face",
    "videos_without_face": "videos without any face",
}


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
  """What `extract_video` keeps and how it crops."""
  frames_per_video: int = 5
  calm_as_neutral: bool = False
  modality: int = DEFAULT_MODALITY
  margin: float = 0.2
  # Frames are shrunk to at most this side for detection only (speed); crops use full resolution.
  detect_max_side: int = 640

  def __post_init__(self):
    if self.frames_per_video < 1:
      raise ValueError(f"frames_per_video must be >= 1, got {self.frames_per_video}.")
    if self.modality not in file_names.VIDEO_MODALITIES:
      raise ValueError(
          f"modality must be one of {file_names.VIDEO_MODALITIES}, got {self.modality}.")


@dataclasses.dataclass
class Stats:
  """Counters (keys of COUNTERS) and (file, reason) problems; mergeable across videos/workers."""
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  problems: list[tuple[str, str]] = dataclasses.field(default_factory=list)

  def merge(self, other: Stats) -> Stats:
    """Adds `other` into this object and returns it."""
    self.counts.update(other.counts)
    self.problems.extend(other.problems)
    return self

  def to_json(self) -> dict:
    return {"counts": {k: self.counts[k] for k in COUNTERS},
            "problems": [list(p) for p in sorted(self.problems)]}

  @classmethod
  def from_json(cls, data: Mapping) -> Stats:
    return cls(collections.Counter(data["counts"]), [tuple(p) for p in data["problems"]])

  def format(self) -> str:
    """Human-readable summary: one line per counter, then each problem file and its reason."""
    width = max(len(v) for v in COUNTERS.values())
    lines = [f"{desc:<{width}}  {self.counts[key]}" for key, desc in COUNTERS.items()]
    lines += [f"  {path}: {reason}" for path, reason in sorted(self.problems)]
    return "\n".join(lines)


@dataclasses.dataclass
class VideoResult:
  """What one video gave: its crops (already written) and its counters."""
  crops: list[Crop]
  stats: Stats


def merge_stats(all_stats: Iterable[Stats]) -> Stats:
  """Sum of several Stats (a Beam CombineGlobally function)."""
  total = Stats()
  for stats in all_stats:
    total.merge(stats)
  return total


def list_videos(ravdess_dir: str) -> list[str]:
  """Paths of all .mp4/.avi files under `ravdess_dir` (recursively), sorted.

  Raises:
    errors.MissingFileError: if the folder does not exist.
    ValueError: if two videos share a file name (their crops would collide).
  """
  FileSystems = _filesystems()  # pylint: disable=invalid-name
  if not FileSystems.exists(ravdess_dir):
    raise errors.MissingFileError(f"RAVDESS folder {ravdess_dir} does not exist (--ravdess_dir).")
  matched = FileSystems.match([FileSystems.join(ravdess_dir, "**")])[0].metadata_list
  return file_names.video_paths(m.path for m in matched)


def extract_video(path: str, ravdess_dir: str, out_dir: str,
                  options: ExtractOptions = ExtractOptions()) -> VideoResult:
  """Samples frames of one video, crops the largest face of each and writes the crops as PNGs.

  Never raises for bad input: a bad name, another modality, calm (unless kept), an unreadable or
  truncated video and frames without a face are counted in the result's stats (bad names and
  unreadable videos also as (file, reason) problems) and give no crops.

  Args:
    path: the video file.
    ravdess_dir: the RAVDESS root; `source_video` is `path` relative to it.
    out_dir: crops go to out_dir/Actor_NN/<video stem>_fNNNN.png (written atomically).
    options: sampling and cropping options.

  Returns:
    VideoResult with the crops written and the counters of this video.
  """
  stats = Stats(collections.Counter(files=1))
  source = _relative(path, ravdess_dir)
  try:
    name = file_names.parse_name(file_names.basename(source))
  except ValueError as e:
    stats.counts["skipped_bad_name"] += 1
    stats.problems.append((source, str(e)))
    return VideoResult([], stats)
  if name.modality != options.modality:
    stats.counts["skipped_other_modality"] += 1
    return VideoResult([], stats)
  emotion = file_names.emotion_name(name.emotion, options.calm_as_neutral)
  if emotion is None:
    stats.counts["skipped_calm"] += 1
    return VideoResult([], stats)
  try:
    with _local_copy(path) as local_path:
      frames = video_frames.read_sampled_frames(local_path, options.frames_per_video)
  except video_frames.VideoError as e:
    stats.counts["skipped_unreadable"] += 1
    stats.problems.append((source, str(e)))
    return VideoResult([], stats)
  stats.counts["videos_read"] += 1
  stem = file_names.stem(source)
  crops = []
  for index, frame in frames:
    stats.counts["frames_sampled"] += 1
    box = video_frames.largest_face(frame, options.detect_max_side)
    if box is None:
      stats.counts["frames_without_face"] += 1
      continue
    crop_file = f"Actor_{name.actor:02d}/{stem}_f{index:04d}.png"
    _write_png(out_dir, crop_file, faces.crop_face(frame, box, margin=options.margin))
    stats.counts["faces_found"] += 1
    crops.append(Crop(
        crop_file=crop_file, emotion=emotion, emotion_code=name.emotion,
        intensity=name.intensity, vocal_channel=name.vocal_channel, statement=name.statement,
        repetition=name.repetition, actor=name.actor, source_video=source, frame_index=index,
        face_x=box[0], face_y=box[1], face_w=box[2], face_h=box[3]))
  if not crops:
    stats.counts["videos_without_face"] += 1
  return VideoResult(crops, stats)


def extract_folder(ravdess_dir: str, out_dir: str,
                   options: ExtractOptions = ExtractOptions()) -> Stats:
  """Runs `extract_video` over every video in a plain loop; writes manifest.csv and summary.json."""
  results = [extract_video(p, ravdess_dir, out_dir, options) for p in list_videos(ravdess_dir)]
  write_manifest(out_dir, [c for r in results for c in r.crops])
  stats = merge_stats(r.stats for r in results)
  write_summary(out_dir, stats)
  return stats


def run_beam(ravdess_dir: str, out_dir: str, options: ExtractOptions = ExtractOptions(),
             pipeline_args: Sequence[str] = ()) -> Stats:
  """The same extraction as an Apache Beam pipeline, one element per video.

  Args:
    ravdess_dir: RAVDESS root, readable by the driver (listing) and the workers (videos).
    out_dir: crops folder, writable by the workers.
    options: sampling and cropping options.
    pipeline_args: Beam pipeline options, e.g. ["--runner=FlinkRunner", ...]; the default runner
      is Beam's DirectRunner.

  Returns:
    The merged Stats, as written to out_dir/summary.json by the pipeline.
  """
  # pylint: disable=g-import-not-at-top
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  # pylint: enable=g-import-not-at-top
  videos = list_videos(ravdess_dir)
  with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
    results = (
        pipeline
        | "ListVideos" >> beam.Create(videos)
        # Spreads videos over workers (Create alone may keep them in one bundle).
        | "Spread" >> beam.Reshuffle()
        | "Extract" >> beam.Map(extract_video, ravdess_dir, out_dir, options))
    _ = (results
         | "Crops" >> beam.FlatMap(lambda result: result.crops)
         | "AllCrops" >> beam.combiners.ToList()
         | "WriteManifest" >> beam.Map(lambda crops: write_manifest(out_dir, crops)))
    _ = (results
         | "Stats" >> beam.Map(lambda result: result.stats)
         | "MergeStats" >> beam.CombineGlobally(merge_stats)
         | "WriteSummary" >> beam.Map(lambda stats: write_summary(out_dir, stats)))
  return read_summary(out_dir)


def write_summary(out_dir: str, stats: Stats) -> str:
  """Writes out_dir/summary.json atomically; returns its path."""
  data = json.dumps(stats.to_json(), indent=2).encode("utf-8")
  return _write_atomic(out_dir, SUMMARY_NAME, data)


def read_summary(out_dir: str) -> Stats:
  """Reads out_dir/summary.json."""
  FileSystems = _filesystems()  # pylint: disable=invalid-name
  with FileSystems.open(FileSystems.join(out_dir, SUMMARY_NAME),
                        compression_type="uncompressed") as f:
    return Stats.from_json(json.load(f))


class _local_copy:  # pylint: disable=invalid-name
  """Context manager: a local path for `path`, copying remote files (gs://...) to a temp file."""

  def __init__(self, path: str):
    self._path = path
    self._temp = None

  def __enter__(self) -> str:
    FileSystems = _filesystems()  # pylint: disable=invalid-name
    if FileSystems.get_scheme(self._path) in (None, "file"):
      return self._path
    suffix = os.path.splitext(self._path)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as out, \
        FileSystems.open(self._path, compression_type="uncompressed") as src:
      shutil.copyfileobj(src, out)
      self._temp = out.name
    return self._temp

  def __exit__(self, *exc) -> None:
    if self._temp is not None:
      os.remove(self._temp)


def _write_png(out_dir: str, relative: str, image: np.ndarray) -> str:
  ok, encoded = cv2.imencode(".png", image)
  if not ok:
    raise RuntimeError(f"PNG encoding failed for {relative}.")
  return _write_atomic(out_dir, relative, encoded.tobytes())


def _write_atomic(out_dir: str, relative: str, data: bytes) -> str:
  """Writes data to out_dir/relative via a temporary name and a rename; returns the path."""
  FileSystems = _filesystems()  # pylint: disable=invalid-name
  path = FileSystems.join(out_dir, *relative.split("/"))
  temp = f"{path}.tmp-{uuid.uuid4().hex}"
  with FileSystems.create(temp, compression_type="uncompressed") as f:
    f.write(data)
  FileSystems.rename([temp], [path])
  return path


def _filesystems():
  """Beam's FileSystems (local, gs://, hdfs://, ...), imported on first use: importing Beam takes
  seconds, and the direct executor does not need it."""
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  return FileSystems


def _relative(path: str, root: str) -> str:
  """`path` relative to `root`, '/'-separated."""
  root = root.rstrip("/") + "/"
  relative = path[len(root):] if path.startswith(root) else path
  return relative.replace(os.sep, "/")
