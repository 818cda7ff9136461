"""An ensemble of networks as one Keras network: the mean of the members' probabilities.

The members keep their layers and weights (nothing is copied); each is wrapped as a functional
model named `member_<k>`, since networks of one architecture share a name and a functional model's
layer names must be unique. The average is a float32 `keras.layers.Average`, whatever the global
precision policy, so the ensemble's output is as exact as its members'.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

MEMBER_PREFIX = "member_"  # The wrapped members are layers member_0, member_1, ... of the ensemble.


def average_networks(networks: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
  """One network whose output is the mean of `networks`' outputs on the same input.

  Args:
    networks: two or more built networks with the same input shape and the same number of
      classes (e.g. float32 [B, 48, 48, 1] in [0, 1] -> softmax [B, C]).
    name: the ensemble's name.

  Returns:
    A functional model: input "image", layers member_0..member_<n-1>, output "predictions".

  Raises:
    ValueError: fewer than two networks, or networks of different input or output shapes.
  """
  if len(networks) < 2:
    raise ValueError(f"An ensemble needs at least two networks, got {len(networks)}.")
  first = networks[0]
  for k, net in enumerate(networks[1:], start=1):
    if (net.input_shape, net.output_shape) != (first.input_shape, first.output_shape):
      raise ValueError(f"Member {k} ({net.name}) maps {net.input_shape} -> {net.output_shape}, "
                       f"member 0 ({first.name}) {first.input_shape} -> {first.output_shape}.")
  inputs = keras.Input(first.input_shape[1:], dtype="float32", name="image")
  outputs = [keras.Model(net.input, net.output, name=f"{MEMBER_PREFIX}{k}")(inputs)
             for k, net in enumerate(networks)]
  averaged = keras.layers.Average(dtype="float32", name="predictions")(outputs)
  return keras.Model(inputs, averaged, name=name)

