"""Extracts 48x48 face crops from RAVDESS videos into a crops folder (manifest.csv, summary.json),
in a plain loop or as an Apache Beam pipeline:

  python ravdess_main.py --ravdess_dir=RAVDESS --out=CROPS --frames_per_video=5
  python ravdess_main.py --ravdess_dir=... --out=... --executor=beam \
      [Beam pipeline options, e.g. --runner=FlinkRunner --flink_master=HOST:8081]

Then `tfds build builders/ravdess_crops --manual_dir=CROPS` (BUILD.md, "RAVDESS crops").
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

from collections.abc import Sequence
import sys

from absl import flags
from absl import logging

from emotion_tfds import errors
from emotion_tfds.ravdess import extract
from emotion_tfds.ravdess import file_names

flags.DEFINE_string(
    "ravdess_dir", None, "RAVDESS folder holding Actor_NN/*.mp4 (searched recursively).")
flags.DEFINE_string(
    "out", None, "Crops folder: Actor_NN/*.png, manifest.csv and summary.json are written here.")
flags.DEFINE_integer("frames_per_video", extract.ExtractOptions.frames_per_video,
                     "Frames sampled evenly from each video.", lower_bound=1)
flags.DEFINE_bool(
    "calm_as_neutral", False, "Keep RAVDESS calm as neutral (default: drop calm videos).")
flags.DEFINE_enum(
    "modality", f"{extract.DEFAULT_MODALITY:02d}", [f"{m:02d}" for m in file_names.VIDEO_MODALITIES],
    "RAVDESS video modality to keep: 01 audio-video or 02 video-only (the same video).")
flags.DEFINE_float("margin", extract.ExtractOptions.margin,
                   "Context around the face box, as a fraction of its side.", lower_bound=0.0)
flags.DEFINE_enum(
    "executor", "direct", ["direct", "beam"],
    "direct: a plain loop in this process; beam: an Apache Beam pipeline, configured by any "
    "further Beam options (e.g. --runner=FlinkRunner); Beam's default runner is DirectRunner.")


def main(argv: Sequence[str]) -> None:
  """Extracts the crops; `argv[1:]` are Beam pipeline options (with --executor=beam)."""
  args = flags.FLAGS
  options = extract.ExtractOptions(
      frames_per_video=args.frames_per_video, calm_as_neutral=args.calm_as_neutral,
      modality=int(args.modality), margin=args.margin)
  if args.executor == "beam":
    stats = extract.run_beam(args.ravdess_dir, args.out, options, pipeline_args=argv[1:])
  else:
    if len(argv) > 1:
      raise errors.ConfigError(f"Unknown arguments {argv[1:]} (Beam options need "
                               "--executor=beam).")
    stats = extract.extract_folder(args.ravdess_dir, args.out, options)
  logging.info("RAVDESS crops in %s", args.out)
  print(stats.format())


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses this module's flags; the ones it does not know (Beam options) are returned."""
  try:
    return flags.FLAGS(argv, known_only=True)
  except flags.Error as e:
    sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpfull to see help on flags.")


if __name__ == "__main__":
  flags.mark_flags_as_required(["ravdess_dir", "out"])
  quiet.run(main, flags_parser=_parse_flags)
