"""The one conversion from stored images (uint8 48x48x1) to the model's float input, and the one
uint8 -> probabilities step of a network.

Training, evaluation, prediction, the SavedModel serving signature and the TFLite export all call
`to_model_input` (through `network_probabilities`), so what a model sees never depends on the path
the image took.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from emotion_tfds import image_spec


def to_model_input(images: tf.Tensor) -> tf.Tensor:
  """uint8 (or any numeric) images [..., 48, 48, 1] in 0..255 -> float32 in [0, 1]."""
  return tf.cast(images, tf.float32) * (1.0 / 255.0)


# uint8 images [B, 48, 48, 1] -> probabilities [B, C] (tensors, or arrays for a LiteRT model).
PredictFn = Callable[[tf.Tensor], tf.Tensor]


def network_probabilities(net: keras.Model, images: tf.Tensor, training: bool = False) -> tf.Tensor:
  """`net`'s probabilities of uint8 images: `to_model_input`, then the network."""
  return net(to_model_input(images), training=training)


def predict_fn(net: keras.Model) -> PredictFn:
  """`network_probabilities` of `net` in inference mode, as a PredictFn."""

  @tf.autograph.experimental.do_not_convert  # Plain TF ops; spares AutoGraph's closure warning.
  def predict(images):
    return network_probabilities(net, images)

  return predict


def resize_to_uint8(pixels: tf.Tensor, size: tuple[int, int], method: str) -> tf.Tensor:
  """Pixel values 0..255 [B, H, W, C] (any dtype) resized to `size`, rounded and clipped to uint8."""
  resized = tf.image.resize(tf.cast(pixels, tf.float32), size, method=method)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def photos_to_faces(images: tf.Tensor) -> tf.Tensor:
  """uint8 images of any size and 1 or 3 (RGB) channels [B, H, W, C] -> uint8 [B, 48, 48, 1].

  Grayscale conversion and area resizing to 48x48: the stored form. Used in-graph by the serving
  signature that takes already-cropped faces of any size.
  """
  images = tf.convert_to_tensor(images)
  if images.shape.rank != 4:
    raise ValueError(f"Expected images of rank 4 [B, H, W, C], got shape {images.shape}.")
  if images.shape[-1] == 3:
    images = tf.image.rgb_to_grayscale(images)
  elif images.shape[-1] != 1:
    raise ValueError(f"Expected 1 or 3 channels, got {images.shape[-1]}.")
  return resize_to_uint8(images, image_spec.IMAGE_SHAPE[:2], method="area")
