"""The seed's base CNN: the Emotion-detection project's network (atulapra/Emotion-detection).

Conv32-Conv64-MaxPool-Dropout(0.25) | Conv128-MaxPool | Conv128-MaxPool-Dropout(0.25) | Flatten-Dense1024
-Dropout(0.5)-Dense softmax; 3x3 'valid' convolutions with ReLU, as in its src/emotions.py. With 7 classes it
has 2,345,607 parameters, the same layers in the same order as the project's released `model.h5`.
"""

from __future__ import annotations

import keras
from keras import layers

from emotion_tfds import image_spec


def build_base_cnn(num_classes: int, input_shape: tuple[int, int, int] = image_spec.IMAGE_SHAPE,
                   name: str = "base_cnn") -> keras.Model:
  """Builds the Emotion-detection CNN.

  Args:
    num_classes: size of the softmax head.
    input_shape: shape of one image; float32 in [0, 1] (`preprocess.to_model_input`).
    name: model name.

  Returns:
    A functional model whose last layer is the float32 softmax Dense "predictions", preceded by the
    head's "head_dropout".
  """
  inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
  x = layers.Conv2D(32, 3, activation="relu", name="block1_conv1")(inputs)
  x = layers.Conv2D(64, 3, activation="relu", name="block1_conv2")(x)
  x = layers.MaxPooling2D(2, name="block1_pool")(x)
  x = layers.Dropout(0.25, name="block1_dropout")(x)

  x = layers.Conv2D(128, 3, activation="relu", name="block2_conv1")(x)
  x = layers.MaxPooling2D(2, name="block2_pool")(x)

  x = layers.Conv2D(128, 3, activation="relu", name="block3_conv1")(x)
  x = layers.MaxPooling2D(2, name="block3_pool")(x)
  x = layers.Dropout(0.25, name="block3_dropout")(x)

  x = layers.Flatten(name="flatten")(x)
  x = layers.Dense(1024, activation="relu", name="fc1")(x)
  x = layers.Dropout(0.5, name="head_dropout")(x)
  outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
  return keras.Model(inputs, outputs, name=name)
