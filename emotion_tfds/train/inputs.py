"""The data of a run: its datasets (generated faces built on demand), each stage's input pipelines.

`train_dataset_fn` is what `strategy.distribute_datasets_from_function` calls once per input
pipeline: epochs `first_epoch..stage.epochs-1` one after the other, each `steps` batches shuffled
with a seed of (run seed, stage, epoch) over one cached read of the split, so the batches of an
epoch are the same whether the run was interrupted or not.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from emotion_tfds import seeds
from emotion_tfds.data import augment
from emotion_tfds.data import datasets
from emotion_tfds.data import mixtures
from emotion_tfds.data import pipeline
from emotion_tfds.train import stages as stages_lib


def built_dataset(dataset: str, data_dir: str, generate_rows: int, seed: int = 0):
  """The built dataset `dataset` in `data_dir`; a generated_faces config that is not built is
  generated (`generate_rows` faces) and built first. Nothing else is ever generated.

  Raises:
    errors.DataNotBuiltError: the dataset is not built (and is not generated_faces, or
      `generate_rows` is 0); the message says how to build it.
  """
  if datasets.MIXTURE_SEPARATOR in dataset:
    fer, crops = datasets.mixture_parts(dataset)
    return mixtures.FillGapMixture(built_dataset(fer, data_dir, generate_rows, seed),
                                   built_dataset(crops, data_dir, 0))
  if (generate_rows > 0 and datasets.family(dataset) == datasets.GENERATED_FACES
      and not datasets.get_builder(dataset, data_dir).is_prepared()):
    print(f"{dataset} is not built in {data_dir}: generating {generate_rows} faces and building "
          "it.", flush=True)
    return datasets.ensure_generated(dataset, data_dir, num_rows=generate_rows, seed=seed)
  return datasets.require_built(dataset, data_dir)


def split_size(builder, split: str) -> int:
  """Examples in `split` of a built dataset."""
  return builder.info.splits[split].num_examples


def train_dataset_fn(builder, stage: stages_lib.Stage, seed: int, stage_index: int,
                     first_epoch: int, steps: int, deterministic: bool,
                     host_augment: augment.AugmentParams | None,
                     data_service_address: str | None = None,
                     ) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
  """The per-input-pipeline training dataset of a stage, for `distribute_datasets_from_function`.

  Epochs `first_epoch..stage.epochs-1` one after the other, each `steps` batches shuffled with
  `seeds.epoch_seed(seed, stage_index, epoch)` over one cached read of the split: the batches of
  an epoch do not depend on where the run (re)started, and every worker has its steps even when
  shards differ in size.
  """

  def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    ds, _ = pipeline.make_dataset(
        builder, "train", input_context.get_per_replica_batch_size(stage.global_batch),
        training=True, input_context=input_context, seed=seeds.stage_seed(seed, seeds.Stream.STAGE, stage_index),
        epoch_seeds=[seeds.epoch_seed(seed, stage_index, epoch)
                     for epoch in range(first_epoch, stage.epochs)],
        steps_per_epoch=steps, deterministic=deterministic, augment_on_host=host_augment,
        data_service_address=data_service_address)
    return ds

  return dataset_fn


def eval_dataset_fn(builder, split: str, global_batch: int = pipeline.EVAL_BATCH
                    ) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
  """The per-input-pipeline evaluation dataset of one whole split, for `metrics.StreamingEvaluator`
  (`pipeline.make_eval_dataset`: in order, full padded batches).

  Each input pipeline's dataset is made once and handed out again, so a validation every epoch
  reads and decodes the split only the first time (its cache is the dataset's).
  """
  made: dict[tuple[int, int, int], tf.data.Dataset] = {}

  def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    key = (input_context.num_input_pipelines, input_context.input_pipeline_id,
           input_context.num_replicas_in_sync)
    if key not in made:
      made[key] = pipeline.make_eval_dataset(builder, split, global_batch, input_context)[0]
    return made[key]

  return dataset_fn
