"""Tests for emotion_tfds.ravdess.video_frames: which frames of a clip are sampled, decoding them
from clips written here, the videos it refuses, and the largest face of a frame."""

from __future__ import annotations

from absl.testing import absltest
import numpy as np
import support

from emotion_tfds import faces
from emotion_tfds.ravdess import video_frames

_LEVELS = [20 + 25 * i for i in range(8)]  # Frame i of the clips here is this gray level.


class SampleTest(absltest.TestCase):

  def test_sample_indices(self):
    self.assertEqual(video_frames.sample_indices(8, 3), [1, 4, 6])
    self.assertEqual(video_frames.sample_indices(100, 1), [50])
    self.assertEqual(video_frames.sample_indices(2, 5), [0, 1])


class ReadTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = support.tempdir(self)
    # Noise around each level: frames that do not compress to almost nothing.
    noise = np.random.default_rng(0).integers(-10, 11, (120, 160, 3))
    frames = [(level + noise).astype(np.uint8) for level in _LEVELS]
    self.clip = support.write_clip(self.tmp / "clip.avi", frames)

  def test_the_sampled_frames_in_order(self):
    frames = video_frames.read_sampled_frames(str(self.clip), 3)
    self.assertEqual([index for index, _ in frames], [1, 4, 6])
    for index, frame in frames:
      self.assertEqual(frame.shape, (120, 160, 3))
      self.assertAlmostEqual(float(frame.mean()), _LEVELS[index], delta=3)  # MJPG is lossy.
    self.assertLen(video_frames.read_sampled_frames(str(self.clip), 20), len(_LEVELS))

  def test_files_that_are_not_whole_videos(self):
    (self.tmp / "notes.mp4").write_bytes(b"not a video")
    with self.assertRaisesRegex(video_frames.VideoError, "cannot be opened as a video"):
      video_frames.read_sampled_frames(str(self.tmp / "notes.mp4"), 3)
    support.truncate_file(self.clip, 1 / 2)  # Opens, but decoding stops half way.
    with self.assertRaisesRegex(video_frames.VideoError,
                                r"truncated: decoding stopped at frame \d"):
      video_frames.read_sampled_frames(str(self.clip), 8)


class LargestFaceTest(absltest.TestCase):

  def test_found_on_a_smaller_copy_and_given_in_the_frames_pixels(self):
    frame = next(iter(support.real_face_frames().values()))
    full = faces.detect_faces(frame)[0]
    side = max(frame.shape[:2]) // 2
    x, y, w, h = video_frames.largest_face(frame, max_side=side)
    self.assertGreater(w, 0.8 * full[2])  # The box of the full frame, within the half scale's
    self.assertLess(w, 1.25 * full[2])    # rounding and the detector's steps.
    self.assertLess(abs(x - full[0]) + abs(y - full[1]), 0.25 * full[2])
    self.assertEqual(video_frames.largest_face(frame, max_side=10_000), tuple(full))
    self.assertIsNone(video_frames.largest_face(np.full_like(frame, 90), max_side=side))


if __name__ == "__main__":
  absltest.main()
