"""Tests of the FER-2013 builder: TFDS's builder checks on dummy_data, and bad csv files.

dummy_data/fer2013.csv.gz holds 28 generated faces (4/2/2 per emotion in Training/PublicTest/
PrivateTest) in FER-2013's form, made with an older facegen as
  python facegen_main.py --out=DIR --num_rows=28; gzip -9n DIR/fer2013.csv
without the generated.json that facegen_main now writes beside it (this builder refuses a csv of
generated faces that says so; builders/generated_faces takes it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
from unittest import mock
import zlib

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow_datasets as tfds

from builders.fer2013 import fer2013_dataset_builder as fer2013

_DUMMY_CSV = pathlib.Path(__file__).parent / "dummy_data" / "fer2013.csv.gz"


class Fer7Test(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = fer2013.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["fer7"]
  SPLITS = {"train": 14, "validation": 7, "test": 7}


class Seed6Test(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = fer2013.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["seed6"]
  SPLITS = {"train": 12, "validation": 6, "test": 6}  # The fear rows (2/1/1) are dropped.


def _tfds_build(*args: str) -> subprocess.CompletedProcess:
  """Runs the `tfds build` command line on builders/fer2013 with `args`."""
  repo = pathlib.Path(__file__).resolve().parents[2]
  return subprocess.run(
      [sys.executable, "-c", "from tensorflow_datasets.scripts.cli.main import launch_cli; "
       "launch_cli()", "build", str(repo / "builders" / "fer2013"), *args],
      cwd=repo, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


class PlainTfdsBuildTest(absltest.TestCase):
  """The first command a TFDS user types: `tfds build builders/fer2013`, no --config."""

  def test_builds_every_config_from_the_csv_alone(self):
    root = pathlib.Path(self.enterContext(tempfile.TemporaryDirectory()))
    done = _tfds_build(f"--manual_dir={_DUMMY_CSV.parent}", f"--data_dir={root}")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    for config in fer2013.Builder.BUILDER_CONFIGS:
      builder = fer2013.Builder(config=config.name, data_dir=str(root))
      self.assertTrue(builder.is_prepared(), config.name)
    self.assertEqual(sorted(c.name for c in fer2013.Builder.BUILDER_CONFIGS), ["fer7", "seed6"])

  def test_another_csv_is_refused_in_one_line_and_rebuilt_when_overwriting(self):
    root = pathlib.Path(self.enterContext(tempfile.TemporaryDirectory()))
    first = fer2013.Builder(config="fer7", data_dir=root / "data")
    first.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=_DUMMY_CSV.parent))
    other = root / "other"
    other.mkdir()
    lines = _dummy_lines()
    (other / "fer2013.csv").write_bytes(b"\n".join(lines[:15]) + b"\n")  # Rows 1..14.
    build = (f"--manual_dir={other}", f"--data_dir={root / 'data'}", "--config=fer7")

    refused = _tfds_build(*build)
    self.assertEqual(refused.returncode, 1, refused.stderr[-3000:])
    self.assertNotIn("Traceback", refused.stderr)
    self.assertNotIn("Reusing", refused.stderr)
    message = refused.stderr.strip().splitlines()[-1]
    self.assertRegex(message, rf"^fer2013/fer7/1\.1\.0 in {root / 'data'} was built from "
                     rf"fer2013\.csv\.gz \(sha256 {_sha256(_DUMMY_CSV)[:12]}\), not from "
                     rf"{other / 'fer2013.csv'} \(sha256 {_sha256(other / 'fer2013.csv')[:12]}\); "
                     r"it is left as it is\. .*--overwrite")
    self.assertEqual(_recorded(root / "data")["source_rows"], 28)

    # What --overwrite asks for (in Python, without another command line's start-up cost).
    fer2013.Builder(config="fer7", data_dir=root / "data").download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=other, download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
    self.assertEqual(_recorded(root / "data"), {
        "source_file": "fer2013.csv", "source_sha256": _sha256(other / "fer2013.csv"),
        "source_rows": 14})


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _recorded(data_dir: pathlib.Path) -> dict:
  """The metadata of fer2013/fer7 in `data_dir`, as a new process reads it."""
  return dict(fer2013.Builder(config="fer7", data_dir=data_dir).info.metadata)


def _dummy_lines() -> list[bytes]:
  """The dummy csv's lines without line ends: header first, then data rows 1..28."""
  return gzip.decompress(_DUMMY_CSV.read_bytes()).splitlines()


def _replace_field(line: bytes, column: int, value: bytes) -> bytes:
  fields = line.split(b",")
  fields[column] = value
  return b",".join(fields)


def _replace_pixel(line: bytes, index: int, value: bytes) -> bytes:
  emotion, pixels, usage = line.split(b",")
  values = pixels.split(b" ")
  values[index] = value
  return b",".join([emotion, b" ".join(values), usage])


def _drop_last_pixel(line: bytes) -> bytes:
  emotion, pixels, usage = line.split(b",")
  return b",".join([emotion, pixels.rsplit(b" ", 1)[0], usage])


def _with_row(row: int, make_line) -> bytes:
  """The dummy csv with data row `row` replaced by make_line(original line)."""
  lines = _dummy_lines()
  lines[row] = make_line(lines[row])
  return b"\n".join(lines) + b"\n"


class BuildTestCase(parameterized.TestCase):
  """Builds csv contents with the real builder into temporary folders."""

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.dir = pathlib.Path(tmp.name)

  def build(self, content: bytes, config: str = "fer7",
            name: str = "fer2013.csv") -> fer2013.Builder:
    manual_dir = self.dir / "manual"
    manual_dir.mkdir(exist_ok=True)
    (manual_dir / name).write_bytes(content)
    builder = fer2013.Builder(config=config, data_dir=self.dir / "data")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder

  def assertNothingLoadable(self):
    """Nothing under data_dir that TFDS could take for a finished dataset."""
    data_dir = self.dir / "data"
    self.assertEmpty(list(data_dir.rglob("dataset_info.json")))
    self.assertEmpty(list(data_dir.rglob("*.tfrecord*")))
    for config in ("fer7", "seed6"):
      self.assertFalse(fer2013.Builder(config=config, data_dir=data_dir).is_prepared())
      with self.assertRaisesRegex(AssertionError, "not found|could not find"):
        tfds.load(f"fer2013/{config}", data_dir=data_dir, download=False)


class BadInputTest(BuildTestCase):

  @parameterized.named_parameters(
      ("wrong_pixel_count", 3, _drop_last_pixel, "expected 2304 pixels, got 2303"),
      ("non_integer_pixel", 5, lambda l: _replace_pixel(l, 9, b"12.5"),
       "pixel 10 is '12.5', not an integer in 0..255"),
      ("letters_in_pixels", 5, lambda l: _replace_pixel(l, 0, b"x"),
       "pixel 1 is 'x', not an integer in 0..255"),
      ("pixel_too_large", 28, lambda l: _replace_pixel(l, 2303, b"256"),
       "pixel 2304 is '256', not an integer in 0..255"),
      ("negative_pixel", 1, lambda l: _replace_pixel(l, 100, b"-1"),
       "pixel 101 is '-1', not an integer in 0..255"),
      ("unknown_emotion", 17, lambda l: _replace_field(l, 0, b"7"),
       r"unknown emotion id '7' \(expected 0..6: angry, .*neutral\)"),
      ("unknown_usage", 2, lambda l: _replace_field(l, 2, b"Validation"),
       "unknown Usage 'Validation' \\(expected one of Training, PublicTest, PrivateTest\\)"),
      ("missing_field", 9, lambda l: l.rsplit(b",", 1)[0],
       r"expected 3 fields \(emotion,pixels,Usage\), got 2; is the file truncated\?"),
      ("extra_field", 9, lambda l: l + b",x", r"expected 3 fields \(emotion,pixels,Usage\), got 4"),
  )
  def test_bad_row(self, row, make_line, problem):
    with self.assertRaisesRegex(fer2013.CsvError,
                                rf"fer2013\.csv, data row {row} \(line {row + 1}\): {problem}"):
      self.build(_with_row(row, make_line))
    self.assertNothingLoadable()

  def test_bad_row_in_gzipped_csv(self):
    content = gzip.compress(_with_row(20, _drop_last_pixel))
    with self.assertRaisesRegex(fer2013.CsvError, r"fer2013\.csv\.gz, data row 20 \(line 21\): "
                                "expected 2304 pixels, got 2303"):
      self.build(content, name="fer2013.csv.gz")
    self.assertNothingLoadable()

  def test_missing_column(self):
    lines = [b",".join(line.split(b",")[:2]) for line in _dummy_lines()]
    with self.assertRaisesRegex(fer2013.CsvError, r"fer2013\.csv, header \(line 1\): missing "
                                r"column\(s\) Usage; expected emotion,pixels,Usage, got "
                                "emotion,pixels"):
      self.build(b"\n".join(lines))
    self.assertNothingLoadable()

  def test_empty_file(self):
    with self.assertRaisesRegex(fer2013.CsvError, r"fer2013\.csv: the file is empty"):
      self.build(b"")
    self.assertNothingLoadable()

  def test_header_only(self):
    with self.assertRaisesRegex(fer2013.CsvError, r"fer2013\.csv: no data rows after the header"):
      self.build(b"emotion,pixels,Usage\n")
    self.assertNothingLoadable()

  def test_truncated_csv(self):
    content = b"\n".join(_dummy_lines()) + b"\n"
    cut = content[:len(content) // 2]
    row = cut.count(b"\n")  # The header is line 1, so the cut row is data row `row`.
    with self.assertRaisesRegex(fer2013.CsvError, rf"data row {row} \(line {row + 1}\): "
                                r"expected 3 fields .* got 2; is the file truncated\?"):
      self.build(cut)
    self.assertNothingLoadable()

  def test_truncated_gzip(self):
    content = _DUMMY_CSV.read_bytes()
    cut = content[:len(content) * 2 // 3]
    row = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
    with self.assertRaisesRegex(fer2013.CsvError, rf"fer2013\.csv\.gz, data row {row} \(line "
                                rf"{row + 1}\): cannot read the file \(EOFError: .*\); is it "
                                "truncated or corrupt?"):
      self.build(cut, name="fer2013.csv.gz")
    self.assertNothingLoadable()

  def test_not_gzip(self):
    with self.assertRaisesRegex(fer2013.CsvError, r"fer2013\.csv\.gz, header \(line 1\): cannot "
                                r"read the file \(BadGzipFile"):
      self.build(b"emotion,pixels,Usage\n", name="fer2013.csv.gz")
    self.assertNothingLoadable()

  def test_missing_manual_file(self):
    with self.assertRaisesRegex(FileNotFoundError, r"(?s)neither .*manual/fer2013\.csv nor "
                                r".*manual/fer2013\.csv\.gz exists\.\n.*Kaggle"):
      self.build(b"not the csv", name="README.txt")
    self.assertNothingLoadable()

  def test_no_row_of_the_scheme(self):
    lines = _dummy_lines()
    fear_only = [lines[0]] + [line for line in lines[1:] if line.startswith(b"2,")]
    with self.assertRaisesRegex(fer2013.CsvError, "no rows with an emotion of scheme 'seed6'"):
      self.build(b"\n".join(fear_only), config="seed6")
    self.assertNothingLoadable()

  def test_failure_while_writing_leaves_nothing(self):
    real_encode = fer2013._encode_png

    def encode_then_fail(images):
      yield from list(real_encode(images))[:3]
      raise OSError("disk full")

    with mock.patch.object(fer2013, "_encode_png", encode_then_fail):
      with self.assertRaisesRegex(OSError, "disk full"):
        self.build(b"\n".join(_dummy_lines()))
    self.assertNothingLoadable()


class SourceTest(BuildTestCase):
  """The metadata names the csv; generated faces and another csv over a build are refused."""

  def test_metadata_records_the_csv(self):
    content = b"\n".join(_dummy_lines()) + b"\n"
    self.build(content)
    reread = fer2013.Builder(config="fer7", data_dir=self.dir / "data")
    self.assertEqual(dict(reread.info.metadata), {
        "source_file": "fer2013.csv", "source_sha256": hashlib.sha256(content).hexdigest(),
        "source_rows": 28})

  def test_generated_faces_are_refused(self):
    (self.dir / "manual").mkdir()
    (self.dir / "manual" / "generated.json").write_text('{"num_rows": 28, "seed": 0}\n')
    with self.assertRaisesRegex(fer2013.SourceError, r"manual/fer2013\.csv holds generated faces "
                                r"\(.*generated\.json: \{\"num_rows\": 28, \"seed\": 0\}\), not "
                                r"FER-2013; .*tfds build builders/generated_faces --manual_dir="):
      self.build(b"\n".join(_dummy_lines()))
    self.assertNothingLoadable()

  def test_the_same_csv_reuses_the_build_and_another_is_refused(self):
    content = b"\n".join(_dummy_lines()) + b"\n"
    first = self.build(content)
    written = (pathlib.Path(first.data_dir) / "dataset_info.json").stat().st_mtime_ns
    self.build(content)  # The same bytes: TFDS reuses the build.
    self.assertEqual((pathlib.Path(first.data_dir) / "dataset_info.json").stat().st_mtime_ns,
                     written)
    with self.assertRaisesRegex(fer2013.SourceError, "was built from fer2013.csv .*, not from"):
      self.build(content.replace(b",Training", b",PublicTest", 1))
    self.assertEqual(fer2013.Builder(config="fer7", data_dir=self.dir / "data")
                     .info.metadata["source_sha256"], hashlib.sha256(content).hexdigest())


class CsvFormTest(BuildTestCase):

  def _counts(self, builder: fer2013.Builder) -> dict[str, int]:
    return {name: split.num_examples for name, split in builder.info.splits.items()}

  def test_only_private_test_rows_give_a_test_split_alone(self):
    lines = _dummy_lines()
    private = [lines[0]] + [line for line in lines[1:] if line.endswith(b",PrivateTest")]
    builder = self.build(b"\n".join(private))
    self.assertEqual(self._counts(builder), {"test": 7})
    rows = [ex["row"] for ex in tfds.as_numpy(builder.as_dataset(split="test"))]
    self.assertCountEqual(rows, range(1, 8))

  def test_crlf_quotes_blank_lines_and_columns_in_any_order(self):
    lines = _dummy_lines()
    out = [b"Usage,emotion,pixels"]
    for line in lines[1:]:
      emotion, pixels, usage = line.split(b",")
      out.append(b",".join([usage, emotion, b'"' + pixels + b'"']))
    out.insert(5, b"")  # A blank line is skipped and does not count as a row.
    builder = self.build(b"\r\n".join(out) + b"\r\n\r\n")
    self.assertEqual(self._counts(builder), {"train": 14, "validation": 7, "test": 7})
    expected = {row: line.split(b",") for row, line in enumerate(lines) if row}
    for ex in tfds.as_numpy(builder.as_dataset(split="validation")):
      emotion, pixels, _ = expected[ex["row"]]
      self.assertEqual(ex["label"], int(emotion))
      self.assertEqual(ex["image"].ravel().tolist(), [int(p) for p in pixels.split()])

  def test_each_split_gets_four_shards(self):
    builder = self.build(b"\n".join(_dummy_lines()))
    self.assertEqual({name: split.num_shards for name, split in builder.info.splits.items()},
                     {"train": 4, "validation": 4, "test": 4})

  def test_a_tiny_split_lowers_the_shard_count(self):
    lines = _dummy_lines()
    private = [line for line in lines if line.endswith(b",PrivateTest")]
    others = [line for line in lines if not line.endswith(b",PrivateTest")]
    builder = self.build(b"\n".join(others + private[:2]))
    self.assertEqual({name: split.num_shards for name, split in builder.info.splits.items()},
                     {"train": 2, "validation": 2, "test": 2})


if __name__ == "__main__":
  absltest.main()
