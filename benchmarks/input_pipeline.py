"""Input-pipeline benchmark: images/s of the seed's jpeg + OpenCV generator against this pipeline.

Run from the repository root:
  python -m benchmarks.input_pipeline                            # 36,000 generated faces
  python -m benchmarks.input_pipeline --manual_dir=DIR           # DIR/fer2013.csv(.gz), e.g. real
  python -m benchmarks.input_pipeline --modes=a,b,c,plain --passes=3 --batch_size=256

Over the same train-split images and the same five augmentations (`AugmentParams()` strengths):
  a      the seed's way, re-created: the images as jpeg files in class folders, read one at a time
         with cv2.imread in a Python generator, augmented per image with OpenCV/numpy, batched
         with numpy.
  b      `pipeline.make_dataset(augment_on_host=...)`: `augment_batch` mapped in tf.data (CPU).
  c      `pipeline.make_dataset()` uint8 batches through `distribute_datasets_from_function` into a
         tf.function step that runs `augment_batch` (on the GPU when there is one), as a training
         step would: --steps_per_execution steps per call (Keras' option of that name; 1: one
         call per batch); a sum stands in for the model.
  plain  (reference) `pipeline.make_dataset()` batches, no augmentation.
Each mode first runs one unmeasured warm-up pass (cache fill, tracing, XLA compilation), then
--passes measured passes, taken in turns across the modes; it prints images/s per mode and the
ratios b/a and c/a. It also prints
images per CPU-second (process CPU time, all threads), which varies less than wall time when
other processes share the cores.
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

import os
import pathlib
import shutil
import tempfile
import time
from typing import Callable
from typing import Iterable
from typing import Iterator
from typing import NamedTuple

from absl import flags
import cv2
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from emotion_tfds.data import augment
from emotion_tfds.data import datasets
from emotion_tfds.data import pipeline

MODES = ("a", "b", "c", "plain")
DESCRIPTIONS = {
    "a": "seed-style: jpeg files, cv2.imread + OpenCV/numpy augmentation per image",
    "b": "make_dataset, augment_batch mapped in tf.data (host CPU)",
    "c": "make_dataset uint8 -> augment_batch in a tf.function step",
    "plain": "make_dataset uint8 batches, no augmentation (reference)",
}
_SPLIT = "train"
# Generated faces by default: FER-2013's size (train split ~28,800 like its 28,709), so that the
# per-epoch costs weigh the same as on the real data.
GENERATED_ROWS = 36_000


class Rate(NamedTuple):
  """Throughput of one mode."""
  images_per_s: float  # wall clock
  images_per_cpu_s: float  # process CPU time, all threads


def run(builder: tfds.core.DatasetBuilder, workdir: str | os.PathLike, *, batch_size: int = 256,
        passes: int = 2, max_images: int = 0, modes: Iterable[str] = ("a", "b", "c"),
        seed: int = 0, params: augment.AugmentParams = augment.AugmentParams(),
        steps_per_execution: int = 1) -> dict[str, Rate]:
  """Measures images/s of each mode over the train split of `builder`.

  Args:
    builder: a prepared fer2013 builder.
    workdir: where mode a's jpeg folders are written.
    batch_size: images per batch (per step).
    passes: measured passes per mode, after one warm-up pass.
    max_images: images per pass (whole batches); 0 means the whole split.
    modes: a subset of MODES.
    seed: seeds the shuffles and augmentations.
    params: augmentation strengths, the same for every mode.
    steps_per_execution: mode c's training steps per tf.function call.

  Returns:
    the throughput of each mode.
  """
  steps = max_images // batch_size if max_images else None
  if steps == 0:
    raise ValueError(f"max_images={max_images} is less than one batch of {batch_size}.")
  makers: dict[str, Callable[[], Callable[[], int]]] = {
      "a": lambda: _seed_style(builder, pathlib.Path(workdir), batch_size, steps, seed, params),
      "b": lambda: _host_augmented(builder, batch_size, steps, seed, params),
      "c": lambda: _step_augmented(builder, batch_size, steps, seed, params, steps_per_execution),
      "plain": lambda: _plain(builder, batch_size, steps, seed),
  }
  unknown = set(modes) - set(MODES)
  if unknown:
    raise ValueError(f"Unknown modes {sorted(unknown)}; expected some of {MODES}.")
  one_pass = {mode: makers[mode]() for mode in modes}
  for run_pass in one_pass.values():
    run_pass()  # Warm-up.
  totals = {mode: np.zeros(3) for mode in modes}  # images, wall s, CPU s
  # Round robin, so that every mode sees the same share of any load from other processes.
  for _ in range(passes):
    for mode, run_pass in one_pass.items():
      wall, cpu = time.perf_counter(), time.process_time()
      images = run_pass()
      totals[mode] += (images, time.perf_counter() - wall, time.process_time() - cpu)
  return {mode: Rate(images / wall, images / cpu) for mode, (images, wall, cpu) in totals.items()}


def format_report(results: dict[str, Rate], header: str) -> str:
  """Markdown table of images/s per mode plus the ratios to mode a."""
  lines = [header, "", "| mode | what | images/s | images/CPU-s |", "|---|---|---:|---:|"]
  for mode, rate in results.items():
    lines.append(f"| {mode} | {DESCRIPTIONS[mode]} | {rate.images_per_s:,.0f} | "
                 f"{rate.images_per_cpu_s:,.0f} |")
  if "a" in results:
    ratios = [f"{mode}/a = {results[mode].images_per_s / results['a'].images_per_s:.1f}x "
              f"({results[mode].images_per_cpu_s / results['a'].images_per_cpu_s:.1f}x per CPU-s)"
              for mode in ("b", "c") if mode in results]
    if ratios:
      lines += ["", ", ".join(ratios)]
  return "\n".join(lines)


# Mode a: the seed's approach.


def _seed_style(builder, workdir: pathlib.Path, batch_size: int, steps: int | None, seed: int,
                params: augment.AugmentParams) -> Callable[[], int]:
  root = _write_jpeg_folders(builder, workdir / "seed_style_jpegs")
  rng = np.random.default_rng(seed)

  def one_pass() -> int:
    count = 0
    for step, (images, _) in enumerate(_seed_style_batches(root, batch_size, rng, params)):
      if step == steps:
        break
      count += len(images)
    return count
  return one_pass


def _write_jpeg_folders(builder, root: pathlib.Path) -> pathlib.Path:
  """Writes the train split as root/<label name>/<n>.jpg (the seed's image-folder layout)."""
  names = datasets.label_names(builder)
  for name in names:
    (root / name).mkdir(parents=True, exist_ok=True)
  ds = builder.as_dataset(split=_SPLIT, as_supervised=True)
  for n, (image, label) in enumerate(tfds.as_numpy(ds)):
    path = root / names[label] / f"{n}.jpg"
    if not cv2.imwrite(str(path), image):
      raise OSError(f"Could not write {path}.")
  return root


def _seed_style_batches(root: pathlib.Path, batch_size: int, rng: np.random.Generator,
                        params: augment.AugmentParams) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Python generator over the jpeg folders: shuffled files, one cv2.imread + augmentation each."""
  classes = sorted(p.name for p in root.iterdir())
  files = [(root / name / file, label) for label, name in enumerate(classes)
           for file in os.listdir(root / name)]
  order = rng.permutation(len(files))
  for start in range(0, len(order) - batch_size + 1, batch_size):
    images, labels = [], []
    for index in order[start:start + batch_size]:
      path, label = files[index]
      image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
      images.append(_seed_style_augment(image, rng, params))
      labels.append(label)
    yield np.stack(images)[..., None], np.array(labels, np.int64)


def _seed_style_augment(image: np.ndarray, rng: np.random.Generator,
                        params: augment.AugmentParams) -> np.ndarray:
  """uint8 [H, W] -> float32 [H, W] in [0, 1]: the five augmentations with OpenCV/numpy."""
  height, width = image.shape
  side = 1.0 - params.crop * rng.random()
  crop_h, crop_w = max(2, round(side * height)), max(2, round(side * width))
  top = rng.integers(0, height - crop_h + 1)
  left = rng.integers(0, width - crop_w + 1)
  image = cv2.resize(image[top:top + crop_h, left:left + crop_w], (width, height),
                     interpolation=cv2.INTER_LINEAR)
  if rng.random() < params.flip_prob:
    image = cv2.flip(image, 1)
  sigma = params.blur_sigma * rng.random()
  if sigma > 0:
    image = cv2.GaussianBlur(image, (0, 0), sigma)
  image = image.astype(np.float32) / 255.0
  mean = image.mean()
  factor = 1.0 + params.contrast * rng.uniform(-1.0, 1.0)
  image = (image - mean) * factor + mean + params.brightness * rng.uniform(-1.0, 1.0)
  image = image + rng.normal(0.0, params.noise_stddev * rng.random(), image.shape)
  return np.clip(image, 0.0, 1.0).astype(np.float32)


# Modes b, c and plain: this pipeline.


def _count_pass(ds: tf.data.Dataset) -> Callable[[], int]:
  def one_pass() -> int:
    return sum(int(images.shape[0]) for images, _ in ds)
  return one_pass


def _limit(ds: tf.data.Dataset, steps: int | None) -> tf.data.Dataset:
  return ds if steps is None else ds.take(steps)


def _host_augmented(builder, batch_size, steps, seed, params) -> Callable[[], int]:
  ds, _ = pipeline.make_dataset(builder, _SPLIT, batch_size, training=True, seed=seed,
                                augment_on_host=params)
  return _count_pass(_limit(ds, steps))


def _plain(builder, batch_size, steps, seed) -> Callable[[], int]:
  ds, _ = pipeline.make_dataset(builder, _SPLIT, batch_size, training=True, seed=seed)
  return _count_pass(_limit(ds, steps))


def _step_augmented(builder, batch_size, steps, seed, params,
                    steps_per_execution: int) -> Callable[[], int]:
  device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
  strategy = tf.distribute.OneDeviceStrategy(device)

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    ds, _ = pipeline.make_dataset(builder, _SPLIT, context.get_per_replica_batch_size(batch_size),
                                  training=True, seed=seed, input_context=context)
    return _limit(ds, steps)

  dist = strategy.distribute_datasets_from_function(dataset_fn)
  num_steps = steps or builder.info.splits[_SPLIT].num_examples // batch_size
  with strategy.scope():
    step_counter = tf.Variable(0, dtype=tf.int64, trainable=False)

  def augment_step(images: tf.Tensor) -> tf.Tensor:
    step_seed = augment.step_seed(seed, step_counter)
    step_counter.assign_add(1)
    return tf.reduce_sum(augment.augment_batch(images, step_seed, params))

  @tf.function
  def train_steps(iterator, count):
    """`count` steps in one call, like Keras' steps_per_execution."""
    total = tf.constant(0.0)
    for _ in tf.range(count):
      images, _ = next(iterator)
      total += strategy.reduce("SUM", strategy.run(augment_step, args=(images,)), axis=None)
    return total

  def one_pass() -> int:
    iterator, done, total = iter(dist), 0, None
    while done < num_steps:
      count = min(steps_per_execution, num_steps - done)
      total = train_steps(iterator, tf.constant(count))
      done += count
    total.numpy()  # Waits for the device.
    return done * batch_size
  return one_pass


def _define_flags() -> None:
  """Defines the CLI flags; only when run as a script, so importing never clashes."""
  flags.DEFINE_string("manual_dir", None,
                      "Folder with fer2013.csv(.gz) to build and use; default: generated faces.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir to build into; default: a temp folder.")
  flags.DEFINE_string("config", "fer7", "Dataset config: fer2013/<config> with --manual_dir, "
                      "generated_faces/<config> without.")
  flags.DEFINE_integer("num_rows", GENERATED_ROWS,
                       "Rows of generated faces (without --manual_dir).", lower_bound=100)
  flags.DEFINE_integer("batch_size", 256, "Images per batch.", lower_bound=1)
  flags.DEFINE_integer("passes", 2, "Measured passes per mode (after one warm-up pass).",
                       lower_bound=1)
  flags.DEFINE_integer("max_images", 0, "Images per pass; 0: the whole train split.",
                       lower_bound=0)
  flags.DEFINE_list("modes", ["a", "b", "c"], f"Modes to run, some of {list(MODES)}.")
  flags.DEFINE_integer("seed", 0, "Seed of shuffles and augmentations.")
  flags.DEFINE_integer("steps_per_execution", 1, "Mode c: training steps per tf.function call.",
                       lower_bound=1)


def main(argv: list[str]) -> None:
  """Builds or finds the data, runs the modes and prints the table."""
  del argv
  f = flags.FLAGS
  scratch = tempfile.mkdtemp(prefix="input_pipeline_bench_")
  try:
    data_dir = f.data_dir or os.path.join(scratch, "tfds")
    if f.manual_dir:
      builder = datasets.build(f"{datasets.FER2013}/{f.config}", data_dir, f.manual_dir)
    else:
      builder = datasets.ensure_generated(f"{datasets.GENERATED_FACES}/{f.config}", data_dir,
                                          num_rows=f.num_rows)
    source = datasets.describe(builder)
    results = run(builder, scratch, batch_size=f.batch_size, passes=f.passes,
                  max_images=f.max_images, modes=f.modes, seed=f.seed,
                  steps_per_execution=f.steps_per_execution)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
  num_images = builder.info.splits[_SPLIT].num_examples
  header = (f"Input pipeline, {source}: {_SPLIT} split {num_images:,} images, batch "
            f"{f.batch_size}, {f.passes} measured passes, mode c on {device} with "
            f"{f.steps_per_execution} steps per call, {os.cpu_count()} CPU cores.")
  print(format_report(results, header))


if __name__ == "__main__":
  _define_flags()
  quiet.run(main)
