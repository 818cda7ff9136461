"""Input pipeline: one split of a TFDS builder -> ready batches of uint8 faces and int64 labels.

`make_dataset` reads a split for training (or plainly, in batches); `make_eval_dataset` for
evaluation. Both fit `strategy.distribute_datasets_from_function`:

    def dataset_fn(ctx):
      batch = ctx.get_per_replica_batch_size(global_batch)
      return pipeline.make_dataset(builder, "train", batch, training=True, input_context=ctx)[0]
    dist = strategy.distribute_datasets_from_function(dataset_fn)

    dist = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.make_eval_dataset(builder, "test", global_batch, ctx)[0])

`make_dataset`'s steps, in order, and why:
  1. `as_dataset` with a ReadConfig: each input pipeline reads its own files (`input_context`), in
     a seeded shuffled order when training, interleaved in parallel; PNG -> uint8 decoding in
     parallel.
  2. Training: the pipeline's whole split becomes one uint8 tensor (66 MB for FER-2013 train),
     cached, so later epochs neither read nor decode. Every epoch draws a seeded permutation of all
     examples (a complete shuffle; FER-2013 csv rows come grouped by emotion) and gathers the
     batches from it, dropping the remainder (static shapes for the step). This is cache ->
     shuffle(whole split, reshuffle each epoch) -> batch(drop_remainder) at a per-batch instead of
     per-example cost: a per-example `shuffle` + `batch` tops out at a few hundred thousand images/s
     on a core, too slow to keep an accelerator busy. Without `epoch_seeds` one pass is one epoch
     and each pass draws a new permutation; with them (training runs) the dataset is those epochs
     in a row, each a function of its own seed only, so a resumed run gets the same batches.
     Not training: `cache()`, then `batch` in file order, keeping the remainder.
  3. Optional host augmentation: `augment.augment_batch` mapped on whole batches, each with a seed
     drawn from its epoch's seed; otherwise the training step augments on the device and images
     stay uint8 (4x fewer bytes to the accelerator; `preprocess.to_model_input` makes them float
     there).
  4. Optional tf.data service (`data_service_address`): everything above runs on the service's
     workers, which may be other machines. Nothing is cached there: a worker reads the files that
     the dispatcher hands it, again each epoch.
  5. `prefetch(AUTOTUNE)`.

Evaluation (`make_eval_dataset`, `padded_batches`) feeds every replica full batches of one static
shape: the split, in its order, is padded up to a whole number of steps (zero images, label 0,
mask 0) and batched with `drop_remainder`, and each (image, label) comes with a float32 mask (1
real, 0 padding) that the report uses to leave the padding out (it also works as Keras's
sample weight). A split's last partial batch would otherwise leave a replica an empty batch,
for which TensorFlow's oneDNN convolution returns a wrong shape on AVX-512 CPUs (Intel Xeon and
AMD EPYC alike), and which TPUs refuse (they need static shapes). Every input pipeline reads the
whole split (evaluation splits are small) and keeps its own per-replica batches of each step, so
all pipelines, and so all workers, run the same number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds import seeds
from emotion_tfds.data import augment

EVAL_BATCH = 256  # Images per evaluation batch (all replicas), unless a caller says otherwise.
# A fixed generator, so a seed gives the same epochs on any device (as in `augment`).
_ALG = "philox"


def make_dataset(builder: tfds.core.DatasetBuilder,
                 split: str,
                 batch_size: int,
                 *,
                 training: bool,
                 input_context: tf.distribute.InputContext | None = None,
                 seed: int = 0,
                 epoch_seeds: Sequence[int] | None = None,
                 steps_per_epoch: int | None = None,
                 deterministic: bool = False,
                 cache: bool = True,
                 data_service_address: str | None = None,
                 augment_on_host: augment.AugmentParams | None = None,
                 ) -> tuple[tf.data.Dataset, int]:
  """Returns batches of (images, labels) of one split and the split's number of examples.

  Args:
    builder: a prepared TFDS builder (e.g. `emotion_tfds.data.datasets.get_builder`).
    split: split name ("train", "validation", "test") or TFDS slice ("train[:10%]").
    batch_size: examples per batch of THIS pipeline, i.e. per replica: under a strategy the caller
      passes `input_context.get_per_replica_batch_size(global_batch_size)`.
    training: shuffle (files and examples) and drop the last partial batch; else keep file order
      and the remainder.
    input_context: from `distribute_datasets_from_function`; each input pipeline then reads its
      own files (or, when the split has fewer files than pipelines, its own even slice of examples).
    seed: seeds the file order and, without `epoch_seeds`, the per-epoch permutations and host
      augmentation.
    epoch_seeds: training only: the dataset is one epoch per seed, in this order, read and
      decoded once; an epoch's order and host augmentation depend on its seed alone. None: one
      epoch per iteration of the dataset, a new permutation each time.
    steps_per_epoch: training only: batches per epoch, the permutation repeated when this pipeline
      holds fewer (e.g. uneven shards over workers); None: every full batch once.
    deterministic: also make the element order independent of thread timing (tf.data
      `deterministic` option), so two runs with the same seed give the same batches. Off by
      default: parallel stages may then hand out ready elements first.
    cache: keep the decoded examples in memory after the first epoch. (Training holds one epoch's
      examples in memory either way.) Always off with `data_service_address`.
    data_service_address: "grpc://host:port" of a tf.data service dispatcher: the pipeline runs on
      its workers in "distributed_epoch" mode (ShardingPolicy.DYNAMIC), so an epoch is still every
      example once however many workers there are ("parallel_epochs" would give each worker's
      full pass, i.e. N copies per epoch). The order is then not deterministic, and with host
      augmentation every worker draws the same sequence of per-batch seeds (for other images).
    augment_on_host: training only: if given, augment on the host CPU with these strengths and
      yield float32 images in [0, 1] instead of uint8.

  Returns:
    (dataset, num_examples): dataset of (images [B, 48, 48, 1] uint8, or float32 with
    `augment_on_host`, labels [B] int64); num_examples is the whole split's count (all pipelines).

  Raises:
    ValueError: if the builder lacks the split, batch_size < 1, or a training-only argument comes
      with training=False.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if not training and (epoch_seeds is not None or steps_per_epoch or augment_on_host is not None):
    raise ValueError("epoch_seeds, steps_per_epoch and augment_on_host are for training=True.")
  splits = builder.info.splits
  num_examples = _num_examples(builder, split)

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
    ds = _shuffled_batches(ds, batch_size, num_examples, _epoch_seeds(seed, epoch_seeds),
                           steps_per_epoch, cache, augment_on_host, deterministic)
  else:
    ds = (ds.cache() if cache else ds).batch(batch_size)
  if data_service_address:
    ds = ds.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
        service=data_service_address))
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return ds.with_options(options), num_examples


def make_eval_dataset(builder: tfds.core.DatasetBuilder,
                      split: str,
                      global_batch: int = EVAL_BATCH,
                      input_context: tf.distribute.InputContext | None = None,
                      ) -> tuple[tf.data.Dataset, int]:
  """Returns `padded_batches` of one split, read in order and decoded once (cached after the
  first pass), and the split's number of examples.

  Args:
    builder: a prepared TFDS builder (e.g. `emotion_tfds.data.datasets.get_builder`).
    split: split name ("validation", "test") or TFDS slice ("validation[:100]").
    global_batch: examples per step over all replicas (rounded up to a multiple of them).
    input_context: from `distribute_datasets_from_function`; None: one pipeline, one replica.

  Returns:
    (dataset, num_examples): dataset of (uint8 images [b, 48, 48, 1], int64 labels [b], float32
    mask [b]) with a static per-replica batch b; num_examples is the whole split's count.

  Raises:
    ValueError: if the builder lacks the split or global_batch < 1.
  """
  num_examples = _num_examples(builder, split)
  options = tf.data.Options()
  options.deterministic = True  # The split's order: every input pipeline must see the same one.
  read_config = tfds.ReadConfig(options=options, try_autocache=False, skip_prefetch=True)
  ds = builder.as_dataset(split=split, shuffle_files=False, as_supervised=True,
                          read_config=read_config)
  ds = padded_batches(ds.cache(), global_batch, input_context)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options), num_examples


def padded_batches(examples: tf.data.Dataset, global_batch: int,
                   input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
  """(image, label) examples -> full batches of (images, labels, mask) for evaluation.

  The examples, in order and each once, then padding (zeros, label 0, mask 0) up to a whole
  number of steps of `global_batch` examples (rounded up to a multiple of the replicas); a
  batch holds one replica's share of a step, so every replica gets a batch of the same static
  size at every step. With several input pipelines, each keeps its replicas' batches of every
  step (all read every example): the same number of steps everywhere.

  Args:
    examples: unbatched (image, label) pairs of any dtypes, finite, in the same order in every
      input pipeline.
    global_batch: examples per step over all replicas.
    input_context: from `distribute_datasets_from_function`; None: one pipeline, one replica.

  Returns:
    A dataset of (images [b, ...], labels [b], float32 mask [b]), b = ceil(global_batch /
    replicas) static; mask is 1 for an example and 0 for padding.

  Raises:
    ValueError: if global_batch < 1.
  """
  if global_batch < 1:
    raise ValueError(f"global_batch must be >= 1, got {global_batch}.")
  pipelines, pipeline_id, replicas = (
      (input_context.num_input_pipelines, input_context.input_pipeline_id,
       input_context.num_replicas_in_sync) if input_context is not None else (1, 0, 1))
  per_replica = -(-global_batch // replicas)
  zeros = tuple(tf.zeros(spec.shape, spec.dtype) for spec in examples.element_spec)
  padding = tf.data.Dataset.from_tensors((*zeros, tf.constant(0.0))).repeat()
  steps = (examples.map(lambda image, label: (image, label, tf.constant(1.0)))
           .concatenate(padding)
           .batch(per_replica, drop_remainder=True)
           .batch(replicas, drop_remainder=True)
           # Examples come first, so a step that starts with padding holds nothing else: stop.
           .take_while(lambda images, labels, mask: mask[0, 0] > 0))
  batches = steps.unbatch()  # One replica's batch after another, step by step.
  return batches.shard(pipelines, pipeline_id) if pipelines > 1 else batches


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  """The number of examples of `split` (a name or a TFDS slice) of `builder`."""
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as e:
    raise ValueError(f"{builder.info.full_name} (in {builder.data_dir}) cannot read split "
                     f"{split!r}: {e}") from None


def _shard(splits, split: str, input_context: tf.distribute.InputContext | None):
  """(split, ReadConfig input_context): file sharding if possible, else an even example slice."""
  if input_context is None or input_context.num_input_pipelines == 1:
    return split, None
  if splits[split].num_shards >= input_context.num_input_pipelines:
    return split, input_context
  slices = tfds.even_splits(split, n=input_context.num_input_pipelines, drop_remainder=True)
  return slices[input_context.input_pipeline_id], None


def _epoch_seeds(seed: int, epoch_seeds: Sequence[int] | None) -> tf.data.Dataset:
  """int64 [2] stateless seeds, one per epoch: the given ones, else a new one per iteration."""
  if epoch_seeds is None:
    # Dataset.random draws a new stream each time the dataset is iterated.
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).take(1)
  return tf.data.Dataset.from_tensor_slices(
      tf.constant([[epoch, 0] for epoch in epoch_seeds], tf.int64, shape=[len(epoch_seeds), 2]))


def _shuffled_batches(ds: tf.data.Dataset, batch_size: int, num_examples: int,
                      epoch_seeds: tf.data.Dataset, steps_per_epoch: int | None, cache: bool,
                      augment_on_host: augment.AugmentParams | None,
                      deterministic: bool) -> tf.data.Dataset:
  """Full batches of a seeded permutation of all of `ds`'s examples, one epoch per seed."""
  whole = ds.batch(num_examples)  # One element: every example this pipeline reads.
  if cache:
    whole = whole.cache()

  def epoch(examples, epoch_seed):
    images, labels = examples
    count = tf.shape(labels, out_type=tf.int64)[0]
    order_seed = tf.random.experimental.stateless_fold_in(epoch_seed, seeds.ORDER_DRAW, alg=_ALG)
    order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=order_seed,
                                                     alg=_ALG)
    full_batches = count // batch_size
    batches = tf.data.Dataset.from_tensor_slices(
        tf.reshape(order[:full_batches * batch_size], [full_batches, batch_size]))
    steps = full_batches
    if steps_per_epoch is not None:
      batches, steps = batches.repeat().take(steps_per_epoch), steps_per_epoch
    batches = batches.map(lambda indices: (tf.gather(images, indices), tf.gather(labels, indices)))
    if augment_on_host is None:
      return batches
    # One augmentation seed per batch, a function of the epoch's seed alone.
    augment_seed = tf.random.experimental.stateless_fold_in(epoch_seed, seeds.HOST_AUGMENT_DRAW,
                                                              alg=_ALG)
    batch_seeds = tf.random.stateless_uniform([steps, 2], augment_seed, minval=None, maxval=None,
                                              dtype=tf.int64, alg=_ALG)
    return tf.data.Dataset.zip(batches, tf.data.Dataset.from_tensor_slices(batch_seeds))

  # `repeat` re-reads `whole` once per seed: from the cache after the first epoch.
  ds = tf.data.Dataset.zip(whole.repeat(), epoch_seeds).flat_map(epoch)
  if augment_on_host is not None:
    ds = ds.map(
        lambda batch, batch_seed: (augment.augment_batch(batch[0], batch_seed, augment_on_host),
                                   batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  return ds
