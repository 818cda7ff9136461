"""The one conversion from stored images (uint8 48x48x1) to the model's float input.

Training, evaluation, prediction, the SavedModel serving signature and the TFLite export all call
`to_model_input`, so what a model sees never depends on the path the image took.
"""

from __future__ import annotations

import tensorflow as tf

from emotion_tfds import image_spec


def to_model_input(images: tf.Tensor) -> tf.Tensor:
  """uint8 (or any numeric) images [..., 48, 48, 1] in 0..255 -> float32 in [0, 1]."""
  return tf.cast(images, tf.float32) * (1.0 / 255.0)


def photo_to_model_input(images: tf.Tensor) -> tf.Tensor:
  """uint8 images of any size and 1 or 3 (RGB) channels [B, H, W, C] -> float32 [B, 48, 48, 1].

  Grayscale conversion and area resizing to 48x48, then `to_model_input`. Used in-graph by the
  serving signature, which takes already-cropped faces of any size.
  """
  images = tf.convert_to_tensor(images)
  if images.shape.rank != 4:
    raise ValueError(f"Expected images of rank 4 [B, H, W, C], got shape {images.shape}.")
  if images.shape[-1] == 3:
    images = tf.image.rgb_to_grayscale(images)
  elif images.shape[-1] != 1:
    raise ValueError(f"Expected 1 or 3 channels, got {images.shape[-1]}.")
  images = tf.image.resize(tf.cast(images, tf.float32), image_spec.IMAGE_SHAPE[:2], method="area")
  images = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)
  return to_model_input(images)
