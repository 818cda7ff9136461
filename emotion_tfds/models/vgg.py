"""A VGG-style network for the accuracy work: blocks of two 3x3 conv + BatchNorm + ReLU, then pooling.

With the default widths (32, 64, 128, 256) it has about 1.8M parameters and needs roughly 1.5x the
multiply-adds of the base CNN per image, so it still trains on a few CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from emotion_tfds import image_spec


def build_vgg(num_classes: int, input_shape: tuple[int, int, int] = image_spec.IMAGE_SHAPE,
              name: str = "vgg", filters: Sequence[int] = (32, 64, 128, 256),
              block_dropout: float = 0.25, fc_units: int = 256,
              head_dropout: float = 0.5) -> keras.Model:
  """Builds the VGG-style network.

  Each block is [Conv3x3 (no bias) -> BatchNorm -> ReLU] x 2 -> MaxPool 2x2 -> Dropout; the four default
  blocks take 48x48 down to 3x3. Then Flatten -> Dense + BatchNorm + ReLU -> Dropout -> softmax.

  Args:
    num_classes: size of the softmax head.
    input_shape: shape of one image; float32 in [0, 1] (`preprocess.to_model_input`).
    name: model name.
    filters: conv width of each block.
    block_dropout: dropout rate after each block's pooling.
    fc_units: width of the fully connected layer before the head.
    head_dropout: dropout rate in front of the classifier.

  Returns:
    A functional model whose last layer is the float32 softmax Dense "predictions", preceded by the
    head's "head_dropout".
  """
  inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
  x = inputs
  for b, width in enumerate(filters, start=1):
    for c in (1, 2):
      x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{b}_conv{c}")(x)
      x = layers.BatchNormalization(name=f"block{b}_bn{c}")(x)
      x = layers.ReLU(name=f"block{b}_relu{c}")(x)
    x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.Dropout(block_dropout, name=f"block{b}_dropout")(x)

  x = layers.Flatten(name="flatten")(x)
  x = layers.Dense(fc_units, use_bias=False, name="fc1")(x)
  x = layers.BatchNormalization(name="fc1_bn")(x)
  x = layers.ReLU(name="fc1_relu")(x)
  x = layers.Dropout(head_dropout, name="head_dropout")(x)
  outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
  return keras.Model(inputs, outputs, name=name)
