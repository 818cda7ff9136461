"""The settings of a training run, their checks, and the fingerprint a resumed run must match."""

from __future__ import annotations

import dataclasses

from emotion_tfds import errors
from emotion_tfds import models
from emotion_tfds import tta
from emotion_tfds.data import augment
from emotion_tfds.train import precision as precision_lib
from emotion_tfds.train import stages as stages_lib
from emotion_tfds.train import strategies

AUGMENT_ON: tuple[str, ...] = ("device", "host", "none")
KEEP_BEST: tuple[str, ...] = ("none", "accuracy", "macro_f1")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run depends on.

  Attributes:
    model_dir: checkpoints, TensorBoard logs and the saved models go here.
    data_dir: TFDS data_dir holding the built datasets.
    stages: the stages to run, pretraining stages first (`stages.with_pretraining`).
    dataset: the target dataset ("generated_faces/seed6", "fer2013/seed6"); stages with
      `dataset=None` train on it.
    model: architecture name in `models.MODELS`.
    pretrained: `.keras`/`.h5` file to start from instead of fresh weights.
    strategy: one of `strategies.STRATEGIES`.
    tpu: TPU name or address for strategy "tpu".
    precision: compute precision, one of `precision.PRECISIONS`; "auto" picks by the hardware
      (`precision.choose`). Variables stay float32 under every choice. Not in the fingerprint: a
      run may resume under another precision (the checkpoint records it).
    augment_on: "device" (inside the train step), "host" (tf.data map) or "none".
    seed: run seed: weights init, data order, augmentation, dropout.
    deterministic: deterministic TF ops and input pipeline (bitwise-repeatable runs).
    scale_lr: scale each stage's lr by global_batch / reference_batch.
    reference_batch: see `scale_lr`.
    generate_rows: when a generated_faces dataset is not built in `data_dir`, generate this many
      faces and build it; 0 requires it built (other datasets are never generated).
    eval_split: split of the final evaluation (falls back to "validation" when absent).
    validate: evaluate on the validation split after every epoch.
    max_steps_per_epoch: cap on steps per epoch (smoke runs and debugging).
    jit_compile: XLA-compile the train step.
    data_service_address: tf.data service dispatcher ("grpc://host:port"): the training input
      pipelines run on the service's workers (`pipeline.make_dataset`); None reads locally.
    verbose: Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.
    augment_params: strengths of the augmentation (stages with augment=off train without).
    keep_best: "accuracy" or "macro_f1": the final model is the epoch with the best validation
      value of it among the last stages on the target's classes; "none": the last epoch.
    final_tta: test-time augmentation of the final evaluation (`tta.TTA_MODES`).
    time_budget: minutes the whole command may take: the budgeted stage's epochs (`budgeted_index`)
      are chosen when it starts to fit them (`emotion_tfds.train.budget`); 0: the epochs as given.
    budget_start: `time.monotonic()` at the command's start, from which `time_budget` counts
      (train_main: the process's start); None: from the call of `loop.train`. Not part of the
      fingerprint.
    profile_steps: (first, last): a TensorBoard profile of these training steps (1-based, counted
      in the stage) of the first stage that runs that many; None: no profile.
  """
  model_dir: str
  data_dir: str
  stages: tuple[stages_lib.Stage, ...]
  dataset: str = "generated_faces/seed6"
  model: str = "base_cnn"
  pretrained: str | None = None
  strategy: str = "default"
  tpu: str = ""
  precision: str = "auto"
  augment_on: str = "device"
  seed: int = 0
  deterministic: bool = False
  scale_lr: bool = False
  reference_batch: int = 32
  generate_rows: int = 0
  eval_split: str = "test"
  validate: bool = True
  max_steps_per_epoch: int | None = None
  data_service_address: str | None = None
  jit_compile: bool = False
  verbose: int = 1
  augment_params: augment.AugmentParams = augment.AugmentParams()
  keep_best: str = "none"
  final_tta: str = "none"
  time_budget: float = 0.0
  budget_start: float | None = None
  profile_steps: tuple[int, int] | None = None

  def __post_init__(self):
    if self.strategy not in strategies.STRATEGIES:
      raise ValueError(f"Unknown strategy {self.strategy!r}; expected one of "
                       f"{strategies.STRATEGIES}.")
    if self.precision not in precision_lib.PRECISIONS:
      raise ValueError(f"Unknown precision {self.precision!r}; expected one of "
                       f"{precision_lib.PRECISIONS}.")
    if self.augment_on not in AUGMENT_ON:
      raise ValueError(f"Unknown augment_on {self.augment_on!r}; expected one of {AUGMENT_ON}.")
    if self.model not in models.MODELS:
      raise ValueError(f"Unknown model {self.model!r}; expected one of {sorted(models.MODELS)}.")
    if not self.stages:
      raise ValueError("The run has no stages.")
    if self.keep_best not in KEEP_BEST:
      raise ValueError(f"Unknown keep_best {self.keep_best!r}; expected one of {KEEP_BEST}.")
    if self.keep_best != "none" and not self.validate:
      raise errors.ConfigError("keep_best needs the per-epoch validation: drop --novalidate or "
                               "--keep_best.")
    if self.final_tta not in tta.TTA_MODES:
      raise ValueError(f"Unknown final_tta {self.final_tta!r}; expected one of "
                       f"{tta.TTA_MODES}.")
    if self.profile_steps is not None and not 1 <= self.profile_steps[0] <= self.profile_steps[1]:
      raise ValueError(f"profile_steps {self.profile_steps}: expected FIRST,LAST with "
                       "1 <= FIRST <= LAST.")
    if self.stage_dataset(self.stages[-1]) != self.dataset:
      raise ValueError(f"The last stage ({self.stages[-1].name}) trains on "
                       f"{self.stage_dataset(self.stages[-1])}, not on the target dataset "
                       f"{self.dataset}; the final model must predict the target's classes.")
    self._check_budget()

  def _check_budget(self) -> None:
    marked = [s.name for s in self.stages if s.budget]
    if len(marked) > 1:
      raise errors.ConfigError(f"Only one stage may set budget=on; {', '.join(marked)} do.")
    if self.time_budget < 0:
      raise errors.ConfigError(f"--time_budget must be >= 0 minutes, got {self.time_budget:g}.")
    if not self.time_budget:
      return
    index = self.budgeted_index()
    stage = self.stages[index]
    if stage.schedule == "step":
      raise errors.ConfigError(
          f"--time_budget chooses the epochs of stage {stage.name}, whose schedule=step drops at "
          "fixed epochs; use schedule=cosine there, or mark another stage with budget=on.")
    dataset = self.stage_dataset(stage)
    for later in self.stages[index + 1:]:
      if self.stage_dataset(later) != dataset:
        raise errors.ConfigError(
            f"--time_budget: the budgeted stage {stage.name} trains on {dataset} and the later "
            f"stage {later.name} on {self.stage_dataset(later)}; mark a stage on "
            f"{self.stage_dataset(later)} with budget=on (the budget is measured on the "
            "budgeted stage's network and data).")

  def budgeted_index(self) -> int:
    """Index of the stage whose epochs `time_budget` chooses: the one with budget=on, else the
    last."""
    marked = [i for i, s in enumerate(self.stages) if s.budget]
    return marked[0] if marked else len(self.stages) - 1

  def stage_dataset(self, stage: stages_lib.Stage) -> str:
    return stage.dataset or self.dataset

  def fingerprint(self) -> str:
    """What a checkpoint must have been written by to be resumed (model, seed, schedule)."""
    specs = ",".join(f"{s.spec()}@{self.stage_dataset(s)}" for s in self.stages)
    return (f"model={self.model};pretrained={self.pretrained or ''};seed={self.seed};"
            f"scale_lr={self.scale_lr}/{self.reference_batch};augment_on={self.augment_on};"
            f"max_steps_per_epoch={self.max_steps_per_epoch or 0};"
            f"augment={dataclasses.astuple(self.augment_params)};keep_best={self.keep_best};"
            f"stages={specs}"
            + (f";time_budget={self.time_budget:g}" if self.time_budget else ""))
