"""tf.distribute strategies by name (which task is the chief: `emotion_tfds.workers`)."""

from __future__ import annotations

import tensorflow as tf

from emotion_tfds import errors

STRATEGIES: tuple[str, ...] = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
  """Creates the tf.distribute strategy `name` (see STRATEGIES).

  "multi_worker" reads the cluster from TF_CONFIG; "tpu" connects to `tpu` ("" = local TPU VM).
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    except ValueError as e:  # No TPU here and no --tpu name: "Please provide a TPU Name ...".
      raise errors.StrategyUnavailableError(
          f"--strategy=tpu: no TPU found on this machine ({e}). Pass --tpu=<name or grpc "
          "address>, or run on a TPU VM.") from None
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")


def device_kinds(strategy: tf.distribute.Strategy) -> frozenset[str]:
  """The kinds of device `strategy` trains on: {"TPU"} under a TPUStrategy, else the kinds of
  this process's logical devices ("CPU", "GPU"), which the other strategies use."""
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return frozenset({"TPU"})
  return frozenset(device.device_type for device in tf.config.list_logical_devices())
