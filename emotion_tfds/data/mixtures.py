"""Input-time mixtures: FER-2013's train split filled up with RAVDESS face crops.

`FillGapMixture` reads two built TFDS datasets, e.g. `fer2013/seed6` and `ravdess_crops`, and
serves what the pipeline and training read of a builder (`info.splits`, `info.features`,
`as_dataset`): train is the FER-2013 train split plus the crops `select_fill_gap` picks; validation
and test are FER-2013's alone, so results stay comparable with the FER-only runs. Its name is
"<fer dataset>+<crops dataset>" (`datasets.get_builder("fer2013/seed6+ravdess_crops", ...)`).

The rule (BUILD.md, "RAVDESS crops"): each emotion of the target's labels gets crops up toward the
largest emotion's FER count, at most `cap_ratio` times its own count; which crops is a seeded,
order-independent choice that takes every video's first frame before any video's second.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import hashlib
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# RAVDESS crops per FER example an emotion may get at most: 1.0 at most doubles it.
DEFAULT_CAP_RATIO = 1.0
_TRAIN = "train"


@dataclasses.dataclass(frozen=True)
class Candidate:
  """What the selection needs to know of one crop."""
  crop_file: str
  emotion: str  # FER-2013 emotion name.
  source_video: str


def fill_gap_counts(fer_counts: Mapping[str, int], available: Mapping[str, int],
                    cap_ratio: float = DEFAULT_CAP_RATIO) -> dict[str, int]:
  """How many RAVDESS crops each emotion gets.

  target = the largest FER count; emotion e gets
  min(target - fer[e], floor(cap_ratio * fer[e]), available[e]).

  Args:
    fer_counts: emotion name -> FER-2013 train examples, for every emotion of the target.
    available: emotion name -> RAVDESS crops available (missing = 0).
    cap_ratio: RAVDESS crops per FER example an emotion may get at most (1.0: at most double).

  Returns:
    emotion name -> number of crops to add, for every emotion of `fer_counts`.
  """
  if cap_ratio < 0:
    raise ValueError(f"cap_ratio must be >= 0, got {cap_ratio}.")
  target = max(fer_counts.values(), default=0)
  return {e: max(0, min(target - n, int(np.floor(cap_ratio * n)), available.get(e, 0)))
          for e, n in fer_counts.items()}


def select_fill_gap(fer_counts: Mapping[str, int], candidates: Iterable[Any],
                    cap_ratio: float = DEFAULT_CAP_RATIO, seed: int = 0) -> list[Any]:
  """Chooses crops that bring every emotion of `fer_counts` up toward the largest one.

  The choice is deterministic (a hash of `seed` and the file names, not the input order) and
  spread out: every video gives its first frame before any video gives a second one.

  Args:
    fer_counts: emotion name -> FER-2013 train count, for each emotion of the target's labels.
    candidates: crops with `crop_file`, `emotion` and `source_video` (`Candidate`, or the
      manifest's `ravdess_crops.Crop`); emotions outside `fer_counts` (e.g. fear for seed6) are
      never chosen.
    cap_ratio: see `fill_gap_counts`.
    seed: changes which crops are chosen, not how many.

  Returns:
    The chosen candidates, sorted by crop_file.
  """
  by_emotion = collections.defaultdict(list)
  for candidate in candidates:
    if candidate.emotion in fer_counts:
      by_emotion[candidate.emotion].append(candidate)
  quota = fill_gap_counts(fer_counts, {e: len(c) for e, c in by_emotion.items()}, cap_ratio)
  chosen = []
  for emotion, emotion_candidates in by_emotion.items():
    chosen += _spread_order(emotion_candidates, seed)[:quota[emotion]]
  return sorted(chosen, key=lambda c: c.crop_file)


def _spread_order(candidates: Iterable[Any], seed: int) -> list[Any]:
  """Orders crops by (rank of the frame within its video, video hash): round-robin over videos."""
  by_video = collections.defaultdict(list)
  for candidate in candidates:
    by_video[candidate.source_video].append(candidate)
  keyed = []
  for video, video_crops in by_video.items():
    video_hash = _hash(seed, video)
    for rank, crop in enumerate(sorted(video_crops, key=lambda c: _hash(seed, c.crop_file))):
      keyed.append(((rank, video_hash, crop.crop_file), crop))
  return [crop for _, crop in sorted(keyed, key=lambda kc: kc[0])]


def _hash(seed: int, text: str) -> str:
  return hashlib.sha256(f"{seed}:{text}".encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class _SplitSize:
  num_examples: int
  num_shards: int


@dataclasses.dataclass(frozen=True)
class MixtureInfo:
  """The parts of `tfds.core.DatasetInfo` that the pipeline and training read."""
  full_name: str
  version: str
  features: tfds.features.FeaturesDict
  splits: dict[str, _SplitSize]


class FillGapMixture:
  """FER-2013 train + the RAVDESS crops that fill its gaps; FER-2013's own other splits.

  Reads like a prepared TFDS builder in the ways `pipeline.make_dataset` and training use one.
  Crops are matched to the FER dataset's labels by name; emotions it lacks are left out.
  """

  def __init__(self, fer: tfds.core.DatasetBuilder, crops: tfds.core.DatasetBuilder,
               cap_ratio: float = DEFAULT_CAP_RATIO, seed: int = 0):
    self.fer, self.crops = fer, crops
    self.data_dir = fer.data_dir
    self._cap_ratio, self._seed = cap_ratio, seed
    self._chosen = None

  def is_prepared(self) -> bool:
    return self.fer.is_prepared() and self.crops.is_prepared()

  @property
  def chosen(self) -> tuple[Candidate, ...]:
    """The crops that join the train split (read once from the two datasets' labels)."""
    if self._chosen is None:
      names = self._label_names()
      fer_labels = _column(self.fer, "label")
      fer_counts = dict(zip(names, np.bincount(fer_labels, minlength=len(names)).tolist()))
      crop_names = self.crops.info.features["label"].names
      candidates = [Candidate(f.decode(), crop_names[label], v.decode()) for f, label, v in zip(
          _column(self.crops, "crop_file"), _column(self.crops, "label"),
          _column(self.crops, "source_video"))]
      self._chosen = tuple(select_fill_gap(fer_counts, candidates, self._cap_ratio, self._seed))
    return self._chosen

  @property
  def info(self) -> MixtureInfo:
    splits = {name: _SplitSize(split.num_examples, split.num_shards)
              for name, split in self.fer.info.splits.items()}
    train = splits[_TRAIN]
    splits[_TRAIN] = _SplitSize(
        train.num_examples + len(self.chosen),
        min(train.num_shards, self.crops.info.splits[_TRAIN].num_shards))
    return MixtureInfo(
        full_name=f"{self.fer.info.full_name}+{self.crops.info.full_name}",
        version=f"{self.fer.info.version}+{self.crops.info.version}",
        features=self.fer.info.features, splits=splits)

  def as_dataset(self, split: str, shuffle_files: bool = False, as_supervised: bool = False,
                 read_config: tfds.ReadConfig | None = None,
                 decoders: Mapping[str, Any] | None = None) -> tf.data.Dataset:
    """`split` as `tfds.core.DatasetBuilder.as_dataset` reads it; examples hold image and label.

    A slice of train ("train[0%:50%]", as `tfds.even_splits` makes for input pipelines) is the
    same slice of each of the two datasets.
    """
    kwargs = dict(shuffle_files=shuffle_files, read_config=read_config, decoders=decoders)
    if split.split("[", 1)[0] != _TRAIN:
      return self.fer.as_dataset(split=split, as_supervised=as_supervised, **kwargs)
    fer = self.fer.as_dataset(split=split, **kwargs).map(
        lambda ex: {"image": ex["image"], "label": ex["label"]})
    crops = self.crops.as_dataset(split=split, **kwargs)
    chosen = tf.constant([c.crop_file for c in self.chosen] or [""], tf.string)
    keep = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(chosen, tf.ones_like(chosen, tf.int64)), 0)
    to_label = tf.constant(_label_map(self.crops.info.features["label"].names,
                                      self._label_names()), tf.int64)
    crops = crops.filter(lambda ex: keep.lookup(ex["crop_file"]) > 0).map(
        lambda ex: {"image": ex["image"], "label": tf.gather(to_label, ex["label"])})
    mixed = fer.concatenate(crops)
    if as_supervised:
      mixed = mixed.map(lambda ex: (ex["image"], ex["label"]))
    return mixed

  def _label_names(self) -> tuple[str, ...]:
    return tuple(self.fer.info.features["label"].names)


def _label_map(source: Sequence[str], target: Sequence[str]) -> list[int]:
  """Label id in `target` of each name of `source`; -1 where `target` lacks it."""
  return [target.index(name) if name in target else -1 for name in source]


def _column(builder: tfds.core.DatasetBuilder, feature: str) -> np.ndarray:
  """One feature of every train example, images left undecoded."""
  ds = builder.as_dataset(split=_TRAIN, decoders={"image": tfds.decode.SkipDecoding()})
  batches = tfds.as_numpy(ds.map(lambda ex: ex[feature]).batch(4096))
  return np.concatenate(list(batches))
