"""The damaged files of a built dataset: a tf.data DataLossError turned into the file and the fix.

A truncated or corrupted TFRecord shard fails deep inside Keras's `fit` or an evaluation with a
DataLossError whose message names no file ("truncated record at 19519"). Inside
`naming_damaged_files`, such an error has every shard of the datasets in use read once; when one
does not read to its end with the record count of the dataset's info, the error becomes an
`errors.DamagedDataError` naming the files and the rebuild command.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
import contextlib
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import errors
from emotion_tfds.data import datasets

_REASON = re.compile(r"(truncated|corrupted) record at \d+")


@contextlib.contextmanager
def naming_damaged_files(dataset_names: Iterable[str],
                         data_dir: str | os.PathLike) -> Iterator[None]:
  """Turns a DataLossError inside into a DamagedDataError when a file of the datasets is damaged
  (mixtures are checked part by part); any other DataLossError goes on unchanged."""
  try:
    yield
  except tf.errors.DataLossError:
    for name in dict.fromkeys(dataset_names):
      parts = datasets.mixture_parts(name) if datasets.MIXTURE_SEPARATOR in name else (name,)
      for part in parts:
        _raise_if_damaged(part, data_dir)
    raise


def damaged_files(builder: tfds.core.DatasetBuilder) -> list[str]:
  """"<file> (<what is wrong>)" for each TFRecord file of the built `builder` that cannot be read
  to its end or holds another number of records than the dataset's info says."""
  damaged = []
  for split in builder.info.splits.values():
    for path, expected in zip(split.filepaths, split.shard_lengths, strict=True):
      try:
        count = int(tf.data.TFRecordDataset(os.fspath(path)).reduce(np.int64(0),
                                                                    lambda n, _: n + 1))
      except tf.errors.DataLossError as e:
        reason = _REASON.search(e.message)
        damaged.append(f"{path} ({reason[0] if reason else 'unreadable'})")
        continue
      if count != expected:
        damaged.append(f"{path} ({count} records, the dataset info says {expected})")
  return damaged


def _raise_if_damaged(dataset: str, data_dir: str | os.PathLike) -> None:
  builder = datasets.get_builder(dataset, data_dir)
  if not builder.is_prepared():
    return
  damaged = damaged_files(builder)
  if damaged:
    config = f" --config={builder.builder_config.name}" if builder.builder_config else ""
    raise errors.DamagedDataError(
        f"Dataset {dataset} in {data_dir} is damaged: {', '.join(damaged)}. Rebuild it: "
        f"`tfds build builders/{builder.name}{config} --data_dir={data_dir} "
        "--manual_dir=<the folder it was built from> --overwrite`.")
