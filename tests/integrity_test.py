"""Tests of emotion_tfds.data.integrity on real built TFRecords, damaged in three ways."""

from __future__ import annotations

import pathlib
import re
import shutil

from absl.testing import absltest
import support
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds.data import datasets
from emotion_tfds.data import integrity

_DATASET = datasets.DEFAULT_DATASET  # Built by support.generated_data_dir.


class DamagedFilesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = support.generated_data_dir()

  def setUp(self):
    super().setUp()
    self.copy = support.tempdir(self) / "data"
    shutil.copytree(self.data_dir, self.copy)
    self.builder = datasets.get_builder(_DATASET, self.copy)
    self.shard = pathlib.Path(self.builder.info.splits["train"].filepaths[0])

  def test_a_built_dataset_reads_clean(self):
    self.assertEqual(integrity.damaged_files(self.builder), [])

  def test_a_corrupted_record(self):
    data = bytearray(self.shard.read_bytes())
    data[100:110] = b"x" * 10
    self.shard.write_bytes(bytes(data))
    # The offset TFRecord names is the first record's data: after its length and length CRC.
    self.assertEqual(integrity.damaged_files(self.builder),
                     [f"{self.shard} (corrupted record at 12)"])

  def test_a_shard_cut_between_records(self):
    records = list(tf.data.TFRecordDataset(str(self.shard)).take(2).as_numpy_iterator())
    # A TFRecord is length (8 bytes), its CRC (4), the data, the data's CRC (4).
    self.shard.write_bytes(self.shard.read_bytes()[:sum(16 + len(r) for r in records)])
    expected = self.builder.info.splits["train"].shard_lengths[0]
    self.assertEqual(integrity.damaged_files(self.builder),
                     [f"{self.shard} (2 records, the dataset info says {expected})"])

  def test_a_data_loss_inside_becomes_the_damaged_file_and_the_fix(self):
    self.shard.write_bytes(self.shard.read_bytes()[:1000])
    config = self.builder.builder_config.name
    message = (rf"Dataset {_DATASET} in .* is damaged: {re.escape(str(self.shard))} \(truncated "
               rf"record at \d+\)\. Rebuild it: `tfds build builders/{self.builder.name} "
               rf"--config={config} .* --overwrite`")
    with self.assertRaisesRegex(errors.DamagedDataError, message):
      with integrity.naming_damaged_files([f"{_DATASET}+ravdess_crops"], self.copy):
        for _ in tf.data.TFRecordDataset(str(self.shard)):
          pass

  def test_another_data_loss_goes_on_unchanged(self):
    with self.assertRaisesRegex(tf.errors.DataLossError, "a checkpoint"):
      with integrity.naming_damaged_files([_DATASET], self.copy):
        raise tf.errors.DataLossError(None, None, "a checkpoint")


if __name__ == "__main__":
  absltest.main()
