"""Which task of a tf.distribute cluster this is: the chief, and whether there are several workers.

Multi-worker runs follow the standard MultiWorkerMirroredStrategy pattern: every worker runs the
same calls, only the chief prints and writes into the shared model_dir, the others write into
temporary folders. Training and the TensorBoard reports both ask, so it lives below both.
"""

from __future__ import annotations

import tensorflow as tf


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` is a MultiWorkerMirroredStrategy over more than one task."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return False
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return sum(len(tasks) for tasks in cluster.values()) > 1


def is_chief_worker(strategy: tf.distribute.Strategy) -> bool:
  """True unless `strategy` runs on a cluster in which this task is not the chief."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type or resolver.task_type == "chief":
    return True
  return (resolver.task_type == "worker" and resolver.task_id == 0
          and "chief" not in resolver.cluster_spec().as_dict())
