"""Tests for emotion_tfds.data.pipeline over generated faces built with the real builder."""

from __future__ import annotations

import functools
import hashlib
import pathlib
import shutil

import numpy as np
import support
import tensorflow as tf

from emotion_tfds.data import augment
from emotion_tfds.data import datasets
from emotion_tfds.data import pipeline
from emotion_tfds.report import metrics
from emotion_tfds.train import inputs

_DATASET = "generated_faces/fer7"
_BATCH = 32  # Divides the generated train split (1,120), so training drops nothing.


def _keys(images: np.ndarray) -> list[str]:
  return [hashlib.sha1(image.tobytes()).hexdigest() for image in images]


def _read(ds: tf.data.Dataset) -> tuple[list[str], np.ndarray]:
  """(image hashes, labels) of one pass over a batched (images, labels) dataset."""
  keys, labels = [], []
  for images, batch_labels in ds:
    keys += _keys(images.numpy())
    labels.append(batch_labels.numpy())
  return keys, np.concatenate(labels)


class MakeDatasetTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    generated_data_dir = support.generated_data_dir()
    self.builder = datasets.get_builder(_DATASET, generated_data_dir)
    self.train_keys = _train_keys(str(generated_data_dir))

  def test_train_epochs_yield_every_example_once_in_new_orders(self):
    ds, num_examples = pipeline.make_dataset(self.builder, "train", _BATCH, training=True)
    self.assertEqual(num_examples, len(self.train_keys))
    self.assertEqual(ds.element_spec, (
        tf.TensorSpec([_BATCH, 48, 48, 1], tf.uint8), tf.TensorSpec([_BATCH], tf.int64)))
    first, _ = _read(ds)
    second, _ = _read(ds)
    self.assertCountEqual(first, self.train_keys)
    self.assertCountEqual(second, self.train_keys)
    self.assertNotEqual(first, second)

  def test_training_drops_the_remainder_evaluation_keeps_it_in_order(self):
    train, _ = pipeline.make_dataset(self.builder, "train", 48, training=True)
    self.assertEqual({images.shape[0] for images, _ in train}, {48})
    validation, num_examples = pipeline.make_dataset(self.builder, "validation", 48,
                                                     training=False)
    self.assertIsNone(validation.element_spec[0].shape[0])
    first, labels = _read(validation)
    self.assertLen(first, num_examples)
    self.assertEqual(first, _read(validation)[0])
    expected = [label for _, label in _tfds_examples(self.builder, "validation")]
    self.assertCountEqual(labels, expected)

  def test_same_seed_gives_the_same_batches_other_seed_others(self):
    def epochs(seed, count=2):
      ds, _ = pipeline.make_dataset(self.builder, "train", _BATCH, training=True, seed=seed,
                                    deterministic=True)
      return [_read(ds)[0] for _ in range(count)]
    run = epochs(seed=3)
    self.assertEqual(run, epochs(seed=3))
    self.assertNotEqual(run[0], epochs(seed=4, count=1)[0])

  def test_input_pipelines_read_disjoint_parts_that_cover_the_split(self):
    for num_pipelines in (2, 5):  # 5 > the 4 files per split: even example slices instead.
      parts = []
      for pipeline_id in range(num_pipelines):
        context = tf.distribute.InputContext(num_pipelines, pipeline_id, num_pipelines)
        ds, _ = pipeline.make_dataset(self.builder, "train", 8, training=False,
                                      input_context=context)
        parts.append(_read(ds)[0])
      with self.subTest(num_pipelines=num_pipelines):
        everything = [key for part in parts for key in part]
        self.assertLen(set(everything), len(everything))
        # Even slices drop at most num_pipelines - 1 examples to keep the parts equal.
        self.assertGreater(len(everything), len(self.train_keys) - num_pipelines)
        self.assertContainsSubset(everything, self.train_keys)

  def test_works_with_distribute_datasets_from_function(self):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    def dataset_fn(context):
      batch = context.get_per_replica_batch_size(_BATCH)
      return pipeline.make_dataset(self.builder, "train", batch, training=True,
                                   input_context=context)[0]
    dist = strategy.distribute_datasets_from_function(dataset_fn)
    counts = [strategy.experimental_local_results(labels)[0].shape[0] for _, labels in dist]
    self.assertEqual(sum(counts), len(self.train_keys))

  def test_host_augmentation_yields_float_batches_reproducibly(self):
    params = augment.AugmentParams()
    def epochs(seed):
      ds, _ = pipeline.make_dataset(self.builder, "train", _BATCH, training=True, seed=seed,
                                    deterministic=True, augment_on_host=params)
      return [[(images.numpy(), labels.numpy()) for images, labels in ds.take(2)]
              for _ in range(2)]
    run = epochs(seed=5)
    images = run[0][0][0]
    self.assertEqual(images.dtype, np.float32)
    self.assertEqual(images.shape, (_BATCH, 48, 48, 1))
    self.assertAllInRange(images, 0.0, 1.0)
    self.assertNotAllClose(run[0][0][0], run[1][0][0])  # new draws every epoch
    again = epochs(seed=5)
    for (a, labels_a), (b, labels_b) in zip(run[0] + run[1], again[0] + again[1]):
      self.assertAllEqual(a, b)
      self.assertAllEqual(labels_a, labels_b)
    # The same examples and order as without augmentation.
    plain, _ = pipeline.make_dataset(self.builder, "train", _BATCH, training=True, seed=5,
                                     deterministic=True)
    self.assertAllEqual(next(iter(plain))[1], run[0][0][1])

  def test_data_service_yields_the_same_labels_as_the_direct_path(self):
    dispatcher = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=0, job_gc_check_interval_ms=100))
    port = dispatcher.target.rsplit(":", 1)[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=f"127.0.0.1:{port}", worker_address="127.0.0.1:%port%", port=0,
            heartbeat_interval_ms=50))
    address = f"grpc://127.0.0.1:{port}"
    try:
      # With host augmentation: the workers run the whole pipeline, XLA included.
      direct, _ = pipeline.make_dataset(self.builder, "train", _BATCH, training=True)
      served, _ = pipeline.make_dataset(self.builder, "train", _BATCH, training=True,
                                        data_service_address=address,
                                        augment_on_host=augment.AugmentParams())
      self.assertEqual(served.element_spec[0].dtype, tf.float32)
      served_labels = _read_labels(served)
      self.assertLen(served_labels, len(self.train_keys))
      self.assertCountEqual(served_labels, _read_labels(direct))
    finally:
      worker.stop()
      dispatcher.stop()

  def test_epoch_seeds_fix_each_epoch_whatever_epoch_comes_first(self):
    params = augment.AugmentParams()
    def epochs(seeds, **kwargs):
      ds, _ = pipeline.make_dataset(self.builder, "train", _BATCH, training=True, seed=9,
                                    epoch_seeds=seeds, deterministic=True, **kwargs)
      images, labels = zip(*[(i.numpy(), l.numpy()) for i, l in ds])
      steps = len(images) // len(seeds)
      self.assertLen(images, steps * len(seeds))
      return [(np.concatenate(images[e * steps:(e + 1) * steps]),
               np.concatenate(labels[e * steps:(e + 1) * steps])) for e in range(len(seeds))]

    run = epochs([10, 11, 12])
    for images, _ in run:
      self.assertCountEqual(_keys(images), self.train_keys)  # each epoch: every example once
    self.assertNotEqual(_keys(run[0][0]), _keys(run[1][0]))
    resumed = epochs([11, 12])
    for (images, labels), (again, again_labels) in zip(run[1:], resumed):
      self.assertAllEqual(images, again)
      self.assertAllEqual(labels, again_labels)
    # Host augmentation too: the same batches and the same draws for the same epoch seed.
    augmented = epochs([10, 11], augment_on_host=params)
    self.assertAllEqual(augmented[1][1], run[1][1])
    self.assertAllClose(augmented[1][0], epochs([11], augment_on_host=params)[0][0])
    self.assertNotAllClose(augmented[0][0][:_BATCH], augmented[1][0][:_BATCH])

  def test_steps_per_epoch_repeats_the_permutation_to_fill_the_epoch(self):
    full_batches = len(self.train_keys) // _BATCH
    ds, _ = pipeline.make_dataset(self.builder, "train", _BATCH, training=True,
                                  epoch_seeds=[1, 2], steps_per_epoch=full_batches + 3,
                                  deterministic=True)
    keys, _ = _read(ds)
    self.assertLen(keys, 2 * (full_batches + 3) * _BATCH)
    first_epoch = keys[:(full_batches + 3) * _BATCH]
    self.assertCountEqual(first_epoch[:full_batches * _BATCH], self.train_keys)
    self.assertEqual(first_epoch[full_batches * _BATCH:], first_epoch[:3 * _BATCH])

  def test_bad_arguments_raise(self):
    with self.assertRaisesRegex(ValueError, "cannot read split 'dev'.*'train'"):
      pipeline.make_dataset(self.builder, "dev", _BATCH, training=False)
    with self.assertRaisesRegex(ValueError, "batch_size"):
      pipeline.make_dataset(self.builder, "train", 0, training=True)
    with self.assertRaisesRegex(ValueError, "for training=True"):
      pipeline.make_dataset(self.builder, "validation", _BATCH, training=False, epoch_seeds=[1])


class MakeEvalDatasetTest(tf.test.TestCase):
  """Evaluation input: full batches of one static shape, every example once and in order."""

  def setUp(self):
    super().setUp()
    self.builder = datasets.get_builder(_DATASET, support.generated_data_dir())

  def _real(self, batches) -> tuple[list[str], np.ndarray]:
    """(image hashes, labels) of the mask-1 examples of (images, labels, mask) batches."""
    keys, labels = [], []
    for images, batch_labels, mask in batches:
      real = np.asarray(mask) > 0
      keys += _keys(np.asarray(images)[real])
      labels.append(np.asarray(batch_labels)[real])
    return keys, np.concatenate(labels) if labels else np.zeros([0], np.int64)

  def test_the_split_in_order_then_padding_in_full_static_batches(self):
    ds, num_examples = pipeline.make_eval_dataset(self.builder, "validation", 48)
    self.assertEqual(ds.element_spec, (
        tf.TensorSpec([48, 48, 48, 1], tf.uint8), tf.TensorSpec([48], tf.int64),
        tf.TensorSpec([48], tf.float32)))
    batches = [tuple(t.numpy() for t in batch) for batch in ds]
    self.assertLen(batches, -(-num_examples // 48))  # 140 examples: 3 batches, 4 padded.
    mask = np.concatenate([m for _, _, m in batches])
    self.assertAllEqual(mask, [1.0] * num_examples + [0.0] * (len(mask) - num_examples))
    padding = slice(num_examples - 2 * 48, None)
    self.assertAllEqual(batches[-1][0][padding], np.zeros_like(batches[-1][0][padding]))
    self.assertAllEqual(batches[-1][1][padding], np.zeros_like(batches[-1][1][padding]))
    expected = _tfds_examples(self.builder, "validation")
    keys, labels = self._real(batches)
    self.assertEqual(keys, _keys(np.stack([image for image, _ in expected])))
    self.assertAllEqual(labels, [label for _, label in expected])

  def test_every_replica_gets_a_full_batch_and_pipelines_the_same_steps(self):
    # 33 examples in steps of 30 images over 4 replicas: 8 per replica (30 rounded up to 32),
    # two steps; the second holds one example, so three of its four batches are padding only.
    split = "validation[:33]"
    expected = _tfds_examples(self.builder, split)
    for pipelines in (1, 2):
      parts = []
      for pipeline_id in range(pipelines):
        context = tf.distribute.InputContext(pipelines, pipeline_id, num_replicas_in_sync=4)
        ds, num_examples = pipeline.make_eval_dataset(self.builder, split, 30, context)
        self.assertEqual(num_examples, 33)
        self.assertEqual(ds.element_spec[0].shape, [8, 48, 48, 1])
        parts.append([tuple(t.numpy() for t in batch) for batch in ds])
      with self.subTest(pipelines=pipelines):
        self.assertEqual([len(part) for part in parts], [2 * 4 // pipelines] * pipelines)
        keys = [key for part in parts for key in self._real(part)[0]]
        self.assertCountEqual(keys, _keys(np.stack([image for image, _ in expected])))
        labels = np.concatenate([self._real(part)[1] for part in parts])
        self.assertCountEqual(labels, [label for _, label in expected])

  def test_padded_batches_of_whole_steps_and_of_nothing(self):
    examples = tf.data.Dataset.from_tensor_slices((np.arange(12, dtype=np.float32),
                                                   np.arange(12, dtype=np.int32)))
    batches = list(pipeline.padded_batches(examples, 6).as_numpy_iterator())
    self.assertLen(batches, 2)  # A multiple of the batch: no step of padding only.
    self.assertAllEqual(np.concatenate([m for _, _, m in batches]), np.ones(12))
    self.assertAllEqual(np.concatenate([l for _, l, _ in batches]), np.arange(12))
    self.assertEmpty(list(pipeline.padded_batches(examples.take(0), 6)))
    with self.assertRaisesRegex(ValueError, "global_batch"):
      pipeline.padded_batches(examples, 0)
    with self.assertRaisesRegex(ValueError, "cannot read split 'dev'"):
      pipeline.make_eval_dataset(self.builder, "dev")


class CacheTest(tf.test.TestCase):
  """Training reads and decodes the split once however many epochs follow."""

  def setUp(self):
    super().setUp()
    generated_data_dir = support.generated_data_dir()
    tmp_path = support.tempdir(self)
    shutil.copytree(generated_data_dir / "generated_faces", tmp_path / "generated_faces")
    self.builder = datasets.get_builder(_DATASET, tmp_path)
    self.train_keys = _train_keys(str(generated_data_dir))
    self.hidden = tmp_path / "hidden"

  def _epochs_after_hiding_the_files(self, cache: bool) -> list[str]:
    """Reads 3 epochs, moving the TFRecord files away once the first batch has come."""
    ds, _ = pipeline.make_dataset(self.builder, "train", _BATCH, training=True,
                                  epoch_seeds=[1, 2, 3], cache=cache)
    batches = iter(ds)
    keys = _keys(next(batches)[0].numpy())
    self.hidden.mkdir()
    for record_file in pathlib.Path(self.builder.data_dir).glob("*.tfrecord*"):
      record_file.rename(self.hidden / record_file.name)
    for images, _ in batches:
      keys += _keys(images.numpy())
    return keys

  def test_later_epochs_come_from_memory(self):
    keys = self._epochs_after_hiding_the_files(cache=True)
    self.assertLen(keys, 3 * len(self.train_keys))
    self.assertCountEqual(keys[-len(self.train_keys):], self.train_keys)

  def test_without_cache_later_epochs_read_the_files_again(self):
    with self.assertRaises(tf.errors.NotFoundError):
      self._epochs_after_hiding_the_files(cache=False)

  def test_validation_reads_the_split_only_at_the_first_epoch(self):
    names = datasets.label_names(self.builder)
    def angry(images):  # Every image predicted angry: the report counts the images.
      return tf.one_hot(tf.zeros(tf.shape(images)[:1], tf.int32), len(names))
    validation = inputs.eval_dataset_fn(self.builder, "validation", 48)
    evaluator = metrics.StreamingEvaluator(angry, names)
    first = evaluator.evaluate(validation)
    self.hidden.mkdir()
    for record_file in pathlib.Path(self.builder.data_dir).glob("*.tfrecord*"):
      record_file.rename(self.hidden / record_file.name)
    np.testing.assert_array_equal(evaluator.evaluate(validation).confusion, first.confusion)
    self.assertEqual(first.totals.count, self.builder.info.splits["validation"].num_examples)


class InputPipelineBenchmarkTest(tf.test.TestCase):
  """Smoke test of benchmarks/input_pipeline.py, so that it cannot rot."""

  def setUp(self):
    super().setUp()
    self.builder = datasets.get_builder(_DATASET, support.generated_data_dir())
    self.workdir = support.tempdir(self)

  def test_every_mode_runs_and_reports(self):
    from benchmarks import input_pipeline  # pylint: disable=g-import-not-at-top
    results = input_pipeline.run(self.builder, self.workdir, batch_size=32, passes=1,
                                 max_images=128, modes=input_pipeline.MODES,
                                 steps_per_execution=3)  # 4 steps: calls of 3 and 1
    self.assertCountEqual(results, input_pipeline.MODES)
    for rate in results.values():
      self.assertGreater(rate.images_per_s, 0)
    report = input_pipeline.format_report(results, "header")
    self.assertIn("| a | seed-style", report)
    self.assertRegex(report, r"b/a = [\d.]+x .*, c/a = [\d.]+x")


def _tfds_examples(builder, split: str) -> list[tuple[np.ndarray, int]]:
  """All (image, label) pairs of a split, read straight from TFDS."""
  ds = builder.as_dataset(split=split, as_supervised=True)
  return [(image.numpy(), int(label)) for image, label in ds]


@functools.lru_cache
def _train_keys(data_dir: str) -> list[str]:
  builder = datasets.get_builder(_DATASET, data_dir)
  return _keys(np.stack([image for image, _ in _tfds_examples(builder, "train")]))


def _read_labels(ds: tf.data.Dataset) -> list[int]:
  return [int(label) for _, labels in ds for label in labels.numpy()]
