"""Tests for emotion_tfds.workers: which task of a cluster is the chief. (Real multi-worker runs,
where every worker asks: distribute_test.)"""

from __future__ import annotations

import types

from absl.testing import absltest
import tensorflow as tf

from emotion_tfds import workers


def _on_task(cluster: dict[str, list[str]], task_type: str, task_id: int):
  """A strategy's view of task (`task_type`, `task_id`) of `cluster`: its cluster resolver."""
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
  return types.SimpleNamespace(cluster_resolver=resolver)


class WorkersTest(absltest.TestCase):

  def test_one_process_is_its_own_chief(self):
    for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0"])):
      with self.subTest(type(strategy).__name__):
        self.assertTrue(workers.is_chief_worker(strategy))
        self.assertFalse(workers.is_multi_worker(strategy))

  def test_the_chief_task_else_worker_0(self):
    two_workers = {"worker": ["a:1", "b:1"]}
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"], "evaluator": ["e:1"]}
    cases = [(two_workers, "worker", 0, True), (two_workers, "worker", 1, False),
             (with_chief, "chief", 0, True), (with_chief, "worker", 0, False),
             (with_chief, "worker", 1, False), (with_chief, "evaluator", 0, False)]
    for cluster, task_type, task_id, chief in cases:
      with self.subTest(cluster=sorted(cluster), task=f"{task_type}:{task_id}"):
        self.assertEqual(workers.is_chief_worker(_on_task(cluster, task_type, task_id)), chief)


if __name__ == "__main__":
  absltest.main()
