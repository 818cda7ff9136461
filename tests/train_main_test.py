"""End-to-end tests of train_main.py in subprocesses: the default run on freshly generated faces,
and a run killed with SIGKILL mid-stage that, started again, ends with the weights of an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

from absl.testing import absltest
import h5py
import keras
import numpy as np
import pytest
import support
import tensorflow as tf

from emotion_tfds.report import curves
from emotion_tfds.train import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]
_TIMEOUT_S = 300
_ROWS = 1400
# The default run with a small generated dataset and a short schedule (fer7 pretraining, the head
# swap to seed6, head and all stages): ~250 steps of 16 images are what the seed's CNN needs on
# these faces to get well past chance (it sits at chance for the first ~100 steps).
_DEFAULT_RUN = (f"--generate_rows={_ROWS}", "--pretrain_stages=all:2:5e-4:16",
                "--stages=head:1:5e-4:16,all:1:5e-4:16", "--deterministic", "--progress=none")
# A deterministic run with on-device augmentation whose 4-epoch all stage gets killed (float32:
# its weights are compared with an uninterrupted run's, which "auto" could change elsewhere).
_KILLED_RUN = ("--pretrain_stages=all:1:1e-3:16", "--stages=head:1:1e-3:16,all:4:1e-3:16",
               "--max_steps_per_epoch=6", "--deterministic", "--precision=float32",
               "--progress=none")
_KILLED_STAGE = 2  # Index of the all stage in the schedule (pretrain, head, all).
# The GPU/TPU code paths on this CPU: XLA-compiled train step, bfloat16 compute, float32 variables
# (through the old --mixed_precision flag, an alias of --precision=bfloat16 on a CPU).
_ACCELERATOR_RUN = ("--dataset=fer2013/fer7", "--model=fastnet", "--pretrain_stages=",
                    "--stages=main:all:3:0.05:16:nesterov:schedule=cosine:wd=5e-4",
                    "--max_steps_per_epoch=6", "--jit_compile", "--mixed_precision",
                    "--progress=none")
_KILLED_EPOCHS = 4


def _command(data_dir, model_dir, flags) -> list[str]:
  return [sys.executable, str(REPO / "train_main.py"), f"--data_dir={data_dir}",
          f"--model_dir={model_dir}", *flags]


def _env() -> dict[str, str]:
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _run(command: list[str]) -> str:
  done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True,
                        timeout=_TIMEOUT_S)
  if done.returncode:
    raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
  return done.stdout


def _progress(model_dir: pathlib.Path) -> checkpoints.Progress | None:
  try:
    return checkpoints.read_progress(str(model_dir / checkpoints.CKPT_DIR))
  except Exception:  # pylint: disable=broad-except  (a checkpoint being replaced while read)
    return None


class DefaultRunTest(absltest.TestCase):

  def test_generates_trains_evaluates_and_exports(self):
    root = support.tempdir(self)
    model_dir = root / "run"
    output = _run(_command(root / "data", model_dir, _DEFAULT_RUN))
    self.assertIn(f"generating {_ROWS} faces", output)
    self.assertRegex(output, r"\[stage2_all 3/3\] epoch 1/1: .*accuracy .* images/s")
    self.assertIn("Evaluation of the final model on fer2013/seed6 test", output)
    for emotion in ("angry", "disgust", "happy", "neutral", "sad", "surprise"):
      self.assertRegex(output, rf"\n{emotion} +\d+ +\d\.\d+ ")
    report = json.loads((model_dir / "eval_test.json").read_text())
    self.assertGreater(report["totals"]["accuracy"], 0.3, "6 classes: chance is 0.17")
    self.assertTrue((model_dir / "model.keras").exists())
    self.assertTrue((model_dir / "saved_model" / "saved_model.pb").exists())
    self.assertLen(list((model_dir / "tb").glob("*/events.out.tfevents.*")), 3)
    # The TensorBoard curves read back: stages in run order, one point per epoch, and the last
    # validation accuracy is the one the epoch line printed.
    stages = curves.read_run(model_dir)
    self.assertEqual([(s.name, s.epochs()) for s in stages],
                     [("pretrain1_all", 2), ("stage1_head", 1), ("stage2_all", 1)])
    printed = re.search(r"\[stage2_all 3/3\] epoch 1/1: .*eval_accuracy ([\d.]+)", output)
    self.assertAlmostEqual(stages[-1].values[curves.EVAL_ACCURACY][0], float(printed[1]),
                           delta=1e-4)
    # What a person would check in TensorBoard, through its HTTP API (tools/check_tensorboard.py).
    checked = subprocess.run(
        [sys.executable, str(REPO / "tools" / "check_tensorboard.py"), f"--logdir={model_dir}/tb"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=_TIMEOUT_S)
    self.assertEqual(checked.returncode, 0, f"{checked.stdout}\n{checked.stderr[-3000:]}")
    self.assertIn("stages continue one epoch axis", checked.stdout)
    self.assertRegex(checked.stdout, r"(\d+) of \1 checks passed")


@pytest.mark.usefixtures("data_dir")
class KillResumeTest(absltest.TestCase):

  def _kill_in_stage(self, command: list[str], model_dir: pathlib.Path, stage: int,
                     epochs: int) -> checkpoints.Progress:
    """Runs `command` and SIGKILLs it once stage `stage` has checkpointed an epoch."""
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
      deadline = time.monotonic() + _TIMEOUT_S
      while True:
        progress = _progress(model_dir)
        if progress and progress.stage == stage and progress.epoch >= 1:
          break
        self.assertIsNone(process.poll(), "the run ended before it could be killed")
        self.assertLess(time.monotonic(), deadline, "no checkpoint of the stage appeared")
        time.sleep(0.02)
      process.send_signal(signal.SIGKILL)
      process.wait(timeout=60)
    finally:
      if process.poll() is None:
        process.kill()
    self.assertEqual(process.returncode, -signal.SIGKILL)
    progress = _progress(model_dir)
    self.assertEqual(progress.stage, stage)
    self.assertLess(progress.epoch, epochs, "killed after the stage had finished")
    return progress

  def test_sigkill_mid_stage_then_restart_matches_uninterrupted(self):
    root = support.tempdir(self)
    reference_dir, model_dir = root / "uninterrupted", root / "killed"
    # The uninterrupted run goes on beside the killed one (the two share nothing but the data).
    reference = subprocess.Popen(_command(self.data_dir, reference_dir, _KILLED_RUN), cwd=REPO,
                                 env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
    try:
      command = _command(self.data_dir, model_dir, _KILLED_RUN)
      progress = self._kill_in_stage(command, model_dir, _KILLED_STAGE, _KILLED_EPOCHS)

      output = _run(command)
      self.assertIn(f"Resuming from {progress.path}: stage {_KILLED_STAGE + 1}/3", output)
      self.assertNotIn("[stage1_head", output)
      self.assertIn(f"[stage2_all 3/3] epoch {_KILLED_EPOCHS}/{_KILLED_EPOCHS}", output)
      _, stderr = reference.communicate(timeout=_TIMEOUT_S)
    finally:
      if reference.poll() is None:
        reference.kill()
    self.assertEqual(reference.returncode, 0, stderr[-5000:])
    final, reference = _progress(model_dir), _progress(reference_dir)
    self.assertEqual((final.stage, final.epoch, final.global_step),
                     (reference.stage, reference.epoch, reference.global_step))
    resumed = keras.models.load_model(model_dir / "model.keras").get_weights()
    uninterrupted = keras.models.load_model(reference_dir / "model.keras").get_weights()
    for a, b in zip(resumed, uninterrupted, strict=True):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

  def test_xla_and_bfloat16_run_resumes_after_sigkill_and_exports_float32(self):
    """The accelerator code paths on this CPU: an XLA-compiled step with bfloat16 compute."""
    model_dir = support.tempdir(self) / "accelerator"
    command = _command(self.data_dir, model_dir, _ACCELERATOR_RUN)
    progress = self._kill_in_stage(command, model_dir, 0, 3)
    output = _run(command)
    self.assertIn("--mixed_precision is an alias of --precision=bfloat16", output)
    self.assertIn("Precision: bfloat16 (--precision=bfloat16).", output)
    self.assertEqual(progress.precision, "bfloat16")
    self.assertIn(f"Resuming from {progress.path}: stage 1/1", output)
    self.assertIn("[main 1/1] epoch 3/3", output)
    net = keras.models.load_model(model_dir / "model.keras")
    self.assertEqual({w.dtype for w in net.weights}, {"float32"})
    serving = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"]
    probabilities = serving(images=tf.zeros([2, 48, 48, 1], tf.uint8))["probabilities"]
    self.assertEqual(probabilities.dtype, tf.float32)
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, atol=1e-3)


@pytest.mark.usefixtures("data_dir", "keras2_release")
class PretrainedRunTest(absltest.TestCase):
  """--pretrained with files this project did not write, through the whole main."""

  def test_keras2_h5_and_user_sequential_train_and_an_unusable_model_is_refused(self):
    root = support.tempdir(self)
    user = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.MaxPooling2D(4), keras.layers.Flatten(),
                             keras.layers.Dense(7, activation="softmax")])
    user.save(root / "user.keras")
    keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Conv2D(4, 3)]).save(root / "bad.keras")
    head_only = ("--pretrain_stages=", "--stages=head:1:1e-3:16", "--max_steps_per_epoch=3",
                 "--progress=none")
    runs = {"keras2": ("--dataset=fer2013/seed6", f"--pretrained={self.keras2 / 'weights.h5'}"),
            "user": ("--dataset=fer2013/fer7", f"--pretrained={root / 'user.keras'}"),
            "bad": ("--dataset=fer2013/fer7", f"--pretrained={root / 'bad.keras'}")}
    processes = {
        name: subprocess.Popen(_command(self.data_dir, root / name, (*head_only, *flags)),
                               cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for name, flags in runs.items()}
    results = {name: (p.communicate(timeout=_TIMEOUT_S), p.returncode)
               for name, p in processes.items()}

    for name in ("keras2", "user"):
      (_, stderr), returncode = results[name]
      self.assertEqual(returncode, 0, f"{name}: {stderr[-3000:]}")
    # A head-only stage leaves the pretrained base as the file had it.
    trained = keras.models.load_model(root / "keras2" / "model.keras")
    self.assertEqual(trained.output_shape, (None, 6))
    keras2_kernel = _keras2_layer_weights(self.keras2 / "weights.h5", "conv2d")[0]
    np.testing.assert_array_equal(trained.get_layer("block1_conv1").get_weights()[0], keras2_kernel)
    trained = keras.models.load_model(root / "user" / "model.keras")
    self.assertEqual(trained.layers[-1].name, "predictions")
    np.testing.assert_array_equal(trained.layers[1].get_weights()[0], user.layers[0].get_weights()[0])

    (_, stderr), returncode = results["bad"]
    self.assertEqual(returncode, 1, stderr[-2000:])
    self.assertNotIn("Traceback", stderr)
    self.assertRegex(stderr, r"error: .*bad\.keras: its last layer '\w+' is a Conv2D; expected a "
                             r"Dense classifier")


def _keras2_layer_weights(path: pathlib.Path, layer: str) -> list[np.ndarray]:
  """The arrays of one layer of a Keras 2 save_weights file, read with h5py."""
  with h5py.File(path, "r") as f:
    return [np.asarray(f[layer][name]) for name in f[layer].attrs["weight_names"]]


class UserErrorsTest(absltest.TestCase):
  """Errors a user can fix end in one line that says how, not in a traceback."""

  def test_unbuilt_data_and_missing_tpu(self):
    root = support.tempdir(self)
    cases = {
        "not built": (["--generate_rows=0"], r"error: Dataset fer2013/seed6 is not built in .*"
                      r"tfds build builders/fer2013 --config=seed6"),
        "no tpu": (["--strategy=tpu"], r"error: --strategy=tpu: no TPU found on this machine.*"
                   r"--tpu="),
    }
    processes = {
        name: subprocess.Popen(_command(root / "empty", root / name, flags), cwd=REPO, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (flags, _) in cases.items()}
    for name, process in processes.items():
      with self.subTest(name):
        _, stderr = process.communicate(timeout=_TIMEOUT_S)
        self.assertEqual(process.returncode, 1, stderr[-2000:])
        self.assertNotIn("Traceback", stderr)
        error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
        self.assertLen(error_lines, 1, stderr[-2000:])
        self.assertRegex(error_lines[0], cases[name][1])
