"""A time budget: the budgeted stage's epochs, chosen when it starts so that the whole command fits.

`TrainConfig.time_budget` (train_main's `--time_budget=MINUTES`) gives the whole command, from its
process's start (`process_started`: imports, data generation and loading count) to its end (final
evaluation with TTA and the saved files included), that many minutes. Recipes stay defined by
epochs: the budget replaces the epochs of one stage, the one with `budget=on`, else the last
(`TrainConfig.budgeted_index`), and that stage's learning rate follows the chosen count (cosine
reaches 0 at its last step). The count is chosen when the stage starts: every earlier stage has
trained by then, so its time is measured, not estimated. What goes into it (`choose`):

  * Training (`measure_training`): the stage's own trainer (network, trainable layers, batch,
    optimizer, loss, augmentation, XLA: what the loop built for it) takes WARMUP_STEPS steps on one
    input pipeline (tracing, slow first steps), then CHUNKs of steps on a new pipeline: the first
    chunk holds the stage's start (reading and decoding the split), the next ones, until MIN_STEPS
    and MIN_SECONDS are timed, give the step time (timed per chunk, as Keras dispatches an
    epoch's steps without waiting for each). The stage then trains with this trainer, so its step
    is traced once, and its schedule gets the chosen length afterwards
    (`schedules.set_total_steps`); the network's and optimizer's variables are put back, so the
    run trains exactly as the recipe with the chosen epochs would. Each later stage is measured on
    a trainer of its own (its tracing counts as its cost).
  * Evaluation (`measure_evaluation`): the callback that validates each epoch (evaluation and
    TensorBoard summaries) runs on the validation split: once to trace (as each stage's first
    validation and the final evaluation do), then at least MIN_VALIDATIONS times and MIN_SECONDS
    long. The final evaluation is the report split's images times the TTA views (flip 2, ten-crop
    10) at the same rate per image.
  * One epoch: its steps at the step time, a validation, a checkpoint write (timed once). Saving
    model.keras and the SavedModel: EXPORT_SECONDS.
  * Margin: MARGIN of the budget, for what is not measured (Keras' epoch boundaries, keep-best
    saves, the process's exit) and for a machine whose load changes.
  * `choose_epochs`: floor((budget - margin - elapsed - stage start - what follows) / epoch). Fewer
    than max(1, the stage's warmup epochs) is an `errors.ConfigError` naming the numbers and the
    budget that would fit.
  * The count and the images/s it was chosen at go into the checkpoint (`checkpoints.Counters`): a
    resumed run reads them and never measures again. The fingerprint holds the budget, not the
    count, so a resumed command must be given the same budget; one resumed before the budgeted
    stage chooses the count within its own budget.
  * Multi-worker: the numbers are averaged over the workers, so all of them choose the same count
    (and the timed steps stop at MIN_STEPS, not at a worker's own clock).

Cost, measured on the 2-core AMD EPYC at load 10-14 (other jobs running) with base_cnn, 16 images
per step: measuring took 20-21 s, of which 10.5-14.8 s was the tracing of the step that the stage
then reuses.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import math
import os
import pathlib
import tempfile
import time

import keras
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import seeds
from emotion_tfds import workers
from emotion_tfds.data import datasets
from emotion_tfds.data import pipeline
from emotion_tfds.report import callbacks as report_callbacks
from emotion_tfds.report import evaluation
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import inputs

MARGIN = 0.1  # Share of the budget left unplanned.
# Saving model.keras and the SavedModel: 1.7-3.0 s measured for base_cnn, fastnet_small, fastnet
# and vgg on the 2-core AMD EPYC at load 8.
EXPORT_SECONDS = 5.0
WARMUP_STEPS = 3  # Untimed steps that trace the training step (and are slow).
CHUNK = 5  # Then steps are timed in chunks (one `fit` epoch each), the first on a new pipeline;
MIN_STEPS = 20  # after it, at least this many steps...
# ...and at least this long: on the 2-core machine under load, one run's chunks (fastnet_small on
# FER-2013, 64 images per step) ranged from 280 to 1,060 images/s,
MIN_SECONDS = 5.0
MAX_STEPS = 200  # but no more steps than this.
MIN_VALIDATIONS = 2  # Validations timed after the first (which traces), for at least MIN_SECONDS.
TTA_VIEWS = {"none": 1, "flip": 2, "ten-crop": 10}  # Predictions per image of the final evaluation.
_IMPORTED = time.monotonic()

# A stage's trainer to time: (TrainingModel compiled as the loop trains it, steps per epoch,
# where its augmentation runs).
TrainerFactory = Callable[[int], tuple[keras.Model, int, str]]


def process_started() -> float:
  """`time.monotonic()` at this process's start (Linux: from /proc), else at this module's
  import."""
  try:
    stat = pathlib.Path("/proc/self/stat").read_text()
    uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
  except OSError:
    return _IMPORTED
  # Field 22, start time in clock ticks after boot; the fields after the name in parentheses
  # start at field 3.
  start_ticks = int(stat.rpartition(")")[2].split()[19])
  age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
  return time.monotonic() - max(age, 0.0)


@dataclasses.dataclass(frozen=True)
class Estimate:
  """What the budgeted stage's epoch count is chosen from; times in seconds.

  Attributes:
    budget: the whole command.
    elapsed: from the command's start to the choice (data, earlier stages, measurements).
    stage_start: the budgeted stage's one-off costs (its first read of the split, the tracing of
      its first validation).
    epoch: one epoch of it (training steps, validation, checkpoint).
    after: what follows it (later stages, final evaluation with TTA, saving).
    images_per_second: its measured training throughput.
    min_epochs: the fewest epochs it can have (1, or its warmup epochs).
  """
  budget: float
  elapsed: float
  stage_start: float
  epoch: float
  after: float
  images_per_second: float
  min_epochs: int = 1

  @property
  def margin(self) -> float:
    return MARGIN * self.budget

  def needed_budget(self, epochs: int) -> float:
    """The budget (seconds) in which `epochs` epochs would fit, margin included."""
    return (self.elapsed + self.stage_start + epochs * self.epoch + self.after) / (1 - MARGIN)

  def describe(self) -> str:
    return (f"{self.elapsed:.0f} s had passed by the choice (data, earlier stages, measuring); "
            f"one epoch takes {self.epoch:.1f} s ({self.images_per_second:,.0f} images/s, "
            f"validation, checkpoint), starting it {self.stage_start:.0f} s, what follows it "
            f"(later stages, final evaluation with TTA, saving) {self.after:.0f} s, the "
            f"{MARGIN:.0%} margin {self.margin:.0f} s")


def choose_epochs(estimate: Estimate, stage_name: str) -> int:
  """The most epochs of the budgeted stage that fit the budget.

  Raises:
    errors.ConfigError: not even `estimate.min_epochs` fit; the message gives the numbers.
  """
  if not estimate.epoch > 0:
    raise ValueError(f"An epoch must take some time, got {estimate.epoch} s.")
  room = (estimate.budget - estimate.margin - estimate.elapsed - estimate.stage_start
          - estimate.after)
  epochs = max(math.floor(room / estimate.epoch), 0)
  if epochs < estimate.min_epochs:
    needed = math.ceil(estimate.needed_budget(estimate.min_epochs) / 6) / 10
    raise errors.ConfigError(
        f"--time_budget={estimate.budget / 60:g} (minutes) cannot fit {estimate.min_epochs} "
        f"epoch(s) of stage {stage_name}: {estimate.describe()}. Give at least "
        f"--time_budget={needed:g}.")
  return epochs


def epochs_note(time_budget: float, images_per_second: float) -> str:
  """How a chosen count reads in the stage's header and TensorBoard note."""
  return f"chosen for a budget of {time_budget:g} minutes at {images_per_second:,.0f} images/s"


def with_epochs(config: config_lib.TrainConfig, epochs: int) -> config_lib.TrainConfig:
  """`config` with the budgeted stage's epochs set to `epochs`."""
  index = config.budgeted_index()
  stages = list(config.stages)
  stages[index] = dataclasses.replace(stages[index], epochs=epochs)
  return dataclasses.replace(config, stages=tuple(stages))


@dataclasses.dataclass(frozen=True)
class StageTiming:
  """A stage's measured training costs, in seconds.

  Attributes:
    trace: building its trainer and its first WARMUP_STEPS steps (tracing, slow first steps):
      paid once by a stage whose trainer was not the measured one.
    start: a traced trainer's start on a new input pipeline (the split's read and decoding).
    step: one step.
    checkpoint: one checkpoint write.
    steps: steps per epoch.
    global_batch: images per step.
  """
  trace: float
  start: float
  step: float
  checkpoint: float
  steps: int
  global_batch: int

  def epoch(self, validation: float) -> float:
    """One epoch with a validation pass of `validation` seconds."""
    return self.steps * self.step + validation + self.checkpoint


@dataclasses.dataclass(frozen=True)
class EvaluationTiming:
  """A per-epoch validation's measured costs.

  Attributes:
    tracing: the first one's extra seconds: what each new evaluator pays once.
    seconds: one validation after that (evaluation and TensorBoard summaries).
    images: the images it evaluated.
  """
  tracing: float
  seconds: float
  images: int

  @property
  def per_image(self) -> float:
    return self.seconds / self.images


def choose(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy, builder,
           make_trainer: TrainerFactory, write_dir: pathlib.Path,
           announce: bool = True) -> tuple[int, float]:
  """Measures the budgeted stage and the ones after it, then chooses its epochs.

  Call when the budgeted stage starts. `make_trainer(budgeted index)` returns the stage's own
  trainer (the same object at each call): it is traced here and the stage reuses it (after the
  choice, set its schedule's steps: `schedules.set_total_steps`); its network's and optimizer's
  variables are put back afterwards. Later stages get trainers of their own, on the same network;
  its layers' trainability is left as the last trainer set it.

  Args:
    config: the run (with `time_budget` and `budget_start`).
    strategy: the run's strategy.
    builder: the dataset of the budgeted stage and of those after it.
    make_trainer: stage index -> its compiled trainer, steps per epoch, augment_on.
    write_dir: where the checkpoints go (the timed write goes to a temporary folder in it).
    announce: print the choice and its numbers.

  Returns:
    (epochs, images/s of the budgeted stage's training).

  Raises:
    errors.ConfigError: the budget cannot fit the stage's minimum epochs.
  """
  index = config.budgeted_index()
  trainer = make_trainer(index)[0]
  averages = trainer.batch_norm_averages.averages if trainer.batch_norm_averages else []
  state = [*trainer.net.variables, *trainer.optimizer.variables, *averages]
  saved = [v.numpy() for v in state]
  try:
    timings = [measure_training(config, strategy, builder, later, make_trainer, write_dir)
               for later in range(index, len(config.stages))]
    has_validation = "validation" in builder.info.splits
    final_split = evaluation.report_split(builder, config.eval_split)
    evaluation_timing = measure_evaluation(
        trainer, builder, "validation" if has_validation else final_split, strategy, write_dir)
  finally:
    for variable, value in zip(state, saved, strict=True):
      variable.assign(value)
  started = config.budget_start if config.budget_start is not None else time.monotonic()
  estimate = make_estimate(config, timings, evaluation_timing, config.validate and has_validation,
                           inputs.split_size(builder, final_split), time.monotonic() - started)
  measured = ("elapsed", "stage_start", "epoch", "after", "images_per_second")
  averaged = _averaged_over_workers(strategy, [getattr(estimate, name) for name in measured])
  estimate = dataclasses.replace(estimate, **dict(zip(measured, averaged, strict=True)))
  stage = config.stages[index]
  epochs = choose_epochs(estimate, stage.name)
  if announce:
    print(f"\nTime budget {config.time_budget:g} min: {epochs} epochs for stage {stage.name}; "
          f"{estimate.describe()}.", flush=True)
  return epochs, estimate.images_per_second


def make_estimate(config: config_lib.TrainConfig, timings: list[StageTiming],
                  evaluation_timing: EvaluationTiming, validates: bool, final_images: int,
                  elapsed: float) -> Estimate:
  """The Estimate of the budgeted stage's choice from the measurements.

  Args:
    config: the run.
    timings: the budgeted stage's and each later stage's.
    evaluation_timing: of the validation on the validation (else the final) split.
    validates: whether every epoch is validated.
    final_images: images of the final evaluation's split.
    elapsed: seconds since the command's start.
  """
  index = config.budgeted_index()
  tracing = evaluation_timing.tracing
  validation = evaluation_timing.seconds if validates else 0.0
  first_validation = tracing if validates else 0.0  # Each stage's evaluator traces.
  budgeted, later = timings[0], timings[1:]
  later_stages = sum(t.trace + t.start + first_validation + stage.epochs * t.epoch(validation)
                     for t, stage in zip(later, config.stages[index + 1:], strict=True))
  final = tracing + TTA_VIEWS[config.final_tta] * final_images * evaluation_timing.per_image
  return Estimate(budget=config.time_budget * 60, elapsed=elapsed,
                  stage_start=budgeted.start + first_validation,
                  epoch=budgeted.epoch(validation),
                  after=later_stages + final + EXPORT_SECONDS,
                  images_per_second=budgeted.global_batch / budgeted.step,
                  min_epochs=max(1, math.ceil(config.stages[index].warmup)))


def measure_training(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy, builder,
                     index: int, make_trainer: TrainerFactory,
                     write_dir: pathlib.Path) -> StageTiming:
  """Times building stage `index`'s trainer and training it on its split: one input pipeline for
  the WARMUP_STEPS steps that trace, a new one for the first chunk (reading the split) and the
  timed chunks after it. The steps change the trainer's variables: the caller restores them."""
  stage = config.stages[index]
  begin = time.perf_counter()
  trainer, steps, augment_on = make_trainer(index)
  host_augment = config.augment_params if augment_on == "host" else None

  def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    # One pass, uncached: a cache the probe does not read to its end would be dropped with a
    # warning.
    ds, _ = pipeline.make_dataset(
        builder, "train", input_context.get_per_replica_batch_size(stage.global_batch),
        training=True, input_context=input_context,
        seed=seeds.stage_seed(config.seed, seeds.Stream.STAGE, index),
        steps_per_epoch=CHUNK + MAX_STEPS, deterministic=config.deterministic, cache=False,
        augment_on_host=host_augment, data_service_address=config.data_service_address)
    return ds

  trainer.fit(strategy.distribute_datasets_from_function(dataset_fn), epochs=1,
              steps_per_epoch=WARMUP_STEPS, shuffle=False, verbose=0)
  traced = time.perf_counter()
  # Workers must take the same steps (they all-reduce): no stopping on their own clocks there.
  timer = _ChunkTimer(0.0 if workers.is_multi_worker(strategy) else MIN_SECONDS)
  trainer.fit(strategy.distribute_datasets_from_function(dataset_fn),
              epochs=(CHUNK + MAX_STEPS) // CHUNK, steps_per_epoch=CHUNK, shuffle=False,
              callbacks=[timer], verbose=0)
  first, last = timer.ends[0], timer.ends[-1]
  step = (last - first) / (CHUNK * (len(timer.ends) - 1))
  with tempfile.TemporaryDirectory(dir=write_dir) as folder:
    checkpoint = tf.train.Checkpoint(model=trainer.net, optimizer=trainer.optimizer)
    written = time.perf_counter()
    checkpoint.write(str(pathlib.Path(folder) / "timed"))
    checkpoint_seconds = time.perf_counter() - written
  return StageTiming(trace=traced - begin, start=max(first - traced - CHUNK * step, 0.0),
                     step=step, checkpoint=checkpoint_seconds, steps=steps,
                     global_batch=stage.global_batch)


def measure_evaluation(trainer: keras.Model, builder, split: str, strategy: tf.distribute.Strategy,
                       write_dir: pathlib.Path) -> EvaluationTiming:
  """Times per-epoch validations of `trainer` on `split` by the callback that runs them in
  training (`report.callbacks.EmotionTensorBoard`, into a temporary folder): the first traces,
  the next ones, at least MIN_VALIDATIONS and MIN_SECONDS of them, are timed."""
  min_seconds = 0.0 if workers.is_multi_worker(strategy) else MIN_SECONDS  # As `_ChunkTimer`.
  with tempfile.TemporaryDirectory(dir=write_dir) as folder:
    validation = report_callbacks.EmotionTensorBoard(
        folder, datasets.label_names(builder),
        eval_dataset_fn=inputs.eval_dataset_fn(builder, split))
    validation.set_model(trainer)
    validation.on_train_begin()
    times = [time.perf_counter()]
    while len(times) < 2 + MIN_VALIDATIONS or times[-1] - times[1] < min_seconds:
      validation.on_epoch_end(len(times) - 1, {})
      times.append(time.perf_counter())
    validation.on_train_end()
  seconds = (times[-1] - times[1]) / (len(times) - 2)
  return EvaluationTiming(tracing=max(times[1] - times[0] - seconds, 0.0), seconds=seconds,
                          images=inputs.split_size(builder, split))


class _ChunkTimer(keras.callbacks.Callback):
  """Records when each `fit` epoch of CHUNK steps ends; stops `fit` once MIN_STEPS steps after
  the first chunk, and `min_seconds`, are timed. Epoch hooks only: a batch hook would make Keras
  wait for every step (40% fewer images/s for fastnet_small on FER-2013 here)."""

  def __init__(self, min_seconds: float):
    super().__init__()
    self._min_seconds = min_seconds
    self.ends: list[float] = []

  def on_epoch_end(self, epoch, logs=None):
    self.ends.append(time.perf_counter())
    timed = CHUNK * (len(self.ends) - 1)
    if timed >= MIN_STEPS and self.ends[-1] - self.ends[0] >= self._min_seconds:
      self.model.stop_training = True


def _averaged_over_workers(strategy: tf.distribute.Strategy, values: list[float]) -> list[float]:
  """`values` averaged over the strategy's replicas: the same numbers on every worker."""
  @tf.function  # Strategies run replica functions eagerly only with a warning.
  def mean():
    per_replica = strategy.run(lambda: tf.constant(values, tf.float32))
    return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

  return [float(v) for v in mean().numpy()]
