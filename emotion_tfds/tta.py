"""Test-time augmentation: a uint8-in predict function averaged over views of each image.

Used by training's final evaluation, eval_main, the exports of an ensemble and predict_main, so a
TTA figure always comes from the same views.
"""

from __future__ import annotations

import tensorflow as tf

from emotion_tfds import image_spec
from emotion_tfds import preprocess

TTA_MODES = ("none", "flip", "ten-crop")
CROP_SIZE = 40  # Ten-crop: 4 corners + center of 40x40, and their mirror images.


def with_tta(predict_fn: preprocess.PredictFn, tta: str) -> preprocess.PredictFn:
  """Wraps a uint8-in predict_fn with test-time augmentation; probabilities are averaged.

  Args:
    predict_fn: uint8 [B, 48, 48, 1] -> probabilities [B, C].
    tta: "none"; "flip": the image and its mirror; "ten-crop": the 4 corner and the center 40x40
      crops and their mirrors, each resized back to 48x48 (bilinear, rounded to uint8).
  """
  if tta not in TTA_MODES:
    raise ValueError(f"Unknown TTA {tta!r}; expected one of {TTA_MODES}.")
  if tta == "none":
    return predict_fn

  def averaged(images: tf.Tensor) -> tf.Tensor:
    views = _flip_views(images) if tta == "flip" else _ten_crop_views(images)
    probs = predict_fn(tf.concat(views, axis=0))
    num_classes = probs.shape[-1]
    probs = tf.reshape(probs, [len(views), -1, num_classes])
    return tf.reduce_mean(tf.cast(probs, tf.float32), axis=0)

  return averaged


def _flip_views(images: tf.Tensor) -> list[tf.Tensor]:
  return [images, tf.image.flip_left_right(images)]


def _ten_crop_views(images: tf.Tensor) -> list[tf.Tensor]:
  size = image_spec.IMAGE_SIZE
  far, mid = size - CROP_SIZE, (size - CROP_SIZE) // 2
  crops = [images[:, y:y + CROP_SIZE, x:x + CROP_SIZE, :]
           for y, x in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))]
  resized = preprocess.resize_to_uint8(tf.concat(crops, axis=0), (size, size), method="bilinear")
  views = tf.split(resized, len(crops), axis=0)
  return views + [tf.image.flip_left_right(v) for v in views]
