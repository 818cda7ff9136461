"""Tests for emotion_tfds.train.network: the network of each stage (built, its head swapped when the
classes change, the same new head for a resumed run) and which of its layers train. (A pretrained
file in the run's precision: precision_test.)"""

from __future__ import annotations

from absl.testing import absltest
import keras
import numpy as np
import support
import train_support

from emotion_tfds import models
from emotion_tfds.data import datasets
from emotion_tfds.train import network


class BuildNetworkTest(support.WithGeneratedData, absltest.TestCase):
  """fer7 pretraining, then two stages on seed6."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.builders = {name: datasets.get_builder(name, cls.data_dir)
                    for name in ("generated_faces/fer7", "generated_faces/seed6")}

  def _config(self, seed: int = 0):
    return train_support.train_config("m", self.data_dir, "head:1:1e-3:16,all:1:1e-3:16",
                                      pretrain="all:1:1e-3:16", seed=seed)

  def test_the_head_follows_the_classes_of_each_stage(self):
    config = self._config()
    self.assertEqual(network.build_network(config, self.builders, 0).output_shape, (None, 7))
    for stage in (1, 2):
      self.assertEqual(network.build_network(config, self.builders, stage).output_shape,
                       (None, 6))
    pretrained = network.build_network(config, self.builders, 0)
    swapped = network.next_stage_network(config, self.builders, pretrained, 1)
    for layer in models.base_layers(pretrained):  # The base and its weights are kept.
      self.assertIs(swapped.get_layer(layer.name), layer)
    # The same classes: the same network.
    self.assertIs(network.next_stage_network(config, self.builders, swapped, 2), swapped)

  def test_a_new_head_depends_only_on_the_seed_and_the_stage(self):
    def new_head(seed: int, global_seed: int) -> list[np.ndarray]:
      net = models.build_base_cnn(7)
      keras.utils.set_random_seed(global_seed)  # The random state whatever ran before left.
      swapped = network.next_stage_network(self._config(seed), self.builders, net, 1)
      return swapped.get_layer("predictions").get_weights()

    first = new_head(seed=0, global_seed=1)
    for a, b in zip(first, new_head(seed=0, global_seed=5), strict=True):
      np.testing.assert_array_equal(a, b)
    self.assertFalse(np.array_equal(first[0], new_head(seed=1, global_seed=1)[0]))

  def test_a_head_stage_trains_the_head_only(self):
    net = models.build_fastnet_small(6)
    head = {layer.name for layer in models.head_layers(net)}
    network.set_trainable(net, "head")
    trainable = {layer.name for layer in net.layers if layer.trainable and layer.weights}
    self.assertEqual(trainable, {"predictions"})
    self.assertTrue(all(net.get_layer(name).trainable for name in head))
    self.assertLen(net.trainable_weights, 2)  # The softmax Dense's kernel and bias.
    network.set_trainable(net, "all")
    self.assertTrue(all(layer.trainable for layer in net.layers if layer.weights))
    self.assertGreater(len(net.trainable_weights), 2)


if __name__ == "__main__":
  absltest.main()
