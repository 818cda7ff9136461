"""Tests for distillation: the stage options teacher=, distill_t=, distill_w= (stages), the
distillation term (losses) and the distilled train step (training_model, loop), under the default
strategy and MirroredStrategy. (Loading the teacher: teacher_test.)"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import experiment
from emotion_tfds import labels
from emotion_tfds.data import augment
from emotion_tfds.serve import loader
from emotion_tfds.train import checkpoints
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import losses
from emotion_tfds.train import stages
from emotion_tfds.train import teacher as teacher_lib
from emotion_tfds.train import training_model

REPO = pathlib.Path(__file__).resolve().parents[1]
_TIMEOUT_S = 240


def _batch(seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images [size, 48, 48, 1] and seed6 labels."""
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (size, 48, 48, 1), dtype=np.uint8),
          rng.integers(0, 6, size).astype(np.int64))


def _net(seed: int) -> keras.Model:
  keras.utils.set_random_seed(seed)
  return support.small_cnn(6)


def _log_softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _hand_loss(student: np.ndarray, teacher: np.ndarray, y: np.ndarray, smoothing: float,
               temperature: float, weight: float) -> float:
  """(1 - w) * smoothed CE + w * T^2 * KL(softmax(log p_t / T) || softmax(log p_s / T)), in numpy
  float64."""
  student, teacher = student.astype(np.float64), teacher.astype(np.float64)
  log_p = np.log(student)
  ce = -(1 - smoothing) * log_p[np.arange(len(y)), y] - smoothing * log_p.mean(axis=1)
  log_t = _log_softmax(np.log(teacher) / temperature)
  log_s = _log_softmax(np.log(student) / temperature)
  kl = (np.exp(log_t) * (log_t - log_s)).sum(axis=1)
  return float((1 - weight) * ce.mean() + weight * temperature ** 2 * kl.mean())


class OptionsTest(parameterized.TestCase):

  def test_parse_defaults_and_round_trip(self):
    (got,) = stages.parse_stages(
        "main:all:8:0.05:64:nesterov:smooth=0.1:teacher=runs/a/model.keras+b.keras:distill_t=2"
        ":distill_w=0.7")
    self.assertEqual(got, stages.Stage(
        "main", "all", 8, 0.05, 64, "nesterov", label_smoothing=0.1,
        teacher=("runs/a/model.keras", "b.keras"), distill_temperature=2.0, distill_weight=0.7))
    self.assertEqual(got.spec(), "main:all:8:0.05:64:nesterov:smooth=0.1:"
                     "teacher=runs/a/model.keras+b.keras:distill_t=2:distill_w=0.7")
    self.assertEqual(stages.parse_stages(got.spec()), [got])
    (default,) = stages.parse_stages("all:1:0.1:16:teacher=t.keras")
    self.assertEqual((default.teacher, default.distill_temperature, default.distill_weight),
                     (("t.keras",), 4.0, 0.5))
    self.assertEqual(default.spec(), "stage1_all:all:1:0.1:16:adam:teacher=t.keras")
    # The teacher paths are part of the run's fingerprint (a resume must use the same teacher).
    config = config_lib.TrainConfig(model_dir="m", data_dir="d", stages=(default,))
    self.assertIn("teacher=t.keras", config.fingerprint())

  @parameterized.parameters(
      ("all:1:0.1:16:teacher=", "teacher= needs one or more paths"),
      ("all:1:0.1:16:teacher=a.keras++b.keras", "teacher= needs one or more paths"),
      ("all:1:0.1:16:teacher=a.keras:distill_t=0", "distill_t must be > 0"),
      ("all:1:0.1:16:teacher=a.keras:distill_t=hot", "bad value 'hot' for option 'distill_t'"),
      ("all:1:0.1:16:teacher=a.keras:distill_w=1.5", "distill_w must be in \\[0, 1\\]"),
      ("all:1:0.1:16:teacher=a.keras:distill_w=-0.1", "distill_w must be in \\[0, 1\\]"),
      ("all:1:0.1:16:distill_w=0.3", "distill_t= and distill_w= need teacher="),
      ("all:1:0.1:16:distill_t=2", "distill_t= and distill_w= need teacher="),
  )
  def test_errors(self, spec, message):
    with self.assertRaisesRegex(ValueError, f"stage 1 '{re.escape(spec)}': .*{message}"):
      stages.parse_stages(spec)


class DistillationLossTest(absltest.TestCase):

  def test_tempered_distributions_by_hand(self):
    teacher = np.array([[0.5, 0.5], [0.9, 0.1]], np.float32)
    student = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)
    # T = 1: the plain KL of the probabilities.
    want = np.mean([0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75),
                    0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)])
    self.assertAlmostEqual(float(losses.DistillationLoss(1.0)(teacher, student)), want, places=6)
    # T = 2: softmax(log p / 2) is sqrt(p) normalised; the term is 4 * KL of those.
    soft_t = np.sqrt(teacher) / np.sqrt(teacher).sum(1, keepdims=True)
    soft_s = np.sqrt(student) / np.sqrt(student).sum(1, keepdims=True)
    want = 4 * np.mean((soft_t * np.log(soft_t / soft_s)).sum(1))
    self.assertAlmostEqual(float(losses.DistillationLoss(2.0)(teacher, student)), want, places=6)
    # Zero where the student matches, finite where a probability is 0 (clipped).
    self.assertAlmostEqual(float(losses.DistillationLoss(4.0)(teacher, teacher)), 0.0, places=6)
    edge = losses.DistillationLoss(4.0)(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    self.assertTrue(np.isfinite(float(edge)))


class _Recording(keras.Model):
  """A network that keeps a copy of every eager input it is called on."""

  def __init__(self, net: keras.Model):
    super().__init__(name=f"recording_{net.name}")
    self.net = net
    self.seen: list[np.ndarray] = []

  def call(self, images, training=False):
    if isinstance(images, tf.Tensor) and tf.executing_eagerly():
      self.seen.append(images.numpy())
    return self.net(images, training=training)


def _trainer(net: keras.Model, teacher: teacher_lib.Teacher | None,
             params: augment.AugmentParams | None = augment.AugmentParams(),
             smoothing: float = 0.1, **compile_kwargs) -> training_model.TrainingModel:
  trainer = training_model.TrainingModel(net, params, stage_seed=5, teacher=teacher)
  trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=losses.SmoothedCrossEntropy(smoothing), metrics=["accuracy"],
                  **compile_kwargs)
  return trainer


class DistilledStepTest(absltest.TestCase):

  def test_loss_of_a_step_is_the_hand_computed_mix(self):
    images, y = _batch(1)
    x = images.astype(np.float32) / 255
    ensemble = teacher_lib.Teacher([_net(2), _net(3)], temperature=2.0, weight=0.3)
    net = _net(1)
    student = net(x).numpy()
    soft = (ensemble.nets[0](x).numpy() + ensemble.nets[1](x).numpy()) / 2
    want = _hand_loss(student, soft, y, smoothing=0.1, temperature=2.0, weight=0.3)
    trainer = _trainer(net, ensemble, params=None)
    got = trainer.compute_loss(x, y, tf.constant(student), training=True)
    self.assertAlmostEqual(float(got), want, places=5)
    # Evaluation (training=False) is the label loss alone.
    plain = trainer.compute_loss(x, y, tf.constant(student), training=False)
    self.assertAlmostEqual(float(plain), _hand_loss(student, soft, y, 0.1, 2.0, 0.0), places=5)
    # A compiled training step reports that loss (computed before its update).
    self.assertAlmostEqual(trainer.train_on_batch(images, y, return_dict=True)["loss"], want,
                           places=5)

  def test_teacher_sees_the_students_augmented_batch_and_stays_frozen(self):
    student, frozen = _Recording(_net(1)), _Recording(_net(2))
    teacher = teacher_lib.Teacher([frozen], temperature=4.0, weight=0.5)
    before = [w.copy() for w in frozen.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    trainer = _trainer(student, teacher, run_eagerly=True)
    batches = [_batch(seed) for seed in (1, 2, 3)]
    for images, y in batches:
      trainer.train_on_batch(images, y)
    self.assertLen(student.seen, 3)
    self.assertLen(frozen.seen, 3)
    for (images, _), seen, taught in zip(batches, student.seen, frozen.seen, strict=True):
      np.testing.assert_array_equal(taught, seen)
      # Augmented, not the plain conversion of the batch.
      self.assertGreater(np.abs(seen - images.astype(np.float32) / 255).mean(), 0.01)
    for a, b in zip(before, frozen.get_weights(), strict=True):
      np.testing.assert_array_equal(a, b)
    self.assertTrue(any(not np.array_equal(a, b)
                        for a, b in zip(student_before, student.get_weights(), strict=True)))
    # Neither the optimizer nor the training model's variables hold the teacher's.
    self.assertLen(trainer.trainable_variables, len(student.trainable_variables))
    self.assertLen(trainer.variables, len(student.variables))

  def test_weight_zero_is_the_plain_step(self):
    batches = [_batch(seed) for seed in (1, 2, 3, 4)]

    def run(teacher):
      net = _net(1)
      trainer = _trainer(net, teacher)
      step_losses = [trainer.train_on_batch(images, y, return_dict=True)["loss"]
                     for images, y in batches]
      return step_losses, net.get_weights()

    plain_losses, plain_weights = run(None)
    for weight, same in ((0.0, True), (0.5, False)):
      step_losses, weights = run(teacher_lib.Teacher([_net(2)], temperature=4.0, weight=weight))
      self.assertEqual(np.allclose(step_losses, plain_losses, rtol=1e-6, atol=0), same, weight)
      self.assertEqual(all(np.allclose(a, b, rtol=1e-6, atol=1e-7)
                           for a, b in zip(weights, plain_weights, strict=True)), same, weight)


class _Teachers(keras.callbacks.Callback):
  """The training model's teacher and its weights at the start and end of every fit (stage)."""

  def __init__(self):
    super().__init__()
    self.fits: list[dict] = []

  def on_train_begin(self, logs=None):
    teacher = self.model.teacher
    self.fits.append({"teacher": teacher, "begin": teacher.nets[0].get_weights(),
                      "student": self.model.net.get_weights()})

  def on_train_end(self, logs=None):
    self.fits[-1]["end"] = self.model.teacher.nets[0].get_weights()
    self.fits[-1]["student_end"] = self.model.net.get_weights()


def _arrays(path: pathlib.Path) -> list[np.ndarray]:
  """Every tensor of a TF checkpoint (a run's, or a SavedModel's variables)."""
  reader = tf.train.load_checkpoint(str(path))
  return [np.asarray(reader.get_tensor(name)) for name, _ in tf.train.list_variables(str(path))]


class DistilledRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = str(support.generated_data_dir())

  def test_run_with_ema_keeps_the_teacher_out_of_every_saved_file(self):
    model_dir = support.tempdir(self)
    teacher_path = support.saved_small_cnn(support.tempdir(self) / "teacher", labels.SEED6, seed=7)
    spec = f"all:2:1e-2:16:nesterov:ema=0.5:teacher={teacher_path}:distill_t=2"
    config = config_lib.TrainConfig(
        model_dir=str(model_dir), data_dir=self.data_dir, stages=tuple(stages.parse_stages(spec)),
        model="fastnet_small", validate=False, max_steps_per_epoch=2, verbose=0)
    recorded = _Teachers()
    result = experiment.run_experiment(config, extra_callbacks=[recorded])
    (fit,) = recorded.fits
    file_weights = keras.models.load_model(teacher_path).get_weights()
    for a, b, c in zip(file_weights, fit["begin"], fit["end"], strict=True):
      np.testing.assert_array_equal(a, b)
      np.testing.assert_array_equal(a, c)
    self.assertEqual(fit["teacher"].loss.get_config()["temperature"], 2.0)
    self.assertTrue(any(not np.array_equal(a, b)
                        for a, b in zip(fit["student"], fit["student_end"], strict=True)))

    # model.keras is the student alone; no tensor of the checkpoint or the SavedModel is one of
    # the teacher's (random) kernels.
    saved = keras.models.load_model(model_dir / loader.MODEL_FILE).get_weights()
    self.assertLen(saved, len(result.model.get_weights()))
    for a, b in zip(saved, result.model.get_weights(), strict=True):
      np.testing.assert_array_equal(a, b)
    kernels = [w for w in file_weights if w.ndim > 1]
    ckpt = tf.train.latest_checkpoint(str(model_dir / checkpoints.CKPT_DIR))
    stored = [*_arrays(ckpt), *saved,
              *_arrays(model_dir / loader.SAVED_MODEL_DIR / "variables" / "variables")]
    self.assertGreater(len(stored), 2 * len(saved))
    for kernel in kernels:
      self.assertFalse(any(a.shape == kernel.shape and np.array_equal(a, kernel) for a in stored))

  def test_teacher_of_other_classes_is_a_config_error(self):
    teacher_path = support.saved_small_cnn(support.tempdir(self) / "fer7", labels.FER7[:6], seed=7)
    config = config_lib.TrainConfig(
        model_dir=str(support.tempdir(self)), data_dir=self.data_dir,
        stages=tuple(stages.parse_stages(f"all:1:1e-2:16:teacher={teacher_path}")),
        validate=False, max_steps_per_epoch=1, verbose=0)
    with self.assertRaisesRegex(errors.ConfigError, "names the classes"):
      experiment.run_experiment(config)


# The child process (two logical CPUs must be set before TF starts): argv = teacher path.
_CHILD = r'''
import json, sys
import keras
import numpy as np
import tensorflow as tf
from emotion_tfds import labels
from emotion_tfds.train import losses, stages, teacher as teacher_lib, training_model

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (16, 48, 48, 1), dtype=np.uint8)
y = rng.integers(0, 6, 16).astype(np.int64)
stage = stages.parse_stages(f"all:1:0.1:16:sgd:teacher={sys.argv[1]}:distill_t=2:distill_w=0.6")[0]
keras.utils.set_random_seed(0)
initial = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Conv2D(8, 3, strides=2),
                            keras.layers.Flatten(), keras.layers.Dense(6, activation="softmax")])

def step(strategy):
  with strategy.scope():
    net = keras.models.clone_model(initial)
    net.set_weights(initial.get_weights())
    teacher = teacher_lib.load(stage, labels.SEED6)
    trainer = training_model.TrainingModel(net, None, stage_seed=0, teacher=teacher)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.SmoothedCrossEntropy())
  data = tf.data.Dataset.from_tensors((images, y))
  loss = trainer.fit(data, epochs=1, verbose=0).history["loss"][0]
  mirrored = all(isinstance(v.value, tf.distribute.DistributedValues)
                 for v in teacher.nets[0].weights)
  return loss, net.get_weights(), mirrored, teacher.nets[0].get_weights()

one = step(tf.distribute.get_strategy())
two = step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print("RESULT " + json.dumps({
    "losses": [one[0], two[0]], "mirrored": two[2],
    "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(one[1], two[1])),
    "update": max(float(np.abs(a - b).max()) for a, b in zip(one[1], initial.get_weights())),
    "teacher_diff": max(float(np.abs(a - b).max()) for a, b in
                        zip(keras.models.load_model(sys.argv[1]).get_weights(), two[3]))}))
'''


class MirroredDistillationTest(absltest.TestCase):

  def test_two_replicas_give_the_one_device_step(self):
    """A global batch split over two replicas: the teacher's variables are mirrored, and the mixed
    loss and the update equal the one-device step's (each replica's term is scaled by its share)."""
    root = support.tempdir(self)
    teacher_path = support.saved_small_cnn(root / "teacher", labels.SEED6, seed=7)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(teacher_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=_TIMEOUT_S,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(done.returncode, 0, done.stderr[-5000:])
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    self.assertTrue(result["mirrored"])
    one, two = result["losses"]
    self.assertAlmostEqual(one, two, places=5)
    self.assertGreater(result["update"], 1e-4)
    self.assertLess(result["weight_diff"], 1e-3 * result["update"])
    self.assertEqual(result["teacher_diff"], 0.0)


if __name__ == "__main__":
  absltest.main()
