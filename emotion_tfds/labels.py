"""Emotion names, label schemes and the mappings between them: the project's one source of truth.

FER-2013 ids (the `emotion` column of fer2013.csv) are the canonical ids. A *scheme* is an ordered
tuple of emotion names that a dataset config and a model's softmax head use:

  fer7:  the seven FER-2013 emotions in csv id order.
  seed6: the seed project's six emotions (FER's "fear" dropped), in the seed's (alphabetical) order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# FER-2013 csv id order: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
FER7: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SEED6: tuple[str, ...] = ("angry", "disgust", "happy", "neutral", "sad", "surprise")
SCHEMES: dict[str, tuple[str, ...]] = {"fer7": FER7, "seed6": SEED6}

# fer2013.csv `Usage` column -> TFDS split name.
USAGE_TO_SPLIT: dict[str, str] = {
    "Training": "train",
    "PublicTest": "validation",
    "PrivateTest": "test",
}

# RAVDESS file-name emotion code (3rd field) -> emotion name. "calm" has no FER counterpart.
RAVDESS_EMOTIONS: dict[int, str] = {
    1: "neutral",
    2: "calm",
    3: "happy",
    4: "sad",
    5: "angry",
    6: "fear",  # RAVDESS "fearful"
    7: "disgust",
    8: "surprise",  # RAVDESS "surprised"
}

# Class order of the Emotion-detection project's released model.h5 (alphabetical, its own names).
EMOTION_DETECTION_RELEASE: tuple[str, ...] = (
    "angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
_RELEASE_TO_FER7_NAME = {
    "angry": "angry", "disgusted": "disgust", "fearful": "fear", "happy": "happy",
    "neutral": "neutral", "sad": "sad", "surprised": "surprise",
}


def get_scheme(name: str) -> tuple[str, ...]:
  """Returns the emotion names of scheme `name` ('fer7' or 'seed6')."""
  try:
    return SCHEMES[name]
  except KeyError:
    raise ValueError(f"Unknown label scheme {name!r}; expected one of {sorted(SCHEMES)}.") from None


def scheme_of(names: Sequence[str] | None) -> str | None:
  """The name of the scheme whose emotions are `names` in this order, or None."""
  if names is None:
    return None
  return next((scheme for scheme, emotions in SCHEMES.items() if emotions == tuple(names)), None)


def display_order(names: tuple[str, ...]) -> tuple[str, ...]:
  """`names` in the one order every view shows emotions in: FER-2013's csv id order (angry,
  disgust, fear, happy, sad, surprise, neutral), other names after them as given."""
  rank = {name: i for i, name in enumerate(FER7)}
  return tuple(sorted(names, key=lambda name: rank.get(name, len(FER7))))


def mapping(src: str | tuple[str, ...], dst: str | tuple[str, ...]) -> np.ndarray:
  """Maps label ids of scheme `src` to ids of scheme `dst`.

  Args:
    src: source scheme name or tuple of emotion names.
    dst: destination scheme name or tuple of emotion names.

  Returns:
    int64 array of len(src): entry i is the `dst` id of `src` emotion i, or -1 when `dst` has no
    such emotion (e.g. fer7 "fear" in seed6).
  """
  src_names = get_scheme(src) if isinstance(src, str) else src
  dst_names = get_scheme(dst) if isinstance(dst, str) else dst
  index = {name: i for i, name in enumerate(dst_names)}
  return np.array([index.get(name, -1) for name in src_names], dtype=np.int64)


def fer7_to(scheme: str) -> np.ndarray:
  """FER-2013 csv id -> id in `scheme` (-1 where the scheme drops the emotion)."""
  return mapping(FER7, scheme)


def release_to(scheme: str | tuple[str, ...]) -> np.ndarray:
  """Emotion-detection release model.h5 class index -> id in `scheme` (a scheme name or emotion
  names; -1 if absent)."""
  names = tuple(_RELEASE_TO_FER7_NAME[n] for n in EMOTION_DETECTION_RELEASE)
  return mapping(names, scheme)


def ravdess_to(scheme: str, calm_as_neutral: bool = False) -> dict[int, int]:
  """RAVDESS emotion code -> id in `scheme`; codes the scheme cannot hold are left out.

  Args:
    scheme: target scheme name.
    calm_as_neutral: map RAVDESS "calm" (02) to neutral instead of dropping it.
  """
  names = get_scheme(scheme)
  out = {}
  for code, name in RAVDESS_EMOTIONS.items():
    if name == "calm" and calm_as_neutral:
      name = "neutral"
    if name in names:
      out[code] = names.index(name)
  return out
