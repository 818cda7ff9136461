"""Tests for emotion_tfds.ravdess.crops_folder: the manifest of a crops folder and reading its crops."""

from __future__ import annotations

import pathlib
import shutil
import tempfile

from absl.testing import absltest

from emotion_tfds.ravdess import crops_folder


def _crops() -> list[crops_folder.Crop]:
  return [crops_folder.Crop(
      crop_file=f"Actor_0{actor}/02-01-07-01-01-01-0{actor}_f000{frame}.png", emotion="disgust",
      emotion_code=7, intensity=1, vocal_channel=1, statement=1, repetition=1, actor=actor,
      source_video=f"Actor_0{actor}/02-01-07-01-01-01-0{actor}.mp4", frame_index=frame,
      face_x=0, face_y=0, face_w=10, face_h=10) for actor in (2, 1) for frame in (3, 1)]


class ManifestTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.out = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, self.out)

  def test_round_trip_sorted_by_crop_file_and_no_temporary_left(self):
    crops = _crops()
    path = crops_folder.write_manifest(self.out, crops)
    self.assertEqual(path, self.out / "manifest.csv")
    self.assertEqual(crops_folder.read_manifest(self.out),
                     sorted(crops, key=lambda c: c.crop_file))
    self.assertEqual([p.name for p in self.out.iterdir()], ["manifest.csv"])

  def test_bad_manifests_name_the_file_and_row(self):
    with self.assertRaisesRegex(FileNotFoundError, "manifest.csv does not exist"):
      crops_folder.read_manifest(self.out)
    crops_folder.write_manifest(self.out, _crops()[:2])
    manifest = self.out / "manifest.csv"
    good = manifest.read_text().splitlines()
    manifest.write_text("\n".join(["a,b"] + good[1:]) + "\n")
    with self.assertRaisesRegex(ValueError, r"manifest\.csv: header \['a', 'b'\]"):
      crops_folder.read_manifest(self.out)
    manifest.write_text("\n".join(good[:2] + [good[2].replace(",1,", ",x,", 1)]))
    with self.assertRaisesRegex(ValueError, r"manifest\.csv: row 2: "):
      crops_folder.read_manifest(self.out)
    manifest.write_text("\n".join(good[:2] + [good[2].replace("disgust", "calm")]))
    with self.assertRaisesRegex(ValueError, "row 2: unknown emotion 'calm'"):
      crops_folder.read_manifest(self.out)
