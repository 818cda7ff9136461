"""runs.run under MirroredStrategy (2 logical CPUs, host augmentation) and
MultiWorkerMirroredStrategy (2 worker processes on 127.0.0.1, device augmentation): a few real
steps (with ema=), and the replicas and the workers end with identical weights. The final
evaluation under MirroredStrategy: full static batches on every replica, every image counted once.

Each run is a fresh Python process: logical devices and TF_CONFIG must be set before TF starts.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import support

from emotion_tfds import labels
from emotion_tfds.data import datasets

REPO = pathlib.Path(__file__).resolve().parents[1]
_TIMEOUT_S = 240

# The child process: argv = mode ("mirrored" | "multi_worker"), data_dir, model_dir, out.npz.
_CHILD = r'''
import json, sys
import numpy as np
import tensorflow as tf
from emotion_tfds import experiment, workers
from emotion_tfds.train import config as config_lib, stages, strategies

mode, data_dir, model_dir, out = sys.argv[1:5]
if mode == "mirrored":
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
  strategy = strategies.make_strategy("multi_worker")
config = config_lib.TrainConfig(
    model_dir=model_dir, data_dir=data_dir, validate=False, max_steps_per_epoch=3, verbose=0,
    model="fastnet_small",  # BatchNorm: its statistics and their averages must stay in sync.
    stages=tuple(stages.parse_stages("all:1:1e-3:16:ema=0.9")), strategy=mode,  # EMA too.
    augment_on="host" if mode == "mirrored" else "device",  # Both augmentation paths.
    precision="float32")  # Compared exactly: not what "auto" picks on another machine.
result = experiment.run_experiment(config, strategy=strategy)
# The largest difference between the replicas' copies of any variable.
spread = 0.0
for v in result.model.weights:
  copies = [np.asarray(c) for c in strategy.experimental_local_results(v.value)]
  spread = max([spread] + [float(np.max(np.abs(c - copies[0]))) for c in copies])
np.savez(out, *result.model.get_weights())
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "spread": spread,
                              "chief": workers.is_chief_worker(strategy),
                              "steps": [h["epoch"] for h in result.history]}))
'''


# The final evaluation and the per-epoch validation under MirroredStrategy (2 logical CPUs) of
# fastnet_small (BatchNorm after a convolution: oneDNN gives a wrong shape on an empty batch):
# argv = data_dir. seed6's generated validation split has 120 images, under one global batch of
# 256 (128 per replica): unpadded, the second replica would get an empty batch. Prints the static
# batch shapes the prediction is traced with and the reports' counts per true emotion: final
# evaluation without and with flip TTA, then two epochs' validations.
_EVAL_CHILD = r'''
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from emotion_tfds import models, preprocess
from emotion_tfds.data import datasets
from emotion_tfds.report import evaluation, metrics
from emotion_tfds.train import inputs

traced = []
network_predict_fn = preprocess.predict_fn
def recording_predict_fn(net):
  predict = network_predict_fn(net)
  def recorded(images):
    traced.append(images.shape.as_list())
    return predict(images)
  return recorded
preprocess.predict_fn = recording_predict_fn

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
builder = datasets.get_builder("generated_faces/seed6", sys.argv[1])
with strategy.scope():
  net = models.build_fastnet_small(len(datasets.label_names(builder)))
reports = [evaluation.evaluate_network(net, builder, "validation", strategy, tta)
           for tta in ("none", "flip")]
validator = metrics.StreamingEvaluator(preprocess.predict_fn(net), datasets.label_names(builder),
                                       strategy=strategy)
validation = inputs.eval_dataset_fn(builder, "validation")
reports += [validator.evaluate(validation) for _ in range(2)]
counts = [report.confusion.sum(axis=1).tolist() for report in reports]
print("RESULT " + json.dumps({"traced": traced, "counts": counts}))
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class DistributeTest(support.WithGeneratedData, absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = pathlib.Path(tempfile.mkdtemp(prefix="distribute_test_"))
    self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
    self.child = self.root / "child.py"
    self.child.write_text(_CHILD)

  def _start(self, mode: str, name: str, tf_config: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
      env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, str(self.child), mode, self.data_dir, str(self.root / "model"),
         str(self.root / f"{name}.npz")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  def _finish(self, processes: list[subprocess.Popen]) -> list[dict]:
    results = []
    try:
      for process in processes:
        stdout, stderr = process.communicate(timeout=_TIMEOUT_S)
        if process.returncode:
          self.fail(f"child failed ({process.returncode}):\n{stdout[-2000:]}\n{stderr[-5000:]}")
        line = [l for l in stdout.splitlines() if l.startswith("RESULT ")][-1]
        results.append(json.loads(line[len("RESULT "):]))
    finally:
      for process in processes:
        if process.poll() is None:
          process.kill()
    return results

  def _weights(self, name: str) -> list[np.ndarray]:
    with np.load(self.root / f"{name}.npz") as data:
      return [data[f"arr_{i}"] for i in range(len(data.files))]

  def test_mirrored_two_logical_cpus(self):
    (result,) = self._finish([self._start("mirrored", "mirrored")])
    self.assertEqual(result["replicas"], 2)
    self.assertEqual(result["spread"], 0.0)
    self.assertTrue((self.root / "model" / "model.keras").exists())
    self.assertTrue(all(np.isfinite(w).all() for w in self._weights("mirrored")))

  def test_mirrored_evaluation_feeds_every_replica_full_static_batches(self):
    child = self.root / "eval_child.py"
    child.write_text(_EVAL_CHILD)
    process = subprocess.Popen([sys.executable, str(child), self.data_dir], cwd=REPO,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (result,) = self._finish([process])
    # Per replica: 128 images (256 / 2), twice that with the flipped views.
    self.assertEqual({tuple(shape) for shape in result["traced"]},
                     {(128, 48, 48, 1), (256, 48, 48, 1)})
    builder = datasets.get_builder("generated_faces/seed6", self.data_dir)
    true_labels = [int(label) for _, label in builder.as_dataset("validation", as_supervised=True)]
    expected = np.bincount(true_labels, minlength=len(labels.SEED6)).tolist()
    self.assertEqual(sum(expected), 120)  # One replica's share is padding only.
    self.assertEqual(result["counts"], [expected] * 4)

  def test_multi_worker_two_processes(self):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    processes = [
        self._start("multi_worker", f"worker{i}",
                    {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(2)]
    results = self._finish(processes)
    self.assertEqual([r["replicas"] for r in results], [2, 2])
    self.assertEqual([r["chief"] for r in results], [True, False])
    self.assertEqual(results[0]["steps"], results[1]["steps"])
    for a, b in zip(self._weights("worker0"), self._weights("worker1"), strict=True):
      np.testing.assert_array_equal(a, b)
    # Only the chief writes into model_dir.
    self.assertTrue((self.root / "model" / "model.keras").exists())
    self.assertLen(list((self.root / "model" / "ckpt").glob("ckpt-*.index")), 1)
