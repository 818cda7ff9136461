"""Input pipeline: one split of a TFDS builder -> ready batches of uint8 faces and int64 labels.

`make_dataset` is the only entry point. It fits `strategy.distribute_datasets_from_function`:

    def dataset_fn(ctx):
      batch = ctx.get_per_replica_batch_size(global_batch)
      return pipeline.make_dataset(builder, "train", batch, training=True, input_context=ctx)[0]
    dist = strategy.distribute_datasets_from_function(dataset_fn)

The steps, in order, and why:
  1. `as_dataset` with a ReadConfig: each input pipeline reads its own files (`input_context`), in
     a seeded shuffled order when training, interleaved in parallel; PNG -> uint8 decoding in
     parallel.
  2. Training: the pipeline's whole split becomes one uint8 tensor (66 MB for FER-2013 train),
     cached, so later epochs neither read nor decode. Every epoch draws a new seeded permutation of
     all examples (a complete shuffle; FER-2013 csv rows come grouped by emotion) and gathers the
     batches from it, dropping the remainder (static shapes for the step). This is cache ->
     shuffle(whole split, reshuffle each epoch) -> batch(drop_remainder) at a per-batch instead of
     per-example cost: a per-example `shuffle` + `batch` tops out at a few hundred thousand images/s
     on a core, too slow to keep an accelerator busy. No `repeat`: one pass is one epoch.
     Evaluation: `cache()`, then `batch` in file order, keeping the remainder.
  3. Optional host augmentation: `augment.augment_batch` mapped on whole batches with a per-batch
     seed; otherwise the training step augments on the device and images stay uint8 (4x fewer bytes
     to the accelerator; `preprocess.to_model_input` makes them float there).
  4. Optional tf.data service (`data_service_address`): everything above runs on the service's
     workers, which may be other machines. Each epoch is a new service job, so nothing is cached.
  5. `prefetch(AUTOTUNE)`.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import augment


def make_dataset(builder: tfds.core.DatasetBuilder,
                 split: str,
                 batch_size: int,
                 *,
                 training: bool,
                 input_context: tf.distribute.InputContext | None = None,
                 seed: int = 0,
                 deterministic: bool = False,
                 cache: bool = True,
                 data_service_address: str | None = None,
                 augment_on_host: augment.AugmentParams | None = None,
                 ) -> tuple[tf.data.Dataset, int]:
  """Returns batches of (images, labels) of one split and the split's number of examples.

  Args:
    builder: a prepared TFDS builder (e.g. `emotion_tfds.datasets.get_builder`).
    split: split name ("train", "validation", "test") or TFDS slice ("train[:10%]").
    batch_size: examples per batch of THIS pipeline, i.e. per replica: under a strategy the caller
      passes `input_context.get_per_replica_batch_size(global_batch_size)`.
    training: shuffle (files and examples) and drop the last partial batch; else keep file order
      and the remainder.
    input_context: from `distribute_datasets_from_function`; each input pipeline then reads its
      own files (or, when the split has fewer files than pipelines, its own even slice of examples).
    seed: seeds the file order, the per-epoch permutations and the host augmentation.
    deterministic: also make the element order independent of thread timing (tf.data
      `deterministic` option), so two runs with the same seed give the same batches. Off by
      default: parallel stages may then hand out ready elements first.
    cache: keep the decoded examples in memory after the first epoch. (Training holds one epoch's
      examples in memory either way.)
    data_service_address: "grpc://host:port" of a tf.data service dispatcher: the pipeline runs on
      its workers in "distributed_epoch" mode (ShardingPolicy.DYNAMIC), so an epoch is still every
      example once however many workers there are ("parallel_epochs" would give each worker's
      full pass, i.e. N copies per epoch). The order is then not deterministic, and with host
      augmentation every worker draws the same sequence of per-batch seeds (for other images).
    augment_on_host: if given, augment on the host CPU with these strengths and yield float32
      images in [0, 1] instead of uint8.

  Returns:
    (dataset, num_examples): dataset of (images [B, 48, 48, 1] uint8, or float32 with
    `augment_on_host`, labels [B] int64); num_examples is the whole split's count (all pipelines).

  Raises:
    ValueError: if the builder lacks the split or batch_size < 1.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  splits = builder.info.splits
  try:
    num_examples = splits[split].num_examples
  except (KeyError, ValueError) as e:
    raise ValueError(f"{builder.info.full_name} (in {builder.data_dir}) cannot read split "
                     f"{split!r}: {e}") from None

  options = tf.data.Options()
  options.deterministic = deterministic
  split, read_context = _shard(splits, split, input_context)
  read_config = tfds.ReadConfig(
      options=options,
      try_autocache=False,  # We cache ourselves, before the shuffle.
      shuffle_seed=seed,
      shuffle_reshuffle_each_iteration=True,
      input_context=read_context,
      skip_prefetch=True,  # We prefetch at the end.
  )
  ds = builder.as_dataset(split=split, shuffle_files=training, as_supervised=True,
                          read_config=read_config)
  cache = cache and not data_service_address
  if training:
    ds = _shuffled_batches(ds, batch_size, num_examples, seed, cache)
  else:
    ds = (ds.cache() if cache else ds).batch(batch_size)
  if augment_on_host is not None:
    ds = _augment(ds, seed, augment_on_host, deterministic)
  if data_service_address:
    ds = ds.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
        service=data_service_address))
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return ds.with_options(options), num_examples


def _shard(splits, split: str, input_context: tf.distribute.InputContext | None):
  """(split, ReadConfig input_context): file sharding if possible, else an even example slice."""
  if input_context is None or input_context.num_input_pipelines == 1:
    return split, None
  if splits[split].num_shards >= input_context.num_input_pipelines:
    return split, input_context
  slices = tfds.even_splits(split, n=input_context.num_input_pipelines, drop_remainder=True)
  return slices[input_context.input_pipeline_id], None


def _shuffled_batches(ds: tf.data.Dataset, batch_size: int, num_examples: int, seed: int,
                      cache: bool) -> tf.data.Dataset:
  """Full batches of a new seeded permutation of all of `ds`'s examples, every epoch."""
  whole = ds.batch(num_examples)  # One element: every example this pipeline reads.
  if cache:
    whole = whole.cache()
  # One seed per epoch: Dataset.random draws a new stream each time the dataset is iterated.
  seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).take(1)

  def epoch(examples, epoch_seed):
    images, labels = examples
    count = tf.shape(labels, out_type=tf.int64)[0]
    # Folded so that it differs from the first per-batch augmentation seed (same random stream).
    order_seed = tf.random.experimental.stateless_fold_in(epoch_seed, 1, alg="philox")
    order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=order_seed,
                                                     alg="philox")
    steps = count // batch_size
    batches = tf.reshape(order[:steps * batch_size], [steps, batch_size])
    return tf.data.Dataset.from_tensor_slices(batches).map(
        lambda indices: (tf.gather(images, indices), tf.gather(labels, indices)))

  return tf.data.Dataset.zip(whole, seeds).flat_map(epoch)


def _augment(ds: tf.data.Dataset, seed: int, params: augment.AugmentParams,
             deterministic: bool) -> tf.data.Dataset:
  """Maps `augment_batch` over the batches, each with its own seed, new ones every epoch."""
  seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
  return tf.data.Dataset.zip(ds, seeds).map(
      lambda batch, batch_seed: (augment.augment_batch(batch[0], batch_seed, params), batch[1]),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
