"""Tests of emotion_tfds.data.datasets and of the fer2013 builder end to end: generated and real data.

The real-data test builds fer7 from $EMOTION_TFDS_SHARED_DATA/fer2013.csv.gz (skipped with
the reason when it is absent).
"""

from __future__ import annotations

import collections
import csv
import os
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import labels
from emotion_tfds.data import datasets

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CONFIGS = ("fer7", "seed6")


def _csv_examples(path: pathlib.Path, scheme: str) -> dict[str, list[tuple[int, int, str]]]:
  """(row, label in `scheme`, pixels) per split, read from the csv without the builder."""
  names = labels.get_scheme(scheme)
  out = collections.defaultdict(list)
  with path.open(newline="") as f:
    for row, (emotion, pixels, usage) in enumerate(list(csv.reader(f))[1:], start=1):
      name = labels.FER7[int(emotion)]
      if name in names:
        out[labels.USAGE_TO_SPLIT[usage]].append((row, names.index(name), pixels))
  return out


def _label_counts(builder: tfds.core.DatasetBuilder, split: str) -> list[int]:
  """Examples per label id in `split`, read from the TFRecords without decoding images."""
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  ids = np.concatenate([batch["label"] for batch in tfds.as_numpy(ds.batch(8192))])
  return np.bincount(ids, minlength=datasets.num_classes(builder)).tolist()


class GeneratedDataTest(absltest.TestCase):

  @pytest.fixture(autouse=True)
  def _generated(self, generated_csv, generated_data_dir):
    self.csv_path = generated_csv
    self.data_dir = generated_data_dir

  def test_splits_and_labels_match_the_csv(self):
    for config in _CONFIGS:
      builder = datasets.get_builder(f"fer2013/{config}", self.data_dir)
      expected = _csv_examples(self.csv_path, config)
      self.assertEqual(set(builder.info.splits), {"train", "validation", "test"})
      for split, rows in expected.items():
        self.assertEqual(builder.info.splits[split].num_examples, len(rows), (config, split))
        counts = np.bincount([label for _, label, _ in rows], minlength=len(labels.SCHEMES[config]))
        self.assertEqual(_label_counts(builder, split), counts.tolist(), (config, split))
      self.assertEqual(builder.info.splits["train"].num_shards, 4)

  def test_examples_are_the_csv_rows(self):
    for config in _CONFIGS:
      builder = datasets.get_builder(f"fer2013/{config}", self.data_dir)
      expected = {row: (label, pixels) for row, label, pixels
                  in _csv_examples(self.csv_path, config)["validation"]}
      seen = set()
      for ex in tfds.as_numpy(builder.as_dataset(split="validation")):
        label, pixels = expected[ex["row"]]
        self.assertEqual(ex["label"], label)
        self.assertEqual(ex["image"].shape, (48, 48, 1))
        self.assertEqual(ex["image"].ravel().tolist(), [int(p) for p in pixels.split()])
        self.assertEqual(ex["source"], b"fer2013")
        seen.add(ex["row"])
      self.assertEqual(seen, set(expected))

  def test_label_helpers(self):
    fer7 = datasets.get_builder("fer2013", self.data_dir)  # fer7 is the default config.
    seed6 = datasets.get_builder("fer2013/seed6", self.data_dir)
    self.assertEqual((datasets.num_classes(fer7), datasets.label_names(fer7)), (7, labels.FER7))
    self.assertEqual((datasets.num_classes(seed6), datasets.label_names(seed6)),
                     (6, labels.SEED6))

  def test_tfds_load(self):
    ds, info = tfds.load("fer2013/seed6", split="test", data_dir=self.data_dir, download=False,
                         as_supervised=True, with_info=True)
    images, label_ids = next(iter(ds.batch(1000)))
    self.assertEqual(images.dtype, tf.uint8)
    self.assertLen(label_ids, info.splits["test"].num_examples)
    self.assertLen(label_ids, len(_csv_examples(self.csv_path, "seed6")["test"]))

  def test_tfds_build_command(self):
    with tempfile.TemporaryDirectory() as data_dir:
      subprocess.run(
          [str(pathlib.Path(sys.executable).parent / "tfds"), "build", "builders/fer2013",
           f"--manual_dir={self.csv_path.parent}", f"--data_dir={data_dir}", "--config=seed6"],
          cwd=_REPO_ROOT, check=True, capture_output=True, timeout=300,
          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
      version_dir = pathlib.Path(data_dir) / "fer2013" / "seed6" / "1.0.0"
      self.assertTrue((version_dir / "fer2013-train.tfrecord-00003-of-00004").exists())
      builder = datasets.get_builder("fer2013/seed6", data_dir)
      expected = _csv_examples(self.csv_path, "seed6")
      for split in ("train", "validation", "test"):
        self.assertEqual(builder.as_dataset(split=split).reduce(0, lambda n, _: n + 1).numpy(),
                         len(expected[split]))


class EnsureGeneratedTest(absltest.TestCase):

  def test_writes_the_csv_once_and_builds_each_config(self):
    with tempfile.TemporaryDirectory() as data_dir:
      seed6 = datasets.ensure_generated("fer2013/seed6", data_dir, num_rows=70, seed=1)
      csv_path = pathlib.Path(data_dir) / "manual" / "generated" / "fer2013.csv"
      written = csv_path.stat().st_mtime_ns
      fer7 = datasets.ensure_generated("fer2013/fer7", data_dir, num_rows=70, seed=1)
      again = datasets.ensure_generated("fer2013/fer7", data_dir, num_rows=70, seed=1)
      self.assertEqual(csv_path.stat().st_mtime_ns, written)
      self.assertTrue(seed6.is_prepared() and fer7.is_prepared() and again.is_prepared())
      self.assertEqual(fer7.info.splits.total_num_examples, 70)
      num_fear = sum(len(v) for v in _csv_examples(csv_path, "fer7").values()) - sum(
          len(v) for v in _csv_examples(csv_path, "seed6").values())
      self.assertEqual(seed6.info.splits.total_num_examples, 70 - num_fear)
      with self.assertRaisesRegex(ValueError, r"holds generated faces with \{'num_rows': 70, "
                                  r"'seed': 1\}.*not \{'num_rows': 80, 'seed': 1\}"):
        datasets.ensure_generated("fer2013/fer7", data_dir, num_rows=80, seed=1)


@pytest.mark.slow
class RealDataTest(absltest.TestCase):
  """Builds fer7 from the real FER-2013 Training + PublicTest rows (32,298; no PrivateTest)."""

  @pytest.fixture(autouse=True)
  def _real(self, real_fer_csv):
    self.manual_dir = real_fer_csv.parent

  def test_real_counts(self):
    # Examples per label id (angry, disgust, fear, happy, sad, surprise, neutral).
    expected = {"train": [3995, 436, 4097, 7215, 4830, 3171, 4965],
                "validation": [467, 56, 496, 895, 653, 415, 607]}
    self.assertEqual(sum(expected["train"]), 28_709)
    self.assertEqual(sum(expected["validation"]), 3_589)
    with tempfile.TemporaryDirectory() as data_dir:
      builder = datasets.build("fer2013/fer7", data_dir, self.manual_dir)
      self.assertEqual(set(builder.info.splits), set(expected))
      for split, counts in expected.items():
        self.assertEqual(builder.info.splits[split].num_examples, sum(counts))
        self.assertEqual(_label_counts(builder, split), counts, split)
      self.assertEqual(builder.info.splits["train"].num_shards, 4)
