"""Smoke test of benchmarks/train_step.py, so that it cannot rot."""

from __future__ import annotations

import subprocess
import sys

from absl.testing import absltest

from benchmarks import train_step
from emotion_tfds import models


class TrainStepBenchmarkTest(absltest.TestCase):

  def test_measure_trains_both_ways(self):
    rates = train_step.measure("fastnet", batch=8, steps=2, repeats=1)
    self.assertLen(rates, 3)
    self.assertTrue(all(rate > 0 for rate in rates), rates)

  def test_main_prints_the_row_of_the_chosen_model(self):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_step", "--models=fastnet",
         "--batch_size=8", "--steps=2", "--repeats=1"],
        capture_output=True, text=True, check=True, timeout=900).stdout
    self.assertRegex(out, r"Peak \(float32 2048x2048 matmul\): [\d.]+ GFLOP/s")
    row = r"\| fastnet \| [\d.]+ \| \d+ \| \d+ \| \d+ \| [\d.]+ \| \d+% \| \d+% \|"
    self.assertRegex(out, row)
    self.assertIn("fastnet", models.MODELS)
