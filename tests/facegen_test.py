"""Tests of the generated-faces data set: csv format, determinism, CLI, and label-driven faces."""

from __future__ import annotations

import csv
import json
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from emotion_tfds import labels
from emotion_tfds.data import facegen


def _read(path: pathlib.Path) -> tuple[list[str], list[list[str]]]:
  with path.open(newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


class WriteCsvTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.TemporaryDirectory()
    cls.addClassCleanup(tmp.cleanup)
    cls.dir = pathlib.Path(tmp.name)
    cls.path = facegen.write_csv(cls.dir / "a" / "fer2013.csv", num_rows=700, seed=3)

  def test_format(self):
    header, rows = _read(self.path)
    self.assertEqual(header, ["emotion", "pixels", "Usage"])
    self.assertLen(rows, 700)
    for emotion, pixels, usage in rows:
      values = [int(v) for v in pixels.split(" ")]
      self.assertLen(values, 48 * 48)
      self.assertBetween(min(values), 0, 255)
      self.assertBetween(max(values), 0, 255)
      self.assertIn(usage, facegen.USAGES)
      self.assertIn(int(emotion), range(len(labels.FER7)))
    self.assertEqual({int(r[0]) for r in rows}, set(range(len(labels.FER7))))
    self.assertEqual(self.path.read_bytes()[:21], b"emotion,pixels,Usage\n")

  def test_csv_holds_the_generated_arrays(self):
    images, face_labels, usage = facegen.generate(700, seed=3)
    _, rows = _read(self.path)
    np.testing.assert_array_equal(
        np.array([r[1].split(" ") for r in rows], dtype=np.uint8).reshape(images.shape), images)
    np.testing.assert_array_equal([int(r[0]) for r in rows], face_labels)
    self.assertEqual([r[2] for r in rows], [facegen.USAGES[u] for u in usage])

  def test_splits_are_stratified_and_balanced(self):
    _, rows = _read(self.path)
    counts = {u: np.bincount([int(r[0]) for r in rows if r[2] == u], minlength=7)
              for u in facegen.USAGES}
    self.assertEqual(counts["Training"].tolist(), [80] * 7)
    self.assertEqual(counts["PublicTest"].tolist(), [10] * 7)
    self.assertEqual(counts["PrivateTest"].tolist(), [10] * 7)

  def test_small_file_still_covers_every_class_in_every_split(self):
    path = facegen.write_csv(self.dir / "small.csv", num_rows=100, seed=1)
    _, rows = _read(path)
    for usage in facegen.USAGES:
      self.assertEqual({int(r[0]) for r in rows if r[2] == usage}, set(range(7)), usage)

  def test_same_seed_same_bytes_other_seed_differs(self):
    again = facegen.write_csv(self.dir / "b" / "fer2013.csv", num_rows=700, seed=3)
    other = facegen.write_csv(self.dir / "c" / "fer2013.csv", num_rows=700, seed=4)
    self.assertEqual(self.path.read_bytes(), again.read_bytes())
    self.assertNotEqual(self.path.read_bytes(), other.read_bytes())

  def test_fer_distribution_is_imbalanced_like_fer2013(self):
    face_labels = facegen.sample_labels(3589, np.random.default_rng(0), distribution="fer")
    counts = np.bincount(face_labels, minlength=7)
    expected = np.array(facegen.FER_CLASS_COUNTS) / sum(facegen.FER_CLASS_COUNTS) * 3589
    np.testing.assert_allclose(counts, expected, atol=1)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "num_rows"):
      facegen.generate(0)
    with self.assertRaisesRegex(ValueError, "distribution"):
      facegen.generate(10, distribution="uniform")


class ExpressionTest(parameterized.TestCase):
  """Faces must follow their labels: a model can learn the data only if they do."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    rng = np.random.default_rng(0)
    cls.images = {}
    for name in ("angry", "happy", "sad", "surprise", "neutral"):
      images = facegen.render(np.full(300, labels.FER7.index(name)), rng).astype(np.float32)
      # Standardise each face, so that lighting and contrast do not swamp the features.
      images -= images.mean(axis=(1, 2), keepdims=True)
      cls.images[name] = images / images.std(axis=(1, 2), keepdims=True)

  @parameterized.named_parameters(
      ("mouth_happy_sad", "happy", "sad", np.s_[:, 28:44, 10:38]),
      ("mouth_surprise_neutral", "surprise", "neutral", np.s_[:, 28:44, 10:38]),
      ("brows_angry_sad", "angry", "sad", np.s_[:, 6:24, 6:42]))
  def test_linear_probe_tells_emotions_apart_by_region(self, first, second, region):
    # A ridge classifier on the region, fit on half the faces, must separate the other half; with
    # labels unrelated to the faces it would score ~50%.
    a, b = (self.images[n][region].reshape(300, -1) for n in (first, second))
    train = np.concatenate([a[:150], b[:150]])
    target = np.r_[np.ones(150), -np.ones(150)]
    weights = np.linalg.solve(train.T @ train + 100 * np.eye(train.shape[1]), train.T @ target)
    test = np.concatenate([a[150:], b[150:]])
    accuracy = np.mean((test @ weights > 0) == (target > 0))
    self.assertGreater(accuracy, 0.65)


_MAIN = pathlib.Path(__file__).resolve().parents[1] / "facegen_main.py"


class CliTest(absltest.TestCase):

  def test_cli_writes_csv_and_sheet(self):
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    out = pathlib.Path(tmp.name)
    subprocess.run([sys.executable, str(_MAIN), f"--out={out}", "--num_rows=50",
                    "--seed=2", f"--sheet={out / 'sheet.png'}"], check=True, capture_output=True)
    expected = facegen.write_csv(out / "api.csv", num_rows=50, seed=2)
    self.assertEqual((out / "fer2013.csv").read_bytes(), expected.read_bytes())
    # The parameters beside it: what the generated_faces dataset records (and fer2013 refuses).
    self.assertEqual(json.loads((out / "generated.json").read_text()),
                     {"generator": "emotion_tfds.data.facegen", "num_rows": 50, "seed": 2,
                      "distribution": "balanced"})
    self.assertTrue((out / "sheet.png").read_bytes().startswith(b"\x89PNG"))

  def test_cli_requires_out(self):
    result = subprocess.run([sys.executable, str(_MAIN)], capture_output=True, text=True)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("out", result.stderr)
