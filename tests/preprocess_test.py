"""Tests for emotion_tfds.preprocess."""

import numpy as np
import tensorflow as tf

from emotion_tfds import preprocess


class PreprocessTest(tf.test.TestCase):

  def test_to_model_input_range_and_dtype(self):
    images = tf.constant([[0, 128, 255]], tf.uint8)[..., None, None]
    out = preprocess.to_model_input(images)
    self.assertEqual(out.dtype, tf.float32)
    self.assertAllClose(tf.reshape(out, [-1]), [0.0, 128 / 255, 1.0])

  def test_photo_path_equals_stored_path_for_48x48_gray(self):
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, size=(2, 48, 48, 1), dtype=np.uint8)
    self.assertAllEqual(preprocess.photos_to_faces(faces), faces)

  def test_photo_path_colour_any_size(self):
    rgb = np.full((1, 96, 120, 3), 200, np.uint8)
    out = preprocess.photos_to_faces(rgb)
    self.assertEqual(out.shape, (1, 48, 48, 1))
    self.assertEqual(out.dtype, tf.uint8)
    self.assertAllClose(out, np.full((1, 48, 48, 1), 200), atol=1)

  def test_photo_path_rejects_bad_channels(self):
    with self.assertRaisesRegex(ValueError, "1 or 3 channels"):
      preprocess.photos_to_faces(np.zeros((1, 48, 48, 2), np.uint8))
