"""Parameters and multiply-adds per image of a Keras model (convolutions and dense layers)."""

from __future__ import annotations

import dataclasses

import keras
from keras import layers


@dataclasses.dataclass(frozen=True)
class Complexity:
  """Size and cost of one network: parameters and forward multiply-adds for one image."""
  params: int
  macs: int

  @property
  def mflops(self) -> float:
    """Forward MFLOPs per image (2 per multiply-add)."""
    return 2 * self.macs / 1e6


def complexity(model: keras.Model) -> Complexity:
  """Counts `model`'s parameters and the multiply-adds of its Conv2D and Dense layers per image.

  Elementwise layers (BatchNorm, ReLU, pooling) are not counted; they are a few percent of the
  multiply-adds, though on a CPU they can take a larger share of the time.
  """
  macs = 0
  for layer in model.layers:
    if isinstance(layer, layers.Conv2D):
      _, height, width, _ = layer.output.shape
      kh, kw, cin, cout = layer.kernel.shape
      macs += height * width * kh * kw * cin * cout
    elif isinstance(layer, layers.Dense):
      macs += layer.kernel.shape[0] * layer.kernel.shape[1]
    elif isinstance(layer, keras.Model):
      macs += complexity(layer).macs
  return Complexity(params=model.count_params(), macs=int(macs))
