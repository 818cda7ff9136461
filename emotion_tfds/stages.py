"""Training stages: a small declarative schedule (epochs, learning rate, batch, trainable layers).

A stage spec is `[name:]trainable:epochs:lr:global_batch[:optimizer]`, several joined by commas:

  head:10:1e-3:32,all:10:1e-4:128,all:10:1e-4:1024
  warmup:head:2:1e-3:64:sgd,finetune:all:8:1e-4:256

`trainable` is `head` (only the classifier head trains, the base is frozen) or `all`. The optimizer
defaults to adam. Unnamed stages are called `<prefix><i>_<trainable>` (e.g. `stage2_all`).

Learning-rate scaling (`scaled_lr`, off unless asked for): the linear rule of Goyal et al. (2017),
lr * global_batch / reference_batch, so a stage's lr is given for `reference_batch` images per step.
"""

from __future__ import annotations

import dataclasses
import re

import keras

TRAINABLE: tuple[str, ...] = ("head", "all")
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd", "momentum", "rmsprop")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a schedule.

  Attributes:
    name: unique name (TensorBoard subfolder, log lines).
    trainable: "head" (base frozen) or "all".
    epochs: number of passes over the training split.
    lr: learning rate (before optional scaling, see `scaled_lr`).
    global_batch: images per step over all replicas.
    optimizer: one of OPTIMIZERS.
    dataset: TFDS dataset ("fer2013/fer7") this stage trains on; None means the run's target
      dataset. Pretraining stages carry their own.
  """
  name: str
  trainable: str
  epochs: int
  lr: float
  global_batch: int
  optimizer: str = "adam"
  dataset: str | None = None

  def __post_init__(self):
    if not _NAME_RE.match(self.name) or self.name in TRAINABLE:
      raise ValueError(f"Bad stage name {self.name!r}: use letters, digits, '_' or '-', starting "
                       f"with a letter, and not {TRAINABLE}.")
    if self.trainable not in TRAINABLE:
      raise ValueError(f"Stage {self.name}: trainable must be one of {TRAINABLE}, "
                       f"got {self.trainable!r}.")
    if self.epochs < 1:
      raise ValueError(f"Stage {self.name}: epochs must be >= 1, got {self.epochs}.")
    if not self.lr > 0:
      raise ValueError(f"Stage {self.name}: lr must be > 0, got {self.lr}.")
    if self.global_batch < 1:
      raise ValueError(f"Stage {self.name}: global_batch must be >= 1, got {self.global_batch}.")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"Stage {self.name}: optimizer must be one of {OPTIMIZERS}, "
                       f"got {self.optimizer!r}.")

  def spec(self) -> str:
    """The stage in spec form (`parse_stages` reads it back; the dataset is not part of it)."""
    return (f"{self.name}:{self.trainable}:{self.epochs}:{self.lr:g}:{self.global_batch}:"
            f"{self.optimizer}")


def _parse_int(text: str, what: str, where: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"{where}: {what} must be an integer, got {text!r}.") from None


def parse_stages(spec: str, prefix: str = "stage", dataset: str | None = None) -> list[Stage]:
  """Parses a comma-separated stage spec (see the module docstring).

  Args:
    spec: e.g. "head:10:1e-3:32,all:10:1e-4:128".
    prefix: name prefix of unnamed stages.
    dataset: the `dataset` of every parsed stage (None: the run's target dataset).

  Returns:
    The stages, in order.

  Raises:
    ValueError: naming the offending stage and field.
  """
  items = [item.strip() for item in spec.split(",")]
  if not spec.strip() or not all(items):
    raise ValueError(f"Empty stage in stage spec {spec!r}.")
  stages = []
  for i, item in enumerate(items, start=1):
    where = f"stage {i} {item!r}"
    fields = item.split(":")
    name = f"{prefix}{i}_{fields[0]}"
    if fields[0] not in TRAINABLE:
      name, fields = fields[0], fields[1:]
    if len(fields) not in (4, 5):
      raise ValueError(f"{where}: expected [name:]trainable:epochs:lr:global_batch[:optimizer], "
                       f"with trainable one of {TRAINABLE}.")
    try:
      lr = float(fields[2])
    except ValueError:
      raise ValueError(f"{where}: lr must be a number, got {fields[2]!r}.") from None
    try:
      stages.append(Stage(
          name=name, trainable=fields[0], epochs=_parse_int(fields[1], "epochs", where), lr=lr,
          global_batch=_parse_int(fields[3], "global_batch", where),
          optimizer=fields[4] if len(fields) == 5 else "adam", dataset=dataset))
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None
  return stages


def build_schedule(stages: list[Stage], pretrain: list[Stage] | None = None) -> list[Stage]:
  """Pretraining stages (if any) then the main stages, checked for unique names."""
  schedule = list(pretrain or []) + list(stages)
  if not schedule:
    raise ValueError("The schedule has no stages.")
  names = [s.name for s in schedule]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"Stage names must be unique; repeated: {duplicates}.")
  return schedule


def scaled_lr(stage: Stage, scale_lr: bool, reference_batch: int) -> float:
  """The stage's learning rate, times global_batch / reference_batch when `scale_lr`."""
  if not scale_lr:
    return stage.lr
  if reference_batch < 1:
    raise ValueError(f"reference_batch must be >= 1, got {reference_batch}.")
  return stage.lr * stage.global_batch / reference_batch


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
  """A fresh Keras optimizer by name (see OPTIMIZERS); "momentum" is SGD with momentum 0.9."""
  if name == "adam":
    return keras.optimizers.Adam(learning_rate)
  if name == "adamw":
    return keras.optimizers.AdamW(learning_rate)
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate)
  if name == "momentum":
    return keras.optimizers.SGD(learning_rate, momentum=0.9)
  if name == "rmsprop":
    return keras.optimizers.RMSprop(learning_rate)
  raise ValueError(f"Unknown optimizer {name!r}; expected one of {OPTIMIZERS}.")
