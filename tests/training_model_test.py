"""Tests for emotion_tfds.train.training_model: what the training model feeds its network (uint8
converted or augmented on the device, host-augmented batches as they are), the XLA-compiled step,
and the stop on a non-finite loss. (Its distillation step: distill_test.)"""

from __future__ import annotations

from absl.testing import absltest
import keras
import numpy as np
import support

from emotion_tfds import errors
from emotion_tfds import models
from emotion_tfds import preprocess
from emotion_tfds.data import augment
from emotion_tfds.train import stages
from emotion_tfds.train import training_model


class InputTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.images = support.random_images(32)
    self.labels = np.random.default_rng(1).integers(0, 6, 32).astype(np.int64)

  def _trained_weights(self, wrap, images: np.ndarray) -> list[np.ndarray]:
    """The weights of a fresh small CNN after two SGD steps of `wrap(net)` on halves of
    `images`."""
    keras.utils.set_random_seed(0)
    net = support.small_cnn(6)
    model = wrap(net)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    for x, y in zip(np.split(images, 2), np.split(self.labels, 2), strict=True):
      model.train_on_batch(x, y)
    return net.get_weights()

  def _assert_same(self, a: list[np.ndarray], b: list[np.ndarray]) -> None:
    for x, y in zip(a, b, strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)

  def test_training_steps_feed_the_network_what_the_batch_calls_for(self):
    floats = preprocess.to_model_input(self.images).numpy()
    plain = self._trained_weights(lambda net: net, floats)
    # uint8 without augmentation: the network trains on the converted batch.
    self._assert_same(self._trained_weights(
        lambda net: training_model.TrainingModel(net, None, stage_seed=0), self.images), plain)
    # Float batches augmented on the host reach the network as they are, not augmented again.
    self._assert_same(self._trained_weights(
        lambda net: training_model.TrainingModel(net, augment.AugmentParams(), stage_seed=0,
                                                 host_augmented=True), floats), plain)
    # uint8 with augmentation on the device: the network trains on other images.
    augmented = self._trained_weights(
        lambda net: training_model.TrainingModel(net, augment.AugmentParams(), stage_seed=0),
        self.images)
    self.assertFalse(all(np.allclose(a, b) for a, b in zip(augmented, plain, strict=True)))

  def test_prediction_takes_uint8_or_the_networks_float_input(self):
    net = support.small_cnn(6)
    trainer = training_model.TrainingModel(net, augment.AugmentParams(), stage_seed=0)
    floats = self.images.astype(np.float32) / 255
    want = net(floats, training=False).numpy()
    np.testing.assert_allclose(trainer(self.images).numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer(floats).numpy(), want, rtol=1e-5, atol=1e-6)


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
    # The two steps' updates agree to float rounding, which BatchNorm and momentum amplify
    # (measured: at most 2.2% of an update, a BatchNorm scale's); another augmentation, loss or
    # optimizer would make them differ by their own size.
    for (plain, xla), weight in zip(zip(trained[False], trained[True], strict=True), net.weights):
      if np.abs(plain).max() > 0:
        self.assertLess(np.linalg.norm(xla - plain) / np.linalg.norm(plain), 0.05, weight.path)


class StopOnNonFiniteLossTest(absltest.TestCase):

  def test_the_first_non_finite_step_names_the_stage_epoch_and_step(self):
    stop = training_model.StopOnNonFiniteLoss("main 2/3", steps=10)
    stop.on_epoch_begin(1)
    stop.on_train_batch_end(2, {"loss": 0.7})
    stop.on_train_batch_end(2, {"loss": np.array([0.7], np.float32)})  # Multi-worker logs: [1].
    for loss in (float("nan"), float("inf"), np.array([np.nan], np.float32)):
      with self.subTest(loss=loss):
        with self.assertRaisesRegex(errors.NonFiniteLossError,
                                    r"^stage main 2/3: the training loss is (nan|inf) at epoch 2, "
                                    r"step 4 of 10: training diverged\. Lower the stage's lr"):
          stop.on_train_batch_end(3, {"loss": loss})


if __name__ == "__main__":
  absltest.main()
