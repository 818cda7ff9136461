"""Tests for emotion_tfds.train.inputs: the built datasets of a run, each stage's training input
(its epochs, resumed or not; through a tf.data service) and the evaluation input.

On the generated faces of `support.generated_data_dir`; the tf.data service one is a real run of a
few steps through an in-process service.
"""

from __future__ import annotations

import pathlib
from unittest import mock

from absl.testing import absltest
import numpy as np
import support
import tensorflow as tf
import train_support

from emotion_tfds import errors
from emotion_tfds.data import pipeline
from emotion_tfds.train import checkpoints
from emotion_tfds.train import inputs
from emotion_tfds.train import loop
from emotion_tfds.train import stages


def _batches(ds: tf.data.Dataset) -> list[tuple[np.ndarray, ...]]:
  return [tuple(t.numpy() for t in batch) for batch in ds]


class BuiltDatasetTest(absltest.TestCase):

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


class DatasetFnTest(support.WithGeneratedData, absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.builder = inputs.built_dataset("generated_faces/seed6", cls.data_dir, generate_rows=0)

  def _train_batches(self, first_epoch: int, stage_index: int = 0) -> list[tuple[np.ndarray, ...]]:
    stage = stages.parse_stages("all:3:1e-3:16")[0]
    dataset_fn = inputs.train_dataset_fn(self.builder, stage, seed=0, stage_index=stage_index,
                                         first_epoch=first_epoch, steps=2, deterministic=True,
                                         host_augment=None)
    return _batches(dataset_fn(tf.distribute.InputContext()))

  def test_a_resumed_stage_gets_the_epochs_an_uninterrupted_one_got(self):
    whole = self._train_batches(first_epoch=0)
    self.assertLen(whole, 3 * 2)  # 3 epochs of 2 steps.
    resumed = self._train_batches(first_epoch=1)
    self.assertLen(resumed, 2 * 2)
    for (images, labels), (want_images, want_labels) in zip(resumed, whole[2:], strict=True):
      np.testing.assert_array_equal(images, want_images)
      np.testing.assert_array_equal(labels, want_labels)
    # Each epoch has its own order, and another stage other epochs.
    self.assertFalse(np.array_equal(whole[0][1], whole[2][1]))
    self.assertFalse(np.array_equal(self._train_batches(0, stage_index=1)[0][1], whole[0][1]))

  def test_evaluation_input_is_made_once_and_holds_the_split(self):
    dataset_fn = inputs.eval_dataset_fn(self.builder, "test", global_batch=64)
    context = tf.distribute.InputContext()
    ds = dataset_fn(context)
    self.assertIs(dataset_fn(tf.distribute.InputContext()), ds)  # Validation every epoch reuses it.
    batches = _batches(ds)
    self.assertEqual({images.shape[0] for images, _, _ in batches}, {64})  # Full, padded batches.
    self.assertEqual(sum(int(mask.sum()) for _, _, mask in batches),
                     inputs.split_size(self.builder, "test"))
    other = dataset_fn(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                                  num_replicas_in_sync=2))
    self.assertIsNot(other, ds)


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
        config = train_support.train_config(str(model_dir), self.data_dir, "all:1:1e-3:16",
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


if __name__ == "__main__":
  absltest.main()
