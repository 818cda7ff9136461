"""Tests for emotion_tfds.train.strategies: the strategies by name and the devices they train on.
(A missing TPU: train_main_test; multi-worker runs: distribute_test.)"""

from __future__ import annotations

from absl.testing import absltest
import tensorflow as tf

from emotion_tfds.train import strategies


class MakeStrategyTest(absltest.TestCase):

  def test_default_is_the_strategy_in_effect(self):
    self.assertIs(strategies.make_strategy("default"), tf.distribute.get_strategy())

  def test_one_device_and_mirrored_on_this_machine(self):
    if tf.config.list_logical_devices("GPU"):
      self.skipTest("this machine has a GPU: one_device would place the run on it")
    one = strategies.make_strategy("one_device")
    self.assertIsInstance(one, tf.distribute.OneDeviceStrategy)
    self.assertEqual([d.rsplit("/", 1)[-1] for d in one.extended.worker_devices], ["device:CPU:0"])
    mirrored = strategies.make_strategy("mirrored")
    self.assertIsInstance(mirrored, tf.distribute.MirroredStrategy)
    self.assertEqual(mirrored.num_replicas_in_sync, 1)  # One replica per GPU, else the CPU.
    for strategy in (one, mirrored, strategies.make_strategy("default")):
      self.assertEqual(strategies.device_kinds(strategy), {"CPU"})

  def test_unknown_name_lists_the_strategies(self):
    with self.assertRaisesRegex(ValueError, r"Unknown strategy 'gpu'; expected one of \('default', "
                                r"'one_device', 'mirrored', 'multi_worker', 'tpu'\)"):
      strategies.make_strategy("gpu")


if __name__ == "__main__":
  absltest.main()
