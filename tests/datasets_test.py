"""Tests of emotion_tfds.data.datasets and of the builders end to end: generated faces (built as
generated_faces), FER-2013-form csv files (fer2013), provenance, and the real data.

The real-data test builds fer7 from $EMOTION_TFDS_SHARED_DATA/fer2013.csv.gz (skipped with
the reason when it is absent).
"""

from __future__ import annotations

import collections
import csv
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import support
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import errors
from emotion_tfds import labels
from emotion_tfds.data import datasets
from emotion_tfds.data import facegen

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


def _csv_rows(path: pathlib.Path) -> list[str]:
  return path.read_text().splitlines()[1:]


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _label_counts(builder: tfds.core.DatasetBuilder, split: str) -> list[int]:
  """Examples per label id in `split`, read from the TFRecords without decoding images."""
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  ids = np.concatenate([batch["label"] for batch in tfds.as_numpy(ds.batch(8192))])
  return np.bincount(ids, minlength=datasets.num_classes(builder)).tolist()


class GeneratedDataTest(support.WithGeneratedData, absltest.TestCase):

  def test_splits_and_labels_match_the_csv(self):
    for config in _CONFIGS:
      builder = datasets.get_builder(f"generated_faces/{config}", self.data_dir)
      expected = _csv_examples(self.csv_path, config)
      self.assertEqual(set(builder.info.splits), {"train", "validation", "test"})
      for split, rows in expected.items():
        self.assertEqual(builder.info.splits[split].num_examples, len(rows), (config, split))
        counts = np.bincount([label for _, label, _ in rows], minlength=len(labels.SCHEMES[config]))
        self.assertEqual(_label_counts(builder, split), counts.tolist(), (config, split))
      self.assertEqual(builder.info.splits["train"].num_shards, 4)

  def test_examples_are_the_csv_rows(self):
    for config in _CONFIGS:
      builder = datasets.get_builder(f"generated_faces/{config}", self.data_dir)
      expected = {row: (label, pixels) for row, label, pixels
                  in _csv_examples(self.csv_path, config)["validation"]}
      seen = set()
      for ex in tfds.as_numpy(builder.as_dataset(split="validation")):
        label, pixels = expected[ex["row"]]
        self.assertEqual(ex["label"], label)
        self.assertEqual(ex["image"].shape, (48, 48, 1))
        self.assertEqual(ex["image"].ravel().tolist(), [int(p) for p in pixels.split()])
        self.assertEqual(ex["source"], b"generated_faces")
        seen.add(ex["row"])
      self.assertEqual(seen, set(expected))

  def test_label_helpers(self):
    fer7 = datasets.get_builder("generated_faces", self.data_dir)  # fer7 is the default config.
    seed6 = datasets.get_builder("generated_faces/seed6", self.data_dir)
    self.assertEqual((datasets.num_classes(fer7), datasets.label_names(fer7)), (7, labels.FER7))
    self.assertEqual((datasets.num_classes(seed6), datasets.label_names(seed6)),
                     (6, labels.SEED6))

  def test_tfds_load(self):
    ds, info = tfds.load("generated_faces/seed6", split="test", data_dir=self.data_dir,
                         download=False, as_supervised=True, with_info=True)
    images, label_ids = next(iter(ds.batch(1000)))
    self.assertEqual(images.dtype, tf.uint8)
    self.assertLen(label_ids, info.splits["test"].num_examples)
    self.assertLen(label_ids, len(_csv_examples(self.csv_path, "seed6")["test"]))

  def test_tfds_build_command(self):
    with tempfile.TemporaryDirectory() as data_dir:
      subprocess.run(
          [str(pathlib.Path(sys.executable).parent / "tfds"), "build", "builders/generated_faces",
           f"--manual_dir={self.csv_path.parent}", f"--data_dir={data_dir}", "--config=seed6"],
          cwd=_REPO_ROOT, check=True, capture_output=True, timeout=300,
          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
      version_dir = pathlib.Path(data_dir) / "generated_faces" / "seed6" / "1.0.0"
      self.assertTrue((version_dir / "generated_faces-train.tfrecord-00003-of-00004").exists())
      builder = datasets.get_builder("generated_faces/seed6", data_dir)
      self.assertEqual(builder.info.metadata["generator"],
                       facegen.generator_params(len(_csv_rows(self.csv_path)), seed=0))
      expected = _csv_examples(self.csv_path, "seed6")
      for split in ("train", "validation", "test"):
        self.assertEqual(builder.as_dataset(split=split).reduce(0, lambda n, _: n + 1).numpy(),
                         len(expected[split]))


class EnsureGeneratedTest(absltest.TestCase):

  def test_writes_the_csv_once_and_builds_each_config(self):
    with tempfile.TemporaryDirectory() as data_dir:
      seed6 = datasets.ensure_generated("generated_faces/seed6", data_dir, num_rows=70, seed=1)
      csv_path = pathlib.Path(data_dir) / "manual" / "generated_faces" / "fer2013.csv"
      written = csv_path.stat().st_mtime_ns
      fer7 = datasets.ensure_generated("generated_faces/fer7", data_dir, num_rows=70, seed=1)
      again = datasets.ensure_generated("generated_faces/fer7", data_dir, num_rows=70, seed=1)
      self.assertEqual(csv_path.stat().st_mtime_ns, written)
      self.assertTrue(seed6.is_prepared() and fer7.is_prepared() and again.is_prepared())
      self.assertEqual(fer7.info.splits.total_num_examples, 70)
      num_fear = sum(len(v) for v in _csv_examples(csv_path, "fer7").values()) - sum(
          len(v) for v in _csv_examples(csv_path, "seed6").values())
      self.assertEqual(seed6.info.splits.total_num_examples, 70 - num_fear)
      self.assertEqual(datasets.describe(fer7), "generated_faces/fer7 1.0.0: generated faces, 70 "
                       f"rows, seed 1 (fer2013.csv sha256 {_sha256(csv_path)[:12]}), train 56 / "
                       "validation 7 / test 7")
      with self.assertRaisesRegex(ValueError, r"holds generated faces with \{.*'num_rows': 70, "
                                  r"'seed': 1.*\}.*not \{.*'num_rows': 80, 'seed': 1"):
        datasets.ensure_generated("generated_faces/fer7", data_dir, num_rows=80, seed=1)
      self.assertFalse((pathlib.Path(data_dir) / "fer2013").exists())

  def test_never_generates_fer2013(self):
    with tempfile.TemporaryDirectory() as data_dir:
      with self.assertRaisesRegex(ValueError, "only generated_faces/<config> is generated"):
        datasets.ensure_generated("fer2013/fer7", data_dir, num_rows=70)
      self.assertEqual(os.listdir(data_dir), [])


class ProvenanceTest(support.WithGeneratedData, absltest.TestCase):
  """What a built dataset is made of, and what a run is told when one is missing."""

  def test_generated_faces_name_the_generator_and_the_csv(self):
    builder = datasets.get_builder("generated_faces/seed6", self.data_dir)
    self.assertEqual(datasets.describe(builder), "generated_faces/seed6 1.0.0: generated faces, "
                     f"1,400 rows, seed 0 (fer2013.csv sha256 {_sha256(self.csv_path)[:12]}), "
                     "train 960 / validation 120 / test 120")
    record = datasets.provenance(builder)
    self.assertEqual((record["source_sha256"], record["source_rows"], record["splits"]),
                     (_sha256(self.csv_path), 1400, {"train": 960, "validation": 120,
                                                     "test": 120}))
    self.assertEqual(record["generator"], facegen.generator_params(1400, seed=0))

  def test_fer2013_names_its_csv(self):
    root = support.tempdir(self)
    csv_path = facegen.write_csv(root / "manual" / "fer2013.csv", num_rows=70, seed=3)
    builder = datasets.build("fer2013/fer7", root / "tfds", csv_path.parent)
    self.assertEqual(datasets.describe(builder), "fer2013/fer7 1.1.0 from fer2013.csv sha256 "
                     f"{_sha256(csv_path)[:12]}, train 56 / validation 7 / test 7")
    self.assertNotIn("generator", datasets.provenance(builder))

  def test_fer2013_not_built_is_never_generated_and_says_how_to_build_it(self):
    data_dir = support.tempdir(self)
    with self.assertRaisesRegex(errors.DataNotBuiltError,
                                rf"^Dataset fer2013/seed6 is not built in {data_dir}\. "
                                r"fer2013\.csv is a manual download from Kaggle .*; build it "
                                r"with `tfds build "
                                rf"builders/fer2013 --config=seed6 --data_dir={data_dir} "
                                r"--manual_dir=<folder with fer2013\.csv>`\. Without FER-2013, .*"
                                r"--dataset=generated_faces/seed6\.$"):
      datasets.require_built("fer2013/seed6", data_dir)

  def test_generated_faces_of_an_older_default_run_are_refused_as_fer2013(self):
    data_dir = support.tempdir(self)
    old = support.old_default_layout(
        data_dir, pathlib.Path(self.data_dir) / "generated_faces" / "fer7" / "1.0.0", "fer7")
    with self.assertRaisesRegex(errors.DataNotBuiltError, rf"^{old} holds generated faces, not "
                                r"FER-2013: the default run of an older version built them under "
                                rf"that name \({data_dir}/manual/generated/generated\.json\); .* "
                                r"generated_faces/fer7\. fer2013\.csv is a manual download .*build "
                                r"the real fer2013/fer7 1\.1\.0 with `tfds build builders/fer2013 "
                                rf"--config=fer7 .*`, and delete {old}\.$"):
      datasets.require_built("fer2013/fer7", data_dir)
    # An older real build (no marker of generated faces) is named as such.
    (data_dir / "manual" / "generated" / "generated.json").unlink()
    with self.assertRaisesRegex(errors.DataNotBuiltError, r"fer2013/fer7 1\.1\.0 is not built in "
                                r".*, only the older 1\.0\.0, which records no source csv .*"
                                r"Rebuild it: `tfds build builders/fer2013 --config=fer7"):
      datasets.require_built("fer2013/fer7", data_dir)


class RealDataTest(absltest.TestCase):
  """Builds fer7 from the real FER-2013 Training + PublicTest rows (32,298; no PrivateTest)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.manual_dir = support.shared_data_path("fer2013.csv.gz").parent

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
      # The real csv's sha256 names the data every run on it prints.
      self.assertEqual(datasets.describe(builder), "fer2013/fer7 1.1.0 from fer2013.csv.gz sha256 "
                       f"{_sha256(self.manual_dir / 'fer2013.csv.gz')[:12]}, train 28,709 / "
                       "validation 3,589")
