"""End-to-end tests of train_main.py in subprocesses: the default run on freshly generated faces,
the README's sequence from a fresh clone (default run, real-data build, recipe), and a run killed
with SIGKILL mid-stage that, started again, ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
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
import support
import tensorflow as tf

from emotion_tfds import labels

# Registers fastnet's SpaceToDepth, which load_model of a fastnet model.keras must find.
from emotion_tfds import models  # noqa: F401
from emotion_tfds.data import datasets
from emotion_tfds.data import facegen
from emotion_tfds.report import curves
from emotion_tfds.train import checkpoints
from emotion_tfds.train import precision

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
_ACCELERATOR_RUN = ("--dataset=generated_faces/fer7", "--model=fastnet", "--pretrain_stages=",
                    "--stages=main:all:3:0.05:16:nesterov:schedule=cosine:wd=5e-4",
                    "--max_steps_per_epoch=6", "--jit_compile", "--mixed_precision",
                    "--progress=none")
_KILLED_EPOCHS = 4
# The README's commands at test size: the default run (generated faces, one step per stage), then
# a recipe on the real data (its flagfile with a one-epoch, one-step schedule).
_TINY_DEFAULT_RUN = ("--generate_rows=300", "--pretrain_stages=all:1:1e-3:16",
                     "--stages=all:1:1e-3:16", "--max_steps_per_epoch=1", "--progress=none")
_TINY_RECIPE = (f"--flagfile={REPO / 'configs' / 'fer7_fast.cfg'}",
                "--stages=main:all:1:0.05:16:nesterov:schedule=cosine:ema=0.999",
                "--max_steps_per_epoch=1", "--progress=none")


def _command(data_dir, model_dir, flags) -> list[str]:
  return [sys.executable, str(REPO / "train_main.py"), f"--data_dir={data_dir}",
          f"--model_dir={model_dir}", *flags]


def _recipe_command(data_dir, model_dir) -> list[str]:
  """The recipe; --data_dir and --model_dir after the flagfile, which sets --model_dir too."""
  return [sys.executable, str(REPO / "train_main.py"), *_TINY_RECIPE, f"--data_dir={data_dir}",
          f"--model_dir={model_dir}"]


def _tfds_build_fer7(manual_dir, data_dir) -> subprocess.CompletedProcess:
  """The README's `tfds build builders/fer2013 --manual_dir=DIR --data_dir=... --config=fer7`."""
  return subprocess.run(
      [str(pathlib.Path(sys.executable).parent / "tfds"), "build", "builders/fer2013",
       f"--manual_dir={manual_dir}", f"--data_dir={data_dir}", "--config=fer7"],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=_TIMEOUT_S)


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


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
    self.assertRegex(output, r"(?m)^Data: generated_faces/fer7 1\.0\.0: generated faces, 1,400 "
                     r"rows, seed 0 \(fer2013\.csv sha256 [0-9a-f]{12}\), train 1,120 / validation "
                     r"140 / test 140$")
    self.assertFalse((root / "data" / "fer2013").exists())
    self.assertRegex(output, r"\[stage2_all 3/3\] epoch 1/1: .*accuracy .* images/s")
    self.assertIn("Evaluation of the final model on generated_faces/seed6 test", output)
    for emotion in ("angry", "disgust", "happy", "neutral", "sad", "surprise"):
      self.assertRegex(output, rf"\n{emotion} +\d+ +\d\.\d+ ")
    report = json.loads((model_dir / "eval_test.json").read_text())
    self.assertGreater(report["totals"]["accuracy"], 0.3, "6 classes: chance is 0.17")
    self.assertTrue((model_dir / "model.keras").exists())
    self.assertTrue((model_dir / "saved_model" / "saved_model.pb").exists())
    # TensorBoard's runs: one per stage, one per emotion, the run-level summaries (no ".").
    self.assertCountEqual(support.tensorboard_runs(model_dir / "tb"), [
        "pretrain1_all", "stage1_head", "stage2_all", "run",
        *(f"per_emotion/{emotion}" for emotion in labels.FER7)])
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


class ReadmeSequenceTest(support.WithGeneratedData, absltest.TestCase):
  """The README from a fresh clone: the default run, the real data's `tfds build`, a recipe."""

  def test_the_recipe_trains_on_the_csv_built_after_the_default_run(self):
    root = support.tempdir(self)
    data_dir = root / "data"
    default = _run(_command(data_dir, root / "default", _TINY_DEFAULT_RUN))
    self.assertRegex(default, r"(?m)^Data: generated_faces/seed6 1\.0\.0: generated faces, 300 "
                     r"rows, seed 0 \(fer2013\.csv sha256 [0-9a-f]{12}\), train \d+")
    self.assertFalse((data_dir / "fer2013").exists())
    # A csv of FER-2013's form (no generated.json beside it: built as fer2013, like Kaggle's).
    csv_path = facegen.write_csv(root / "kaggle" / "fer2013.csv", num_rows=140, seed=7)

    built = _tfds_build_fer7(csv_path.parent, data_dir)
    self.assertEqual(built.returncode, 0, built.stderr[-3000:])
    self.assertNotIn("Reusing", built.stdout + built.stderr)
    recipe = _run(_recipe_command(data_dir, root / "recipe"))
    sha = _sha256(csv_path)
    self.assertIn(f"Data: fer2013/fer7 1.1.0 from fer2013.csv sha256 {sha[:12]}, train 112 / "
                  "validation 14 / test 14\n", recipe.splitlines(keepends=True))
    self.assertNotIn("generated faces", recipe)
    self.assertIn("Evaluation of the final model on fer2013/fer7 test", recipe)
    # The manifest, in model_dir and in the SavedModel's assets: flags, data, machine, code.
    written = json.loads((root / "recipe" / "manifest.json").read_text())
    self.assertEqual(json.loads((root / "recipe" / "saved_model" / "assets" / "manifest.json")
                                .read_text()), written)
    self.assertEqual(list(written["data"]), ["fer2013/fer7"])
    self.assertEqual((written["data"]["fer2013/fer7"]["source_sha256"],
                      written["data"]["fer2013/fer7"]["source_file"]), (sha, "fer2013.csv"))
    self.assertEqual((written["flags"]["dataset"], written["flags"]["model"],
                      written["flags"]["keep_best"], written["flags"]["model_dir"]),
                     ("fer2013/fer7", "fastnet_small", "accuracy", str(root / "recipe")))
    self.assertEqual(written["config"]["data_dir"], str(data_dir))
    # What --precision=auto takes on this machine (the recipe leaves it to auto).
    auto, _ = precision.choose({d.device_type for d in tf.config.list_physical_devices()},
                               precision.cpu_flags())
    self.assertEqual(written["precision"], precision.KERAS_POLICIES[auto])
    self.assertTrue(written["machine"]["cpu"]["model"])
    self.assertRegex(written["code"]["commit"], r"^([0-9a-f]{40}|unknown)$")
    self.assertEqual(set(written["versions"]),
                     {"python", "tensorflow", "keras", "tensorflow-datasets", "numpy"})

  def test_generated_faces_an_older_default_run_built_as_fer2013_are_refused_in_one_line(self):
    root = support.tempdir(self)
    data_dir = root / "data"
    old = support.old_default_layout(
        data_dir, pathlib.Path(self.data_dir) / "generated_faces" / "fer7" / "1.0.0", "fer7")
    refused = subprocess.run(_recipe_command(data_dir, root / "recipe"), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=_TIMEOUT_S)
    self.assertEqual(refused.returncode, 1, refused.stderr[-3000:])
    self.assertNotIn("Traceback", refused.stderr)
    self.assertNotIn("Stage ", refused.stdout)
    error_lines = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    self.assertLen(error_lines, 1, refused.stderr[-3000:])
    self.assertRegex(error_lines[0], rf"^error: {old} holds generated faces, not FER-2013: .* "
                     r"build the real fer2013/fer7 1\.1\.0 with `tfds build builders/fer2013 "
                     r"--config=fer7 ")
    # The real build goes beside it (a new version), and is what fer2013/fer7 then reads.
    csv_path = facegen.write_csv(root / "kaggle" / "fer2013.csv", num_rows=140, seed=7)
    built = _tfds_build_fer7(csv_path.parent, data_dir)
    self.assertEqual(built.returncode, 0, built.stderr[-3000:])
    self.assertEqual(
        datasets.provenance(datasets.require_built("fer2013/fer7", data_dir))["source_sha256"],
        _sha256(csv_path))


class KillResumeTest(support.WithGeneratedData, absltest.TestCase):

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


class PretrainedRunTest(support.WithGeneratedData, support.WithKeras2Files, absltest.TestCase):
  """--pretrained with files this project did not write, through the whole main."""

  def _run_pretrained(self, root: pathlib.Path, dataset: str,
                      pretrained: pathlib.Path) -> subprocess.CompletedProcess:
    flag_list = ("--pretrain_stages=", "--stages=head:1:1e-3:16", "--max_steps_per_epoch=3",
                 "--progress=none", f"--dataset={dataset}", f"--pretrained={pretrained}")
    return subprocess.run(_command(self.data_dir, root / "run", flag_list), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=_TIMEOUT_S)

  def test_keras2_h5_weights_train_a_seed6_head(self):
    root = support.tempdir(self)
    done = self._run_pretrained(root, "generated_faces/seed6", self.keras2 / "weights.h5")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    # A head-only stage leaves the pretrained base as the file had it.
    trained = keras.models.load_model(root / "run" / "model.keras")
    self.assertEqual(trained.output_shape, (None, 6))
    keras2_kernel = _keras2_layer_weights(self.keras2 / "weights.h5", "conv2d")[0]
    np.testing.assert_array_equal(trained.get_layer("block1_conv1").get_weights()[0], keras2_kernel)

  def test_a_user_sequential_trains_with_a_predictions_head(self):
    root = support.tempdir(self)
    user = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.MaxPooling2D(4), keras.layers.Flatten(),
                             keras.layers.Dense(7, activation="softmax")])
    user.save(root / "user.keras")
    done = self._run_pretrained(root, "generated_faces/fer7", root / "user.keras")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    trained = keras.models.load_model(root / "run" / "model.keras")
    self.assertEqual(trained.layers[-1].name, "predictions")
    np.testing.assert_array_equal(trained.layers[1].get_weights()[0],
                                  user.layers[0].get_weights()[0])

  def test_a_model_without_a_classifier_is_refused(self):
    root = support.tempdir(self)
    features = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Conv2D(4, 3)])
    features.save(root / "bad.keras")
    done = self._run_pretrained(root, "generated_faces/fer7", root / "bad.keras")
    self.assertEqual(done.returncode, 1, done.stderr[-2000:])
    self.assertNotIn("Traceback", done.stderr)
    self.assertRegex(done.stderr, r"error: .*bad\.keras: its last layer '\w+' is a Conv2D; "
                                  r"expected a Dense classifier")


def _keras2_layer_weights(path: pathlib.Path, layer: str) -> list[np.ndarray]:
  """The arrays of one layer of a Keras 2 save_weights file, read with h5py."""
  with h5py.File(path, "r") as f:
    return [np.asarray(f[layer][name]) for name in f[layer].attrs["weight_names"]]


class UserErrorsTest(absltest.TestCase):
  """Errors a user can fix end in one line that says how, not in a traceback."""

  def _assert_one_error_line(self, flag_list: list[str], pattern: str) -> None:
    root = support.tempdir(self)
    done = subprocess.run(_command(root / "empty", root / "run", flag_list), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=_TIMEOUT_S)
    self.assertEqual(done.returncode, 1, done.stderr[-2000:])
    self.assertNotIn("Traceback", done.stderr)
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    self.assertLen(error_lines, 1, done.stderr[-2000:])
    self.assertRegex(error_lines[0], pattern)

  def test_unbuilt_data(self):
    self._assert_one_error_line(["--generate_rows=0"],
                                r"error: Dataset generated_faces/seed6 is not built in .*"
                                r"--generate_rows=N.*tfds build builders/generated_faces .*"
                                r"--config=seed6")

  def test_missing_tpu(self):
    self._assert_one_error_line(["--strategy=tpu"],
                                r"error: --strategy=tpu: no TPU found on this machine.*--tpu=")

  def test_budget_on_a_step_schedule(self):
    self._assert_one_error_line(
        ["--time_budget=5", "--stages=main:all:2:1e-3:16:schedule=step:drops=1"],
        r"error: --time_budget chooses the epochs of stage main, whose schedule=step")
