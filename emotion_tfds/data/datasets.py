"""Small helpers around the TFDS builders: find, build and describe a dataset such as "fer2013/seed6".

A name "A+B" is the input-time mixture of FER-2013 dataset A with face-crops dataset B
(`mixtures.FillGapMixture`), e.g. "fer2013/seed6+ravdess_crops".

`ensure_generated` gives every command a dataset without downloads: it writes generated faces
(`emotion_tfds.data.facegen`) to `<data_dir>/manual/generated/fer2013.csv` and builds from there.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

import builders.fer2013  # noqa: F401  (registers "fer2013" with TFDS)
import builders.ravdess_crops  # noqa: F401  (registers "ravdess_crops" with TFDS)
from emotion_tfds import errors
from emotion_tfds.data import facegen
from emotion_tfds.data import mixtures

MIXTURE_SEPARATOR = "+"
DEFAULT_DATASET = "fer2013/seed6"  # train_main's --dataset.
_GENERATED_PARAMS = "generated.json"


def default_data_dir() -> str:
  """`./data/tfds` (ignored by git), or $TFDS_DATA_DIR when set."""
  return os.environ.get("TFDS_DATA_DIR", os.path.join("data", "tfds"))


def default_dataset(scheme: str | None = None) -> str:
  """The dataset of a main that is given none: `DEFAULT_DATASET`, or the dataset of label scheme
  `scheme` in its family (e.g. "fer7": fer2013/fer7)."""
  if scheme is None:
    return DEFAULT_DATASET
  return f"{DEFAULT_DATASET.split('/')[0]}/{scheme}"


def get_builder(dataset: str, data_dir: str | os.PathLike
                ) -> tfds.core.DatasetBuilder | mixtures.FillGapMixture:
  """Returns the builder of `dataset` ("fer2013", "fer2013/seed6", ...) under `data_dir`, or the
  mixture of an "A+B" name.

  Raises:
    errors.ConfigError: no such dataset, or no such config of it.
  """
  if MIXTURE_SEPARATOR in dataset:
    fer, crops = mixture_parts(dataset)
    return mixtures.FillGapMixture(get_builder(fer, data_dir), get_builder(crops, data_dir))
  _check_name(dataset)
  return tfds.builder(dataset, data_dir=os.fspath(data_dir))


def _check_name(dataset: str) -> None:
  name, _, config = dataset.partition(":")[0].partition("/")
  try:
    configs = list(tfds.builder_cls(name).builder_configs)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.ConfigError(f"Dataset {dataset!r}: there is no dataset {name!r} (this project's "
                             "are built by builders/, see BUILD.md).") from None
  if config and config not in configs:
    choices = (f"one of {', '.join(f'{name}/{c}' for c in configs)}" if configs
               else f"{name} (it has no configs)")
    raise errors.ConfigError(f"Dataset {dataset!r}: {name} has no config {config!r}; use "
                             f"{choices}.")


def mixture_parts(dataset: str) -> tuple[str, str]:
  """("fer2013/seed6", "ravdess_crops") of "fer2013/seed6+ravdess_crops".

  Raises:
    errors.ConfigError: unless the name has exactly two non-empty parts.
  """
  parts = dataset.split(MIXTURE_SEPARATOR)
  if len(parts) != 2 or not all(parts):
    raise errors.ConfigError(f"{dataset!r}: a mixture is named <FER-2013 dataset>+<crops dataset>, e.g. "
                     "fer2013/seed6+ravdess_crops.")
  return parts[0], parts[1]


def build(dataset: str, data_dir: str | os.PathLike,
          manual_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """Builds `dataset` into `data_dir` from `manual_dir` (no-op if already built): the csv for
  fer2013, the crops folder for ravdess_crops.

  Raises:
    builders.fer2013.CsvError: for a bad csv (nothing usable is left in `data_dir`).
    FileNotFoundError: when `manual_dir` lacks the csv, the crops manifest or a crop.
    ValueError: for a mixture name ("A+B"): its datasets are built one by one.
  """
  if MIXTURE_SEPARATOR in dataset:
    raise ValueError(f"{dataset!r} is a mixture, read at input time: build each of its datasets.")
  builder = get_builder(dataset, data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


def ensure_generated(dataset: str, data_dir: str | os.PathLike, num_rows: int = facegen.DEFAULT_ROWS,
                     seed: int = 0) -> tfds.core.DatasetBuilder:
  """Returns `dataset` built from generated faces, writing the csv and building it when needed.

  The csv goes to `<data_dir>/manual/generated/fer2013.csv`, next to a `generated.json` with its
  `num_rows` and `seed`; a data_dir is tied to one (num_rows, seed).

  Raises:
    ValueError: when `data_dir` already holds generated faces of another num_rows or seed.
  """
  manual_dir = pathlib.Path(data_dir) / "manual" / "generated"
  params = {"num_rows": num_rows, "seed": seed}
  params_path = manual_dir / _GENERATED_PARAMS
  csv_path = manual_dir / "fer2013.csv"
  if params_path.exists():
    existing = json.loads(params_path.read_text())
    if existing != params:
      raise ValueError(
          f"{data_dir} holds generated faces with {existing} ({params_path}), not {params}; "
          "use another data_dir or delete that one.")
  if not (params_path.exists() and csv_path.exists()):
    manual_dir.mkdir(parents=True, exist_ok=True)
    facegen.write_csv(csv_path, num_rows=num_rows, seed=seed)
    params_path.write_text(json.dumps(params))
  return build(dataset, data_dir, manual_dir)


def num_classes(builder: tfds.core.DatasetBuilder) -> int:
  """Number of label classes of `builder`'s dataset."""
  return builder.info.features["label"].num_classes


def label_names(builder: tfds.core.DatasetBuilder) -> tuple[str, ...]:
  """Label names of `builder`'s dataset, in label id order."""
  return tuple(builder.info.features["label"].names)


def class_counts(builder: tfds.core.DatasetBuilder, split: str = "train") -> tuple[int, ...]:
  """Examples per label id in `split` (reads the labels only; images stay undecoded)."""
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  labels = np.concatenate(list(tfds.as_numpy(ds.map(lambda ex: ex["label"]).batch(4096))))
  return tuple(int(c) for c in np.bincount(labels, minlength=num_classes(builder)))
