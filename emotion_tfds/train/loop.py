"""Runs a run's stages under a tf.distribute strategy, with per-epoch checkpoints and resume.

One `train(config)` call trains every stage of `config.stages` (see `emotion_tfds.train.stages`) and
returns the final network: the last epoch's, or the best validation epoch's with `keep_best`. The
same call on the same `model_dir` after a kill resumes at the stage and epoch where the last
checkpoint was written. Training ends at the trained network: the final evaluation and the saved
files are `emotion_tfds.experiment`'s.

Design:
  * Keras `fit` drives the training (progress bars, callbacks), one call per stage, on a
    `TrainingModel` (`training_model`): the network behind the uint8 conversion and the
    on-device augmentation, seeded by (run seed, stage, optimizer step, replica id). The
    augmentation stream is thus a function of the optimizer's step counter, which the checkpoint
    holds.
  * Input comes from `distribute_datasets_from_function` (`inputs`): one pipeline per stage that
    reads and decodes the split once (cached) and then yields the remaining epochs, each shuffled
    with a seed of (run seed, stage, epoch), so the batches of an epoch are the same whether the
    run was interrupted or not. Every epoch is `train_examples // global_batch` steps, so workers
    with uneven shards still step together.
  * The checkpoint (`checkpoints`, written after every epoch) holds the network, the stage's
    optimizer, the dropout RNG states, the progress counters (the best validation values among
    them, `keep_best`) and a fingerprint of the run's settings and data; a restart with other
    settings is refused, naming what differs.
  * Every stage gets a fresh optimizer. On resume inside a stage the network is rebuilt as it was in
    that stage (head swaps replayed, `network`), the stage's trainability set and its optimizer
    built; then everything is restored and checked to match, so the optimizer slots come back. A
    checkpoint that closes a stage restores only the network, and the next stage starts its
    optimizer.
  * With a time budget (`TrainConfig.time_budget`), the budgeted stage's epochs are chosen when it
    starts (`budget`) and kept in the checkpoint; from then on the run's config holds that count.
  * Multi-worker: every worker runs the same calls; only the chief writes into `model_dir`, the
    others write their checkpoints into temporary folders (the standard MWMS pattern).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import pathlib
import tempfile
import time

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import errors
from emotion_tfds import seeds
from emotion_tfds import workers
from emotion_tfds.data import datasets
from emotion_tfds.report import callbacks as report_callbacks
from emotion_tfds.train import budget
from emotion_tfds.train import checkpoints
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import hparams
from emotion_tfds.train import inputs
from emotion_tfds.train import keep_best
from emotion_tfds.train import losses
from emotion_tfds.train import network
from emotion_tfds.train import precision as precision_lib
from emotion_tfds.train import profiling
from emotion_tfds.train import schedules
from emotion_tfds.train import stages as stages_lib
from emotion_tfds.train import strategies
from emotion_tfds.train import teacher
from emotion_tfds.train import training_model
from emotion_tfds.train import weight_averages

TENSORBOARD_DIR = "tb"  # <model_dir>/tb: the run's TensorBoard folder, one subfolder per stage.


@dataclasses.dataclass
class TrainedRun:
  """What `train` returns: the trained network and what the steps after training need.

  Attributes:
    network: the final network (float32 [0, 1] input, softmax output): the last epoch's, or the
      best epoch's with `TrainConfig.keep_best`.
    target: the builder of `TrainConfig.dataset`, whose label names are the network's outputs.
    builders: every dataset of the run (target and pretraining) by name.
    strategy: the strategy it was trained under.
    write_dir: where this worker writes: model_dir on the chief, a temporary folder on the others.
    chief: whether this worker is the chief (the one that prints and writes model_dir).
    history: one dict per epoch trained by this call: stage, epoch, the Keras logs, images_per_s.
    resumed_from: (stage index, epochs done) of the checkpoint this call started from, or None.
    best_validation_accuracy: the best per-epoch validation accuracy of the stages that predict
      the target's labels, epochs before a resume included (NaN without validation).
    config: the run as trained: with a time budget, the budgeted stage has the chosen epochs.
    precision: what it computed in (`precision.PRECISIONS`, resolved: not "auto").
  """
  network: keras.Model
  target: tfds.core.DatasetBuilder
  builders: dict
  strategy: tf.distribute.Strategy
  write_dir: pathlib.Path
  chief: bool
  history: list[dict]
  resumed_from: tuple[int, int] | None
  best_validation_accuracy: float
  config: config_lib.TrainConfig
  precision: str


@dataclasses.dataclass
class _Context:
  """What every stage of one `train` call shares."""
  config: config_lib.TrainConfig
  strategy: tf.distribute.Strategy
  builders: dict
  counters: checkpoints.Counters
  write_dir: pathlib.Path
  chief: bool
  history: list
  extra_callbacks: Sequence[keras.callbacks.Callback]
  precision: str  # The run's, resolved (not "auto").
  profiler: profiling.StepProfiler | None


def train(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy | None = None,
          extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainedRun:
  """Trains `config.stages`, resuming from `config.model_dir`, up to the final network.

  Args:
    config: the run.
    strategy: an existing strategy (default: `strategies.make_strategy(config.strategy, ...)`).
    extra_callbacks: more Keras callbacks for every `fit` call.

  Returns:
    The trained network (the best epoch's weights with `config.keep_best`) and what the steps after
    training need: the target dataset, the strategy, where to write, the per-epoch history.

  Raises:
    errors.CheckpointMismatchError: model_dir holds a checkpoint of other settings or data.
    errors.NonFiniteLossError: the training loss became NaN or infinite.
    errors.ConfigError: a batch size that does not fit the replicas or the data.
    errors.DataNotBuiltError: a dataset that is not built (and `generate_rows` is 0).
    errors.StrategyUnavailableError: a strategy this machine cannot run.
    ValueError: an unknown name.
  """
  if config.time_budget and config.budget_start is None:
    config = dataclasses.replace(config, budget_start=time.monotonic())
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  strategy = strategy or strategies.make_strategy(config.strategy, config.tpu)
  precision, reason = precision_lib.resolve(config.precision, strategies.device_kinds(strategy),
                                            precision_lib.cpu_flags())
  caller_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(precision_lib.KERAS_POLICIES[precision])
  try:
    return _train(config, strategy, extra_callbacks, precision, reason)
  finally:  # The networks keep their policy; models built after this call get the caller's.
    keras.mixed_precision.set_global_policy(caller_policy)


def _train(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy,
           extra_callbacks: Sequence[keras.callbacks.Callback], precision: str,
           reason: str) -> TrainedRun:
  """`train` under the Keras policy of `precision`, chosen for `reason`."""
  chief = workers.is_chief_worker(strategy)
  model_dir = pathlib.Path(config.model_dir)
  write_dir = model_dir if chief else pathlib.Path(tempfile.mkdtemp(prefix="emotion_tfds_worker_"))
  write_dir.mkdir(parents=True, exist_ok=True)
  builders = _built_datasets(config, strategy)
  if chief:  # What the run trains on, once, at its start.
    for builder in builders.values():
      print(f"Data: {datasets.describe(builder)}", flush=True)

  # Every worker resumes from the chief's checkpoints (model_dir is shared), writes into its own.
  progress = checkpoints.read_progress(str(model_dir / checkpoints.CKPT_DIR))
  fingerprint = f"{config.fingerprint()};data={checkpoints.data_identity(builders)}"
  difference = progress and checkpoints.fingerprint_difference(progress.fingerprint, fingerprint)
  if difference:
    raise errors.CheckpointMismatchError(
        f"{model_dir / checkpoints.CKPT_DIR} holds a checkpoint of another run; what differs: "
        f"{difference}. Use another --model_dir or the same flags and data as that run.")
  context = _Context(config=config, strategy=strategy, builders=builders,
                     counters=checkpoints.Counters(fingerprint, precision,
                                                   budgeted=bool(config.time_budget)),
                     write_dir=write_dir, chief=chief, history=[],
                     extra_callbacks=tuple(extra_callbacks), precision=precision,
                     profiler=profiling.StepProfiler(*config.profile_steps, announce=chief)
                     if config.profile_steps else None)
  if chief:
    print(f"Precision: {precision} ({reason}).", flush=True)
  if progress:
    print(f"Resuming from {progress.path}: stage {progress.stage + 1}/{len(config.stages)} "
          f"({config.stages[progress.stage].name}), {progress.epoch} epoch(s) of it done.",
          flush=True)
    if progress.precision != precision:
      print(f"The precision changed from {progress.precision} to {precision}.", flush=True)
    context.counters.global_step.assign(progress.global_step)
    if progress.budget_epochs:  # Chosen before: never measured again.
      _keep_budget_choice(context, progress.budget_epochs, progress.budget_images_per_second)
  if progress is None and chief:
    hparams.write_run_start(write_dir / TENSORBOARD_DIR, config,
                            datasets.label_names(builders[config.dataset]))
  net, stage, epoch, restore_from = _starting_point(context.config, strategy, builders, progress)
  for index in range(stage, len(config.stages)):
    if index > stage:
      with strategy.scope():
        net = network.next_stage_network(config, builders, net, index)
    _run_stage(context, net, index, epoch if index == stage else 0,
               restore_from if index == stage else None)

  config = context.config
  if config.keep_best != "none":
    keep_best.load_best(net, config, context.counters, write_dir, announce=chief)
  best_accuracy = float(context.counters.best_accuracy.numpy())
  return TrainedRun(network=net, target=builders[config.dataset], builders=builders,
                    strategy=strategy, write_dir=write_dir, chief=chief, history=context.history,
                    resumed_from=(progress.stage, progress.epoch) if progress else None,
                    best_validation_accuracy=best_accuracy if best_accuracy > -1 else float("nan"),
                    config=config, precision=precision)


def _built_datasets(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy) -> dict:
  """The builders of the run's datasets by name, generated first where asked; batches checked."""
  # Workers of a cluster must not generate and build into one data_dir at once.
  generate_rows = 0 if workers.is_multi_worker(strategy) else config.generate_rows
  needed = [config.dataset] + [config.stage_dataset(s) for s in config.stages]
  builders = {name: inputs.built_dataset(name, config.data_dir, generate_rows, config.seed)
              for name in dict.fromkeys(needed)}
  for stage in config.stages:
    _check_batch(stage, strategy,
                 inputs.split_size(builders[config.stage_dataset(stage)], "train"))
  return builders


def _check_batch(stage: stages_lib.Stage, strategy: tf.distribute.Strategy,
                 train_size: int) -> None:
  replicas = strategy.num_replicas_in_sync
  if stage.global_batch % replicas:
    raise errors.ConfigError(f"Stage {stage.name}: global batch {stage.global_batch} is not "
                             f"divisible by the {replicas} replicas.")
  if stage.global_batch > train_size:
    raise errors.ConfigError(f"Stage {stage.name}: global batch {stage.global_batch} is larger "
                             f"than the training split ({train_size} examples).")


def _starting_point(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy,
                    builders: dict, progress: checkpoints.Progress | None
                    ) -> tuple[keras.Model, int, int, checkpoints.Progress | None]:
  """(network, stage index, first epoch, checkpoint to restore in that stage) to continue from.

  A checkpoint that closes a stage is restored here (network and dropout RNG only) and the run
  continues with the next stage; one inside a stage is left to `_run_stage`, which restores it
  together with the stage's optimizer.
  """
  stage, epoch = (progress.stage, progress.epoch) if progress else (0, 0)
  with strategy.scope():
    net = network.build_network(config, builders, stage)
  if progress is None or epoch < config.stages[stage].epochs:
    return net, stage, epoch, progress
  status = tf.train.Checkpoint(model=net, rng=checkpoints.rng_states(net)).restore(progress.path)
  status.expect_partial().assert_existing_objects_matched()
  if stage + 1 < len(config.stages):
    with strategy.scope():
      net = network.next_stage_network(config, builders, net, stage + 1)
  return net, stage + 1, 0, None


# -------------------------------------------------------------------------------------------------
# One stage.


@dataclasses.dataclass(frozen=True)
class _StagePlan:
  """What one stage trains on and how: derived from the config, the same on resume."""
  index: int
  stage: stages_lib.Stage
  builder: tfds.core.DatasetBuilder
  steps: int
  lr: float
  augment_on: str
  label: str  # "main 2/3", the prefix of the stage's lines.


def _plan(context: _Context, index: int) -> _StagePlan:
  config = context.config
  stage = config.stages[index]
  builder = context.builders[config.stage_dataset(stage)]
  steps = inputs.split_size(builder, "train") // stage.global_batch
  if config.max_steps_per_epoch:
    steps = min(steps, config.max_steps_per_epoch)
  return _StagePlan(index=index, stage=stage, builder=builder, steps=steps,
                    lr=stages_lib.scaled_lr(stage, config.scale_lr, config.reference_batch),
                    augment_on=config.augment_on if stage.augment else "none",
                    label=f"{stage.name} {index + 1}/{len(config.stages)}")


def _run_stage(context: _Context, net: keras.Model, index: int, first_epoch: int,
               restore_from: checkpoints.Progress | None) -> None:
  """Trains stage `index` from `first_epoch`, restoring `restore_from` first."""
  plan = _plan(context, index)
  with context.strategy.scope():
    network.set_trainable(net, plan.stage.trainable)
    batch_norm = (weight_averages.BatchNormAverages(net, plan.stage.ema) if plan.stage.ema
                  else None)
    trainer = _compiled_trainer(context, net, plan, batch_norm)
  if _budget_pending(context, index):
    plan = _choose_budget_epochs(context, net, trainer, plan)
  stage_state = _stage_state_callbacks(context, net, plan)
  manager = _restored_checkpoint(context, net, trainer, [*stage_state, batch_norm], restore_from)
  context.counters.stage.assign(index)
  context.counters.epoch.assign(first_epoch)
  context.counters.precision.assign(context.precision)  # The restored one may differ.
  if context.chief:
    _announce(context, plan)
  callbacks = _callbacks(context, trainer, plan, first_epoch, batch_norm, stage_state, manager)
  train_data = context.strategy.distribute_datasets_from_function(_train_input_fn(context, plan,
                                                                                   first_epoch))
  # One fit per stage: with steps_per_epoch, Keras reads the epochs off one iterator.
  trainer.fit(train_data, epochs=plan.stage.epochs, initial_epoch=first_epoch,
              steps_per_epoch=plan.steps, shuffle=False, callbacks=callbacks,
              verbose=context.config.verbose if context.chief else 0)


def _compiled_trainer(context: _Context, net: keras.Model, plan: _StagePlan,
                      batch_norm: weight_averages.BatchNormAverages | None
                      ) -> training_model.TrainingModel:
  """The stage's TrainingModel with its optimizer (built, so its slots can be restored) and loss.
  Call under the strategy's scope."""
  config, stage = context.config, plan.stage
  device_augment = config.augment_params if plan.augment_on == "device" else None
  trainer = training_model.TrainingModel(
      net, device_augment, stage_seed=seeds.stage_seed(config.seed, seeds.Stream.AUGMENT,
                                                       plan.index),
      host_augmented=plan.augment_on == "host", batch_norm_averages=batch_norm,
      teacher=teacher.load(stage, datasets.label_names(plan.builder)))
  optimizer = stages_lib.make_optimizer(
      stage.optimizer, schedules.learning_rate(stage, plan.lr, plan.steps),
      weight_decay=stage.weight_decay, clipnorm=stage.clipnorm, ema=stage.ema)
  class_weights = None
  if stage.balance != "none":
    class_weights = losses.class_weights(datasets.class_counts(plan.builder, "train"),
                                         stage.balance)
  trainer.compile(optimizer=optimizer,
                  loss=losses.SmoothedCrossEntropy(stage.label_smoothing, class_weights),
                  metrics=["accuracy"], jit_compile=config.jit_compile)
  trainer.optimizer.build(trainer.trainable_variables)
  return trainer


def _stage_state_callbacks(context: _Context, net: keras.Model,
                           plan: _StagePlan) -> list[keras.callbacks.Callback]:
  """The callbacks whose state the checkpoint holds: plateau lr, best epoch, best accuracy."""
  config = context.config
  state: list[keras.callbacks.Callback] = []
  if plan.stage.schedule == "plateau":
    state.append(schedules.PlateauCallback(plan.stage.lr_factor, plan.stage.patience))
  if plan.index >= keep_best.keep_best_from(config, context.builders):
    state.append(keep_best.TrackBestAccuracy(context.counters))
    if config.keep_best != "none":
      state.append(keep_best.KeepBest(net, f"eval_{config.keep_best}", context.counters,
                                      plan.index, context.write_dir / keep_best.BEST_WEIGHTS))
  return state


def _restored_checkpoint(context: _Context, net: keras.Model,
                         trainer: training_model.TrainingModel, stateful: Sequence,
                         restore_from: checkpoints.Progress | None
                         ) -> tf.train.CheckpointManager:
  """The stage's checkpoint manager; `restore_from`, when given, restored with every object
  matched (the stage's optimizer slots and step counter come back)."""
  extra_state = {name: variable for holder in stateful if holder is not None
                 for name, variable in getattr(holder, "variables", {}).items()}
  objects = dict(model=net, rng=checkpoints.rng_states(net),
                 **checkpoints.optimizer_objects(trainer.optimizer), **context.counters.objects(),
                 **extra_state)
  if restore_from is not None:
    checkpoints.restore(objects, restore_from)
  return tf.train.CheckpointManager(tf.train.Checkpoint(**objects),
                                    str(context.write_dir / checkpoints.CKPT_DIR), max_to_keep=2)


def _announce(context: _Context, plan: _StagePlan) -> None:
  stage, config = plan.stage, context.config
  print(f"\nStage {plan.label}: {stage.trainable} layers train, {stage.epochs} epoch(s)"
        f"{_budget_note(context, plan.index)} of {plan.steps} steps x {stage.global_batch} images "
        f"of {config.stage_dataset(stage)}, "
        f"{stage.optimizer} lr {plan.lr:g} ({stage.spec()}), augmentation {plan.augment_on}, "
        f"{context.strategy.num_replicas_in_sync} replica(s).", flush=True)


def _train_input_fn(context: _Context, plan: _StagePlan, first_epoch: int):
  config = context.config
  host_augment = config.augment_params if plan.augment_on == "host" else None
  return inputs.train_dataset_fn(
      plan.builder, plan.stage, config.seed, plan.index, first_epoch, plan.steps,
      config.deterministic, host_augment, config.data_service_address)


def _callbacks(context: _Context, trainer: training_model.TrainingModel, plan: _StagePlan,
               first_epoch: int, batch_norm: weight_averages.BatchNormAverages | None,
               stage_state: Sequence[keras.callbacks.Callback],
               manager: tf.train.CheckpointManager) -> list[keras.callbacks.Callback]:
  """The stage's callbacks, in the order they must run: averaged weights in, reports, the epoch
  line, the stateful ones, averaged weights out, the caller's, and the checkpoint last."""
  config, stage = context.config, plan.stage
  averaged = (weight_averages.EvaluateAverages(trainer, stage.epochs, batch_norm)
              if stage.ema else None)
  validation = None
  if config.validate and "validation" in plan.builder.info.splits:
    validation = inputs.eval_dataset_fn(plan.builder, "validation")
  logdir = context.write_dir / TENSORBOARD_DIR / stage.name
  profile = (context.profiler.for_stage(logdir, plan.steps * (stage.epochs - first_epoch))
             if context.profiler else [])
  return [
      *([averaged.put_in] if averaged else []),
      *report_callbacks.get_callbacks(
          logdir=str(logdir),
          label_names=datasets.label_names(plan.builder), eval_dataset_fn=validation,
          stage_note=(f"{plan.label}: {stage.spec()} on {config.stage_dataset(stage)}, "
                      f"augmentation {plan.augment_on}{_budget_note(context, plan.index)}"),
          initial_epoch=first_epoch,
          epoch_offset=sum(s.epochs for s in config.stages[:plan.index]),
          global_batch_size=stage.global_batch, epoch_line=False, is_chief=context.chief),
      keras.callbacks.ProgbarLogger(),  # Before the summary line (Keras would append it last).
      report_callbacks.EpochLine(is_chief=context.chief, label=plan.label, epochs=stage.epochs,
                                 history=context.history, stage=stage.name),
      *stage_state,
      *([averaged.take_out] if averaged else []),
      *context.extra_callbacks,
      training_model.StopOnNonFiniteLoss(plan.label, plan.steps),
      *profile,
      checkpoints.SaveCheckpoint(manager, context.counters, plan.steps),
  ]


# -------------------------------------------------------------------------------------------------
# Time budget.


def _budget_pending(context: _Context, index: int) -> bool:
  """Whether stage `index` is the budgeted one and its epochs are still to be chosen."""
  config = context.config
  return bool(config.time_budget) and index == config.budgeted_index() and not (
      context.counters.budget_choice()[0])


def _choose_budget_epochs(context: _Context, net: keras.Model,
                          trainer: training_model.TrainingModel, plan: _StagePlan) -> _StagePlan:
  """Measures the budgeted stage on its trainer (and the later stages on trainers of their own),
  chooses its epochs (`budget.choose`), keeps them and sets its schedule to them. Returns the
  stage's plan with the chosen epochs."""

  def make_trainer(index: int) -> tuple[training_model.TrainingModel, int, str]:
    if index == plan.index:
      return trainer, plan.steps, plan.augment_on
    later = _plan(context, index)
    with context.strategy.scope():
      network.set_trainable(net, later.stage.trainable)
      return _compiled_trainer(context, net, later, None), later.steps, later.augment_on

  epochs, images_per_second = budget.choose(context.config, context.strategy, plan.builder,
                                            make_trainer, context.write_dir,
                                            announce=context.chief)
  with context.strategy.scope():
    network.set_trainable(net, plan.stage.trainable)  # As the later stages' trainers left it.
  _keep_budget_choice(context, epochs, images_per_second)
  schedules.set_total_steps(trainer.optimizer, epochs * plan.steps)
  return _plan(context, plan.index)


def _keep_budget_choice(context: _Context, epochs: int, images_per_second: float) -> None:
  """The run's config gets the budgeted stage's chosen epochs; the checkpoint counters hold them."""
  context.config = budget.with_epochs(context.config, epochs)
  context.counters.set_budget_choice(epochs, images_per_second)


def _budget_note(context: _Context, index: int) -> str:
  """" (chosen for a budget of 10 minutes at 1,230 images/s)" for the budgeted stage, else ""."""
  epochs, images_per_second = context.counters.budget_choice()
  if not epochs or index != context.config.budgeted_index():
    return ""
  return f" ({budget.epochs_note(context.config.time_budget, images_per_second)})"
