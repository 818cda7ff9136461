"""Tests for emotion_tfds.train.precision and training under each precision: the choice for every
kind of hardware, float32 state under bfloat16, a resume under another precision (float16's loss
scale included), and the stop at a non-finite loss."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import experiment
from emotion_tfds import models
from emotion_tfds.data import augment
from emotion_tfds.train import checkpoints
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import loop
from emotion_tfds.train import precision
from emotion_tfds.train import stages
from emotion_tfds.train import training_model
from emotion_tfds.train import weight_averages

_ZEN4 = frozenset("fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni".split())
_SAPPHIRE_RAPIDS = _ZEN4 | {"amx_tile", "amx_int8", "amx_bf16"}
_HASWELL = frozenset("fpu sse2 avx avx2 fma".split())


class ChooseTest(absltest.TestCase):

  def test_every_branch(self):
    cases = [  # (device kinds, CPU flags) -> precision, words of the reason
        (({"CPU", "TPU"}, _HASWELL), "bfloat16", "TPU"),
        (({"CPU", "GPU"}, _SAPPHIRE_RAPIDS), "float16", "GPU"),
        (({"CPU"}, _SAPPHIRE_RAPIDS), "bfloat16", "AMX-BF16"),
        (({"CPU"}, _ZEN4), "bfloat16", "AVX512-BF16 (avx512_bf16, no AMX)"),
        (({"CPU"}, _HASWELL), "float32", "neither amx_bf16 nor avx512_bf16"),
        (({"CPU"}, frozenset()), "float32", "unknown"),
    ]
    for (kinds, flags), expected, reason in cases:
      with self.subTest(kinds=kinds, expected=expected):
        chosen, why = precision.choose(kinds, flags)
        self.assertEqual(chosen, expected)
        self.assertIn(reason, why)
        self.assertEqual(precision.resolve("auto", kinds, flags), (chosen, why))

  def test_a_requested_precision_is_kept_and_an_unknown_one_refused(self):
    for requested in ("float32", "bfloat16", "float16"):
      self.assertEqual(precision.resolve(requested, {"CPU"}, _SAPPHIRE_RAPIDS),
                       (requested, f"--precision={requested}"))
    with self.assertRaisesRegex(ValueError, "Unknown precision 'half'"):
      precision.resolve("half", {"CPU"}, _ZEN4)
    self.assertEqual(set(precision.KERAS_POLICIES), set(precision.PRECISIONS) - {"auto"})

  def test_the_old_mixed_precision_flag(self):
    self.assertEqual(precision.mixed({"CPU", "GPU"}), "float16")
    self.assertEqual(precision.mixed({"CPU"}), "bfloat16")
    self.assertEqual(precision.mixed({"CPU", "TPU"}), "bfloat16")

  def test_cpu_flags_from_cpuinfo_and_without_it(self):
    root = support.tempdir(self)
    x86 = root / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu other\n")
    self.assertEqual(precision.cpu_flags(x86), {"fpu", "avx512f", "avx512_bf16"})
    arm = root / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    self.assertEqual(precision.cpu_flags(arm), {"fp", "asimd", "bf16", "i8mm"})
    (root / "none").write_text("processor\t: 0\n")
    self.assertEqual(precision.cpu_flags(root / "none"), frozenset())
    self.assertEqual(precision.cpu_flags(root / "absent"), frozenset())
    self.assertEqual(precision.cpu_flags(root), frozenset())  # A folder: unreadable.
    if pathlib.Path(precision.CPUINFO).exists():
      self.assertIn("fpu", precision.cpu_flags())  # Every x86 CPU; ARM lists "fp".


class Bfloat16StateTest(absltest.TestCase):
  """Under bfloat16 the network computes in bfloat16 and everything it keeps is float32."""

  def test_variables_optimizer_ema_and_batch_norm_averages_stay_float32(self):
    keras.mixed_precision.set_global_policy(precision.KERAS_POLICIES["bfloat16"])
    try:
      net = models.MODELS["fastnet_small"](num_classes=7)
      batch_norm = weight_averages.BatchNormAverages(net, 0.9)
      trainer = training_model.TrainingModel(net, augment.AugmentParams(), stage_seed=1,
                                             batch_norm_averages=batch_norm)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    trainer.compile(optimizer=stages.make_optimizer("nesterov", 0.05, ema=0.9),
                    loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1), dtype=np.uint8)
    trainer.train_on_batch(images, np.arange(8) % 7)

    self.assertEqual(net.get_layer("stem_conv").compute_dtype, "bfloat16")
    self.assertEqual(net(tf.zeros([1, 48, 48, 1])).dtype, tf.float32)  # The softmax output.
    kept = {"weights": net.weights, "optimizer": trainer.optimizer.variables,
            "ema": weight_averages.averages(trainer.optimizer),
            "batch_norm": weight_averages.batch_norm_statistics(net),
            "batch_norm_averages": batch_norm.averages}
    for name, variables in kept.items():
      self.assertNotEmpty(variables, name)
      floats = {v.dtype for v in variables if "int" not in v.dtype}
      self.assertEqual(floats, {"float32"}, name)
    self.assertFalse(np.array_equal(batch_norm.averages[0].numpy(), np.zeros_like(
        batch_norm.averages[0].numpy())))


def _config(model_dir, data_dir, spec: str, **kwargs) -> config_lib.TrainConfig:
  return config_lib.TrainConfig(model_dir=str(model_dir), data_dir=data_dir,
                                stages=tuple(stages.parse_stages(spec)), validate=False,
                                max_steps_per_epoch=2, verbose=0, **kwargs)


class _StopAfterEpoch(keras.callbacks.Callback):
  """Raises at the end of epoch `epoch` (0-based), before its checkpoint."""

  class Stop(Exception):
    pass

  def __init__(self, epoch: int):
    super().__init__()
    self._epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    if epoch == self._epoch:
      raise self.Stop()


def _train(config: config_lib.TrainConfig, stop_after: int | None = None) -> str:
  """Runs `loop.train`, stopped after epoch `stop_after` if given; returns what it printed."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    if stop_after is None:
      loop.train(config)
    else:
      try:
        loop.train(config, extra_callbacks=[_StopAfterEpoch(stop_after)])
      except _StopAfterEpoch.Stop:
        pass
      else:
        raise AssertionError(f"training did not stop after epoch {stop_after}")
  return out.getvalue()


def _checkpoint_entries(model_dir: pathlib.Path) -> list[str]:
  progress = checkpoints.read_progress(str(model_dir / checkpoints.CKPT_DIR))
  return [name for name, _ in tf.train.list_variables(progress.path)]


class ResumeUnderAnotherPrecisionTest(support.WithGeneratedData, absltest.TestCase):

  def test_float16_then_float32_then_float16(self):
    """Each resume restores every object; float16's loss scale is checkpointed beside the inner
    optimizer, dropped under float32 and started afresh when float16 comes back."""
    model_dir = support.tempdir(self)
    spec = "all:4:1e-3:16:ema=0.9"
    ckpt_dir = str(model_dir / checkpoints.CKPT_DIR)

    out = _train(_config(model_dir, self.data_dir, spec, precision="float16"), stop_after=1)
    self.assertIn("Precision: float16 (--precision=float16).", out)
    progress = checkpoints.read_progress(ckpt_dir)
    self.assertEqual((progress.epoch, progress.precision), (1, "float16"))
    entries = _checkpoint_entries(model_dir)
    self.assertTrue(any(e.startswith("loss_scale/") for e in entries), entries)
    self.assertTrue(any(e.startswith("optimizer/") for e in entries), entries)

    out = _train(_config(model_dir, self.data_dir, spec, precision="float32"), stop_after=2)
    self.assertIn("The precision changed from float16 to float32.", out)
    progress = checkpoints.read_progress(ckpt_dir)
    self.assertEqual((progress.epoch, progress.precision), (2, "float32"))
    self.assertFalse(any(e.startswith("loss_scale/") for e in _checkpoint_entries(model_dir)))

    out = _train(_config(model_dir, self.data_dir, spec, precision="float16"))
    self.assertIn("The precision changed from float32 to float16.", out)
    progress = checkpoints.read_progress(ckpt_dir)
    self.assertEqual((progress.epoch, progress.precision), (4, "float16"))
    # Everything checkpointed stayed float32 (or an integer or string) throughout.
    dtypes = tf.train.load_checkpoint(progress.path).get_variable_to_dtype_map()
    self.assertEqual({dtype for dtype in dtypes.values() if dtype.is_floating}, {tf.float32})
    self.assertEqual(keras.mixed_precision.global_policy().name, "float32")  # The caller's.


class PretrainedFileTest(support.WithGeneratedData, absltest.TestCase):

  def test_a_float32_keras_file_trains_in_the_runs_precision_and_the_manifest_says_so(self):
    root = support.tempdir(self)
    file_net = models.MODELS["fastnet_small"](num_classes=6)  # Saved under float32.
    file_net.save(root / "float32.keras")
    config = _config(root / "run", self.data_dir, "head:1:1e-3:16", precision="bfloat16",
                     model="fastnet_small", pretrained=str(root / "float32.keras"))
    with contextlib.redirect_stdout(io.StringIO()):
      net = experiment.run_experiment(config).model
    self.assertEqual(net.get_layer("stem_conv").compute_dtype, "bfloat16")
    self.assertEqual(net.get_layer("predictions").compute_dtype, "float32")
    self.assertEqual({w.dtype for w in net.weights}, {"float32"})
    for layer in ("stem_conv", "stage1_1_bn"):  # The frozen base kept the file's weights.
      for a, b in zip(net.get_layer(layer).get_weights(), file_net.get_layer(layer).get_weights(),
                      strict=True):
        np.testing.assert_array_equal(a, b)
    written = json.loads((root / "run" / "manifest.json").read_text())
    self.assertEqual(written["precision"], "mixed_bfloat16")


class OlderCheckpointTest(absltest.TestCase):
  """Checkpoints of the version before the precision was recorded still resume."""

  def test_unrecorded_precision_and_the_retired_mixed_precision_field(self):
    ckpt_dir = support.tempdir(self)
    old_fingerprint = "model=base_cnn;seed=0;mixed_precision=False;stages=all:1"
    written = checkpoints.Counters(old_fingerprint, "float32")
    written.global_step.assign(4)
    old = {name: v for name, v in written.objects().items() if name != "precision"}
    tf.train.CheckpointManager(tf.train.Checkpoint(**old), str(ckpt_dir), 1).save(4)

    progress = checkpoints.read_progress(str(ckpt_dir))
    self.assertEqual(progress.precision, checkpoints.UNRECORDED)
    current = "model=base_cnn;seed=0;stages=all:1"
    self.assertEqual(checkpoints.fingerprint_difference(progress.fingerprint, current), "")
    self.assertEqual(checkpoints.fingerprint_difference(progress.fingerprint,
                                                        current.replace("seed=0", "seed=1")),
                     "seed: 0 -> 1")
    counters = checkpoints.Counters(current, "bfloat16")
    checkpoints.restore(counters.objects(), progress)
    self.assertEqual(int(counters.global_step.numpy()), 4)
    self.assertEqual(counters.precision.numpy(), b"bfloat16")


class NonFiniteLossTest(support.WithGeneratedData, absltest.TestCase):

  def test_a_diverging_stage_stops_with_its_stage_epoch_and_step(self):
    model_dir = support.tempdir(self)
    config = _config(model_dir, self.data_dir, "warm:all:1:1e-3:16,blowup:all:2:1e30:16:sgd",
                     precision="float32")
    with self.assertRaisesRegex(
        errors.NonFiniteLossError,
        r"^stage blowup 2/2: the training loss is (nan|inf) at epoch 1, step 2 of 2: training "
        r"diverged\. Lower the stage's lr .*--precision=float32\.$"):
      _train(config)
    # The stage's first epoch wrote no checkpoint: the last one is the end of the first stage.
    progress = checkpoints.read_progress(str(model_dir / checkpoints.CKPT_DIR))
    self.assertEqual((progress.stage, progress.epoch), (0, 1))


if __name__ == "__main__":
  absltest.main()
