"""A training run's recipe as TensorBoard HParams: the declared hyperparameters and their values."""

from __future__ import annotations

from collections.abc import Sequence
import pathlib

from tensorboard.plugins.hparams import api as hp

from emotion_tfds import models
from emotion_tfds import tta
from emotion_tfds.data import augment
from emotion_tfds.report import run_summaries
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import stages as stages_lib

# The recipe of a run, most telling first. Stage-level values are the last stage's (the one training
# the target's classes); `stages` holds every stage's full spec.
_RECIPE_DOMAINS: tuple[tuple[str, object], ...] = (
    ("model", hp.Discrete(sorted(models.MODELS))),
    ("dataset", None),
    ("epochs", hp.IntInterval(1, 100_000)),
    ("lr", hp.RealInterval(0.0, 100.0)),
    ("batch", hp.IntInterval(1, 1 << 20)),
    ("optimizer", hp.Discrete(stages_lib.OPTIMIZERS)),
    ("schedule", hp.Discrete(stages_lib.SCHEDULES)),
    ("weight_decay", hp.RealInterval(0.0, 1.0)),
    ("label_smoothing", hp.RealInterval(0.0, 1.0)),
    ("balance", hp.Discrete(stages_lib.BALANCES)),
    ("stages", None),
    *((f"augment_{field}", hp.RealInterval(low, high))
      for field, (low, high) in augment.LIMITS.items()),
    ("augment_on", hp.Discrete(config_lib.AUGMENT_ON)),
    ("keep_best", hp.Discrete(config_lib.KEEP_BEST)),
    ("final_tta", hp.Discrete(tta.TTA_MODES)),
    ("pretrained", None),
    ("seed", hp.IntInterval(-(1 << 31), (1 << 31) - 1)),
)
# TensorBoard lists hparams sorted by name and ticks the first five: each name starts with its rank
# (the column shows the display name), so model, dataset, epochs, lr and batch are the ones shown.
HPARAMS: tuple[hp.HParam, ...] = tuple(
    hp.HParam(f"{rank:02d}_{key}", domain, display_name=key)
    for rank, (key, domain) in enumerate(_RECIPE_DOMAINS))


def recipe(config: "config_lib.TrainConfig") -> dict[str, bool | int | float | str]:
  """The HParams values of a run: its recipe, keyed by the `HPARAMS` display names."""
  last = config.stages[-1]
  values = {
      "model": config.model, "dataset": config.dataset,
      "stages": " ".join(f"{s.spec()}@{config.stage_dataset(s)}" for s in config.stages),
      "epochs": sum(s.epochs for s in config.stages), "optimizer": last.optimizer,
      "lr": float(last.lr), "batch": last.global_batch, "schedule": last.schedule,
      "weight_decay": float(last.weight_decay), "label_smoothing": float(last.label_smoothing),
      "balance": last.balance, "augment_on": config.augment_on,
      "keep_best": config.keep_best, "final_tta": config.final_tta,
      "pretrained": config.pretrained or "", "seed": config.seed,
  }
  for field in augment.LIMITS:
    values[f"augment_{field}"] = float(getattr(config.augment_params, field))
  return values


def write_run_start(logdir: str | pathlib.Path, config: config_lib.TrainConfig,
                    label_names: Sequence[str]) -> None:
  """Writes the run's HParams trial (named after its resolved model_dir) and chart layout."""
  run_summaries.write_run_start(logdir, HPARAMS, recipe(config),
                                trial_id=str(pathlib.Path(config.model_dir).resolve()),
                                label_names=label_names)
