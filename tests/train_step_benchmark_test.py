"""Smoke test of benchmarks/train_step.py, so that it cannot rot."""

from __future__ import annotations

import subprocess
import sys

from absl.testing import absltest
import keras

from benchmarks import train_step


class TrainStepBenchmarkTest(absltest.TestCase):

  def test_measure_trains_every_way_in_both_precisions(self):
    rates = train_step.measure("fastnet", batch=8, steps=2, repeats=1,
                               precisions=("float32", "bfloat16"))
    self.assertEqual(list(rates), ["float32", "bfloat16"])
    for precision, rate in rates.items():
      for clock in (rate.wall, rate.cpu):
        self.assertLen(clock, 3)
        self.assertTrue(all(r > 0 for r in clock), (precision, rate))
    self.assertEqual(keras.mixed_precision.global_policy().name, "float32")  # Left as it was.

  def test_main_prints_the_rows_of_the_chosen_model(self):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_step", "--models=fastnet_small",
         "--batch_size=8", "--steps=2", "--repeats=1"],
        capture_output=True, text=True, check=True, timeout=900).stdout
    self.assertRegex(out, r"CPU bfloat16 instructions: amx_bf16 (True|False), "
                          r"avx512_bf16 (True|False)")
    self.assertRegex(out, r"Peak \(float32 2048x2048 matmul\): [\d.]+ GFLOP/s \(bfloat16: "
                          r"[\d.]+ GFLOP/s\)")
    row = (r"\| fastnet_small \| {0} \| [\d.]+ \| \d+ \| \d+ \| \d+ \| [\d.]+ \| \d+% \| \d+% \| "
           r"{1} \| {1} \| {1} \| {1} \|")
    self.assertRegex(out, row.format("float32", "1.00x"))
    self.assertRegex(out, row.format("bfloat16", r"[\d.]+x"))
