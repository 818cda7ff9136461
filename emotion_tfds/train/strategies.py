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


def mixed_precision_policy(strategy: tf.distribute.Strategy) -> str:
  """The Keras policy of --mixed_precision: bfloat16 on TPUs and CPUs, float16 on GPUs."""
  if isinstance(strategy, tf.distribute.TPUStrategy) or not tf.config.list_logical_devices("GPU"):
    return "mixed_bfloat16"
  return "mixed_float16"
