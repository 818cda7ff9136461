"""The Keras model that training fits (a network behind the uint8 conversion and the augmentation,
with a distillation stage's teacher on the same batch), and the check that stops it when its loss
stops being finite."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import image_spec
from emotion_tfds import preprocess
from emotion_tfds import workers
from emotion_tfds.data import augment
from emotion_tfds.train import teacher as teacher_lib
from emotion_tfds.train import weight_averages


class TrainingModel(keras.Model):
  """`net` behind the uint8 -> float conversion, with on-device augmentation in training steps.

  Inputs are uint8 batches [B, 48, 48, 1] (or float32 [0, 1] batches already augmented on the
  host, passed through). Each training step computes the network's input once (augmented, or
  converted) and gives it to the network and, with a teacher, to the teacher too. Only `net`
  holds weights; it is what gets saved and exported.
  """

  def __init__(self, net: keras.Model, augment_params: augment.AugmentParams | None,
               stage_seed: int, host_augmented: bool = False,
               batch_norm_averages: weight_averages.BatchNormAverages | None = None,
               teacher: teacher_lib.Teacher | None = None, **kwargs):
    """Wraps `net`.

    Args:
      net: the network (float32 [0, 1] input).
      augment_params: augment uint8 training batches with these strengths; None: no augmentation.
      stage_seed: first element of every augmentation seed of this stage.
      host_augmented: training batches arrive float32, augmented by the input pipeline.
      batch_norm_averages: updated after each step (a stage with `ema`).
      teacher: distil from it in training steps (`compute_loss`); not tracked, so neither the
        optimizer nor a checkpoint of this model sees its weights.
    """
    super().__init__(name=f"training_{net.name}", **kwargs)
    self.net = net
    self.batch_norm_averages = batch_norm_averages
    self.teacher = teacher
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
    images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    logs = super().train_step(keras.utils.pack_x_y_sample_weight(
        self._training_input(images), labels, sample_weight))
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
    if workers.is_multi_worker(self.distribute_strategy):
      # Keras 3.15 averages the step's logs over workers with strategy.reduce(MEAN, v, axis=0),
      # which needs a batch axis: give each scalar one (keras-team/keras#20585).
      logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    """The compiled loss; in a training step with a teacher, (1 - w) times it (with any losses the
    network adds itself, none in this project's) plus w times the distillation term of the
    teacher's probabilities of the same input `x`."""
    loss = super().compute_loss(x, y, y_pred, sample_weight, training)
    if self.teacher is None or not training:
      return loss
    distillation = self.teacher.loss(self.teacher.probabilities(x), y_pred)
    return (1.0 - self.teacher.weight) * loss + self.teacher.weight * distillation

  def _training_input(self, images: tf.Tensor) -> tf.Tensor:
    """The network's float32 [0, 1] input of a training batch: augmented on the device, converted,
    or (augmented on the host) as it is."""
    if images.dtype != tf.uint8:
      return images
    if self._augment_params is None:
      return preprocess.to_model_input(images)
    return augment.augment_batch(images, self._step_seed(), self._augment_params)

  def _step_seed(self) -> tf.Tensor:
    """Stateless seed [2]: (stage seed, optimizer step * replicas + replica id)."""
    context = tf.distribute.get_replica_context()
    replica = tf.cast(context.replica_id_in_sync_group if context else 0, tf.int64)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    step = tf.cast(self.optimizer.iterations, tf.int64) * replicas + replica
    return tf.stack([tf.constant(self._stage_seed, tf.int64), step])

  def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    if images.dtype != tf.uint8:  # Already the network's input (`_training_input`).
      return self.net(images, training=training)
    return preprocess.network_probabilities(self.net, images, training=training)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
  """Raises `errors.NonFiniteLossError` after the first step whose loss is NaN or infinite.

  Keras logs the epoch's running mean of the loss, which stays non-finite from that step on. The
  error comes before the epoch's checkpoint, so the last checkpoint holds finite weights.
  """

  def __init__(self, stage_label: str, steps: int):
    """`stage_label`: the stage's name and place ("main 2/3"); `steps`: its steps per epoch."""
    super().__init__()
    self._stage_label = stage_label
    self._steps = steps
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    loss = float(tf.reshape(logs["loss"], []))  # Shape [1] under MultiWorkerMirroredStrategy.
    if not math.isfinite(loss):
      raise errors.NonFiniteLossError(
          f"stage {self._stage_label}: the training loss is {loss} at epoch {self._epoch + 1}, "
          f"step {batch + 1} of {self._steps}: training diverged. Lower the stage's lr or clip its "
          "gradients (clip=C) in a new --model_dir, or, if it trained in bfloat16 or float16, "
          "resume it from its last checkpoint with --precision=float32.")
