"""A distillation stage's teacher: trained networks, frozen, whose mean probabilities the student
learns from (the stage options teacher=, distill_t=, distill_w=).

The teacher sees the student's own augmented batch of each step (`TrainingModel` computes it once
and feeds both) and runs in inference mode. Its networks are neither trainable nor tracked by the
training model, so the optimizer, the weight averages, the checkpoint and the saved network hold
only the student.
"""

from __future__ import annotations

from collections.abc import Sequence
import pathlib

import keras
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import image_spec

# Registers the custom layers (fastnet's SpaceToDepth) that load_model must find.
from emotion_tfds import models  # noqa: F401
from emotion_tfds.models import weights
from emotion_tfds.train import losses
from emotion_tfds.train import stages as stages_lib

# The class names beside a .keras file, one per line (serve.loader.LABELS_ASSET, which train/
# cannot import).
LABELS_FILE = "labels.txt"


class Teacher:
  """Frozen networks and the distillation term's settings.

  Attributes:
    nets: the teacher networks (float32 [0, 1] input, softmax output), not trainable.
    weight: w of the stage's loss (1 - w) * label loss + w * `loss`.
    loss: T^2 * KL(teacher || student) at the stage's temperature.
  """

  def __init__(self, nets: Sequence[keras.Model], temperature: float, weight: float):
    if not nets:
      raise ValueError("A teacher needs at least one network.")
    for net in nets:
      net.trainable = False
    self.nets = tuple(nets)
    self.weight = float(weight)
    self.loss = losses.DistillationLoss(temperature)

  def probabilities(self, images: tf.Tensor) -> tf.Tensor:
    """The networks' mean probabilities [B, C] (float32, no gradient) of float32 [0, 1] images
    [B, 48, 48, 1], in inference mode."""
    outputs = [tf.cast(net(images, training=False), tf.float32) for net in self.nets]
    return tf.stop_gradient(tf.add_n(outputs) / len(outputs))


def load(stage: stages_lib.Stage, label_names: Sequence[str]) -> Teacher | None:
  """The teacher of `stage` (None without teacher=), each network checked against the classes of
  the stage's dataset. Call under the strategy's scope (its variables are the strategy's).

  Args:
    stage: the stage; its `teacher` paths, `distill_temperature` and `distill_weight`.
    label_names: the class names of the stage's dataset, in output order.

  Raises:
    errors.MissingFileError: a teacher path does not exist.
    errors.UnusableModelError: not a `.keras` file or not a Keras model, or not a 48x48x1-input
      network.
    errors.ConfigError: a network with another class count, or a labels.txt beside it that names
      other classes or another order.
  """
  if not stage.teacher:
    return None
  return Teacher([_load_network(stage.name, path, tuple(label_names)) for path in stage.teacher],
                 stage.distill_temperature, stage.distill_weight)


def _load_network(stage_name: str, path: str, label_names: tuple[str, ...]) -> keras.Model:
  where = f"Stage {stage_name}: teacher {path}"
  file = pathlib.Path(path)
  if not file.exists():
    raise errors.MissingFileError(f"{where} does not exist; give a trained .keras file.")
  if file.suffix != ".keras":
    raise errors.UnusableModelError(f"{where} is not a .keras file (e.g. a run's model.keras).")
  try:
    net = weights.load_keras_file(file, "a trained .keras model (e.g. a run's model.keras)")
  except errors.UnusableModelError as e:
    raise errors.UnusableModelError(f"Stage {stage_name}: teacher {e}") from None
  if tuple(net.input_shape[1:]) != image_spec.IMAGE_SHAPE:
    raise errors.UnusableModelError(f"{where} takes input {net.input_shape[1:]}, not "
                                    f"{image_spec.IMAGE_SHAPE} faces.")
  if net.output_shape[-1] != len(label_names):
    raise errors.ConfigError(f"{where} predicts {net.output_shape[-1]} classes, the stage's "
                             f"dataset {len(label_names)} {label_names}; use a teacher trained on "
                             "the same dataset.")
  names_file = file.parent / LABELS_FILE
  if names_file.exists():
    names = tuple(line for line in names_file.read_text().splitlines() if line)
    if names != label_names:
      raise errors.ConfigError(f"{where}: {names_file} names the classes {names}, the stage's "
                               f"dataset {label_names}; use a teacher trained on the same dataset.")
  return net
