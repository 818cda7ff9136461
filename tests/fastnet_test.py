"""Tests for the fastnet models, the complexity counts and models_main."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from absl.testing import absltest
import keras
import numpy as np
import tensorflow as tf

from emotion_tfds import models
from emotion_tfds.models import complexity
from emotion_tfds.models import fastnet


class FastnetTest(absltest.TestCase):

  def test_space_to_depth_is_lossless(self):
    images = np.random.default_rng(0).random((2, 48, 48, 1), dtype=np.float32)
    folded = fastnet.SpaceToDepth(2)(images)
    self.assertEqual(folded.shape, (2, 24, 24, 4))
    np.testing.assert_array_equal(tf.nn.depth_to_space(folded, 2), images)

  def test_head_rule_swap_and_save(self):
    net = models.build_fastnet(num_classes=7)
    self.assertEqual([layer.name for layer in models.head_layers(net)],
                     ["head_dropout", "predictions"])
    six = models.replace_head(net, 6)
    self.assertEqual(six.output_shape, (None, 6))
    with tempfile.TemporaryDirectory() as tmp:
      six.save(f"{tmp}/m.keras")
      again = keras.models.load_model(f"{tmp}/m.keras")
    images = np.random.default_rng(1).random((3, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(again(images), six(images), atol=1e-6)

  def test_complexity_by_hand(self):
    for build, stem, widths in ((models.build_fastnet, 64, (64, 128, 256)),
                                (models.build_fastnet_mid, 48, (48, 96, 192)),
                                (models.build_fastnet_small, 32, (32, 64, 128))):
      # Stem 4 -> stem at 24x24, then per stage (in -> w at the pre-pool size, w -> w after it).
      macs = 24 * 24 * 9 * 4 * stem
      size, cin = 24, stem
      for width in widths:
        macs += size * size * 9 * cin * width
        size //= 2
        macs += size * size * 9 * width * width
        cin = width
      macs += widths[-1] * 7
      net = build(num_classes=7)
      stats = complexity.complexity(net)
      self.assertEqual(stats.macs, macs, net.name)
      self.assertEqual(stats.params, net.count_params(), net.name)

  def test_models_main_lists_every_model(self):
    out = subprocess.run([sys.executable, "models_main.py"], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    for name in models.MODELS:
      self.assertRegex(out, rf"\| {name} \| [\d,]+ \| [\d.]+ \|")
    self.assertIn("| base_cnn | 2,345,607 | 154.7 |", out)
