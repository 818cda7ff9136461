"""Trains an emotion classifier in stages on any tf.distribute strategy; resumes after a kill.

With no flags: generates faces and builds them as generated_faces/fer7 and generated_faces/seed6
under ./data/tfds if they are not built there (never as fer2013, which only the real csv builds),
trains a short version of the seed's schedule (7-class pretraining on fer7, then head / all / all
on seed6), evaluates on the test split, prints the per-emotion table and saves
runs/default/model.keras, runs/default/saved_model and runs/default/manifest.json (what made the
model: commit, flags, versions, CPU, precision, data). Run from the repository root:

  python train_main.py
  python train_main.py --flagfile=configs/seed.cfg --data_dir=<data_dir with fer2013 built>
  python train_main.py --stages=head:10:1e-3:32,all:10:1e-4:128 --strategy=mirrored
  python train_main.py --flagfile=configs/fer7_fast.cfg --ensemble_members=3 --model_dir=runs/ens
  python train_main.py --flagfile=configs/fer7_fast.cfg --ensemble_members=3 --model_dir=runs/ens \
      --student_stages=main:all:24:0.05:64:nesterov:schedule=cosine:warmup=1:ema=0.999:distill_w=0.7

Starting the same command again continues from the last checkpoint in --model_dir.
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

import sys

from absl import flags
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import errors
from emotion_tfds import experiment
from emotion_tfds import models
from emotion_tfds import tta
from emotion_tfds.data import augment
from emotion_tfds.data import datasets
from emotion_tfds.data import facegen
from emotion_tfds.train import budget
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import precision
from emotion_tfds.train import stages
from emotion_tfds.train import strategies

_PROGRESS_VERBOSE = {"bar": 1, "line": 2, "none": 0}  # --progress -> Keras fit's verbose.

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir with the built datasets (default ./data/tfds, or "
    "$TFDS_DATA_DIR).")
_DATASET = flags.DEFINE_string(
    "dataset", datasets.DEFAULT_DATASET, "Target dataset name/config (fer2013/<config>: "
    "real FER-2013; generated_faces/<config>: generated faces), or a mixture with the RAVDESS "
    "crops, e.g. fer2013/seed6+ravdess_crops (BUILD.md, \"RAVDESS crops\").")
_MODEL = flags.DEFINE_enum("model", "base_cnn", sorted(models.MODELS),
                           "Architecture (models_main.py lists their sizes).")
_PRETRAINED = flags.DEFINE_string(
    "pretrained", None, "A .keras or Keras-2 .h5 model to start from; skips --pretrain_stages.")
_STAGES = flags.DEFINE_string(
    "stages", "head:1:1e-3:64,all:1:5e-4:128,all:1:2.5e-4:256",
    "Stages on --dataset: comma-separated [name:]trainable:epochs:lr:global_batch[:optimizer]"
    "[:key=value...], trainable 'head' (base frozen) or 'all'; optimizer adam (default), adamw, "
    "sgd, momentum, nesterov or rmsprop; options schedule=constant|cosine|step|plateau, warmup=E, "
    "drops=E1/E2, factor=F, patience=P, wd=W, clip=C, smooth=S, balance=none|weights|sqrt, "
    "augment=on|off, ema=M, teacher=PATH[+PATH...] (distil from trained .keras networks, their "
    "probabilities averaged), distill_t=T (temperature, default 4), distill_w=W (weight of the "
    "distillation term, default 0.5), budget=on (the stage --time_budget sizes; default the "
    "last) (see emotion_tfds/train/stages.py).")
_PRETRAIN_STAGES = flags.DEFINE_string(
    "pretrain_stages", "pretrain:all:2:1e-3:32",
    "Stages on --pretrain_dataset before --stages (same form; '' for none). The head is replaced "
    "when the label scheme changes. Skipped when --pretrained is given.")
_PRETRAIN_DATASET = flags.DEFINE_string(
    "pretrain_dataset", datasets.default_dataset("fer7"), "Dataset of --pretrain_stages.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(strategies.STRATEGIES),
                              "tf.distribute strategy; multi_worker reads TF_CONFIG.")
_TPU = flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu ('' = local).")
_PRECISION = flags.DEFINE_enum(
    "precision", "auto", list(precision.PRECISIONS),
    "Compute precision; variables, checkpoints and exports stay float32. auto: bfloat16 on TPUs "
    "and on CPUs with AMX-BF16 or AVX512-BF16, float16 (with loss scaling) on GPUs, float32 "
    "elsewhere; the run prints which and why. A run may resume under another precision.")
_MIXED_PRECISION = flags.DEFINE_bool(
    "mixed_precision", False, "Old alias: --precision=float16 on GPUs, bfloat16 elsewhere.")
_AUGMENT_ON = flags.DEFINE_enum(
    "augment_on", "device", list(config_lib.AUGMENT_ON),
    "Where augmentation runs: inside the train step on the accelerator, in the tf.data pipeline on "
    "the host, or nowhere.")
_DEFAULT_AUGMENT = augment.AugmentParams()
# --augment_<name> -> AugmentParams field, with its help text.
_AUGMENT_FLAGS = {
    field: flags.DEFINE_float(f"augment_{name}", getattr(_DEFAULT_AUGMENT, field), help_text)
    for name, field, help_text in (
        ("crop", "crop", "Largest fraction of the side a random crop cuts away."),
        ("flip", "flip_prob", "Probability of a horizontal flip."),
        ("blur", "blur_sigma", "Largest Gaussian blur sigma (pixels)."),
        ("contrast", "contrast", "Contrast factor range 1 +- this."),
        ("brightness", "brightness", "Brightness shift range +- this."),
        ("noise", "noise_stddev", "Largest stddev of the additive noise."),
        ("rotate", "rotate", "Largest rotation in degrees."),
        ("shift", "shift", "Largest translation per axis, as a fraction of the side."),
        ("erase", "erase_prob", "Probability of erasing one random rectangle."))}
_KEEP_BEST = flags.DEFINE_enum(
    "keep_best", "none", list(config_lib.KEEP_BEST),
    "The final model is the epoch with the best validation accuracy or macro-F1 (of the stages "
    "on the target's classes), or the last epoch ('none').")
_FINAL_TTA = flags.DEFINE_enum(
    "final_tta", "none", list(tta.TTA_MODES),
    "Test-time augmentation of the final evaluation (as eval_main --tta).")
_TIME_BUDGET = flags.DEFINE_float(
    "time_budget", 0.0, "Minutes the whole command may take, from its start to its exit (final "
    "evaluation, TTA and saving included): the budgeted stage (budget=on, else the last) gets as "
    "many epochs as fit, from the throughput measured when it starts (its lr schedule follows "
    "them); the count is kept in the checkpoint for a resume. 0: the stages' epochs as given. "
    "Refused with --ensemble_members (and so with --student_stages): train those with epochs.",
    lower_bound=0.0)
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/default", "Checkpoints, TensorBoard logs, model.keras and saved_model.")
_SEED = flags.DEFINE_integer("seed", 0, "Run seed (init, data order, augmentation, dropout).")
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic", False, "Deterministic ops and input order (repeatable runs, slower).")
_SCALE_LR = flags.DEFINE_bool(
    "scale_lr", False, "Multiply each stage's lr by global_batch / --reference_batch.")
_REFERENCE_BATCH = flags.DEFINE_integer(
    "reference_batch", 32, "Batch size the stage learning rates are given for (--scale_lr).",
    lower_bound=1)
_GENERATE_ROWS = flags.DEFINE_integer(
    "generate_rows", facegen.DEFAULT_ROWS, "When a generated_faces dataset is not built in "
    "--data_dir: generate this many faces and build it (0: require it built). fer2013 is never "
    "generated.", lower_bound=0)
_EVAL_SPLIT = flags.DEFINE_string(
    "eval_split", "test", "Split of the final evaluation ('validation' when it is absent).")
_VALIDATE = flags.DEFINE_bool("validate", True, "Evaluate on the validation split every epoch.")
_MAX_STEPS_PER_EPOCH = flags.DEFINE_integer(
    "max_steps_per_epoch", None, "Cap on steps per epoch (smoke runs, debugging).", lower_bound=1)
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
_DATA_SERVICE_ADDRESS = flags.DEFINE_string(
    "data_service_address", None,
    "tf.data service dispatcher (e.g. grpc://host:5050): the training input pipeline runs on its "
    "workers instead of in this process.")
_ENSEMBLE_MEMBERS = flags.DEFINE_integer(
    "ensemble_members", 1,
    "Train this many networks of the recipe, member k with seed --seed + k in "
    "<model_dir>/member_<k>/ (each a whole run: model.keras, saved_model, eval report), then "
    "evaluate their ensemble (the mean of their probabilities, --eval_split, --final_tta) and save "
    "it as one SavedModel, <model_dir>/saved_model. 1: a single network in --model_dir.",
    lower_bound=1)
_STUDENT_STAGES = flags.DEFINE_string(
    "student_stages", "",
    "With --ensemble_members >= 2: after the ensemble is saved, train one more network, the "
    "student, on these stages (same form as --stages), with seed --seed + N in "
    "<model_dir>/student/ (a whole run, resumable, evaluated and saved like a member). It "
    "pretrains as a member does (--pretrain_stages, or from --pretrained), then every stage here "
    "without its own teacher= distils from the members' model.keras (distill_t=, distill_w= as "
    "given, else their defaults). Ends printing the members', ensemble's and student's "
    "accuracies. '': no student.")


_PROFILE_STEPS = flags.DEFINE_list(
    "profile_steps", None,
    "FIRST,LAST: write a TensorBoard profile (Profile tab) of these training steps (1-based, "
    "counted in the stage) of the first stage that runs that many, into <model_dir>/tb/<stage>.")


def _is_step_range(steps: list[str] | None) -> bool:
  try:
    first, last = (int(step) for step in steps or (1, 1))
  except ValueError:
    return False
  return 1 <= first <= last


flags.register_validator("profile_steps", _is_step_range,
                         "--profile_steps: expected FIRST,LAST with 1 <= FIRST <= LAST, e.g. 5,8.")
_PROGRESS = flags.DEFINE_enum(
    "progress", None, list(_PROGRESS_VERBOSE),
    "Keras output per epoch: a progress bar, one line, or nothing (the summary line stays). "
    "Default: bar when stdout is a terminal, else line.")


def make_config() -> config_lib.TrainConfig:
  """The TrainConfig of the parsed flags.

  Raises:
    errors.ConfigError: a malformed stage spec or values that cannot work together, naming the flag.
  """
  schedule = _schedule(_STAGES)
  try:
    augment_params = augment.AugmentParams(
        **{field: holder.value for field, holder in _AUGMENT_FLAGS.items()})
  except ValueError as e:
    raise errors.ConfigError(f"--augment_*: {e}") from None
  progress = _PROGRESS.value or ("bar" if sys.stdout.isatty() else "line")
  return config_lib.TrainConfig(
      model_dir=_MODEL_DIR.value,
      data_dir=_DATA_DIR.value or datasets.default_data_dir(),
      stages=tuple(schedule),
      dataset=_DATASET.value,
      model=_MODEL.value,
      pretrained=_PRETRAINED.value,
      strategy=_STRATEGY.value,
      tpu=_TPU.value,
      precision=_precision(),
      augment_on=_AUGMENT_ON.value,
      seed=_SEED.value,
      deterministic=_DETERMINISTIC.value,
      scale_lr=_SCALE_LR.value,
      reference_batch=_REFERENCE_BATCH.value,
      generate_rows=_GENERATE_ROWS.value,
      eval_split=_EVAL_SPLIT.value,
      validate=_VALIDATE.value,
      max_steps_per_epoch=_MAX_STEPS_PER_EPOCH.value,
      jit_compile=_JIT_COMPILE.value,
      data_service_address=_DATA_SERVICE_ADDRESS.value,
      verbose=_PROGRESS_VERBOSE[progress],
      augment_params=augment_params,
      keep_best=_KEEP_BEST.value,
      final_tta=_FINAL_TTA.value,
      time_budget=_TIME_BUDGET.value,
      budget_start=budget.process_started(),
      profile_steps=tuple(int(step) for step in _PROFILE_STEPS.value) if _PROFILE_STEPS.value
      else None,
  )


def make_student_stages(config: config_lib.TrainConfig) -> tuple[stages.Stage, ...]:
  """The schedule of the ensemble's student (`experiment.run_ensemble`) of the parsed flags: the
  pretraining stages as the members', then --student_stages, whose stages that name no teacher=
  distil from the members' networks (`experiment.member_models`); () without --student_stages.

  Raises:
    errors.ConfigError: a malformed spec, or --student_stages without an ensemble to learn from.
  """
  if not _STUDENT_STAGES.value:
    return ()
  if _ENSEMBLE_MEMBERS.value < 2:
    raise errors.ConfigError(
        f"--student_stages distils from the ensemble the same command trains; give "
        f"--ensemble_members=2 or more (got {_ENSEMBLE_MEMBERS.value}).")
  teacher = experiment.member_models(config, _ENSEMBLE_MEMBERS.value)
  return tuple(_schedule(_STUDENT_STAGES, teacher=teacher))


def flag_values() -> dict:
  """This main's flags with their values after --flagfile and defaults (the run's manifest)."""
  return {flag.name: flag.value for flag in flags.FLAGS.get_flags_for_module(__name__)}


def _schedule(main: flags.FlagHolder, teacher: tuple[str, ...] = ()) -> list[stages.Stage]:
  """The pretraining stages (none with --pretrained) then the stages of `main`, those without
  teacher= distilling from `teacher`."""
  pretrain = []
  if _PRETRAIN_STAGES.value and not _PRETRAINED.value:
    pretrain = _parse_stages(_PRETRAIN_STAGES, prefix="pretrain", dataset=_PRETRAIN_DATASET.value)
  main_stages = _parse_stages(main, teacher=teacher)
  try:
    return stages.with_pretraining(main_stages, pretrain)
  except ValueError as e:
    raise errors.ConfigError(f"--{main.name}/--pretrain_stages: {e}") from None


def _parse_stages(flag: flags.FlagHolder, **kwargs) -> list[stages.Stage]:
  try:
    return stages.parse_stages(flag.value, **kwargs)
  except ValueError as e:
    raise errors.ConfigError(f"--{flag.name}: {e}") from None


def _precision() -> str:
  """--precision, or what the --mixed_precision alias stands for on this machine."""
  if not _MIXED_PRECISION.value:
    return _PRECISION.value
  # Physical devices: listing the logical ones would start TF before the strategy is made.
  alias = precision.mixed({device.device_type for device in tf.config.list_physical_devices()})
  if _PRECISION.present and _PRECISION.value != alias:
    raise errors.ConfigError(f"--mixed_precision means --precision={alias} here, but "
                             f"--precision={_PRECISION.value} is given; pass only --precision.")
  print(f"--mixed_precision is an alias of --precision={alias} on this machine; use --precision "
        "(default auto).", flush=True)
  return alias


def main(argv):
  del argv
  tfds.disable_progress_bar()  # Keeps the output to Keras's bars and the summary lines.
  config = make_config()
  student_stages = make_student_stages(config)
  if _ENSEMBLE_MEMBERS.value > 1:
    experiment.run_ensemble(config, _ENSEMBLE_MEMBERS.value, flag_values=flag_values(),
                            student_stages=student_stages)
  else:
    experiment.run_experiment(config, flag_values=flag_values())


if __name__ == "__main__":
  quiet.run(main)
