"""A CPU-fast BatchNorm CNN for 48x48 faces: a space-to-depth stem, then few, wide stages.

Elementwise work (BatchNorm, ReLU, pooling) on full-resolution maps, not multiply-adds, limits small
CNNs on a CPU: a 48x48 first stage of 32 channels costs as much time as a 24x24 stage of 128. So the
stem folds each 2x2 patch into 4 channels (48x48x1 -> 24x24x4, lossless) and convolves there, and
every stage pools inside itself (conv -> max-pool -> BN -> ReLU -> conv -> BN -> ReLU, the
airbench block of Keller Jordan's CIFAR-10 speedruns), so the widest maps are the smallest. With
widths (64, 128, 256) it has 1.19M parameters and 60M multiply-adds per image (base_cnn: 2.35M,
77M) and trains ~10% faster than base_cnn here.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers
import tensorflow as tf

from emotion_tfds import image_spec


@keras.saving.register_keras_serializable(package="emotion_tfds")
class SpaceToDepth(layers.Layer):
  """[B, H, W, C] -> [B, H / b, W / b, C * b * b]: each b x b patch becomes channels."""

  def __init__(self, block_size: int = 2, **kwargs):
    super().__init__(**kwargs)
    self.block_size = block_size

  def call(self, x):
    return tf.nn.space_to_depth(x, self.block_size)

  def compute_output_shape(self, input_shape):
    b = self.block_size
    batch, height, width, channels = input_shape
    return (batch, height // b, width // b, channels * b * b)

  def get_config(self):
    return {**super().get_config(), "block_size": self.block_size}


def _conv_bn_relu(x, width: int, name: str, pool: bool = False, bn_momentum: float = 0.9):
  x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
  if pool:
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
  x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
  return layers.ReLU(name=f"{name}_relu")(x)


def build_fastnet(num_classes: int, input_shape: tuple[int, int, int] = image_spec.IMAGE_SHAPE,
                  name: str = "fastnet", stem: int = 64, widths: Sequence[int] = (64, 128, 256),
                  convs_per_stage: int = 2, head_dropout: float = 0.2) -> keras.Model:
  """Builds the network.

  Args:
    num_classes: size of the softmax head.
    input_shape: one image, float32 in [0, 1]; height and width even.
    name: model name.
    stem: width of the conv after space-to-depth (at half resolution).
    widths: one stage per entry; each halves the resolution (24 -> 12 -> 6 -> 3 by default).
    convs_per_stage: convolutions per stage (the first one pools).
    head_dropout: dropout in front of the classifier.

  Returns:
    A functional model: ... -> global max pool -> "head_dropout" -> softmax Dense "predictions".
  """
  inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
  x = SpaceToDepth(2, name="stem_space_to_depth")(inputs)
  x = _conv_bn_relu(x, stem, "stem")
  for s, width in enumerate(widths, start=1):
    x = _conv_bn_relu(x, width, f"stage{s}_1", pool=True)
    for c in range(2, convs_per_stage + 1):
      x = _conv_bn_relu(x, width, f"stage{s}_{c}")
  x = layers.GlobalMaxPooling2D(name="global_pool")(x)
  x = layers.Dropout(head_dropout, name="head_dropout")(x)
  outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
  return keras.Model(inputs, outputs, name=name)


def build_fastnet_wide(num_classes: int, **kwargs) -> keras.Model:
  """fastnet with three convolutions per stage and widths (96, 192, 384): ~3x the compute."""
  return build_fastnet(num_classes, name=kwargs.pop("name", "fastnet_wide"), stem=64,
                       widths=(96, 192, 384), convs_per_stage=3, **kwargs)


def build_fastnet_mid(num_classes: int, **kwargs) -> keras.Model:
  """fastnet at three quarters of the widths, stem 48 and widths (48, 96, 192): ~0.56x the
  multiply-adds, between fastnet_small and fastnet for a fixed-time budget."""
  return build_fastnet(num_classes, name=kwargs.pop("name", "fastnet_mid"), stem=48,
                       widths=(48, 96, 192), **kwargs)


def build_fastnet_small(num_classes: int, **kwargs) -> keras.Model:
  """fastnet at half the widths, stem 32 and widths (32, 64, 128): ~1/4 of the multiply-adds and
  parameters (about the size of a 16-32-64-128 BatchNorm CNN), for more epochs in a fixed time."""
  return build_fastnet(num_classes, name=kwargs.pop("name", "fastnet_small"), stem=32,
                       widths=(32, 64, 128), **kwargs)
