"""Smoke test of benchmarks/augment_cost.py, so that it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys

from absl.testing import absltest

from benchmarks import augment_cost


class AugmentCostBenchmarkTest(absltest.TestCase):

  def test_main_prints_a_row_per_setting(self):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.augment_cost", "--batch_size=4", "--steps=1",
         "--repeats=1"], capture_output=True, text=True, check=True, timeout=600).stdout
    self.assertLen(augment_cost.settings(), 1 + 9 + 2)  # The baseline, each kind, two mixes.
    for label in augment_cost.settings():
      self.assertRegex(out, rf"\| {re.escape(label)} \| [\d,]+ \| -?[\d,.]+ \|")


if __name__ == "__main__":
  absltest.main()
