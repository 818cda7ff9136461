"""Tests for emotion_tfds.train.loop: stage semantics, head swap, exports, checkpoints and resume.

Real training runs of a few steps on the generated faces of `support.generated_data_dir`.
"""

from __future__ import annotations

import json
import pathlib
from unittest import mock

from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from xprof.convert import raw_to_tool_data

from emotion_tfds import errors
from emotion_tfds import experiment
from emotion_tfds import labels
from emotion_tfds import models
from emotion_tfds.data import augment
from emotion_tfds.data import pipeline
from emotion_tfds.report import callbacks
from emotion_tfds.report import curves
from emotion_tfds.report import evaluation
from emotion_tfds.report import run_summaries
from emotion_tfds.serve import loader
from emotion_tfds.train import checkpoints
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import inputs
from emotion_tfds.train import keep_best
from emotion_tfds.train import loop
from emotion_tfds.train import profiling
from emotion_tfds.train import stages
from emotion_tfds.train import training_model
from emotion_tfds.train import weight_averages

_STEPS = 2  # Steps per epoch of every run here.


def _config(model_dir, data_dir, spec: str, pretrain: str = "", **kwargs) -> config_lib.TrainConfig:
  pretraining = (stages.parse_stages(pretrain, prefix="pretrain", dataset="generated_faces/fer7")
                 if pretrain else [])
  schedule = stages.with_pretraining(stages.parse_stages(spec), pretraining)
  # float32: these tests compare numbers exactly, which "auto" could change on an AMX machine.
  defaults = dict(validate=False, max_steps_per_epoch=_STEPS, verbose=0, precision="float32")
  defaults.update(kwargs)
  return config_lib.TrainConfig(model_dir=str(model_dir), data_dir=data_dir,
                              stages=tuple(schedule), **defaults)


def _layer_weights(net: keras.Model) -> dict[str, list[np.ndarray]]:
  return {layer.name: [w.numpy().copy() for w in layer.weights]
          for layer in net.layers if layer.weights}


def _changed(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
  return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


class _Snapshots(keras.callbacks.Callback):
  """Network weights at the start and end of every `fit` call (one call per epoch)."""

  def __init__(self):
    super().__init__()
    self.fits: list[dict] = []

  def on_train_begin(self, logs=None):
    self.fits.append({"begin": _layer_weights(self.model.net)})

  def on_train_end(self, logs=None):
    self.fits[-1]["end"] = _layer_weights(self.model.net)


class StagesTest(support.WithGeneratedData, absltest.TestCase):
  """One run: fer7 pretraining (all), head swap to seed6, a head stage, an all stage."""

  def _run(self):
    self.model_dir = support.tempdir(self)
    snapshots = _Snapshots()
    config = _config(self.model_dir, self.data_dir, "head:1:1e-2:16,all:1:1e-3:16",
                     pretrain="all:1:1e-3:16")
    result = experiment.run_experiment(config, extra_callbacks=[snapshots])
    return config, result, snapshots.fits

  def test_stage_semantics_head_swap_and_outputs(self):
    config, result, fits = self._run()
    self.assertLen(fits, 3)
    pretrain, head, everything = fits
    base = {layer.name for layer in models.base_layers(result.model) if layer.weights}
    self.assertIn("block1_conv1", base)

    # Pretraining on fer7 (7 classes) changes every weighted layer.
    self.assertEqual(pretrain["end"]["predictions"][0].shape[-1], 7)
    for name, weights in pretrain["begin"].items():
      self.assertTrue(_changed(weights, pretrain["end"][name]), name)

    # The head swap to seed6 keeps the base weights and gives a 6-class head.
    self.assertEqual(head["begin"]["predictions"][0].shape[-1], 6)
    for name in base:
      for a, b in zip(pretrain["end"][name], head["begin"][name], strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)

    # A head stage leaves the frozen base exactly as it was and trains the head.
    for name in base:
      self.assertFalse(_changed(head["begin"][name], head["end"][name]), name)
    self.assertTrue(_changed(head["begin"]["predictions"], head["end"]["predictions"]))

    # An all stage changes every weighted layer.
    for name, weights in everything["begin"].items():
      self.assertTrue(_changed(weights, everything["end"][name]), name)

    # Evaluation, report files, model.keras and a uint8 SavedModel.
    self.assertEqual(result.report.totals.count, 120)  # seed6 test split of the generated data.
    self.assertTrue((self.model_dir / "eval_test.json").exists())
    self.assertEqual(loader.load(self.model_dir / loader.MODEL_FILE).emotions(), labels.SEED6)
    loaded = keras.models.load_model(self.model_dir / loader.MODEL_FILE)
    images = np.random.default_rng(0).random((4, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               result.model.predict(images, verbose=0), atol=1e-6)
    saved = tf.saved_model.load(str(self.model_dir / loader.SAVED_MODEL_DIR))
    signature = saved.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["images"]
    self.assertEqual((spec.dtype, spec.shape.as_list()), (tf.uint8, [None, 48, 48, 1]))
    out = signature(images=tf.zeros([2, 48, 48, 1], tf.uint8))
    self.assertEqual(out["probabilities"].shape, (2, 6))

    # The manifest: the data of both datasets, the precision; the same in the SavedModel's assets.
    written = json.loads((self.model_dir / "manifest.json").read_text())
    self.assertEqual(set(written["data"]), {"generated_faces/fer7", "generated_faces/seed6"})
    seed6 = written["data"]["generated_faces/seed6"]
    self.assertEqual((seed6["generator"]["num_rows"], seed6["splits"]["test"]), (1400, 120))
    self.assertEqual((written["precision"], written["flags"]), ("float32", None))
    self.assertEqual(written["config"]["dataset"], config.dataset)
    self.assertEqual(json.loads((self.model_dir / loader.SAVED_MODEL_DIR / "assets" /
                                 "manifest.json").read_text()), written)

    # Started again, the finished run trains nothing and reproduces the evaluation.
    again = experiment.run_experiment(config)
    self.assertEqual(again.history, [])
    self.assertEqual(again.resumed_from, (2, 1))
    # The same predictions; the summed probabilities to float rounding (the order of a
    # multi-threaded reduction varies with the machine's load).
    np.testing.assert_array_equal(again.report.confusion, result.report.confusion)
    np.testing.assert_allclose(again.report.true_prob_sum, result.report.true_prob_sum,
                               rtol=1e-6)


class _StopAt(keras.callbacks.Callback):
  """Raises at the end of epoch `epoch` (0-based) of the `fit_index`-th fit (stage).

  That is a crash just before the epoch's checkpoint. Records the optimizer state at the end of
  the epoch before (the one the last checkpoint holds).
  """

  class Stop(Exception):
    pass

  def __init__(self, fit_index: int, epoch: int):
    super().__init__()
    self._fit_index = fit_index
    self._epoch = epoch
    self._fits = 0
    self.saved_state = None

  def on_train_begin(self, logs=None):
    self._fits += 1

  def on_epoch_end(self, epoch, logs=None):
    if self._fits != self._fit_index:
      return
    if epoch == self._epoch - 1:
      self.saved_state = _optimizer_state(self.model)
    if epoch == self._epoch:
      raise self.Stop()


def _optimizer_state(trainer: keras.Model) -> dict:
  optimizer = trainer.optimizer
  return {"iterations": int(optimizer.iterations.numpy()),
          # Paths without the optimizer's own name ("adam_3/..."), which counts optimizers made.
          "variables": {v.path.split("/", 1)[1]: v.numpy().copy() for v in optimizer.variables},
          "weights": _layer_weights(trainer.net),
          "batch_norm_averages": [v.numpy().copy() for v in trainer.batch_norm_averages.averages]
                                 if trainer.batch_norm_averages else []}


class _FirstState(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.state = None

  def on_train_begin(self, logs=None):
    if self.state is None:
      self.state = _optimizer_state(self.model)


class ResumeTest(support.WithGeneratedData, absltest.TestCase):

  def test_crashes_at_a_stage_end_and_mid_stage_resume_with_optimizer_state(self):
    model_dir = support.tempdir(self)
    ckpt_dir = model_dir / checkpoints.CKPT_DIR
    config = _config(model_dir, self.data_dir, "head:1:1e-3:16,all:3:1e-3:16")

    # 1. Crash in the all stage's first epoch: the last checkpoint closes the head stage.
    with self.assertRaises(_StopAt.Stop):
      loop.train(config, extra_callbacks=[_StopAt(fit_index=2, epoch=0)])
    progress = checkpoints.read_progress(str(ckpt_dir))
    self.assertEqual((progress.stage, progress.epoch, progress.global_step), (0, 1, _STEPS))

    # 2. Resumed, the all stage starts with a fresh optimizer; crash before its 2nd checkpoint.
    first, stop = _FirstState(), _StopAt(fit_index=1, epoch=1)
    with self.assertRaises(_StopAt.Stop):
      loop.train(config, extra_callbacks=[first, stop])
    self.assertEqual(first.state["iterations"], 0)
    progress = checkpoints.read_progress(str(ckpt_dir))
    self.assertEqual((progress.stage, progress.epoch, progress.global_step), (1, 1, 2 * _STEPS))

    # Leftovers of a checkpoint write killed half-way (newer number, never made current).
    (ckpt_dir / "ckpt-99_temp").mkdir()
    (ckpt_dir / "ckpt-99_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 7)
    data = next(ckpt_dir.glob(pathlib.Path(progress.path).name + ".data-*"))
    (ckpt_dir / "ckpt-99.data-00000-of-00001").write_bytes(data.read_bytes()[:100])
    self.assertEqual(checkpoints.read_progress(str(ckpt_dir)), progress)

    # 3. Resumed mid-stage: the stage's optimizer comes back (step counter, Adam moments) with
    # the weights, and the run finishes the stage.
    first = _FirstState()
    result = experiment.run_experiment(config, extra_callbacks=[first])
    self.assertEqual(result.resumed_from, (1, 1))
    self.assertEqual([(h["stage"], h["epoch"]) for h in result.history],
                     [("stage2_all", 2), ("stage2_all", 3)])
    self.assertEqual(first.state["iterations"], _STEPS)
    self.assertEqual(first.state["variables"].keys(), stop.saved_state["variables"].keys())
    for path, value in stop.saved_state["variables"].items():
      np.testing.assert_array_equal(first.state["variables"][path], value, err_msg=path)
    for name, weights in stop.saved_state["weights"].items():
      for a, b in zip(first.state["weights"][name], weights, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    final = checkpoints.read_progress(str(ckpt_dir))
    self.assertEqual((final.stage, final.epoch, final.global_step), (1, 3, 4 * _STEPS))

    # TensorBoard reads the crashed and resumed run as one: epochs count on across stages, each
    # stage notes its start once, and the run folder holds one HParams trial and its result.
    tb = model_dir / loop.TENSORBOARD_DIR

    def steps(folder: pathlib.Path, tag: str) -> list[int]:
      return [e.step for e in curves.read_events(folder) if e.summary.value[0].tag == tag]

    self.assertEqual(sorted(set(steps(tb / "stage1_head", "train/loss"))), [0])
    self.assertEqual(sorted(set(steps(tb / "stage2_all", "train/loss"))), [1, 2, 3])
    # The note is at the stage's first epoch (written again by the run that restarted the stage
    # from its beginning, not by the one resumed mid-stage).
    self.assertEqual(steps(tb / "stage2_all", callbacks.STAGE_TAG), [1, 1])
    _, start = run_summaries.read_trial(tb)  # Exactly one trial, not rewritten on resume.
    self.assertEqual(start.group_name, str(model_dir.resolve()))
    final_accuracy = [e for e in curves.read_events(tb / run_summaries.RUN_DIR)
                      if e.summary.value[0].tag == run_summaries.FINAL_ACCURACY]
    self.assertEqual([e.step for e in final_accuracy], [4])
    self.assertAlmostEqual(float(tf.make_ndarray(final_accuracy[0].summary.value[0].tensor)),
                           result.report.totals.accuracy, places=6)

    # Another schedule must not continue this run's checkpoint.
    other = _config(model_dir, self.data_dir, "head:1:1e-3:16,all:4:1e-3:16")
    with self.assertRaisesRegex(errors.CheckpointMismatchError,
                                r"another run; what differs: stages: .*all:3:.* -> .*all:4:"):
      loop.train(other)
    capped = _config(model_dir, self.data_dir, "head:1:1e-3:16,all:3:1e-3:16",
                     max_steps_per_epoch=_STEPS + 1)
    with self.assertRaisesRegex(ValueError, r"what differs: max_steps_per_epoch: 2 -> 3\."):
      loop.train(capped)


def _network_state(net: keras.Model) -> list[np.ndarray]:
  """The trainable weights, then the BatchNorm statistics."""
  return [v.numpy().copy() for v in
          [*net.trainable_variables, *weight_averages.batch_norm_statistics(net)]]


class _Averages(keras.callbacks.Callback):
  """Per epoch end: the network's state (`_network_state`) and the averages of the same."""

  def __init__(self):
    super().__init__()
    self.epochs: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

  def on_epoch_end(self, epoch, logs=None):
    averages = [*weight_averages.averages(self.model.optimizer),
                *self.model.batch_norm_averages.averages]
    self.epochs.append((_network_state(self.model.net), [v.numpy().copy() for v in averages]))


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class AveragedWeightsTest(support.WithGeneratedData, absltest.TestCase):
  """ema=M: validation and keep-best see the averages (of the weights and the BatchNorm
  statistics), checkpoints resume them, the stage ends with them."""

  def test_ema_is_evaluated_kept_resumed_and_final(self):
    model_dir = support.tempdir(self)
    config = _config(model_dir, self.data_dir, "all:4:1e-2:16:nesterov:ema=0.5", validate=True,
                     keep_best="accuracy", model="fastnet_small")
    crashed, stop = _Averages(), _StopAt(fit_index=1, epoch=2)
    with self.assertRaises(_StopAt.Stop):
      loop.train(config, extra_callbacks=[crashed, stop])
    # Between epochs the network holds its trained weights, not the averages.
    for trained, averaged in crashed.epochs:
      self.assertFalse(_same(trained, averaged))
    # The checkpoint of epoch 2 brings back the trained weights and statistics and the averages
    # (optimizer variables and the statistics' averages) exactly.
    first, resumed = _FirstState(), _Averages()
    result = loop.train(config, extra_callbacks=[first, resumed])
    self.assertEqual(result.resumed_from, (0, 2))
    self.assertTrue(any("average" in path for path in stop.saved_state["variables"]))
    for path, value in stop.saved_state["variables"].items():
      np.testing.assert_array_equal(first.state["variables"][path], value, err_msg=path)
    for name, weights in stop.saved_state["weights"].items():
      for a, b in zip(first.state["weights"][name], weights, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    self.assertLen(stop.saved_state["batch_norm_averages"], 2 * 7)
    for a, b in zip(first.state["batch_norm_averages"], stop.saved_state["batch_norm_averages"],
                    strict=True):
      np.testing.assert_array_equal(a, b)
    # After the last epoch (only) the averages stay in the network.
    self.assertEqual([_same(*epoch) for epoch in resumed.epochs], [False, True])
    # Keep-best saved the averages of its epoch, not trained weights.
    best = models.MODELS["fastnet_small"](num_classes=6)
    best.load_weights(model_dir / keep_best.BEST_WEIGHTS)
    kept = _network_state(best)
    every_average = [averaged for _, averaged in crashed.epochs + resumed.epochs]
    self.assertTrue(any(_same(kept, averaged) for averaged in every_average))
    self.assertFalse(any(_same(kept, trained) for trained, _ in crashed.epochs))
    self.assertTrue(_same(_network_state(result.network), kept))


class RecipeOptionsTest(support.WithGeneratedData, absltest.TestCase):
  """Plateau lr, weight decay, smoothing, class weights, keep_best and flip TTA in one real run."""

  def test_keep_best_with_plateau_survives_a_crash(self):
    model_dir = support.tempdir(self)
    config = _config(
        model_dir, self.data_dir,
        "all:4:1e-3:16:adam:schedule=plateau:patience=1:factor=0.5:wd=1e-4:smooth=0.1"
        ":balance=weights", validate=True, keep_best="accuracy",
        final_tta="flip")
    with self.assertRaises(_StopAt.Stop):
      loop.train(config, extra_callbacks=[_StopAt(fit_index=1, epoch=2)])
    self.assertEqual(checkpoints.read_progress(str(model_dir / checkpoints.CKPT_DIR)).epoch, 2)
    result = experiment.run_experiment(config)
    self.assertEqual(result.resumed_from, (0, 2))

    # The plateau state came back: the lr of epochs 3-4 follows from the checkpointed best/wait.
    rates = [h["learning_rate"] for h in result.history]
    allowed = 1e-3 * 0.5 ** np.arange(4)
    self.assertTrue(all(np.isclose(r, allowed, rtol=1e-6).any() for r in rates), rates)
    # The final network is the best epoch's, not the last one's.
    best = models.MODELS["base_cnn"](num_classes=6)
    best.load_weights(model_dir / keep_best.BEST_WEIGHTS)
    for name, weights in _layer_weights(best).items():
      for a, b in zip(weights, _layer_weights(result.model)[name], strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # The report is of that network with flip TTA (the eval_main code path).
    builder = inputs.built_dataset("generated_faces/seed6", self.data_dir, 0)
    plain = evaluation.evaluate_network(result.model, builder, "test", tf.distribute.get_strategy())
    flip = evaluation.evaluate_network(result.model, builder, "test", tf.distribute.get_strategy(),
                             tta="flip")
    np.testing.assert_allclose(result.report.true_prob_sum, flip.true_prob_sum, rtol=1e-5)
    self.assertFalse(np.array_equal(result.report.true_prob_sum, plain.true_prob_sum))

  def test_augment_off_stage_and_fingerprint(self):
    config = _config(str(support.tempdir(self)), self.data_dir, "all:1:1e-3:16:augment=off")
    self.assertIn("augment=off", config.fingerprint())
    other = config_lib.TrainConfig(**{**config.__dict__, "augment_params": augment.AugmentParams(
        crop=0.1)})
    self.assertNotEqual(config.fingerprint(), other.fingerprint())
    with self.assertRaisesRegex(ValueError, "keep_best needs"):
      config_lib.TrainConfig(**{**config.__dict__, "keep_best": "accuracy", "validate": False})


class XlaStepTest(absltest.TestCase):

  def test_jit_compiled_step_matches_the_plain_step(self):
    """The GPU/TPU path (an XLA-compiled train step, augmentation inside) gives the plain step's
    weights within float tolerance, over the same uint8 batches. (Without dropout: Keras draws
    its masks from a stream that the XLA and the plain step do not share.)"""
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 48, 48, 1), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 7, (2, 16)).astype(np.int64)
    trained = {}
    for jit in (False, True):
      keras.utils.set_random_seed(0)
      net = models.MODELS["fastnet"](num_classes=7, head_dropout=0.0)
      initial = [w.numpy() for w in net.weights]
      trainer = training_model.TrainingModel(net, augment.AugmentParams(rotate=5.0, erase_prob=0.5),
                                       stage_seed=3)
      trainer.compile(optimizer=stages.make_optimizer("nesterov", 0.05, weight_decay=5e-4),
                      loss="sparse_categorical_crossentropy", jit_compile=jit)
      for x, y in zip(images, labels):
        trainer.train_on_batch(x, y)
      trained[jit] = [w.numpy() - w0 for w, w0 in zip(net.weights, initial, strict=True)]
    # The two steps' updates agree to float rounding, which BatchNorm and momentum amplify (measured:
    # at most 2.2% of an update, a BatchNorm scale's); another augmentation, loss or optimizer
    # would make them differ by their own size.
    for (plain, xla), weight in zip(zip(trained[False], trained[True], strict=True), net.weights):
      if np.abs(plain).max() > 0:
        self.assertLess(np.linalg.norm(xla - plain) / np.linalg.norm(plain), 0.05, weight.path)


class ErrorsTest(support.WithGeneratedData, absltest.TestCase):

  def test_dataset_not_built(self):
    data_dir = str(support.tempdir(self))
    with self.assertRaisesRegex(errors.DataNotBuiltError, "generated_faces/seed6 is not built in "
                                ".*--generate_rows=N.*tfds build builders/generated_faces"):
      inputs.built_dataset("generated_faces/seed6", data_dir, generate_rows=0)
    # FER-2013 is never generated: only the real csv builds it.
    with self.assertRaisesRegex(errors.DataNotBuiltError, "fer2013/seed6 is not built in .*"
                                "manual download.*tfds build builders/fer2013 --config=seed6"):
      inputs.built_dataset("fer2013/seed6", data_dir, generate_rows=100)
    self.assertEqual(list(pathlib.Path(data_dir).iterdir()), [])

  def test_batch_larger_than_split(self):
    config = _config(str(support.tempdir(self)), self.data_dir, "all:1:1e-3:4096")
    with self.assertRaisesRegex(ValueError, "global batch 4096 is larger than the training split"):
      loop.train(config)

  def test_fingerprint_holds_the_data_and_names_what_differs(self):
    builder = inputs.built_dataset("generated_faces/seed6", self.data_dir, generate_rows=0)
    identity = checkpoints.data_identity({"generated_faces/seed6": builder})
    sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
    self.assertEqual(identity, f"generated_faces/seed6@{builder.info.version}:" + "/".join(
        f"{split}={sizes[split]}" for split in sorted(sizes)))
    self.assertEqual(checkpoints.fingerprint_difference("a=1;b=x=2;d=5", "a=1;b=x=3;c=4"),
                     "b: x=2 -> x=3; d: 5 -> (none); c: (none) -> 4")

  def test_bad_config(self):
    schedule = tuple(stages.parse_stages("all:1:1e-3:8"))
    with self.assertRaisesRegex(ValueError, "Unknown strategy"):
      config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule, strategy="gpu")
    with self.assertRaisesRegex(ValueError, "Unknown augment_on"):
      config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule, augment_on="tpu")
    pretrain_only = tuple(stages.parse_stages("all:1:1e-3:8", dataset="generated_faces/fer7"))
    with self.assertRaisesRegex(ValueError, "not on the target dataset generated_faces/seed6"):
      config_lib.TrainConfig(model_dir="m", data_dir="d", stages=pretrain_only)
    with self.assertRaisesRegex(ValueError, "Unknown precision 'half'"):
      config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule, precision="half")
    for steps in ((0, 2), (3, 2)):
      with self.assertRaisesRegex(ValueError, "expected FIRST,LAST with 1 <= FIRST <= LAST"):
        config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule, profile_steps=steps)
    # Neither the precision nor profiling is part of what a resumed run must match.
    config = config_lib.TrainConfig(model_dir="m", data_dir="d", stages=schedule)
    self.assertEqual(config.fingerprint(), config_lib.TrainConfig(
        model_dir="m", data_dir="d", stages=schedule, precision="bfloat16",
        profile_steps=(2, 3)).fingerprint())


class ProfileTest(support.WithGeneratedData, absltest.TestCase):

  def test_profile_steps_write_a_readable_profile_of_the_first_stage_that_reaches_them(self):
    model_dir = support.tempdir(self)
    # The head stage runs 2 steps, short of step 3; the all stage's steps 2-3 span its two epochs.
    config = _config(model_dir, self.data_dir, "head:1:1e-3:16,all:2:1e-3:16",
                     profile_steps=(2, 3))
    loop.train(config)
    tb = model_dir / loop.TENSORBOARD_DIR
    self.assertEqual(list(tb.glob(f"*/{profiling.PROFILE_DIR}")),
                     [tb / "stage2_all" / profiling.PROFILE_DIR])
    (path,) = (tb / "stage2_all" / profiling.PROFILE_DIR).glob("*/*.xplane.pb")
    space = xplane_pb2.XSpace.FromString(path.read_bytes())
    host = {plane.name: plane for plane in space.planes}["/host:CPU"]
    events = {event.name for event in host.event_metadata.values()}
    self.assertTrue(any("multi_step_on_iterator" in name for name in events))  # Keras's step.
    # What TensorBoard's Profile tab shows, through the plugin's own converter: the two profiled
    # steps (the step markers) and the verdict on the input pipeline.
    data, _ = raw_to_tool_data.xspace_to_tool_data([str(path)], "input_pipeline_analyzer", {})
    step_table = json.loads(data)[1]
    self.assertEqual([row["c"][0]["v"] for row in step_table["rows"]], ["train 2", "train 3"])
    self.assertRegex(step_table["p"]["input_conclusion"], r"is (NOT )?input-bound")


class DataServiceTest(support.WithGeneratedData, absltest.TestCase):
  """`data_service_address` sends the training input through a tf.data service on 127.0.0.1."""

  def test_trains_through_an_in_process_service(self):
    dispatcher = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=0))
    port = dispatcher.target.rsplit(":", 1)[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=f"127.0.0.1:{port}", worker_address="127.0.0.1:%port%", port=0))
    addresses = []
    make_dataset = pipeline.make_dataset

    def recording_make_dataset(*args, **kwargs):
      addresses.append(kwargs.get("data_service_address"))
      return make_dataset(*args, **kwargs)

    try:
      with mock.patch.object(pipeline, "make_dataset", recording_make_dataset):
        model_dir = support.tempdir(self)
        config = _config(str(model_dir), self.data_dir, "all:1:1e-3:16",
                         data_service_address=f"grpc://127.0.0.1:{port}")
        result = loop.train(config)
    finally:
      worker.stop()
      dispatcher.stop()
    self.assertIn(f"grpc://127.0.0.1:{port}", addresses)
    self.assertEqual([(h["stage"], h["epoch"]) for h in result.history], [("stage1_all", 1)])
    self.assertTrue(np.isfinite(result.history[0]["loss"]))
    # Training ends at the trained network: evaluating and saving it are experiment.run's.
    self.assertEqual(result.network.output_shape, (None, 6))
    self.assertEqual(sorted(p.name for p in model_dir.iterdir()),
                     [checkpoints.CKPT_DIR, loop.TENSORBOARD_DIR])
