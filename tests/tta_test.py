"""Tests for emotion_tfds.tta: the views of flip and ten-crop TTA, their average, and its
independence of the image's side."""

from __future__ import annotations

from absl.testing import absltest
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import image_spec
from emotion_tfds import tta


def _left_half_model(images: tf.Tensor) -> tf.Tensor:
  """A "model" that looks at the left half of the picture only: mirror images differ."""
  left = tf.reduce_mean(tf.cast(images[:, :, :24, 0], tf.float32), axis=[1, 2]) / 255.0
  return tf.stack([left, 1.0 - left], axis=1)


class TtaTest(absltest.TestCase):

  def test_views_and_average(self):
    seen = []

    def predict_fn(images):
      seen.append(images.numpy())
      return _left_half_model(images)

    images = support.random_images(3)
    flip = tta.with_tta(predict_fn, "flip")(tf.constant(images)).numpy()
    views = seen[-1]
    self.assertEqual(views.shape, (6, *image_spec.IMAGE_SHAPE))
    np.testing.assert_array_equal(views[3:], images[:, :, ::-1])
    left = images[:, :, :24, 0].mean(axis=(1, 2)) / 255.0
    right = images[:, :, 24:, 0].mean(axis=(1, 2)) / 255.0
    np.testing.assert_allclose(flip[:, 0], (left + right) / 2, rtol=1e-5)

    ten = tta.with_tta(predict_fn, "ten-crop")(tf.constant(images)).numpy()
    views = seen[-1]
    self.assertEqual((views.shape, views.dtype), ((30, *image_spec.IMAGE_SHAPE), np.uint8))
    self.assertEqual(ten.shape, (3, 2))
    np.testing.assert_allclose(ten.sum(axis=1), 1.0, rtol=1e-6)
    center = tf.image.resize(images[:, 4:44, 4:44].astype(np.float32), (48, 48))
    np.testing.assert_array_equal(views[12:15], np.round(center.numpy()).astype(np.uint8))
    np.testing.assert_array_equal(views[15:18], views[0:3, :, ::-1])  # Mirror of the top-left.
    top_right = tf.image.resize(images[:, 0:40, 8:48].astype(np.float32), (48, 48))
    np.testing.assert_array_equal(views[3:6], np.round(top_right.numpy()).astype(np.uint8))
    constant = np.full((1, *image_spec.IMAGE_SHAPE), 77, np.uint8)
    tta.with_tta(predict_fn, "ten-crop")(tf.constant(constant))
    np.testing.assert_array_equal(seen[-1], 77)

  def test_unknown_mode(self):
    with self.assertRaisesRegex(ValueError, "Unknown TTA 'rotate'"):
      tta.with_tta(lambda x: x, "rotate")

  def test_flip_and_ten_crop_answer_the_same_for_an_image_and_its_mirror(self):
    images = support.random_images(4)
    mirrored = tf.constant(images[:, :, ::-1])
    plain = _left_half_model(tf.constant(images)).numpy()
    self.assertFalse(np.allclose(plain, _left_half_model(mirrored).numpy(), atol=1e-3))
    for mode in ("flip", "ten-crop"):
      with self.subTest(mode):
        predict = tta.with_tta(_left_half_model, mode)
        # To a few resized pixels rounded to the other uint8 level (ten-crop): ~4e-6 each.
        np.testing.assert_allclose(predict(mirrored).numpy(), predict(tf.constant(images)).numpy(),
                                   atol=1e-4)


if __name__ == "__main__":
  absltest.main()
