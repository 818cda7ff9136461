"""Finds, builds and describes the datasets by name, e.g. "fer2013/fer7" or "generated_faces/seed6".

Two families share the label schemes (configs `fer7` and `seed6`):

    fer2013/<config>          the real FER-2013, built by `tfds build builders/fer2013` from the
                              Kaggle csv (a manual download); no command ever generates it.
    generated_faces/<config>  cartoon faces (`emotion_tfds.data.facegen`), the default data:
                              `ensure_generated` writes them to <data_dir>/manual/generated_faces/
                              and builds them.

A name "A+B" is the input-time mixture of dataset A with face-crops dataset B
(`mixtures.FillGapMixture`), e.g. "fer2013/seed6+ravdess_crops". `require_built` returns a built
dataset or says how to build it (and what an older build in its place is); `provenance` and
`describe` say what a built dataset was made from (the builders record their source csv).
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

import builders.fer2013  # noqa: F401  (registers "fer2013" with TFDS)
import builders.generated_faces  # noqa: F401  (registers "generated_faces" with TFDS)
import builders.ravdess_crops  # noqa: F401  (registers "ravdess_crops" with TFDS)
from emotion_tfds import errors
from emotion_tfds.data import facegen
from emotion_tfds.data import mixtures

FER2013 = "fer2013"
GENERATED_FACES = "generated_faces"
RAVDESS_CROPS = "ravdess_crops"
MIXTURE_SEPARATOR = "+"
DEFAULT_DATASET = f"{GENERATED_FACES}/seed6"  # train_main's --dataset: the default run's data.
_GENERATED_DIR = ("manual", GENERATED_FACES)  # Under data_dir: what ensure_generated writes.
# Under data_dir: the marker of the default run before generated_faces existed, which built its
# generated faces as fer2013 1.0.0 from manual/generated/fer2013.csv.
_OLD_GENERATED_PARAMS = ("manual", "generated", "generated.json")
_SPLIT_ORDER = ("train", "validation", "test")
_SHA256_SHOWN = 12  # Hex digits of a sha256 in a description line.
_REAL_DATA_HELP = ('fer2013.csv is a manual download from Kaggle (README.md, "Real FER-2013"; '
                   "BUILD.md)")


def default_data_dir() -> str:
  """`./data/tfds` (ignored by git), or $TFDS_DATA_DIR when set."""
  return os.environ.get("TFDS_DATA_DIR", os.path.join("data", "tfds"))


def default_dataset(scheme: str | None = None) -> str:
  """The dataset of a main that is given none: `DEFAULT_DATASET`, or the dataset of label scheme
  `scheme` in its family (e.g. "fer7": generated_faces/fer7)."""
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
  """Builds `dataset` into `data_dir` from `manual_dir` (no-op if already built from the same
  source): the csv for fer2013 and generated_faces, the crops folder for ravdess_crops.

  Raises:
    builders.fer2013.CsvError: for a bad csv (nothing usable is left in `data_dir`).
    builders.fer2013.SourceError: generated faces for fer2013, or a csv other than the one the
      existing build was made from.
    FileNotFoundError: when `manual_dir` lacks the csv, the crops manifest or a crop.
    ValueError: for a mixture name ("A+B"): its datasets are built one by one.
  """
  if MIXTURE_SEPARATOR in dataset:
    raise ValueError(f"{dataset!r} is a mixture, read at input time: build each of its datasets.")
  builder = get_builder(dataset, data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


def family(dataset: str) -> str:
  """The dataset name without config or version: "fer2013" of "fer2013/seed6"."""
  return dataset.split("/")[0]


def ensure_generated(dataset: str, data_dir: str | os.PathLike,
                     num_rows: int = facegen.DEFAULT_ROWS, seed: int = 0
                     ) -> tfds.core.DatasetBuilder:
  """Returns generated_faces/<config> built in `data_dir`, generating and building it when needed.

  The faces go to `<data_dir>/manual/generated_faces/` (`facegen.write_dataset`: fer2013.csv and
  generated.json with `num_rows` and `seed`); a data_dir is tied to one (num_rows, seed).

  Raises:
    ValueError: `dataset` is not a generated_faces config, or `data_dir` already holds generated
      faces of another num_rows or seed.
  """
  if family(dataset) != GENERATED_FACES:
    raise ValueError(f"{dataset!r}: only {GENERATED_FACES}/<config> is generated; "
                     f"{FER2013} is built from the real csv (BUILD.md).")
  manual_dir = pathlib.Path(data_dir, *_GENERATED_DIR)
  params = facegen.generator_params(num_rows, seed)
  params_path = manual_dir / facegen.PARAMS_NAME
  if params_path.exists():
    existing = json.loads(params_path.read_text())
    if existing != params:
      raise ValueError(
          f"{data_dir} holds generated faces with {existing} ({params_path}), not {params}; "
          "use another data_dir or delete that one.")
  if not (params_path.exists() and (manual_dir / facegen.CSV_NAME).exists()):
    facegen.write_dataset(manual_dir, num_rows=num_rows, seed=seed)
  return build(dataset, data_dir, manual_dir)


def require_built(dataset: str, data_dir: str | os.PathLike
                  ) -> tfds.core.DatasetBuilder | mixtures.FillGapMixture:
  """The built `dataset` (or both datasets of a mixture) in `data_dir`.

  Raises:
    errors.DataNotBuiltError: it is not built; the message says how to build it, and what an
      older build in its place is (e.g. the generated faces an older default run built as
      fer2013 1.0.0).
  """
  if MIXTURE_SEPARATOR in dataset:
    fer, crops = mixture_parts(dataset)
    return mixtures.FillGapMixture(require_built(fer, data_dir), require_built(crops, data_dir))
  builder = get_builder(dataset, data_dir)
  if not builder.is_prepared():
    raise errors.DataNotBuiltError(_not_built_message(builder, dataset, data_dir))
  return builder


def _not_built_message(builder: tfds.core.DatasetBuilder, dataset: str,
                       data_dir: str | os.PathLike) -> str:
  config = builder.builder_config.name if builder.builder_config else ""
  if builder.name == RAVDESS_CROPS:
    return (f"Dataset {dataset} is not built in {data_dir}. Extract the crops from the RAVDESS "
            "videos and build it (BUILD.md, \"RAVDESS crops\"): `python ravdess_main.py "
            "--ravdess_dir=<RAVDESS videos> --out=<crops folder>`, then `tfds build "
            f"builders/ravdess_crops --manual_dir=<crops folder> --data_dir={data_dir}`.")
  if builder.name == GENERATED_FACES:
    return (f"Dataset {dataset} is not built in {data_dir}. train_main.py --generate_rows=N "
            "generates N faces and builds it; or build it yourself: `python facegen_main.py "
            f"--out=DIR`, then `tfds build builders/{GENERATED_FACES} --manual_dir=DIR "
            f"--data_dir={data_dir} --config={config}`.")
  build_command = (f"`tfds build builders/{builder.name} --config={config} --data_dir={data_dir} "
                   f"--manual_dir=<folder with fer2013.csv>`")
  older = sorted(path for path in pathlib.Path(builder.data_dir).parent.glob("*/dataset_info.json")
                 if path.parent.name != str(builder.version))
  old_generated = pathlib.Path(data_dir, *_OLD_GENERATED_PARAMS)
  if builder.name == FER2013 and older and old_generated.exists():
    return (f"{older[-1].parent} holds generated faces, not FER-2013: the default run of an "
            f"older version built them under that name ({old_generated}); the default run now "
            f"builds {GENERATED_FACES}/{config}. {_REAL_DATA_HELP}; build the real {dataset} "
            f"{builder.version} with {build_command}, and delete {older[-1].parent}.")
  if older:
    return (f"Dataset {dataset} {builder.version} is not built in {data_dir}, only the older "
            f"{older[-1].parent.name}, which records no source csv ({older[-1].parent}). "
            f"Rebuild it: {build_command} ({_REAL_DATA_HELP}).")
  return (f"Dataset {dataset} is not built in {data_dir}. {_REAL_DATA_HELP}; build it with "
          f"{build_command}. Without FER-2013, train on generated faces: "
          f"--dataset={GENERATED_FACES}/{config}.")


def provenance(builder: tfds.core.DatasetBuilder | mixtures.FillGapMixture) -> dict:
  """What a built dataset (or mixture) was made from, for a run's manifest.

  Returns:
    {"name", "version", "data_dir", "splits": {split: examples}, the builder's metadata
    ("source_file", "source_sha256", "source_rows", "generator"; what it records), "description":
    the `describe` line}; for a mixture {"name", "parts": [both], "splits", "description"}.
  """
  if isinstance(builder, mixtures.FillGapMixture):
    parts = [provenance(builder.fer), provenance(builder.crops)]
    train, added = parts[0]["splits"]["train"], len(builder.chosen)
    return {"name": MIXTURE_SEPARATOR.join(part["name"] for part in parts), "parts": parts,
            "splits": _split_sizes(builder.info.splits),
            "description": (f"{parts[0]['description']} + {parts[1]['description']}; mixed "
                            f"train {train:,} + {added:,} crops")}
  name, version = builder.info.full_name.rsplit("/", 1)
  source = dict(builder.info.metadata or {})
  splits = _split_sizes(builder.info.splits)
  return {"name": name, "version": version, "data_dir": os.fspath(builder.data_dir),
          "splits": splits, **source, "description": _description(name, version, source, splits)}


def describe(builder: tfds.core.DatasetBuilder | mixtures.FillGapMixture) -> str:
  """One line on what a built dataset is, e.g. "fer2013/fer7 1.1.0 from fer2013.csv.gz sha256
  1a2b3c4d5e6f, train 28,709 / validation 3,589" or "generated_faces/seed6 1.0.0: generated faces,
  6,000 rows, seed 0 (fer2013.csv sha256 ...), train ..."."""
  return provenance(builder)["description"]


def _split_sizes(splits) -> dict[str, int]:
  """{split: examples}, train / validation / test first."""
  order = {name: rank for rank, name in enumerate(_SPLIT_ORDER)}
  names = sorted(splits, key=lambda name: (order.get(name, len(order)), name))
  return {name: int(splits[name].num_examples) for name in names}


def _description(name: str, version: str, source: dict, splits: dict[str, int]) -> str:
  sizes = " / ".join(f"{split} {count:,}" for split, count in splits.items())
  digest = source.get("source_sha256")
  csv = f"{source.get('source_file')} sha256 {digest[:_SHA256_SHOWN]}" if digest else None
  generator = source.get("generator")
  if generator:
    what = (f": generated faces, {generator['num_rows']:,} rows, seed {generator['seed']} "
            f"({csv})")
  elif family(name) == GENERATED_FACES:
    what = f": generated faces from {csv}"
  elif csv:
    what = f" from {csv}"
  else:
    what = " (source not recorded)"
  return f"{name} {version}{what}, {sizes}"


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
