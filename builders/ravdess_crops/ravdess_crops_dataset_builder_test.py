"""Tests of the RAVDESS crops builder: TFDS's builder checks on dummy_data, and bad crops folders.

dummy_data/ is a crops folder of 14 generated faces (`emotion_tfds.data.facegen.generate(14, seed=0)`,
2 per emotion, actors 1-2) written as PNGs with a manifest.csv (`ravdess_crops.write_manifest`).
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile

from absl.testing import absltest
import cv2
import numpy as np
import tensorflow_datasets as tfds

from builders.ravdess_crops import ravdess_crops_dataset_builder as ravdess_crops_builder
from emotion_tfds import labels

_DUMMY = pathlib.Path(__file__).parent / "dummy_data"


class RavdessCropsTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = ravdess_crops_builder.Builder
  SPLITS = {"train": 14}


class BadCropsFolderTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    root = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, root)
    self.crops_dir = root / "crops"
    shutil.copytree(_DUMMY, self.crops_dir)
    self.data_dir = root / "tfds"
    self.first_crop = self.crops_dir / self._manifest_lines()[1].split(",")[0]

  def _manifest_lines(self) -> list[str]:
    return (self.crops_dir / "manifest.csv").read_text().splitlines()

  def _build(self) -> tfds.core.DatasetBuilder:
    builder = ravdess_crops_builder.Builder(data_dir=str(self.data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(self.crops_dir)))
    return builder

  def _assert_fails_and_leaves_nothing(self, error, message):
    with self.assertRaisesRegex(error, message):
      self._build()
    self.assertFalse(ravdess_crops_builder.Builder(data_dir=str(self.data_dir)).is_prepared())

  def test_labels_are_the_manifest_emotions(self):
    builder = self._build()
    self.assertEqual(builder.info.features["label"].names, list(labels.FER7))
    emotions = {line.split(",")[0]: line.split(",")[1] for line in self._manifest_lines()[1:]}
    for example in tfds.as_numpy(builder.as_dataset(split="train")):
      self.assertEqual(labels.FER7[example["label"]], emotions[example["crop_file"].decode()])
      self.assertEqual(example["image"].shape, (48, 48, 1))
      self.assertEqual(example["image"].dtype, np.uint8)

  def test_missing_manifest(self):
    (self.crops_dir / "manifest.csv").unlink()
    self._assert_fails_and_leaves_nothing(FileNotFoundError, r"crops/manifest\.csv does not exist")

  def test_missing_crop(self):
    self.first_crop.unlink()
    self._assert_fails_and_leaves_nothing(
        FileNotFoundError, rf"{self.first_crop.name} \(listed in the manifest\) does not exist")

  def test_a_crop_that_is_not_a_png(self):
    shutil.copy(_DUMMY.parent / "ravdess_crops_dataset_builder_test.py", self.first_crop)
    self._assert_fails_and_leaves_nothing(ValueError, rf"{self.first_crop.name}: not a PNG file")

  def test_crop_of_another_size(self):
    cv2.imwrite(str(self.first_crop), np.zeros((64, 48), np.uint8))
    self._assert_fails_and_leaves_nothing(
        ValueError, rf"{self.first_crop.name}: expected a 48x48 8-bit grayscale PNG, got 48x64, "
                    "bit depth 8, colour type 0")

  def test_crop_in_colour(self):
    cv2.imwrite(str(self.first_crop), np.zeros((48, 48, 3), np.uint8))
    self._assert_fails_and_leaves_nothing(
        ValueError, rf"{self.first_crop.name}: expected .* got 48x48, bit depth 8, colour type 2")

  def test_bad_manifest_row_names_the_row(self):
    lines = self._manifest_lines()
    lines[3] = lines[3].replace(",1,1,1,1,", ",1,x,1,1,", 1)
    (self.crops_dir / "manifest.csv").write_text("\n".join(lines) + "\n")
    self._assert_fails_and_leaves_nothing(ValueError, r"manifest\.csv: row 3: ")


if __name__ == "__main__":
  tfds.testing.test_main()
