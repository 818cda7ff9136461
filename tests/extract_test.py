"""Tests for emotion_tfds.ravdess.extract: crops from real-face clips (direct and Beam), the
summary. (The names: file_names_test; decoding a clip: video_frames_test.)

The clips are written with cv2.VideoWriter from real photographs (the shared RAVDESS frames, else
scikit-image's astronaut) under RAVDESS-style names, next to a blank clip, truncated files and
badly named files.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

from absl.testing import absltest
import cv2
import numpy as np
import support

from emotion_tfds import errors
from emotion_tfds import faces
from emotion_tfds.ravdess import crops_folder
from emotion_tfds.ravdess import extract

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


def write_ravdess_folder(root: pathlib.Path, photos: list[np.ndarray]) -> pathlib.Path:
  """Writes the clips of this module under root (RAVDESS layout) and returns root."""
  clips = list(FACE_CLIPS) + [CALM_CLIP, OTHER_MODALITY_CLIP, TRUNCATED_MP4, TRUNCATED_AVI]
  for i, clip in enumerate(clips):
    photo = photos[i % len(photos)]
    support.write_clip(root / clip, [_shifted(photo, j) for j in range(FRAMES_PER_CLIP)])
  # The mp4 loses its index at the end: it cannot be opened.
  support.truncate_file(root / TRUNCATED_MP4, 1 / 3)
  support.truncate_file(root / TRUNCATED_AVI, 1 / 2)  # Opens, but decoding stops half way.
  support.write_clip(root / BLANK_CLIP, [np.full_like(photos[0], 90)] * FRAMES_PER_CLIP)
  for name in BAD_NAMES:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(b"not a video")
  return root


def _extract_both_ways() -> tuple:
  """(videos folder, crops by extract_folder, its stats, crops by run_beam, its stats, photos)."""
  root = support.process_tempdir("ravdess_extract")
  photos = list(support.real_face_frames().values())
  videos = write_ravdess_folder(root / "videos", photos)
  options = extract.ExtractOptions(frames_per_video=K)
  direct_stats = extract.extract_folder(str(videos), str(root / "direct"), options)
  beam_stats = extract.run_beam(str(videos), str(root / "beam"), options, pipeline_args=BEAM_ARGS)
  return videos, root / "direct", direct_stats, root / "beam", beam_stats, photos


class ExtractTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    (cls.videos, cls.direct_dir, cls.direct_stats, cls.beam_dir, cls.beam_stats,
     cls.photos) = _extract_both_ways()

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
    self.assertEqual(extract.read_summary(str(self.direct_dir)).to_json(),
                     self.direct_stats.to_json())
    self.assertIn(TRUNCATED_AVI, self.direct_stats.format())

  def test_manifest_labels_and_frames(self):
    crops = crops_folder.read_manifest(str(self.direct_dir))
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
    crops = crops_folder.read_manifest(str(self.direct_dir))
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
    crops = crops_folder.read_manifest(str(self.direct_dir))
    data = crops_folder.read_crop(str(self.direct_dir), crops[0])
    np.testing.assert_array_equal(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED),
        cv2.imread(str(self.direct_dir / crops[0].crop_file), cv2.IMREAD_UNCHANGED))
    bad_dir = support.tempdir(self)
    (bad_dir / "Actor_01").mkdir()
    with self.assertRaisesRegex(FileNotFoundError, "f0001.png"):
      crops_folder.read_crop(str(bad_dir), crops[0])
    cv2.imwrite(str(bad_dir / crops[0].crop_file), np.zeros((48, 48, 3), np.uint8))
    with self.assertRaisesRegex(ValueError, "f0001.png: expected a 48x48 8-bit grayscale PNG, got "
                                "48x48, bit depth 8, colour type 2"):
      crops_folder.read_crop(str(bad_dir), crops[0])

  def test_beam_matches_direct(self):
    self.assertEqual(crops_folder.read_manifest(str(self.beam_dir)),
                     crops_folder.read_manifest(str(self.direct_dir)))
    self.assertEqual(self.beam_stats.to_json(), self.direct_stats.to_json())
    for crop in crops_folder.read_manifest(str(self.direct_dir)):
      self.assertEqual((self.beam_dir / crop.crop_file).read_bytes(),
                       (self.direct_dir / crop.crop_file).read_bytes(), crop.crop_file)

  def test_calm_as_neutral(self):
    out = str(support.tempdir(self))
    options = extract.ExtractOptions(frames_per_video=2, calm_as_neutral=True)
    result = extract.extract_video(str(self.videos / CALM_CLIP), str(self.videos), out, options)
    self.assertEqual([(c.emotion, c.emotion_code) for c in result.crops], [("neutral", 2)] * 2)
    self.assertTrue(all(os.path.exists(os.path.join(out, c.crop_file)) for c in result.crops))

  def test_other_modality_is_kept_on_request(self):
    out = str(support.tempdir(self))
    options = extract.ExtractOptions(frames_per_video=1, modality=1)
    kept = extract.extract_video(
        str(self.videos / OTHER_MODALITY_CLIP), str(self.videos), out, options)
    skipped = extract.extract_video(
        str(self.videos / "Actor_01/02-01-07-01-01-01-01.mp4"), str(self.videos), out, options)
    self.assertLen(kept.crops, 1)
    self.assertEqual((skipped.crops, skipped.stats.counts["skipped_other_modality"]), ([], 1))

  def test_command(self):
    videos = support.tempdir(self)
    (videos / "Actor_01").mkdir()
    shutil.copy(self.videos / CALM_CLIP, videos / CALM_CLIP)
    out = str(support.tempdir(self))
    result = subprocess.run(
        [sys.executable, str(_MAIN), f"--ravdess_dir={videos}", f"--out={out}",
         "--frames_per_video=2", "--calm_as_neutral"],
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertRegex(result.stdout, r"faces found \(= crops written\) +2\n")
    self.assertEqual([c.emotion for c in crops_folder.read_manifest(out)], ["neutral", "neutral"])

  def test_missing_folder(self):
    with self.assertRaisesRegex(errors.MissingFileError, "does-not-exist"):
      extract.extract_folder("/does-not-exist", str(support.tempdir(self)))
    result = subprocess.run(
        [sys.executable, str(_MAIN), "--ravdess_dir=/does-not-exist",
         f"--out={support.tempdir(self)}"], capture_output=True, text=True, timeout=300)
    self.assertEqual((result.returncode, result.stderr),
                     (1, "error: RAVDESS folder /does-not-exist does not exist (--ravdess_dir).\n"))


_MAIN = pathlib.Path(__file__).resolve().parents[1] / "ravdess_main.py"


class SummaryTest(absltest.TestCase):

  def test_summary_json(self):
    out = str(support.tempdir(self))
    stats = extract.Stats()
    stats.counts.update(files=3, skipped_bad_name=1)
    stats.problems.append(("a.mp4", "why"))
    path = extract.write_summary(out, stats)
    self.assertEqual(json.loads(pathlib.Path(path).read_text())["counts"]["files"], 3)
    self.assertEqual(extract.read_summary(out), stats)
