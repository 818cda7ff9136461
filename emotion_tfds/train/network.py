"""The network of each stage: built or loaded, heads swapped when the label scheme changes, and
which of its layers train."""

from __future__ import annotations

import keras

from emotion_tfds import models
from emotion_tfds import seeds
from emotion_tfds.data import datasets
from emotion_tfds.train import config as config_lib


def build_network(config: config_lib.TrainConfig, builders: dict, upto_stage: int) -> keras.Model:
  """The network as it is during stage `upto_stage`: built (or loaded), heads swapped as scheduled.

  A pretrained model gets a head for the first stage's classes (`models.load_pretrained`); later,
  the head is replaced wherever a stage's dataset has other label names than the previous stage's
  (e.g. 7-class pretraining on fer7, then seed6). Call under strategy.scope().
  """
  first = config.stage_dataset(config.stages[0])
  num_classes = len(datasets.label_names(builders[first]))
  if config.pretrained:
    # The head's order follows the first stage's ClassLabel names (not the config's name).
    net = _in_global_policy(models.load_pretrained(
        config.pretrained, num_classes, label_names=datasets.label_names(builders[first]),
        build_fn=models.MODELS[config.model]))
  else:
    net = models.MODELS[config.model](num_classes=num_classes)
  for index in range(1, upto_stage + 1):
    net = next_stage_network(config, builders, net, index)
  return net


def _in_global_policy(net: keras.Model) -> keras.Model:
  """`net` computing in the global Keras policy (the run's precision), not in the one a `.keras`
  file was saved under; its softmax "predictions" layer stays float32, as in every model here."""
  policy = keras.mixed_precision.global_policy().name
  final = models.head_layers(net)[-1]
  if all(layer.dtype_policy.name == policy for layer in net.layers
         if layer is not final and not isinstance(layer, keras.layers.InputLayer)):
    return net

  def clone_layer(layer):
    config = layer.get_config()
    if layer.name != final.name:
      config["dtype"] = policy
    return layer.__class__.from_config(config)

  clone = keras.models.clone_model(net, clone_function=clone_layer)
  clone.set_weights(net.get_weights())
  return clone


def next_stage_network(config: config_lib.TrainConfig, builders: dict, net: keras.Model,
                       index: int) -> keras.Model:
  """The network of stage `index` from stage `index - 1`'s: a new head if the label names change.

  The new head's initial weights depend only on (seed, index), so a resumed run gets the head an
  uninterrupted run got.
  """
  before = datasets.label_names(builders[config.stage_dataset(config.stages[index - 1])])
  after = datasets.label_names(builders[config.stage_dataset(config.stages[index])])
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
