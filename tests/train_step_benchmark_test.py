"""Smoke test of benchmarks/train_step.py, so that it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys

from absl.testing import absltest

from emotion_tfds import models
from emotion_tfds.models import complexity

# | model | MFLOPs | project, no-aug, plain images/s | project / plain | % of peak: project, plain |
_ROW = re.compile(r"\| fastnet \| ([\d.]+) \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \| "
                  r"(\d+)% \| (\d+)% \|")


class TrainStepBenchmarkTest(absltest.TestCase):

  def test_main_prints_the_row_of_the_chosen_model_with_its_arithmetic(self):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_step", "--models=fastnet",
         "--batch_size=8", "--steps=2", "--repeats=1"],
        capture_output=True, text=True, check=True, timeout=900).stdout
    peak = float(re.search(r"Peak \(float32 2048x2048 matmul\): ([\d.]+) GFLOP/s", out)[1])
    (row,) = _ROW.findall(out)
    mflops, project, no_aug, plain, ratio, project_share, plain_share = map(float, row)
    # The FLOPs are the model's (models_main.py's count) with the benchmark's 7 classes.
    self.assertEqual(f"{mflops:.1f}",
                     f"{complexity.complexity(models.build_fastnet(num_classes=7)).mflops:.1f}")
    self.assertGreater(min(project, no_aug, plain), 0)
    # Each printed number is rounded (rates to whole images/s): the ratio and the shares of the
    # peak agree with the printed rates within what that rounding allows.
    expected = project / plain
    self.assertAlmostEqual(ratio, expected,
                           delta=0.005 + 2 * expected * (0.5 / project + 0.5 / plain))
    for rate, share in ((project, project_share), (plain, plain_share)):
      expected = 100 * rate * 3 * mflops / 1e3 / peak
      self.assertAlmostEqual(share, expected,
                             delta=0.5 + 2 * expected * (0.5 / rate + 0.05 / mflops + 0.05 / peak))
