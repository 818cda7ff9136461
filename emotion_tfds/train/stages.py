"""Training stages: a small declarative schedule (epochs, learning rate, batch, trainable layers).

A stage spec is `[name:]trainable:epochs:lr:global_batch[:optimizer][:key=value...]`, several joined
by commas:

  head:10:1e-3:32,all:10:1e-4:128,all:10:1e-4:1024
  warmup:head:2:1e-3:64:sgd,finetune:all:8:1e-4:256
  main:all:12:0.1:128:nesterov:schedule=cosine:warmup=1:wd=5e-4:smooth=0.1

`trainable` is `head` (only the classifier head trains, the base is frozen) or `all`. The optimizer
defaults to adam. Unnamed stages are called `<prefix><i>_<trainable>` (e.g. `stage2_all`).

Options (`key=value`, any order, after the positional fields; see `Stage` for the meaning):

  schedule=constant|cosine|step|plateau   lr within the stage (default constant)
  warmup=E        linear warmup from 0 over E epochs (constant, cosine, step)
  drops=E1/E2     epochs after which `step` multiplies the lr by `factor`
  factor=F        lr factor of `step` (default 0.1) and `plateau` (default 0.5)
  patience=P      epochs without a better validation accuracy before `plateau` cuts the lr
  wd=W            decoupled weight decay (lr * W * weight subtracted each step)
  clip=C          clip each step's gradient to global norm C
  smooth=S        label smoothing
  balance=none|weights|sqrt   class weights n / (K n_c) in the loss, or their square roots
  augment=on|off  whether the run's augmentation applies in this stage (default on)
  ema=M           evaluate, keep and finish with an exponential moving average of the weights
  teacher=P1+P2   distil from these trained .keras networks (their mean probabilities; paths
                  without ':', ',' or '+')
  distill_t=T     temperature of the distillation (default 4)
  distill_w=W     weight of the distillation term in [0, 1] (default 0.5)
  budget=on|off   with --time_budget, this stage's epochs are chosen to fit it (default: the last
                  stage's; see `emotion_tfds.train.budget`)

Learning-rate scaling (`scaled_lr`, off unless asked for): the linear rule of Goyal et al. (2017),
lr * global_batch / reference_batch, so a stage's lr is given for `reference_batch` images per step.
"""

from __future__ import annotations

import dataclasses
import re

import keras

TRAINABLE: tuple[str, ...] = ("head", "all")
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd", "momentum", "nesterov", "rmsprop")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step", "plateau")
BALANCES: tuple[str, ...] = ("none", "weights", "sqrt")
DISTILL_TEMPERATURE = 4.0  # Default distill_t.
DISTILL_WEIGHT = 0.5  # Default distill_w.
# Option key in a spec -> Stage field.
_OPTION_FIELDS = {"schedule": "schedule", "warmup": "warmup", "drops": "drops",
                  "factor": "factor", "patience": "patience", "wd": "weight_decay",
                  "clip": "clipnorm", "smooth": "label_smoothing", "balance": "balance",
                  "augment": "augment", "ema": "ema", "teacher": "teacher",
                  "distill_t": "distill_temperature", "distill_w": "distill_weight",
                  "budget": "budget"}
_TEACHER_SEPARATOR = "+"  # teacher=a.keras+b.keras
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class StageError(ValueError):
  """A stage setting out of its range: "Stage <name>: <problem>"."""

  def __init__(self, name: str, problem: str):
    super().__init__(f"Stage {name}: {problem}")
    self.problem = problem


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
    schedule: learning rate within the stage, one of SCHEDULES: constant; cosine (half a cosine
      from lr to 0 over the stage); step (times `factor` after each epoch in `drops`); plateau
      (times `factor` when the validation accuracy has not improved for `patience` epochs).
    warmup: epochs of linear warmup from 0 to lr (not with plateau).
    drops: epochs of the stage after which `step` cuts the lr.
    factor: lr multiplier of step and plateau; None: 0.1 for step, 0.5 for plateau.
    patience: epochs of plateau without improvement before a cut.
    weight_decay: decoupled weight decay: each step subtracts lr * weight_decay * w from w.
    clipnorm: clip the gradient to this global norm (0: off).
    label_smoothing: the target puts 1 - s on the label and s / K on every class.
    balance: "weights" scales each example's loss by n / (K * n_class) of the training split,
      "sqrt" by its square root, "none" not at all.
    augment: the run's augmentation applies in this stage (False: plain images).
    ema: momentum M of an exponential moving average of the trainable weights and the BatchNorm
      statistics (0: off); the averages are what each epoch's validation, keep-best and the
      stage's end see (weight_averages.py).
    teacher: paths of trained `.keras` networks on this stage's classes (empty: no distillation);
      the student learns from their mean probabilities on its own augmented batch (teacher.py).
    distill_temperature: T of the distillation term (both distributions softened by 1/T).
    distill_weight: w: the loss is (1 - w) * the label loss + w * T^2 * KL(teacher || student).
    budget: with a time budget (`TrainConfig.time_budget`), this stage's epochs are chosen to fit
      it; without one it has no effect. At most one stage sets it; by default the last stage is
      the budgeted one.
  """
  name: str
  trainable: str
  epochs: int
  lr: float
  global_batch: int
  optimizer: str = "adam"
  dataset: str | None = None
  schedule: str = "constant"
  warmup: float = 0.0
  drops: tuple[int, ...] = ()
  factor: float | None = None
  patience: int = 2
  weight_decay: float = 0.0
  clipnorm: float = 0.0
  label_smoothing: float = 0.0
  balance: str = "none"
  augment: bool = True
  ema: float = 0.0
  teacher: tuple[str, ...] = ()
  distill_temperature: float = DISTILL_TEMPERATURE
  distill_weight: float = DISTILL_WEIGHT
  budget: bool = False

  def __post_init__(self):
    if not _NAME_RE.match(self.name) or self.name in TRAINABLE:
      raise ValueError(f"Bad stage name {self.name!r}: use letters, digits, '_' or '-', starting "
                       f"with a letter, and not {TRAINABLE}.")
    if self.trainable not in TRAINABLE:
      raise StageError(self.name, f"trainable must be one of {TRAINABLE}, "
                       f"got {self.trainable!r}.")
    if self.epochs < 1:
      raise StageError(self.name, f"epochs must be >= 1, got {self.epochs}.")
    if not self.lr > 0:
      raise StageError(self.name, f"lr must be > 0, got {self.lr}.")
    if self.global_batch < 1:
      raise StageError(self.name, f"global_batch must be >= 1, got {self.global_batch}.")
    if self.optimizer not in OPTIMIZERS:
      raise StageError(self.name, f"optimizer must be one of {OPTIMIZERS}, "
                       f"got {self.optimizer!r}.")
    if self.schedule not in SCHEDULES:
      raise StageError(self.name, f"schedule must be one of {SCHEDULES}, "
                       f"got {self.schedule!r}.")
    if self.balance not in BALANCES:
      raise StageError(self.name, f"balance must be one of {BALANCES}, "
                       f"got {self.balance!r}.")
    if not 0 <= self.warmup <= self.epochs:
      raise StageError(self.name, f"warmup must be in [0, epochs], got {self.warmup}.")
    if self.warmup and self.schedule == "plateau":
      raise StageError(self.name, "warmup is not available with schedule=plateau.")
    if self.budget and self.schedule == "step":
      raise StageError(self.name, "budget=on cannot go with schedule=step (its drops are fixed "
                       "epochs); use schedule=cosine.")
    if self.drops and self.schedule != "step":
      raise StageError(self.name, "drops= needs schedule=step.")
    if self.schedule == "step" and not self.drops:
      raise StageError(self.name, "schedule=step needs drops=E1/E2/...")
    if list(self.drops) != sorted(set(self.drops)) or not all(
        0 < d < self.epochs for d in self.drops):
      raise StageError(self.name, f"drops must be increasing epochs in (0, "
                       f"{self.epochs}), got {self.drops}.")
    if self.factor is not None and not 0 < self.factor < 1:
      raise StageError(self.name, f"factor must be in (0, 1), got {self.factor}.")
    if self.patience < 1:
      raise StageError(self.name, f"patience must be >= 1, got {self.patience}.")
    if self.weight_decay < 0 or self.clipnorm < 0:
      raise StageError(self.name, "wd and clip must be >= 0.")
    if not 0 <= self.ema < 1:
      raise StageError(self.name, f"ema must be in [0, 1), got {self.ema}.")
    if not 0 <= self.label_smoothing < 1:
      raise StageError(self.name, f"smooth must be in [0, 1), got "
                       f"{self.label_smoothing}.")
    if not all(self.teacher):
      raise StageError(self.name, f"teacher= needs one or more paths joined by "
                       f"'{_TEACHER_SEPARATOR}', got {_TEACHER_SEPARATOR.join(self.teacher)!r}.")
    if not self.distill_temperature > 0:
      raise StageError(self.name, f"distill_t must be > 0, got {self.distill_temperature}.")
    if not 0 <= self.distill_weight <= 1:
      raise StageError(self.name, f"distill_w must be in [0, 1], got {self.distill_weight}.")
    if not self.teacher and (self.distill_temperature != DISTILL_TEMPERATURE
                             or self.distill_weight != DISTILL_WEIGHT):
      raise StageError(self.name, "distill_t= and distill_w= need teacher=.")

  @property
  def lr_factor(self) -> float:
    """The step/plateau multiplier (`factor`, or its schedule's default)."""
    if self.factor is not None:
      return self.factor
    return 0.5 if self.schedule == "plateau" else 0.1

  def spec(self) -> str:
    """The stage in spec form (`parse_stages` reads it back; the dataset is not part of it).

    Options equal to their defaults are left out, so old specs keep their form.
    """
    text = (f"{self.name}:{self.trainable}:{self.epochs}:{self.lr:g}:{self.global_batch}:"
            f"{self.optimizer}")
    defaults = Stage("default", "all", 1, 1.0, 1)
    for key, field in _OPTION_FIELDS.items():
      value = getattr(self, field)
      if value == getattr(defaults, field):
        continue
      if isinstance(value, bool):
        text += f":{key}={'on' if value else 'off'}"
      elif isinstance(value, tuple):
        separator = _TEACHER_SEPARATOR if field == "teacher" else "/"
        text += f":{key}={separator.join(str(v) for v in value)}"
      elif isinstance(value, float):
        text += f":{key}={value:g}"
      else:
        text += f":{key}={value}"
    return text


def _parse_int(text: str, what: str, where: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"{where}: {what} must be an integer, got {text!r}.") from None


def _parse_option(text: str, where: str) -> tuple[str, object]:
  """One `key=value` option -> (Stage field, typed value)."""
  key, _, value = text.partition("=")
  if key not in _OPTION_FIELDS:
    raise ValueError(f"{where}: unknown option {key!r}; expected one of "
                     f"{sorted(_OPTION_FIELDS)}.")
  field = _OPTION_FIELDS[key]
  try:
    if field in ("schedule", "balance"):
      return field, value
    if field in ("augment", "budget"):
      if value not in ("on", "off"):
        raise ValueError
      return field, value == "on"
    if field == "drops":
      return field, tuple(int(v) for v in value.split("/"))
    if field == "teacher":
      return field, tuple(value.split(_TEACHER_SEPARATOR))
    if field == "patience":
      return field, int(value)
    return field, float(value)
  except ValueError:
    raise ValueError(f"{where}: bad value {value!r} for option {key!r}.") from None


def parse_stages(spec: str, prefix: str = "stage", dataset: str | None = None,
                 teacher: tuple[str, ...] = ()) -> list[Stage]:
  """Parses a comma-separated stage spec (see the module docstring).

  Args:
    spec: e.g. "head:10:1e-3:32,all:10:1e-4:128".
    prefix: name prefix of unnamed stages.
    dataset: the `dataset` of every parsed stage (None: the run's target dataset).
    teacher: the teacher of every stage that names none (its distill_t= and distill_w= apply);
      e.g. an ensemble's members for its student.

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
    options = [f for f in fields if "=" in f]
    fields = [f for f in fields if "=" not in f]
    if len(fields) not in (4, 5):
      raise ValueError(f"{where}: expected [name:]trainable:epochs:lr:global_batch[:optimizer]"
                       f"[:key=value...], with trainable one of {TRAINABLE}.")
    parsed = {"teacher": teacher, **dict(_parse_option(option, where) for option in options)}
    try:
      lr = float(fields[2])
    except ValueError:
      raise ValueError(f"{where}: lr must be a number, got {fields[2]!r}.") from None
    epochs = _parse_int(fields[1], "epochs", where)
    global_batch = _parse_int(fields[3], "global_batch", where)
    try:
      stages.append(Stage(
          name=name, trainable=fields[0], epochs=epochs, lr=lr, global_batch=global_batch,
          optimizer=fields[4] if len(fields) == 5 else "adam", dataset=dataset, **parsed))
    except StageError as e:
      raise ValueError(f"{where}: {e.problem}") from None
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None
  return stages


def with_pretraining(stages: list[Stage], pretrain: list[Stage] | None = None) -> list[Stage]:
  """Pretraining stages (if any) then the main stages: a run's stages, checked for unique names."""
  run_stages = list(pretrain or []) + list(stages)
  if not run_stages:
    raise ValueError("The run has no stages.")
  names = [s.name for s in run_stages]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"Stage names must be unique; repeated: {duplicates}.")
  return run_stages


def scaled_lr(stage: Stage, scale_lr: bool, reference_batch: int) -> float:
  """The stage's learning rate, times global_batch / reference_batch when `scale_lr`."""
  if not scale_lr:
    return stage.lr
  if reference_batch < 1:
    raise ValueError(f"reference_batch must be >= 1, got {reference_batch}.")
  return stage.lr * stage.global_batch / reference_batch


def make_optimizer(name: str, learning_rate, weight_decay: float = 0.0,
                   clipnorm: float = 0.0, ema: float = 0.0) -> keras.optimizers.Optimizer:
  """A fresh Keras optimizer by name (see OPTIMIZERS).

  "momentum" is SGD with momentum 0.9, "nesterov" the same with Nesterov momentum. `weight_decay`
  is decoupled (Keras subtracts lr * weight_decay * w after each step, for every optimizer);
  `clipnorm` > 0 clips the global gradient norm; `ema` > 0 keeps a moving average of the
  weights with that momentum. `learning_rate` is a float or a schedule.
  """
  kwargs = {"weight_decay": weight_decay or None,
            "global_clipnorm": clipnorm or None}
  if ema:
    kwargs.update(use_ema=True, ema_momentum=ema)
  if name == "adam":
    return keras.optimizers.Adam(learning_rate, **kwargs)
  if name == "adamw":
    return keras.optimizers.AdamW(learning_rate, **{**kwargs, "weight_decay": weight_decay})
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate, **kwargs)
  if name == "momentum":
    return keras.optimizers.SGD(learning_rate, momentum=0.9, **kwargs)
  if name == "nesterov":
    return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, **kwargs)
  if name == "rmsprop":
    return keras.optimizers.RMSprop(learning_rate, **kwargs)
  raise ValueError(f"Unknown optimizer {name!r}; expected one of {OPTIMIZERS}.")
