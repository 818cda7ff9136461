"""Tests for emotion_tfds.ravdess.file_names: RAVDESS file names, their emotions, and the videos
among a folder's files."""

from __future__ import annotations

from absl.testing import absltest

from emotion_tfds.ravdess import file_names


class NameTest(absltest.TestCase):

  def test_parse(self):
    self.assertEqual(
        file_names.parse_name("Actor_12/01-02-06-02-01-02-12.mp4"),
        file_names.RavdessName(modality=1, vocal_channel=2, emotion=6, intensity=2,
                               statement=1, repetition=2, actor=12))

  def test_bad_names(self):
    for name, message in [("x.mp4", "not RAVDESS-shaped"), ("01-01-01-01-01-01.mp4", "shaped"),
                          ("01-01-01-01-01-01-25.mp4", "actor 25"),
                          ("04-01-01-01-01-01-01.mp4", "modality 04"),
                          ("01-01-00-01-01-01-01.mp4", "emotion 00")]:
      with self.assertRaisesRegex(ValueError, message):
        file_names.parse_name(name)

  def test_emotions_by_the_ravdess_codes(self):
    # RAVDESS: 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
    # 08 surprised.
    want = {1: "neutral", 2: None, 3: "happy", 4: "sad", 5: "angry", 6: "fear", 7: "disgust",
            8: "surprise"}
    self.assertEqual({code: file_names.emotion_name(code, calm_as_neutral=False)
                      for code in range(1, 9)}, want)
    self.assertEqual(file_names.emotion_name(2, calm_as_neutral=True), "neutral")

  def test_video_paths_are_the_videos_sorted_and_their_names_unique(self):
    paths = ["b/02-01-03-01-01-01-02.avi", "a/02-01-03-01-01-01-01.MP4", "a/notes.txt",
             "a/02-01-03-01-01-01-01.wav", "c/"]
    self.assertEqual(file_names.video_paths(paths),
                     ["a/02-01-03-01-01-01-01.MP4", "b/02-01-03-01-01-01-02.avi"])
    with self.assertRaisesRegex(ValueError, r"Two videos named 02-01-03-01-01-01-01: "
                                r"a/02-01-03-01-01-01-01\.mp4 and b/02-01-03-01-01-01-01\.avi"):
      file_names.video_paths(["b/02-01-03-01-01-01-01.avi", "a/02-01-03-01-01-01-01.mp4"])
    self.assertEqual(file_names.stem("gs://bucket/Actor_01/01-01-01-01-01-01-01.mp4"),
                     "01-01-01-01-01-01-01")


if __name__ == "__main__":
  absltest.main()
