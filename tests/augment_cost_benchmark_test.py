"""Smoke test of benchmarks/augment_cost.py, so that it cannot rot.

(Run as a subprocess: the module defines absl flags, like benchmarks/train_step.py, and both
cannot be imported into one test process.)
"""

from __future__ import annotations

import re
import subprocess
import sys

from absl.testing import absltest


class AugmentCostBenchmarkTest(absltest.TestCase):

  def test_main_prints_a_row_per_setting(self):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.augment_cost", "--batch_size=4", "--steps=1",
         "--repeats=1"], capture_output=True, text=True, check=True, timeout=600).stdout
    rows = re.findall(r"^\| (.+) \| [\d,]+ \| -?[\d,.]+ \|$", out, flags=re.MULTILINE)
    # The baseline, each of the nine kinds alone, the seed's five and all nine.
    self.assertLen(rows, 12, out)
    self.assertEqual(rows[0], "none (uint8 -> float only)")
    for label in ("rotate=10", "shift=0.1", "erase_prob=0.5", "all nine"):
      self.assertIn(label, rows)
