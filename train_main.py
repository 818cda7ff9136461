"""Trains an emotion classifier in stages on any tf.distribute strategy; resumes after a kill.

With no flags: generates the faces dataset under ./data/tfds if it is not built there, trains a
short version of the seed's schedule (7-class pretraining on fer7, then head / all / all on seed6),
evaluates on the test split, prints the per-emotion table and saves runs/default/model.keras and
runs/default/saved_model. Run from the repository root:

  python train_main.py
  python train_main.py --flagfile=configs/seed.cfg --data_dir=<data_dir with fer2013 built>
  python train_main.py --stages=head:10:1e-3:32,all:10:1e-4:128 --strategy=mirrored

Starting the same command again continues from the last checkpoint in --model_dir.
"""

from __future__ import annotations

from absl import app
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
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import precision
from emotion_tfds.train import stages
from emotion_tfds.train import strategies

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir with the built datasets (default ./data/tfds, or "
    "$TFDS_DATA_DIR).")
_DATASET = flags.DEFINE_string(
    "dataset", "fer2013/seed6", "Target dataset name/config, or a mixture with the RAVDESS crops, "
    "e.g. fer2013/seed6+ravdess_crops (BUILD.md, \"RAVDESS crops\").")
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
    "augment=on|off (see emotion_tfds/train/stages.py).")
_PRETRAIN_STAGES = flags.DEFINE_string(
    "pretrain_stages", "pretrain:all:2:1e-3:32",
    "Stages on --pretrain_dataset before --stages (same form; '' for none). The head is replaced "
    "when the label scheme changes. Skipped when --pretrained is given.")
_PRETRAIN_DATASET = flags.DEFINE_string(
    "pretrain_dataset", "fer2013/fer7", "Dataset of --pretrain_stages.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(strategies.STRATEGIES),
                              "tf.distribute strategy; multi_worker reads TF_CONFIG.")
_TPU = flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu ('' = local).")
_PRECISION = flags.DEFINE_enum(
    "precision", "auto", list(precision.PRECISIONS),
    "Compute precision; variables, checkpoints and exports stay float32. auto: bfloat16 on TPUs "
    "and on CPUs with AMX-BF16, float16 (with loss scaling) on GPUs, float32 elsewhere; the run "
    "prints which and why. A run may resume under another precision.")
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
    "generate_rows", facegen.DEFAULT_ROWS, "When a dataset is not built in --data_dir: generate this many faces "
    "and build it from them (0: require a built dataset, e.g. real FER-2013).", lower_bound=0)
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
    "progress", "bar", ["bar", "line", "none"],
    "Keras output per epoch: a progress bar, one line, or nothing (the summary line stays).")


def make_config() -> config_lib.TrainConfig:
  """The TrainConfig of the parsed flags."""
  try:
    main_stages = stages.parse_stages(_STAGES.value)
    pretrain = []
    if _PRETRAIN_STAGES.value and not _PRETRAINED.value:
      pretrain = stages.parse_stages(_PRETRAIN_STAGES.value, prefix="pretrain",
                                     dataset=_PRETRAIN_DATASET.value)
    schedule = stages.with_pretraining(main_stages, pretrain)
  except ValueError as e:
    raise app.UsageError(f"--stages/--pretrain_stages: {e}") from None
  try:
    augment_params = augment.AugmentParams(
        **{field: holder.value for field, holder in _AUGMENT_FLAGS.items()})
  except ValueError as e:
    raise app.UsageError(f"--augment_*: {e}") from None
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
      verbose={"bar": 1, "line": 2, "none": 0}[_PROGRESS.value],
      augment_params=augment_params,
      keep_best=_KEEP_BEST.value,
      final_tta=_FINAL_TTA.value,
      profile_steps=tuple(int(step) for step in _PROFILE_STEPS.value) if _PROFILE_STEPS.value
      else None,
  )


def _precision() -> str:
  """--precision, or what the --mixed_precision alias stands for on this machine."""
  if not _MIXED_PRECISION.value:
    return _PRECISION.value
  # Physical devices: listing the logical ones would start TF before the strategy is made.
  alias = precision.mixed({device.device_type for device in tf.config.list_physical_devices()})
  if _PRECISION.present and _PRECISION.value != alias:
    raise app.UsageError(f"--mixed_precision means --precision={alias} here, but "
                         f"--precision={_PRECISION.value} is given; pass only --precision.")
  print(f"--mixed_precision is an alias of --precision={alias} on this machine; use --precision "
        "(default auto).", flush=True)
  return alias


def main(argv):
  del argv
  tfds.disable_progress_bar()  # Keeps the output to Keras's bars and the summary lines.
  experiment.run_experiment(make_config())


if __name__ == "__main__":
  app.run(errors.exit_on_user_error(main))
