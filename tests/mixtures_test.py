"""Tests for emotion_tfds.data.mixtures: the fill-the-gap selection and the input-time mixture of
a FER-style dataset with ravdess_crops, both built for real (generated_faces from generated csv
rows, generated-face crops)."""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import support
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import labels
from emotion_tfds.data import datasets
from emotion_tfds.data import facegen
from emotion_tfds.data import mixtures
from emotion_tfds.data import pipeline
from emotion_tfds.ravdess import crops_folder

REPO = pathlib.Path(__file__).resolve().parents[1]


def _candidate(emotion: str, actor: int, frame: int) -> mixtures.Candidate:
  video = f"Actor_{actor:02d}/02-01-01-01-01-01-{actor:02d}"
  return mixtures.Candidate(f"{video}_{emotion}_f{frame:04d}.png", emotion, f"{video}_{emotion}.mp4")


def synthetic_candidates() -> list[mixtures.Candidate]:
  """disgust 20, happy 10, fear 8, angry 3 and neutral 100 (10 videos x 10 frames) crops."""
  crops = [_candidate("disgust", actor, f) for actor in (1, 2) for f in range(10)]
  crops += [_candidate("happy", 3, f) for f in range(10)]
  crops += [_candidate("fear", 4, f) for f in range(8)]
  crops += [_candidate("angry", 5, f) for f in range(3)]
  crops += [_candidate("neutral", actor, f) for actor in range(1, 11) for f in range(10)]
  return crops


FER_COUNTS = {"angry": 50, "disgust": 5, "fear": 40, "happy": 100, "sad": 60, "surprise": 30,
              "neutral": 70}


def _counts(crops) -> dict[str, int]:
  return dict(collections.Counter(c.emotion for c in crops))


class SelectTest(absltest.TestCase):

  def test_fill_gap_counts(self):
    available = {"disgust": 20, "happy": 10, "fear": 8, "angry": 3, "neutral": 100}
    self.assertEqual(
        mixtures.fill_gap_counts(FER_COUNTS, available, cap_ratio=1.0),
        {"angry": 3, "disgust": 5, "fear": 8, "happy": 0, "sad": 0, "surprise": 0, "neutral": 30})
    self.assertEqual(mixtures.fill_gap_counts(FER_COUNTS, available, cap_ratio=3.0)["disgust"], 15)
    with self.assertRaisesRegex(ValueError, "cap_ratio"):
      mixtures.fill_gap_counts(FER_COUNTS, available, cap_ratio=-1)

  def test_select_fer7_spreads_over_videos(self):
    chosen = mixtures.select_fill_gap(FER_COUNTS, synthetic_candidates())
    self.assertEqual(_counts(chosen), {"angry": 3, "disgust": 5, "fear": 8, "neutral": 30})
    # Spread: 30 neutral crops from 10 videos are 3 frames of each video.
    per_video = collections.Counter(c.source_video for c in chosen if c.emotion == "neutral")
    self.assertEqual(sorted(per_video.values()), [3] * 10)

  def test_emotions_the_target_lacks_are_never_chosen(self):
    seed6_counts = {e: FER_COUNTS[e] for e in labels.SEED6}
    chosen = mixtures.select_fill_gap(seed6_counts, synthetic_candidates())
    self.assertEqual(_counts(chosen), {"angry": 3, "disgust": 5, "neutral": 30})

  def test_deterministic_and_seeded(self):
    crops = synthetic_candidates()
    first = mixtures.select_fill_gap(FER_COUNTS, crops, seed=0)
    random.Random(1).shuffle(crops)
    self.assertEqual(mixtures.select_fill_gap(FER_COUNTS, crops, seed=0), first)
    other = mixtures.select_fill_gap(FER_COUNTS, crops, seed=1)
    self.assertEqual(_counts(other), _counts(first))
    self.assertNotEqual(other, first)


# Copies of the dummy crops per emotion: (emotion, actors); 2 crops each per actor.
_CROP_ACTORS = {"disgust": range(1, 13), "fear": range(13, 19), "happy": range(19, 22)}


def _write_crops_folder(out: pathlib.Path) -> None:
  """The builder's dummy crops (generated faces), copied as if from more actors: 24 disgust,
  12 fear and 6 happy crops."""
  dummy = REPO / "builders" / "ravdess_crops" / "dummy_data"
  copies = []
  for crop in crops_folder.read_manifest(dummy):
    for actor in _CROP_ACTORS.get(crop.emotion, ()):
      stem = pathlib.PurePosixPath(crop.crop_file).stem
      copy = dataclasses.replace(crop, actor=actor, source_video=f"Actor_{actor:02d}/{stem}.mp4",
                                 crop_file=f"Actor_{actor:02d}/{stem}.png")
      (out / copy.crop_file).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy(dummy / crop.crop_file, out / copy.crop_file)
      copies.append(copy)
  crops_folder.write_manifest(out, copies)


def _build_mixture_parts() -> tuple[pathlib.Path, collections.Counter]:
  """generated_faces/fer7 and /seed6 (600 generated rows, FER-2013's class shares) and
  ravdess_crops, each built with its own `tfds build`-equivalent call into one data_dir:
  (data_dir, the csv's training emotions counted)."""
  root = support.process_tempdir("mixture")
  csv = facegen.write_csv(root / "manual" / "fer2013.csv", num_rows=600, seed=0,
                          distribution="fer")
  _write_crops_folder(root / "crops")
  data_dir = root / "tfds"
  for dataset in ("generated_faces/fer7", "generated_faces/seed6"):
    datasets.build(dataset, data_dir, csv.parent)
  datasets.build("ravdess_crops", data_dir, root / "crops")
  return data_dir, collections.Counter(
      labels.FER7[int(line.split(",")[0])] for line in csv.read_text().splitlines()[1:]
      if line.endswith(",Training"))


class FillGapMixtureTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir, cls.fer_train = _build_mixture_parts()

  def _label_counts(self, builder, split: str) -> dict[str, int]:
    names = builder.info.features["label"].names
    ds = builder.as_dataset(split=split, as_supervised=True)
    counts = collections.Counter()
    for image, label in tfds.as_numpy(ds):
      self.assertEqual(image.shape, (48, 48, 1))
      counts[names[label]] += 1
    return dict(counts)

  def test_train_is_filled_toward_the_largest_emotion(self):
    fer = self.fer_train
    # The generated rows keep FER-2013's imbalance: happy is the largest, disgust tiny.
    self.assertEqual(max(fer, key=fer.get), "happy")
    self.assertLess(fer["disgust"], 24)
    self.assertGreater(min(fer["happy"] - fer["fear"], fer["fear"]), 12)
    for scheme in ("fer7", "seed6"):
      with self.subTest(scheme):
        names = labels.get_scheme(scheme)
        mixture = datasets.get_builder(f"generated_faces/{scheme}+ravdess_crops", self.data_dir)
        fer_builder = datasets.get_builder(f"generated_faces/{scheme}", self.data_dir)
        # disgust: capped at its own FER count (24 crops there); fear (fer7 only): all 12 crops
        # there; happy, the largest: nothing (its 6 crops stay out).
        added = {"disgust": fer["disgust"], **({"fear": 12} if "fear" in names else {})}
        self.assertEqual(_counts(mixture.chosen), added)
        expected = {e: fer[e] + added.get(e, 0) for e in names}
        self.assertEqual(self._label_counts(mixture, "train"), expected)
        self.assertEqual(mixture.info.splits["train"].num_examples, sum(expected.values()))
        self.assertEqual(datasets.class_counts(mixture, "train"),
                         tuple(expected[e] for e in names))
        self.assertEqual(datasets.label_names(mixture), tuple(names))
        for split in ("validation", "test"):
          self.assertEqual(self._label_counts(mixture, split),
                           self._label_counts(fer_builder, split))
          self.assertEqual(mixture.info.splits[split].num_examples,
                           fer_builder.info.splits[split].num_examples)

  def test_description_names_both_parts(self):
    mixture = datasets.get_builder("generated_faces/fer7+ravdess_crops", self.data_dir)
    fer = datasets.describe(mixture.fer)
    self.assertRegex(fer, r"^generated_faces/fer7 1\.0\.0: generated faces from fer2013\.csv "
                     r"sha256 [0-9a-f]{12}, train 480 / validation \d+ / test \d+$")
    self.assertEqual(datasets.describe(mixture.crops), "ravdess_crops 1.0.0 (source not "
                     f"recorded), train {mixture.crops.info.splits['train'].num_examples}")
    self.assertEqual(datasets.describe(mixture), f"{fer} + {datasets.describe(mixture.crops)}; "
                     "mixed train 480 + 19 crops")
    parts = datasets.provenance(mixture)["parts"]
    self.assertEqual([part["name"] for part in parts], ["generated_faces/fer7", "ravdess_crops"])

  def test_pipeline_reads_every_mixed_example_once_per_epoch(self):
    mixture = datasets.get_builder("generated_faces/fer7+ravdess_crops", self.data_dir)
    size = mixture.info.splits["train"].num_examples
    ds, num_examples = pipeline.make_dataset(mixture, "train", size, training=True,
                                             epoch_seeds=[0])
    self.assertEqual(num_examples, size)
    images, batch_labels = next(iter(ds))
    self.assertEqual(images.shape, (size, 48, 48, 1))
    self.assertEqual(images.dtype, tf.uint8)
    self.assertEqual(np.bincount(batch_labels.numpy(), minlength=7).tolist(),
                     list(datasets.class_counts(mixture, "train")))

  def test_train_main_trains_on_the_mixture_and_names_an_unbuilt_crops_dataset(self):
    command = [sys.executable, str(REPO / "train_main.py"),
               "--dataset=generated_faces/seed6+ravdess_crops", "--pretrain_stages=",
               "--stages=all:1:1e-3:16", "--max_steps_per_epoch=3", "--progress=none",
               "--generate_rows=0"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    root = pathlib.Path(self.enterContext(tempfile.TemporaryDirectory()))
    unbuilt = root / "fer_only"
    shutil.copytree(self.data_dir / "generated_faces", unbuilt / "generated_faces")
    runs = {name: subprocess.Popen([*command, f"--data_dir={data_dir}", f"--model_dir={root / name}"],
                                   cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            for name, data_dir in (("mixture", self.data_dir), ("unbuilt", unbuilt))}
    (stdout, stderr), code = runs["mixture"].communicate(timeout=300), runs["mixture"].returncode
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertIn("Evaluation of the final model on generated_faces/seed6+ravdess_crops test",
                  stdout)
    mixture = datasets.get_builder("generated_faces/seed6+ravdess_crops", self.data_dir)
    self.assertIn(f"Data: {datasets.describe(mixture)}\n", stdout.splitlines(keepends=True))
    (_, stderr), code = runs["unbuilt"].communicate(timeout=300), runs["unbuilt"].returncode
    self.assertEqual(code, 1, stderr[-3000:])
    self.assertNotIn("Traceback", stderr)
    self.assertRegex(stderr, r"error: Dataset ravdess_crops is not built in .*fer_only.*"
                             r"python ravdess_main\.py .*tfds build builders/ravdess_crops")

  def test_names_and_unbuilt_parts(self):
    with self.assertRaisesRegex(ValueError, "<FER-2013 dataset>\\+<crops dataset>"):
      datasets.get_builder("fer2013/fer7+", self.data_dir)
    with self.assertRaisesRegex(ValueError, "is a mixture"):
      datasets.build("fer2013/fer7+ravdess_crops", self.data_dir, self.data_dir)
    empty = datasets.get_builder("fer2013/fer7+ravdess_crops", self.data_dir / "empty")
    self.assertFalse(empty.is_prepared())
