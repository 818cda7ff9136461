"""Tests of the generated-faces builder: TFDS's builder checks on dummy_data, and its metadata.

dummy_data/ holds 28 generated faces (4/2/2 per emotion in Training/PublicTest/PrivateTest) and
their generated.json, made with
  python facegen_main.py --out=builders/generated_faces/dummy_data --num_rows=28
  gzip -9n builders/generated_faces/dummy_data/fer2013.csv
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import tempfile

from absl.testing import absltest
import tensorflow_datasets as tfds

# The module, not its classes: pytest would collect imported test classes a second time.
from builders.fer2013 import fer2013_dataset_builder_test as fer2013_tests
from builders.generated_faces import generated_faces_dataset_builder as generated_faces

_DUMMY_DATA = pathlib.Path(__file__).parent / "dummy_data"


class Fer7Test(fer2013_tests.Fer7Test):
  """fer2013's builder checks of the fer7 config, on this builder and its dummy_data."""
  DATASET_CLASS = generated_faces.Builder


class Seed6Test(fer2013_tests.Seed6Test):
  """fer2013's builder checks of the seed6 config, on this builder and its dummy_data."""
  DATASET_CLASS = generated_faces.Builder


class MetadataTest(absltest.TestCase):

  def _build(self, manual_dir: pathlib.Path) -> generated_faces.Builder:
    data_dir = self.enterContext(tempfile.TemporaryDirectory())
    builder = generated_faces.Builder(config="seed6", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    # What a later process reads back from metadata.json.
    return generated_faces.Builder(config="seed6", data_dir=data_dir)

  def test_records_the_csv_and_the_generator_and_names_its_examples(self):
    builder = self._build(_DUMMY_DATA)
    csv_bytes = (_DUMMY_DATA / "fer2013.csv.gz").read_bytes()
    self.assertEqual(dict(builder.info.metadata), {
        "source_file": "fer2013.csv.gz",
        "source_sha256": hashlib.sha256(csv_bytes).hexdigest(),
        "source_rows": 28,
        "generator": json.loads((_DUMMY_DATA / "generated.json").read_text()),
    })
    self.assertEqual(builder.info.metadata["generator"]["num_rows"], 28)
    sources = {ex["source"] for ex in tfds.as_numpy(builder.as_dataset(split="test"))}
    self.assertEqual(sources, {b"generated_faces"})

  def test_a_csv_without_generated_json_records_no_generator(self):
    manual_dir = pathlib.Path(self.enterContext(tempfile.TemporaryDirectory()))
    shutil.copy(_DUMMY_DATA / "fer2013.csv.gz", manual_dir)
    self.assertNotIn("generator", self._build(manual_dir).info.metadata)


if __name__ == "__main__":
  absltest.main()
