"""Augmentation-cost benchmark: images/s of `augment.augment_batch` per kind of augmentation.

Run from the repository root:
  python -m benchmarks.augment_cost
  python -m benchmarks.augment_cost --batch_size=64 --steps=50

On the same random uint8 48x48 batches, taken in turns, it times the device path of the training
step's augmentation (`augment.augment_batch` in a `tf.function`, what `training.TrainingModel`
runs) for: the plain uint8 -> float conversion (the baseline, `NO_AUGMENTATION`), each kind alone
at the strength named below, the seed's five (`AugmentParams()`) and everything on. It prints
images/s and the cost per image in microseconds above the baseline. For scale: fastnet's training
step takes about 6,500 us per image here (154 images/s in `benchmarks.train_step`).
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

import dataclasses
import time

from absl import flags
import numpy as np
import tensorflow as tf

from emotion_tfds.data import augment

_BATCH = flags.DEFINE_integer("batch_size", 64, "Images per batch.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 40, "Measured batches per repeat.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Measured repeats, in turns.", lower_bound=1)

_ONE_AT_A_TIME = {"crop": 0.15, "flip_prob": 0.5, "blur_sigma": 1.0, "contrast": 0.3,
                  "brightness": 0.1, "noise_stddev": 0.04, "rotate": 10.0, "shift": 0.1,
                  "erase_prob": 0.5}


def settings() -> dict[str, augment.AugmentParams]:
  """The measured settings by label, the baseline first."""
  out = {"none (uint8 -> float only)": augment.NO_AUGMENTATION}
  for field, strength in _ONE_AT_A_TIME.items():
    out[f"{field}={strength:g}"] = dataclasses.replace(augment.NO_AUGMENTATION, **{field: strength})
  out["the seed's five (AugmentParams())"] = augment.AugmentParams()
  out["all nine"] = augment.AugmentParams(rotate=10.0, shift=0.1, erase_prob=0.5)
  return out


def measure(params: dict[str, augment.AugmentParams], batch: int, steps: int,
            repeats: int) -> dict[str, float]:
  """images/s of each setting: the best of `repeats` timed runs of `steps` batches, in turns."""
  images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, 48, 48, 1), np.uint8))
  functions = {}
  for label, p in params.items():
    @tf.function
    def step(x, i, p=p):
      return augment.augment_batch(x, augment.step_seed(0, i), p)
    step(images, tf.constant(0, tf.int64)).numpy()  # Trace and compile outside the timing.
    functions[label] = step
  best = {label: 0.0 for label in params}
  for _ in range(repeats):
    for label, step in functions.items():
      start = time.perf_counter()
      for i in range(steps):
        out = step(images, tf.constant(i, tf.int64))
      out.numpy()
      best[label] = max(best[label], steps * batch / (time.perf_counter() - start))
  return best


def main(argv):
  del argv
  rates = measure(settings(), _BATCH.value, _STEPS.value, _REPEATS.value)
  base = next(iter(rates.values()))
  print(f"augment_batch on batches of {_BATCH.value} uint8 48x48 images, best of "
        f"{_REPEATS.value} x {_STEPS.value} batches:")
  print("| setting | images/s | us per image above the baseline |")
  print("| --- | ---: | ---: |")
  for label, rate in rates.items():
    print(f"| {label} | {rate:,.0f} | {1e6 / rate - 1e6 / base:,.1f} |")


if __name__ == "__main__":
  quiet.run(main)
