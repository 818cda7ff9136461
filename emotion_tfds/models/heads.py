"""Base/head split of the models and the head swap (the seed's 7 -> 6 class step).

The rule: the *head* is the layer named "predictions" (the softmax Dense) and the layers named
"head_*" in front of it (e.g. "head_dropout"); every other layer except the input is the *base*. So
"base frozen" trains only the new softmax Dense, as the seed's stage 1 did.
"""

from __future__ import annotations

import keras
from keras import layers

PREDICTIONS = "predictions"
HEAD_PREFIX = "head_"


def _is_head(layer: keras.layers.Layer) -> bool:
  return layer.name == PREDICTIONS or layer.name.startswith(HEAD_PREFIX)


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
  """The classifier layers of `model`: "head_*" layers and "predictions", in model order."""
  head = [layer for layer in model.layers if _is_head(layer)]
  if not head or head[-1].name != PREDICTIONS:
    raise ValueError(f"Model {model.name!r} has no final {PREDICTIONS!r} layer.")
  return head


def base_layers(model: keras.Model) -> list[keras.layers.Layer]:
  """All layers of `model` except its input layers and its head (see `head_layers`)."""
  return [layer for layer in model.layers
          if not _is_head(layer) and not isinstance(layer, layers.InputLayer)]


def replace_head(model: keras.Model, num_classes: int) -> keras.Model:
  """Drops the classifier of `model` and puts a new softmax head of `num_classes` on its base.

  The new model shares the base layer objects (and so their weights) with `model`. Head layers other
  than "predictions" are rebuilt from their configs (fresh weights), followed by a new float32
  softmax Dense "predictions".

  Args:
    model: a functional model following the head rule of this module.
    num_classes: size of the new softmax head.

  Returns:
    The new model, named like `model`.
  """
  head = head_layers(model)
  x = head[0].input
  for layer in head[:-1]:
    x = layer.__class__.from_config(layer.get_config())(x)
  outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name=PREDICTIONS)(x)
  return keras.Model(model.input, outputs, name=model.name)
