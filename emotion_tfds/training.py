"""Runs a stage schedule under a tf.distribute strategy, with per-epoch checkpoints and resume.

One `train(config)` call trains every stage of `config.schedule` (see `emotion_tfds.stages`) and
returns the final network: the last epoch's, or the best validation epoch's with `keep_best`. The
same call on the same `model_dir` after a kill resumes at the stage and epoch where the last
checkpoint was written. What follows training (the final evaluation and the saved model files) is
`emotion_tfds.runs`.

Design:
  * Keras `fit` drives the training (progress bars, callbacks), one call per stage. A thin
    `keras.Model` wrapper around the network converts uint8 batches on the device
    (`preprocess.to_model_input`) and, in training calls, applies `augment.augment_batch` with a
    stateless seed made of (run seed, stage, optimizer step, replica id). The augmentation stream
    is thus a function of the optimizer's step counter, which the checkpoint holds.
  * Input comes from `distribute_datasets_from_function`: one pipeline per stage that reads and
    decodes the split once (cached) and then yields the remaining epochs, each shuffled with a
    seed of (run seed, stage, epoch) (`pipeline.make_dataset(epoch_seeds=...)`), so the batches
    of an epoch are the same whether the run was interrupted or not. Every epoch is
    `train_examples // global_batch` steps (a pipeline's permutation repeats to fill them), so
    workers with uneven shards still step together.
  * The checkpoint (`emotion_tfds.checkpoints`, written after every epoch) holds the network, the
    stage's optimizer, the dropout RNG states, the progress counters and a fingerprint of the
    run's settings and data; a restart with other settings is refused, naming what differs.
  * Every stage gets a fresh optimizer. On resume inside a stage the network is rebuilt as it was in
    that stage (head swaps replayed), the stage's trainability set and its optimizer built; then
    everything is restored and checked to match, so the optimizer slots come back. A checkpoint
    that closes a stage restores only the network, and the next stage starts its optimizer.
  * Multi-worker: every worker runs the same calls; only the chief writes into `model_dir`, the
    others write their checkpoints and exports into temporary folders (the standard MWMS pattern).

The jobs around it have their own modules: strategies (`strategies`), the run's datasets and input
functions (`stage_inputs`), seed streams (`seeds`), checkpoint state (`checkpoints`) and callbacks
(`callbacks`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from collections.abc import Sequence

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import augment
from emotion_tfds import callbacks as callbacks_lib
from emotion_tfds import checkpoints
from emotion_tfds import curves
from emotion_tfds import datasets
from emotion_tfds import errors
from emotion_tfds import evaluate as evaluate_lib
from emotion_tfds import image_spec
from emotion_tfds import losses
from emotion_tfds import models
from emotion_tfds import preprocess
from emotion_tfds import run_summaries
from emotion_tfds import schedules
from emotion_tfds import seeds
from emotion_tfds import stage_inputs
from emotion_tfds import stages as stages_lib
from emotion_tfds import strategies
from emotion_tfds import weight_averages

AUGMENT_ON: tuple[str, ...] = ("device", "host", "none")
KEEP_BEST: tuple[str, ...] = ("none", "accuracy", "macro_f1")
BEST_WEIGHTS = "best.weights.h5"  # <model_dir>/best.weights.h5: the best epoch's network.
TENSORBOARD_DIR = "tb"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run depends on.

  Attributes:
    model_dir: checkpoints, TensorBoard logs and the saved models go here.
    data_dir: TFDS data_dir holding the built datasets.
    schedule: the stages to run, pretraining stages first (`stages.build_schedule`).
    dataset: the target dataset ("fer2013/seed6"); stages with `dataset=None` train on it.
    model: architecture name in `models.MODELS`.
    pretrained: `.keras`/`.h5` file to start from instead of fresh weights.
    strategy: one of `strategies.STRATEGIES`.
    tpu: TPU name or address for strategy "tpu".
    mixed_precision: float16 compute (bfloat16 on TPU and CPU), float32 variables.
    augment_on: "device" (inside the train step), "host" (tf.data map) or "none".
    seed: run seed: weights init, data order, augmentation, dropout.
    deterministic: deterministic TF ops and input pipeline (bitwise-repeatable runs).
    scale_lr: scale each stage's lr by global_batch / reference_batch.
    reference_batch: see `scale_lr`.
    generate_rows: when a dataset is not built in `data_dir`, generate this many faces and build
      it; 0 requires a built dataset.
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
    final_tta: test-time augmentation of the final evaluation (`evaluate.TTA_MODES`).
  """
  model_dir: str
  data_dir: str
  schedule: tuple[stages_lib.Stage, ...]
  dataset: str = "fer2013/seed6"
  model: str = "base_cnn"
  pretrained: str | None = None
  strategy: str = "default"
  tpu: str = ""
  mixed_precision: bool = False
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

  def __post_init__(self):
    if self.strategy not in strategies.STRATEGIES:
      raise ValueError(f"Unknown strategy {self.strategy!r}; expected one of "
                       f"{strategies.STRATEGIES}.")
    if self.augment_on not in AUGMENT_ON:
      raise ValueError(f"Unknown augment_on {self.augment_on!r}; expected one of {AUGMENT_ON}.")
    if self.model not in models.MODELS:
      raise ValueError(f"Unknown model {self.model!r}; expected one of {sorted(models.MODELS)}.")
    if not self.schedule:
      raise ValueError("The schedule has no stages.")
    if self.keep_best not in KEEP_BEST:
      raise ValueError(f"Unknown keep_best {self.keep_best!r}; expected one of {KEEP_BEST}.")
    if self.keep_best != "none" and not self.validate:
      raise ValueError("keep_best needs the per-epoch validation (validate=True).")
    if self.final_tta not in evaluate_lib.TTA_MODES:
      raise ValueError(f"Unknown final_tta {self.final_tta!r}; expected one of "
                       f"{evaluate_lib.TTA_MODES}.")
    if self.stage_dataset(self.schedule[-1]) != self.dataset:
      raise ValueError(f"The last stage ({self.schedule[-1].name}) trains on "
                       f"{self.stage_dataset(self.schedule[-1])}, not on the target dataset "
                       f"{self.dataset}; the final model must predict the target's classes.")

  def stage_dataset(self, stage: stages_lib.Stage) -> str:
    return stage.dataset or self.dataset

  def fingerprint(self) -> str:
    """What a checkpoint must have been written by to be resumed (model, seed, schedule)."""
    specs = ",".join(f"{s.spec()}@{self.stage_dataset(s)}" for s in self.schedule)
    return (f"model={self.model};pretrained={self.pretrained or ''};seed={self.seed};"
            f"scale_lr={self.scale_lr}/{self.reference_batch};augment_on={self.augment_on};"
            f"mixed_precision={self.mixed_precision};"
            f"max_steps_per_epoch={self.max_steps_per_epoch or 0};"
            f"augment={dataclasses.astuple(self.augment_params)};keep_best={self.keep_best};"
            f"stages={specs}")


@dataclasses.dataclass
class TrainedRun:
  """What `train` returns: the trained network and what the steps after training need.

  Attributes:
    network: the final network (float32 [0, 1] input, softmax output): the last epoch's, or the
      best epoch's with `TrainConfig.keep_best`.
    target: the builder of `TrainConfig.dataset`, whose label names are the network's outputs.
    strategy: the strategy it was trained under.
    write_dir: where this worker writes: model_dir on the chief, a temporary folder on the others.
    chief: whether this worker is the chief (the one that prints and writes model_dir).
    history: one dict per epoch trained by this call: stage, epoch, the Keras logs, images_per_s.
    resumed_from: (stage index, epochs done) of the checkpoint this call started from, or None.
    best_validation_accuracy: the best per-epoch validation accuracy of the stages that predict
      the target's labels (NaN without validation, and on the other workers than the chief,
      which write no event files).
  """
  network: keras.Model
  target: tfds.core.DatasetBuilder
  strategy: tf.distribute.Strategy
  write_dir: pathlib.Path
  chief: bool
  history: list[dict]
  resumed_from: tuple[int, int] | None
  best_validation_accuracy: float


# -------------------------------------------------------------------------------------------------
# Model.


class TrainingModel(keras.Model):
  """`net` behind the uint8 -> float conversion, with on-device augmentation in training calls.

  Inputs are uint8 batches [B, 48, 48, 1] (or float32 [0, 1] batches already augmented on the
  host, passed through). Only `net` holds weights; it is what gets saved and exported.
  """

  def __init__(self, net: keras.Model, augment_params: augment.AugmentParams | None,
               stage_seed: int, host_augmented: bool = False,
               batch_norm_averages: weight_averages.BatchNormAverages | None = None, **kwargs):
    """Wraps `net`.

    Args:
      net: the network (float32 [0, 1] input).
      augment_params: augment uint8 training batches with these strengths; None: no augmentation.
      stage_seed: first element of every augmentation seed of this stage.
      host_augmented: training batches arrive float32, augmented by the input pipeline.
      batch_norm_averages: updated after each step (a stage with `ema`).
    """
    super().__init__(name=f"training_{net.name}", **kwargs)
    self.net = net
    self.batch_norm_averages = batch_norm_averages
    self._augment_params = augment_params
    self._stage_seed = stage_seed
    self._batch_spec = (
        tf.TensorSpec([None, *image_spec.IMAGE_SHAPE], tf.float32 if host_augmented else tf.uint8),
        tf.TensorSpec([None], tf.int64))

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Builds the metrics from the known input spec, not from a batch reduced over replicas.

    Keras 3.15 gets its sample batch with `strategy.reduce("MEAN", (images, labels))`, which
    MultiWorkerMirroredStrategy cannot do for a tuple (keras-team/keras#20585); only the shapes and
    dtypes are needed. (Overrides a private Keras method; tests/distribute_test.py covers it.)
    """
    del iterator, data_batch
    with self.distribute_strategy.scope():
      self._symbolic_build(data_batch=self._batch_spec)

  def train_step(self, data):
    logs = super().train_step(data)
    statistics = weight_averages.batch_norm_statistics(self.net)
    if statistics and self.distribute_strategy.num_replicas_in_sync > 1:
      # Each replica updates its BatchNorm statistics from its own part of the batch (Keras 3
      # gives them no aggregation): average them, as Keras 2's MEAN aggregation did, so every
      # replica and worker holds the same network.
      means = tf.distribute.get_replica_context().all_reduce(  # One batched all-reduce.
          tf.distribute.ReduceOp.MEAN, [tf.identity(s) for s in statistics])
      for statistic, mean in zip(statistics, means):
        statistic.assign(mean)
    if self.batch_norm_averages is not None:
      self.batch_norm_averages.update(self.optimizer.iterations)
    if strategies.is_multi_worker(self.distribute_strategy):
      # Keras 3.15 averages the step's logs over workers with strategy.reduce(MEAN, v, axis=0),
      # which needs a batch axis: give each scalar one (keras-team/keras#20585).
      logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs

  def _step_seed(self) -> tf.Tensor:
    """Stateless seed [2]: (stage seed, optimizer step * replicas + replica id)."""
    context = tf.distribute.get_replica_context()
    replica = tf.cast(context.replica_id_in_sync_group if context else 0, tf.int64)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    step = tf.cast(self.optimizer.iterations, tf.int64) * replicas + replica
    return tf.stack([tf.constant(self._stage_seed, tf.int64), step])

  def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    if images.dtype == tf.uint8:
      if training and self._augment_params is not None:
        images = augment.augment_batch(images, self._step_seed(), self._augment_params)
      else:
        images = preprocess.to_model_input(images)
    return self.net(images, training=training)


def _label_names(builder) -> tuple[str, ...]:
  return tuple(datasets.label_names(builder))


def build_network(config: TrainConfig, builders: dict, upto_stage: int) -> keras.Model:
  """The network as it is during stage `upto_stage`: built (or loaded), heads swapped as scheduled.

  A pretrained model gets a head for the first stage's classes (`models.load_pretrained`); later,
  the head is replaced wherever a stage's dataset has other label names than the previous stage's
  (e.g. 7-class pretraining on fer7, then seed6). Call under strategy.scope().
  """
  first = config.stage_dataset(config.schedule[0])
  num_classes = len(_label_names(builders[first]))
  if config.pretrained:
    # The head's order follows the first stage's ClassLabel names (not the config's name).
    net = models.load_pretrained(config.pretrained, num_classes,
                                 label_names=_label_names(builders[first]),
                                 build_fn=models.MODELS[config.model])
  else:
    net = models.MODELS[config.model](num_classes=num_classes)
  for index in range(1, upto_stage + 1):
    net = next_stage_network(config, builders, net, index)
  return net


def next_stage_network(config: TrainConfig, builders: dict, net: keras.Model,
                       index: int) -> keras.Model:
  """The network of stage `index` from stage `index - 1`'s: a new head if the label names change.

  The new head's initial weights depend only on (seed, index), so a resumed run gets the head an
  uninterrupted run got.
  """
  before = _label_names(builders[config.stage_dataset(config.schedule[index - 1])])
  after = _label_names(builders[config.stage_dataset(config.schedule[index])])
  if after == before:
    return net
  keras.utils.set_random_seed(seeds.stage_seed(config.seed, seeds.Stream.STAGE, index))
  return models.replace_head(net, len(after))


def set_trainable(net: keras.Model, trainable: str) -> None:
  """"head": only the head layers train (base frozen); "all": every layer trains."""
  for layer in models.base_layers(net):
    layer.trainable = trainable == "all"
  for layer in models.head_layers(net):
    layer.trainable = True


# -------------------------------------------------------------------------------------------------
# The run.


def _setup(config: TrainConfig) -> None:
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()


def _check_stage(stage: stages_lib.Stage, strategy: tf.distribute.Strategy,
                 train_size: int) -> None:
  replicas = strategy.num_replicas_in_sync
  if stage.global_batch % replicas:
    raise errors.ConfigError(f"Stage {stage.name}: global batch {stage.global_batch} is not "
                             f"divisible by the {replicas} replicas.")
  if stage.global_batch > train_size:
    raise errors.ConfigError(f"Stage {stage.name}: global batch {stage.global_batch} is larger "
                             f"than the training split ({train_size} examples).")


@dataclasses.dataclass
class _Context:
  """What every stage of one `run` call shares."""
  config: TrainConfig
  strategy: tf.distribute.Strategy
  builders: dict
  counters: checkpoints.Counters
  write_dir: pathlib.Path
  chief: bool
  history: list
  extra_callbacks: Sequence[keras.callbacks.Callback]


def train(config: TrainConfig, strategy: tf.distribute.Strategy | None = None,
          extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainedRun:
  """Trains `config.schedule`, resuming from `config.model_dir`, up to the final network.

  Args:
    config: the run.
    strategy: an existing strategy (default: `strategies.make_strategy(config.strategy, ...)`).
    extra_callbacks: more Keras callbacks for every `fit` call.

  Returns:
    The trained network (the best epoch's weights with `config.keep_best`) and what the steps after
    training need: the target dataset, the strategy, where to write, the per-epoch history.

  Raises:
    errors.CheckpointMismatchError: model_dir holds a checkpoint of other settings or data.
    errors.ConfigError: a batch size that does not fit the replicas or the data.
    errors.DataNotBuiltError: a dataset that is not built (and `generate_rows` is 0).
    errors.StrategyUnavailableError: a strategy this machine cannot run.
    ValueError: an unknown name.
  """
  _setup(config)
  strategy = strategy or strategies.make_strategy(config.strategy, config.tpu)
  keras.mixed_precision.set_global_policy(
      strategies.mixed_precision_policy(strategy) if config.mixed_precision else "float32")
  chief = strategies.is_chief_worker(strategy)
  model_dir = pathlib.Path(config.model_dir)
  write_dir = model_dir if chief else pathlib.Path(tempfile.mkdtemp(prefix="emotion_tfds_worker_"))
  write_dir.mkdir(parents=True, exist_ok=True)

  # Workers of a cluster must not generate and build into one data_dir at once.
  generate_rows = 0 if strategies.is_multi_worker(strategy) else config.generate_rows
  needed = [config.dataset] + [config.stage_dataset(s) for s in config.schedule]
  builders = {name: stage_inputs.built_dataset(name, config.data_dir, generate_rows, config.seed)
              for name in dict.fromkeys(needed)}
  for stage in config.schedule:
    _check_stage(stage, strategy,
                 stage_inputs.split_size(builders[config.stage_dataset(stage)], "train"))

  # Every worker resumes from the chief's checkpoints (model_dir is shared), writes into its own.
  progress = checkpoints.read_progress(str(model_dir / checkpoints.CKPT_DIR))
  fingerprint = f"{config.fingerprint()};data={checkpoints.data_identity(builders)}"
  if progress is not None and progress.fingerprint != fingerprint:
    raise errors.CheckpointMismatchError(
        f"{model_dir / checkpoints.CKPT_DIR} holds a checkpoint of another run; what differs: "
        f"{checkpoints.fingerprint_difference(progress.fingerprint, fingerprint)}. Use another "
        "--model_dir "
        "or the same flags and data as that run.")
  context = _Context(config=config, strategy=strategy, builders=builders,
                     counters=checkpoints.Counters(fingerprint), write_dir=write_dir, chief=chief,
                     history=[], extra_callbacks=tuple(extra_callbacks))

  if progress:
    print(f"Resuming from {progress.path}: stage {progress.stage + 1}/{len(config.schedule)} "
          f"({config.schedule[progress.stage].name}), {progress.epoch} epoch(s) of it done.",
          flush=True)
    context.counters.global_step.assign(progress.global_step)
  if progress is None and chief:
    run_summaries.write_run_start(write_dir / TENSORBOARD_DIR, config,
                                  _label_names(builders[config.dataset]))
  net, stage, epoch, restore_from = _starting_point(config, strategy, builders, progress)
  for index in range(stage, len(config.schedule)):
    if index > stage:
      with strategy.scope():
        net = next_stage_network(config, builders, net, index)
    _run_stage(context, net, index, epoch if index == stage else 0,
               restore_from if index == stage else None)

  if config.keep_best != "none":
    _load_best(net, context)
  return TrainedRun(network=net, target=builders[config.dataset], strategy=strategy,
                    write_dir=write_dir, chief=chief, history=context.history,
                    resumed_from=(progress.stage, progress.epoch) if progress else None,
                    best_validation_accuracy=(_best_validation_accuracy(config, context)
                                              if chief else float("nan")))


def _best_validation_accuracy(config: TrainConfig, context: "_Context") -> float:
  """The best per-epoch validation accuracy of the stages on the target's classes, read back from
  their event files (so it covers the epochs before a resume too); NaN without validation."""
  values = [value for stage in config.schedule[keep_best_from(config, context.builders):]
            for value in curves.read_stage(context.write_dir / TENSORBOARD_DIR / stage.name,
                                           (curves.EVAL_ACCURACY,))[1].values[curves.EVAL_ACCURACY]]
  return max(values, default=float("nan"))


def keep_best_from(config: TrainConfig, builders: dict) -> int:
  """Index of the first stage whose epochs keep_best compares: from there on, every stage has the
  target's label names (no head swap), so any of their epochs' weights fit the final network."""
  target = _label_names(builders[config.dataset])
  index = len(config.schedule)
  while index > 0 and _label_names(
      builders[config.stage_dataset(config.schedule[index - 1])]) == target:
    index -= 1
  return index


def _load_best(net: keras.Model, context: "_Context") -> None:
  """Loads the best epoch's weights (KeepBest) into `net`, which the final evaluation then uses."""
  counters, config = context.counters, context.config
  path = context.write_dir / BEST_WEIGHTS
  if int(counters.best_stage.numpy()) < 0 or not path.exists():
    raise ValueError(f"keep_best={config.keep_best}: no best epoch was recorded in "
                     f"{context.write_dir} (is there a validation split?).")
  net.load_weights(path)
  if context.chief:
    stage = config.schedule[int(counters.best_stage.numpy())]
    print(f"\nFinal model: the best epoch by validation {config.keep_best}, {stage.name} epoch "
          f"{int(counters.best_epoch.numpy())} ({float(counters.best_value.numpy()):.4f}).",
          flush=True)


def _starting_point(config: TrainConfig, strategy: tf.distribute.Strategy, builders: dict,
                    progress: checkpoints.Progress | None
                    ) -> tuple[keras.Model, int, int, checkpoints.Progress | None]:
  """(network, stage index, first epoch, checkpoint to restore in that stage) to continue from.

  A checkpoint that closes a stage is restored here (network and dropout RNG only) and the run
  continues with the next stage; one inside a stage is left to `_run_stage`, which restores it
  together with the stage's optimizer.
  """
  stage, epoch = (progress.stage, progress.epoch) if progress else (0, 0)
  with strategy.scope():
    net = build_network(config, builders, stage)
  if progress is None or epoch < config.schedule[stage].epochs:
    return net, stage, epoch, progress
  status = tf.train.Checkpoint(model=net, rng=checkpoints.rng_states(net)).restore(progress.path)
  status.expect_partial().assert_existing_objects_matched()
  if stage + 1 < len(config.schedule):
    with strategy.scope():
      net = next_stage_network(config, builders, net, stage + 1)
  return net, stage + 1, 0, None


def _run_stage(context: _Context, net: keras.Model, index: int, first_epoch: int,
               restore_from: checkpoints.Progress | None) -> None:
  """Trains stage `index` of the schedule from `first_epoch`, restoring `restore_from` first."""
  config, strategy = context.config, context.strategy
  stage = config.schedule[index]
  builder = context.builders[config.stage_dataset(stage)]
  names = _label_names(builder)
  lr = stages_lib.scaled_lr(stage, config.scale_lr, config.reference_batch)
  augment_on = config.augment_on if stage.augment else "none"
  augment_params = None if augment_on == "none" else config.augment_params
  steps = stage_inputs.split_size(builder, "train") // stage.global_batch
  if config.max_steps_per_epoch:
    steps = min(steps, config.max_steps_per_epoch)
  weights = None
  if stage.balance != "none":
    weights = losses.class_weights(datasets.class_counts(builder, "train"), stage.balance)
  with strategy.scope():
    set_trainable(net, stage.trainable)
    batch_norm = weight_averages.BatchNormAverages(net, stage.ema) if stage.ema else None
    trainer = TrainingModel(net, augment_params if augment_on == "device" else None,
                            stage_seed=seeds.stage_seed(config.seed, seeds.Stream.AUGMENT, index),
                            host_augmented=augment_on == "host", batch_norm_averages=batch_norm)
    optimizer = stages_lib.make_optimizer(
        stage.optimizer, schedules.learning_rate(stage, lr, steps),
        weight_decay=stage.weight_decay, clipnorm=stage.clipnorm, ema=stage.ema)
    trainer.compile(optimizer=optimizer,
                    loss=losses.SmoothedCrossEntropy(stage.label_smoothing, weights),
                    metrics=["accuracy"], jit_compile=config.jit_compile)
    trainer.optimizer.build(trainer.trainable_variables)
  averaged = (weight_averages.EvaluateAverages(trainer, stage.epochs, batch_norm)
              if stage.ema else None)
  counters = context.counters
  stage_callbacks = []
  if stage.schedule == "plateau":
    stage_callbacks.append(schedules.PlateauCallback(stage.lr_factor, stage.patience))
  if config.keep_best != "none" and index >= keep_best_from(config, context.builders):
    stage_callbacks.append(callbacks_lib.KeepBest(net, f"eval_{config.keep_best}", counters, index,
                                    context.write_dir / BEST_WEIGHTS))
  extra_state = {k: v for c in [*stage_callbacks, batch_norm] if c is not None
                 for k, v in getattr(c, "variables", {}).items()}
  checkpoint = tf.train.Checkpoint(model=net, optimizer=trainer.optimizer, rng=checkpoints.rng_states(net),
                                   **counters.objects(), **extra_state)
  if restore_from is not None:
    # Everything must match: the stage's optimizer slots and step counter come back.
    checkpoint.restore(restore_from.path).assert_consumed()
  counters.stage.assign(index)
  counters.epoch.assign(first_epoch)
  manager = tf.train.CheckpointManager(checkpoint, str(context.write_dir / checkpoints.CKPT_DIR),
                                       max_to_keep=2)

  label = f"{stage.name} {index + 1}/{len(config.schedule)}"
  if context.chief:
    print(f"\nStage {label}: {stage.trainable} layers train, {stage.epochs} epoch(s) of {steps} "
          f"steps x {stage.global_batch} images of {config.stage_dataset(stage)}, "
          f"{stage.optimizer} lr {lr:g} ({stage.spec()}), augmentation {augment_on}, "
          f"{strategy.num_replicas_in_sync} replica(s).", flush=True)
  validation = None
  if config.validate and "validation" in builder.info.splits:
    validation = stage_inputs.eval_dataset(builder, "validation")
  host_augment = augment_params if augment_on == "host" else None
  train = strategy.distribute_datasets_from_function(stage_inputs.train_dataset_fn(
      builder, stage, config.seed, index, first_epoch, steps, config.deterministic, host_augment,
      config.data_service_address))
  callbacks = [
      *([averaged.put_in] if averaged else []),
      *callbacks_lib.get_callbacks(
          logdir=str(context.write_dir / TENSORBOARD_DIR / stage.name), label_names=names,
          eval_dataset=validation, stage_note=f"{label}: {stage.spec()} on "
          f"{config.stage_dataset(stage)}, augmentation {augment_on}", initial_epoch=first_epoch,
          epoch_offset=sum(s.epochs for s in config.schedule[:index]),
          global_batch_size=stage.global_batch, epoch_line=False, is_chief=context.chief),
      keras.callbacks.ProgbarLogger(),  # Before the summary line (Keras would append it last).
      callbacks_lib.EpochLine(is_chief=context.chief, label=label, epochs=stage.epochs,
                              history=context.history, stage=stage.name),
      *stage_callbacks,
      *([averaged.take_out] if averaged else []),
      *context.extra_callbacks,
      checkpoints.SaveCheckpoint(manager, counters, steps),
  ]
  # One fit per stage: with steps_per_epoch, Keras reads the epochs off one iterator.
  trainer.fit(train, epochs=stage.epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
              shuffle=False, callbacks=callbacks,
              verbose=config.verbose if context.chief else 0)


