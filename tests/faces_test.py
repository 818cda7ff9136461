"""Tests for emotion_tfds.faces on real photos (RAVDESS frames, else scikit-image's astronaut)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from absl.testing import absltest
import cv2
import numpy as np
import support

from emotion_tfds import faces

REPO = pathlib.Path(__file__).resolve().parents[1]


def _inside(inner, outer, slack: int = 0) -> bool:
  x, y, w, h = inner
  ox, oy, ow, oh = outer
  return (x >= ox - slack and y >= oy - slack and x + w <= ox + ow + slack
          and y + h <= oy + oh + slack)


class DetectFacesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.frames = support.real_face_frames()

  def test_one_face_per_real_frame(self):
    counts = {name: len(faces.detect_faces(frame)) for name, frame in self.frames.items()}
    self.assertEqual(counts, {name: 1 for name in self.frames})

  def test_gray_input_finds_the_same_face(self):
    frame = next(iter(self.frames.values()))
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    self.assertEqual(faces.detect_faces(gray), faces.detect_faces(frame))
    self.assertEqual(faces.detect_faces(gray[..., None]), faces.detect_faces(frame))

  def test_no_face_in_blank_or_noise(self):
    rng = np.random.default_rng(0)
    self.assertEqual(faces.detect_faces(np.full((224, 398, 3), 128, np.uint8)), [])
    self.assertEqual(faces.detect_faces(rng.integers(0, 256, (224, 398), dtype=np.uint8)), [])

  def test_largest_first(self):
    frame = next(iter(self.frames.values()))
    small = cv2.resize(frame, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((max(frame.shape[0], small.shape[0]), frame.shape[1] + small.shape[1], 3),
                     128, np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small
    canvas[:frame.shape[0], small.shape[1]:] = frame
    boxes = faces.detect_faces(canvas)
    self.assertLen(boxes, 2)
    self.assertGreater(boxes[0][2] * boxes[0][3], boxes[1][2] * boxes[1][3])
    self.assertGreaterEqual(boxes[0][0], small.shape[1])  # The big face is on the right.

  def test_rejects_float_image(self):
    with self.assertRaisesRegex(ValueError, "uint8"):
      faces.detect_faces(np.zeros((64, 64), np.float32))


class CropFaceTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.frames = support.real_face_frames()

  def test_crop_contains_the_face(self):
    for name, frame in self.frames.items():
      (box,) = faces.detect_faces(frame)
      crop = faces.crop_face(frame, box, margin=0.2)
      self.assertEqual((crop.shape, crop.dtype), ((48, 48), np.uint8), name)
      # Upscaled, the crop still shows one face, and it fills the middle of the crop: the
      # detected box is 1 / 1.4 of the crop side, centred, i.e. about 114 of 160 pixels.
      big = cv2.resize(crop, (160, 160), interpolation=cv2.INTER_LINEAR)
      found = faces.detect_faces(big, min_size=(60, 60))
      self.assertLen(found, 1, name)
      self.assertTrue(_inside(found[0], (10, 10, 140, 140), slack=8), (name, found))

  def test_crop_equals_manual_slice_inside_image(self):
    frame = next(iter(self.frames.values()))
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    crop = faces.crop_face(frame, (100, 50, 80, 80), margin=0.25)  # Square side 120 from (80, 30).
    expected = cv2.resize(gray[30:150, 80:200], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop, expected)

  def test_border_is_padded_not_shifted(self):
    gray = np.zeros((100, 100), np.uint8)
    gray[:, 50:] = 255  # Left half black, right half white.
    crop = faces.crop_face(gray, (0, 0, 100, 100), margin=0.5)  # Side 200, half outside.
    self.assertEqual(crop.shape, (48, 48))
    # Centred on the image: the black/white edge stays in the middle column.
    self.assertEqual(crop[:, :23].max(), 0)
    self.assertEqual(crop[:, 25:].min(), 255)

  def test_bad_box(self):
    with self.assertRaisesRegex(ValueError, "positive"):
      faces.crop_face(np.zeros((10, 10), np.uint8), (0, 0, 0, 5))
    with self.assertRaisesRegex(ValueError, "outside"):
      faces.crop_face(np.zeros((10, 10), np.uint8), (50, 50, 5, 5), margin=0.0)


class ImportTest(absltest.TestCase):

  def test_faces_and_facegen_do_not_load_tensorflow(self):
    # Crop extraction runs in Beam workers: the image size comes from image_spec, not preprocess.
    code = ("import sys; import emotion_tfds.faces, emotion_tfds.data.facegen; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
    self.assertEqual(done.stdout.strip(), "[]")
