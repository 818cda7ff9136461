"""Tests for emotion_tfds.ravdess: crops from real-face clips (direct and Beam), and selection.

The clips are written with cv2.VideoWriter from real photographs (the shared RAVDESS frames, else
scikit-image's astronaut) under RAVDESS-style names, next to a blank clip, truncated files and
badly named files.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import pytest
from absl.testing import absltest

from emotion_tfds import faces
from emotion_tfds import labels
from emotion_tfds import ravdess

FRAMES_PER_CLIP = 8
K = 3  # Sampled frames 1, 4 and 6 of 8.
SHIFT = 4  # Frame i of a clip is the photograph shifted right by SHIFT * i pixels.
BEAM_ARGS = ("--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory")

# Clips with a face: relative path -> (emotion, actor, intensity).
FACE_CLIPS = {
    "Actor_01/02-01-07-01-01-01-01.mp4": ("disgust", 1, 1),
    "Actor_02/02-01-03-02-01-02-02.avi": ("happy", 2, 2),
    "Actor_03/02-02-06-01-02-01-03.mp4": ("fear", 3, 1),  # Song, fearful -> fear.
}
CALM_CLIP = "Actor_01/02-01-02-01-01-01-01.mp4"
OTHER_MODALITY_CLIP = "Actor_01/01-01-07-01-01-01-01.mp4"  # The audio-video twin of a kept clip.
BLANK_CLIP = "Actor_04/02-01-01-01-01-01-04.mp4"
TRUNCATED_MP4 = "Actor_05/02-01-05-01-01-01-05.mp4"
TRUNCATED_AVI = "Actor_06/02-01-04-01-01-01-06.avi"
BAD_NAMES = ("Actor_07/notes.mp4", "Actor_07/02-01-09-01-01-01-07.mp4")


def _shifted(frame: np.ndarray, index: int) -> np.ndarray:
  return np.roll(frame, SHIFT * index, axis=1)


def _write_clip(path: pathlib.Path, frames: list[np.ndarray]) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  fourcc = "mp4v" if path.suffix == ".mp4" else "MJPG"
  height, width = frames[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30.0, (width, height))
  if not writer.isOpened():
    raise RuntimeError(f"cv2.VideoWriter cannot write {path} with {fourcc}")
  for frame in frames:
    writer.write(frame)
  writer.release()
  return path


def _truncate(path: pathlib.Path, keep: float) -> None:
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])


def write_ravdess_folder(root: pathlib.Path, photos: list[np.ndarray]) -> pathlib.Path:
  """Writes the clips of this module under root (RAVDESS layout) and returns root."""
  clips = list(FACE_CLIPS) + [CALM_CLIP, OTHER_MODALITY_CLIP, TRUNCATED_MP4, TRUNCATED_AVI]
  for i, clip in enumerate(clips):
    photo = photos[i % len(photos)]
    _write_clip(root / clip, [_shifted(photo, j) for j in range(FRAMES_PER_CLIP)])
  _truncate(root / TRUNCATED_MP4, 1 / 3)  # Loses the index at the end: cannot be opened.
  _truncate(root / TRUNCATED_AVI, 1 / 2)  # Opens, but decoding stops half way.
  _write_clip(root / BLANK_CLIP, [np.full_like(photos[0], 90)] * FRAMES_PER_CLIP)
  for name in BAD_NAMES:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(b"not a video")
  return root


class _TempDirMixin:
  """create_tempdir() needs absl flags, which pytest does not parse."""

  def _tempdir(self) -> str:
    return self.enterContext(tempfile.TemporaryDirectory())


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, real_face_frames):
  """(videos folder, crops by extract_folder, its stats, crops by run_beam, its stats, photos)."""
  root = tmp_path_factory.mktemp("ravdess_extract")
  photos = list(real_face_frames.values())
  videos = write_ravdess_folder(root / "videos", photos)
  options = ravdess.ExtractOptions(frames_per_video=K)
  direct_stats = ravdess.extract_folder(str(videos), str(root / "direct"), options)
  beam_stats = ravdess.run_beam(str(videos), str(root / "beam"), options, pipeline_args=BEAM_ARGS)
  return videos, root / "direct", direct_stats, root / "beam", beam_stats, photos


class ExtractTest(_TempDirMixin, absltest.TestCase):

  @pytest.fixture(autouse=True)
  def _extracted(self, extracted):
    (self.videos, self.direct_dir, self.direct_stats, self.beam_dir, self.beam_stats,
     self.photos) = extracted

  def test_summary_counts(self):
    self.assertEqual(dict(self.direct_stats.counts), {
        "files": 10,
        "skipped_bad_name": 2,
        "skipped_other_modality": 1,
        "skipped_calm": 1,
        "skipped_unreadable": 2,
        "videos_read": 4,  # Three face clips and the blank one.
        "frames_sampled": 4 * K,
        "faces_found": 3 * K,
        "frames_without_face": K,
        "videos_without_face": 1,
    })
    problems = dict(self.direct_stats.problems)
    self.assertCountEqual(problems, list(BAD_NAMES) + [TRUNCATED_MP4, TRUNCATED_AVI])
    self.assertIn("not RAVDESS-shaped", problems["Actor_07/notes.mp4"])
    self.assertIn("emotion 09", problems["Actor_07/02-01-09-01-01-01-07.mp4"])
    self.assertIn("cannot be opened", problems[TRUNCATED_MP4])
    self.assertIn("truncated", problems[TRUNCATED_AVI])
    self.assertEqual(ravdess.read_summary(str(self.direct_dir)).to_json(),
                     self.direct_stats.to_json())
    self.assertIn(TRUNCATED_AVI, self.direct_stats.format())

  def test_manifest_labels_and_frames(self):
    crops = ravdess.read_manifest(str(self.direct_dir))
    self.assertLen(crops, 3 * K)
    for clip, (emotion, actor, intensity) in FACE_CLIPS.items():
      clip_crops = [c for c in crops if c.source_video == clip]
      self.assertEqual([c.frame_index for c in clip_crops], [1, 4, 6], clip)
      self.assertEqual({(c.emotion, c.actor, c.intensity) for c in clip_crops},
                       {(emotion, actor, intensity)}, clip)
      # The face moves SHIFT pixels per frame: the crops come from the frames they name.
      xs = [c.face_x - SHIFT * c.frame_index for c in clip_crops]
      self.assertLessEqual(max(xs) - min(xs), 4, (clip, xs))
    self.assertEqual(crops[0].crop_file, "Actor_01/02-01-07-01-01-01-01_f0001.png")

  def test_crops_are_48x48_faces(self):
    crops = ravdess.read_manifest(str(self.direct_dir))
    for crop in crops:
      image = cv2.imread(str(self.direct_dir / crop.crop_file), cv2.IMREAD_UNCHANGED)
      self.assertEqual((image.shape, image.dtype), ((48, 48), np.uint8), crop.crop_file)
      # The cascade finds the face again, centred, in the upscaled crop.
      found = faces.detect_faces(cv2.resize(image, (160, 160)), min_size=(60, 60))
      self.assertLen(found, 1, crop.crop_file)
      x, y, w, h = found[0]
      self.assertTrue(x >= 2 and y >= 2 and x + w <= 158 and y + h <= 158, (crop, found))
    self.assertEqual(sorted(p.name for p in self.direct_dir.rglob("*.tmp-*")), [])

  def test_read_crop(self):
    crops = ravdess.read_manifest(str(self.direct_dir))
    data = ravdess.read_crop(str(self.direct_dir), crops[0])
    np.testing.assert_array_equal(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED),
        cv2.imread(str(self.direct_dir / crops[0].crop_file), cv2.IMREAD_UNCHANGED))
    bad_dir = pathlib.Path(self._tempdir())
    (bad_dir / "Actor_01").mkdir()
    with self.assertRaisesRegex(FileNotFoundError, "f0001.png"):
      ravdess.read_crop(str(bad_dir), crops[0])
    cv2.imwrite(str(bad_dir / crops[0].crop_file), np.zeros((48, 48, 3), np.uint8))
    with self.assertRaisesRegex(ValueError, "f0001.png: expected a 48x48 grayscale"):
      ravdess.read_crop(str(bad_dir), crops[0])

  def test_beam_matches_direct(self):
    self.assertEqual(ravdess.read_manifest(str(self.beam_dir)),
                     ravdess.read_manifest(str(self.direct_dir)))
    self.assertEqual(self.beam_stats.to_json(), self.direct_stats.to_json())
    for crop in ravdess.read_manifest(str(self.direct_dir)):
      self.assertEqual((self.beam_dir / crop.crop_file).read_bytes(),
                       (self.direct_dir / crop.crop_file).read_bytes(), crop.crop_file)

  def test_calm_as_neutral(self):
    out = self._tempdir()
    options = ravdess.ExtractOptions(frames_per_video=2, calm_as_neutral=True)
    result = ravdess.extract_video(str(self.videos / CALM_CLIP), str(self.videos), out, options)
    self.assertEqual([(c.emotion, c.emotion_code) for c in result.crops], [("neutral", 2)] * 2)
    self.assertTrue(all(os.path.exists(os.path.join(out, c.crop_file)) for c in result.crops))

  def test_other_modality_is_kept_on_request(self):
    out = self._tempdir()
    options = ravdess.ExtractOptions(frames_per_video=1, modality=1)
    kept = ravdess.extract_video(
        str(self.videos / OTHER_MODALITY_CLIP), str(self.videos), out, options)
    skipped = ravdess.extract_video(
        str(self.videos / "Actor_01/02-01-07-01-01-01-01.mp4"), str(self.videos), out, options)
    self.assertLen(kept.crops, 1)
    self.assertEqual((skipped.crops, skipped.stats.counts["skipped_other_modality"]), ([], 1))

  def test_command(self):
    videos = pathlib.Path(self._tempdir())
    (videos / "Actor_01").mkdir()
    shutil.copy(self.videos / CALM_CLIP, videos / CALM_CLIP)
    out = self._tempdir()
    result = subprocess.run(
        [sys.executable, "-m", "emotion_tfds.ravdess", f"--ravdess_dir={videos}", f"--out={out}",
         "--frames_per_video=2", "--calm_as_neutral"],
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertRegex(result.stdout, r"faces found \(= crops written\) +2\n")
    self.assertEqual([c.emotion for c in ravdess.read_manifest(out)], ["neutral", "neutral"])

  def test_missing_folder(self):
    with self.assertRaisesRegex(FileNotFoundError, "does-not-exist"):
      ravdess.extract_folder("/does-not-exist", self._tempdir())


class NameTest(absltest.TestCase):

  def test_parse(self):
    self.assertEqual(
        ravdess.parse_name("Actor_12/01-02-06-02-01-02-12.mp4"),
        ravdess.RavdessName(modality=1, vocal_channel=2, emotion=6, intensity=2, statement=1,
                            repetition=2, actor=12))

  def test_bad_names(self):
    for name, message in [("x.mp4", "not RAVDESS-shaped"), ("01-01-01-01-01-01.mp4", "shaped"),
                          ("01-01-01-01-01-01-25.mp4", "actor 25"),
                          ("04-01-01-01-01-01-01.mp4", "modality 04"),
                          ("01-01-00-01-01-01-01.mp4", "emotion 00")]:
      with self.assertRaisesRegex(ValueError, message):
        ravdess.parse_name(name)

  def test_sample_indices(self):
    self.assertEqual(ravdess.sample_indices(8, 3), [1, 4, 6])
    self.assertEqual(ravdess.sample_indices(100, 1), [50])
    self.assertEqual(ravdess.sample_indices(2, 5), [0, 1])


def _crop(emotion: str, actor: int, video: int, frame: int) -> ravdess.Crop:
  code = {v: k for k, v in labels.RAVDESS_EMOTIONS.items()}[emotion]
  stem = f"02-01-{code:02d}-01-01-{video:02d}-{actor:02d}"
  return ravdess.Crop(
      crop_file=f"Actor_{actor:02d}/{stem}_f{frame:04d}.png", emotion=emotion, emotion_code=code,
      intensity=1, vocal_channel=1, statement=1, repetition=video, actor=actor,
      source_video=f"Actor_{actor:02d}/{stem}.mp4", frame_index=frame,
      face_x=0, face_y=0, face_w=10, face_h=10)


def synthetic_crops() -> list[ravdess.Crop]:
  """disgust 20, happy 10, fear 8, angry 3 and neutral 100 (10 actors x 10 frames) crops."""
  crops = [_crop("disgust", actor, 1, f) for actor in (1, 2) for f in range(10)]
  crops += [_crop("happy", 3, 1, f) for f in range(10)]
  crops += [_crop("fear", 4, 1, f) for f in range(8)]
  crops += [_crop("angry", 5, 1, f) for f in range(3)]
  crops += [_crop("neutral", actor, 1, f) for actor in range(1, 11) for f in range(10)]
  return crops


FER_COUNTS = {"angry": 50, "disgust": 5, "fear": 40, "happy": 100, "sad": 60, "surprise": 30,
              "neutral": 70}


class SelectTest(absltest.TestCase):

  def test_fill_gap_counts(self):
    available = {"disgust": 20, "happy": 10, "fear": 8, "angry": 3, "neutral": 100}
    self.assertEqual(
        ravdess.fill_gap_counts(FER_COUNTS, available, cap_ratio=1.0),
        {"angry": 3, "disgust": 5, "fear": 8, "happy": 0, "sad": 0, "surprise": 0, "neutral": 30})
    self.assertEqual(ravdess.fill_gap_counts(FER_COUNTS, available, cap_ratio=3.0)["disgust"], 15)
    with self.assertRaisesRegex(ValueError, "cap_ratio"):
      ravdess.fill_gap_counts(FER_COUNTS, available, cap_ratio=-1)

  def _counts(self, crops):
    return {e: sum(c.emotion == e for c in crops) for e in {c.emotion for c in crops}}

  def test_select_fer7(self):
    chosen = ravdess.select_fill_gap(FER_COUNTS, synthetic_crops(), "fer7")
    self.assertEqual(self._counts(chosen),
                     {"angry": 3, "disgust": 5, "fear": 8, "neutral": 30})
    # Spread: 30 neutral crops from 10 videos are 3 frames of each video.
    per_video = self._counts([dataclasses.replace(c, emotion=c.source_video)
                              for c in chosen if c.emotion == "neutral"])
    self.assertEqual(sorted(per_video.values()), [3] * 10)

  def test_select_seed6_drops_fear(self):
    seed6_counts = {e: FER_COUNTS[e] for e in labels.SEED6}
    chosen = ravdess.select_fill_gap(seed6_counts, synthetic_crops(), "seed6")
    self.assertEqual(self._counts(chosen), {"angry": 3, "disgust": 5, "neutral": 30})

  def test_deterministic_and_seeded(self):
    crops = synthetic_crops()
    first = ravdess.select_fill_gap(FER_COUNTS, crops, "fer7", seed=0)
    random.Random(1).shuffle(crops)
    self.assertEqual(ravdess.select_fill_gap(FER_COUNTS, crops, "fer7", seed=0), first)
    other = ravdess.select_fill_gap(FER_COUNTS, crops, "fer7", seed=1)
    self.assertEqual(self._counts(other), self._counts(first))
    self.assertNotEqual(other, first)

  def test_missing_fer_count(self):
    with self.assertRaisesRegex(ValueError, "surprise"):
      ravdess.select_fill_gap({e: 1 for e in labels.FER7 if e != "surprise"}, [], "fer7")

  def test_crops_by_split_keeps_actors_apart(self):
    split = ravdess.crops_by_split(synthetic_crops(), {"train": range(1, 9), "test": [9, 10]})
    self.assertEqual({c.actor for c in split["test"]}, {9, 10})
    self.assertEqual({c.actor for c in split["train"]}, set(range(1, 9)))
    self.assertLen(split["test"], 20)
    with self.assertRaisesRegex(ValueError, "Actor 3"):
      ravdess.crops_by_split([], {"train": [1, 2, 3], "validation": [3]})


class ManifestTest(_TempDirMixin, absltest.TestCase):

  def test_round_trip(self):
    out = self._tempdir()
    crops = synthetic_crops()
    ravdess.write_manifest(out, reversed(crops))
    self.assertEqual(ravdess.read_manifest(out), sorted(crops, key=lambda c: c.crop_file))

  def test_bad_manifests(self):
    out = pathlib.Path(self._tempdir())
    with self.assertRaisesRegex(FileNotFoundError, "manifest.csv"):
      ravdess.read_manifest(str(out))
    ravdess.write_manifest(str(out), synthetic_crops()[:2])
    good = (out / "manifest.csv").read_text().splitlines()
    (out / "manifest.csv").write_text("\n".join(["a,b"] + good[1:]) + "\n")
    with self.assertRaisesRegex(ValueError, "header"):
      ravdess.read_manifest(str(out))
    (out / "manifest.csv").write_text("\n".join(good[:2] + [good[2].replace(",1,", ",x,", 1)]))
    with self.assertRaisesRegex(ValueError, "row 2"):
      ravdess.read_manifest(str(out))
    (out / "manifest.csv").write_text("\n".join(good[:2] + [good[2].replace("disgust", "calm")]))
    with self.assertRaisesRegex(ValueError, "row 2: unknown emotion 'calm'"):
      ravdess.read_manifest(str(out))

  def test_summary_json(self):
    out = self._tempdir()
    stats = ravdess.Stats()
    stats.counts.update(files=3, skipped_bad_name=1)
    stats.problems.append(("a.mp4", "why"))
    path = ravdess.write_summary(out, stats)
    self.assertEqual(json.loads(pathlib.Path(path).read_text())["counts"]["files"], 3)
    self.assertEqual(ravdess.read_summary(out), stats)


# Copies of the extracted crops per emotion for the build test: (emotion, actors); 3 crops each.
BUILD_CROP_ACTORS = {"disgust": range(1, 9), "fear": range(9, 13), "happy": range(13, 15)}


def write_manual_dir(root: pathlib.Path, crops_dir: pathlib.Path) -> pathlib.Path:
  """fer2013.csv (600 generated rows, FER-2013's class shares) + ravdess_crops/ (real crops).

  The extracted crops (3 per emotion) are copied as if they came from more actors: 24 disgust,
  12 fear and 6 happy crops.
  """
  from emotion_tfds import facegen  # pylint: disable=g-import-not-at-top
  facegen.write_csv(root / "fer2013.csv", num_rows=600, seed=0, distribution="fer")
  out = root / "ravdess_crops"
  copies = []
  for crop in ravdess.read_manifest(str(crops_dir)):
    for actor in BUILD_CROP_ACTORS[crop.emotion]:
      stem = crop.source_video.rsplit("/", 1)[1].rsplit(".", 1)[0][:-2] + f"{actor:02d}"
      copy = dataclasses.replace(
          crop, actor=actor, source_video=f"Actor_{actor:02d}/{stem}.mp4",
          crop_file=f"Actor_{actor:02d}/{stem}_f{crop.frame_index:04d}.png")
      (out / copy.crop_file).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy(crops_dir / crop.crop_file, out / copy.crop_file)
      copies.append(copy)
  ravdess.write_manifest(str(out), copies)
  return root


def fer_train_counts(csv_path: pathlib.Path) -> dict[str, int]:
  """Training rows per FER-2013 emotion name, counted straight from the csv."""
  counts = dict.fromkeys(labels.FER7, 0)
  for line in csv_path.read_text().splitlines()[1:]:
    emotion, _, usage = line.split(",")
    if usage == "Training":
      counts[labels.FER7[int(emotion)]] += 1
  return counts


class FillGapBuildTest(absltest.TestCase):
  """Builds fer2013/fer7_ravdess and fer2013/seed6_ravdess from generated rows + real crops."""

  @pytest.fixture(autouse=True)
  def _build(self, extracted, tmp_path):
    from emotion_tfds import datasets  # pylint: disable=g-import-not-at-top
    self.manual_dir = write_manual_dir(tmp_path / "manual", extracted[1])
    self.data_dir = tmp_path / "tfds"
    self.build = lambda config: datasets.build(f"fer2013/{config}", self.data_dir, self.manual_dir)

  def _counts(self, builder, split):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    names = builder.info.features["label"].names
    counts = collections.Counter()
    for example in tfds.as_numpy(builder.as_dataset(split=split)):
      source = example["source"].decode()
      counts[source, names[example["label"]]] += 1
      self.assertEqual(example["row"] == -1, source == "ravdess")
      self.assertEqual(example["image"].shape, (48, 48, 1))
    return counts

  def test_train_is_filled_toward_the_largest_emotion(self):
    fer = fer_train_counts(self.manual_dir / "fer2013.csv")
    # The generated rows keep FER-2013's imbalance: happy is the largest, disgust tiny.
    self.assertEqual(max(fer, key=fer.get), "happy")
    self.assertLess(fer["disgust"], 24)
    self.assertGreater(min(fer["happy"] - fer["fear"], fer["fear"]), 12)
    for config, scheme in (("fer7_ravdess", labels.FER7), ("seed6_ravdess", labels.SEED6)):
      builder = self.build(config)
      train = self._counts(builder, "train")
      # disgust: capped at its own FER count (24 crops there); fear (fer7 only): all 12 crops
      # there; happy, the largest: nothing (its 6 crops stay out).
      added = {"disgust": fer["disgust"]}
      if "fear" in scheme:
        added["fear"] = 12
      self.assertEqual({e: n for (s, e), n in train.items() if s == "fer2013"},
                       {e: fer[e] for e in scheme}, config)
      self.assertEqual({e: n for (s, e), n in train.items() if s == "ravdess"}, added, config)
      for split in ("validation", "test"):
        self.assertEqual({s for s, _ in self._counts(builder, split)}, {"fer2013"}, config)

  def test_missing_crops_folder(self):
    (self.manual_dir / "ravdess_crops" / "manifest.csv").unlink()
    with self.assertRaisesRegex(FileNotFoundError, "manifest.csv"):
      self.build("fer7_ravdess")


if __name__ == "__main__":
  absltest.main()
