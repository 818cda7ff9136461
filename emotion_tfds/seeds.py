"""The run's seed streams: every random draw of a run derives from (run seed, stream, ...).

Streams are named here once, so that two uses never share one by accident; their values are part
of what makes a run reproducible (and a resumed run equal to an uninterrupted one).
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
  """What a derived seed is for."""
  AUGMENT = 0  # A stage's on-device augmentation (folded with the optimizer step and replica).
  SHUFFLE = 1  # One epoch's shuffle order (and host augmentation) in the input pipeline.
  STAGE = 2  # A stage's pipeline seed and the Keras RNG of its new layers (dropout, heads).


# Sub-streams folded into one epoch's (or one augmentation step's) stateless seed.
ORDER_DRAW = 1  # pipeline: the permutation of the epoch's examples.
HOST_AUGMENT_DRAW = 2  # pipeline: augmentation on the host.
EXTRA_AUGMENT_DRAW = 1  # augment: rotation, shift and erasing (apart from the first five kinds).


def derive_seed(*parts: int) -> int:
  """A non-negative int31 seed that depends only on `parts` (non-negative ints)."""
  return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] >> 1)


def stage_seed(seed: int, stream: Stream, stage_index: int) -> int:
  """The seed of `stream` for one stage of the run."""
  return derive_seed(seed, int(stream), stage_index)


def epoch_seed(seed: int, stage_index: int, epoch: int) -> int:
  """The shuffle seed of one epoch: a function of (run seed, stage, epoch) only."""
  return derive_seed(seed, int(Stream.SHUFFLE), stage_index, epoch)
