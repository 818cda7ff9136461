"""Training-step benchmark: images/s of the project's train step against plain `keras.Model.fit`,
in float32 and bfloat16.

Run from the repository root:
  python -m benchmarks.train_step                       # every registered model, both precisions
  python -m benchmarks.train_step --models=fastnet,base_cnn --batch_size=128 --steps=40
  python -m benchmarks.train_step --precisions=float32  # float32 only

For each model and precision (`precision.KERAS_POLICIES`: bfloat16 computes in bfloat16 with
float32 variables, as `--precision=bfloat16` trains), on the same in-memory random 48x48 faces,
all taken in turns:
  project  `training_model.TrainingModel` as `loop.train` compiles it: uint8 batches from tf.data,
           on-device augmentation (`augment.augment_batch`, `AugmentParams()` strengths), the
           label-smoothed loss (`losses.SmoothedCrossEntropy`), SGD with Nesterov momentum and
           weight decay under a warmup + cosine schedule.
  no-aug   the same step without the augmentation (what it costs).
  plain    the same network compiled with Keras' own sparse cross-entropy and SGD, fed float32
           arrays from memory with `fit(x, y)` (no augmentation): the baseline.
It prints images/s of each, the project/plain ratio, the share of the machine's peak FLOP/s each
reaches (a training image costs about 3x the forward FLOPs, `models_main.py`; the peak is measured
in the same run as the FLOP/s of a large float32 matmul, what the CPU's BLAS reaches here, with the
bfloat16 matmul's beside it) and, for bfloat16, its speed-up over float32 on the project's step
and on plain fit, by the wall clock and by CPU time: what `precision.choose` decides `auto` by.
On a machine shared with other processes the wall clock measures the share of the cores a run got
as much as its work; the process's CPU time per image measures the work.
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

from collections.abc import Sequence
import dataclasses
import time

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from emotion_tfds import models
from emotion_tfds.data import augment
from emotion_tfds.models import complexity
from emotion_tfds.train import losses
from emotion_tfds.train import precision
from emotion_tfds.train import schedules
from emotion_tfds.train import stages
from emotion_tfds.train import training_model

_MODELS = flags.DEFINE_list("models", sorted(models.MODELS), "Models to measure.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Images per step.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 30, "Measured steps per repeat.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 2, "Measured repeats, in turns.", lower_bound=1)
_PRECISIONS = flags.DEFINE_multi_enum(
    "precisions", ["float32", "bfloat16"], list(precision.KERAS_POLICIES),
    "Precisions to measure; speed-ups are over float32 (when measured).")
_NUM_CLASSES = 7
_STAGE = "main:all:10:0.05:128:nesterov:schedule=cosine:warmup=1:wd=5e-4:smooth=0.1"


def matmul_gflops(size: int = 2048, reps: int = 10, dtype: tf.DType = tf.float32) -> float:
  """FLOP/s of [size, size] matmuls in `dtype`, the practical peak of this machine, in GFLOP/s."""
  a = tf.cast(tf.random.normal([size, size]), dtype)
  matmul = tf.function(tf.linalg.matmul)
  matmul(a, a).numpy()
  start = time.perf_counter()
  for _ in range(reps):
    out = matmul(a, a)
  out.numpy()
  return 2 * size ** 3 * reps / (time.perf_counter() - start) / 1e9


def _project_trainer(name: str, steps_per_epoch: int,
                     params: augment.AugmentParams | None) -> keras.Model:
  (stage,) = stages.parse_stages(_STAGE)
  net = models.MODELS[name](num_classes=_NUM_CLASSES)
  trainer = training_model.TrainingModel(net, params, stage_seed=1)
  trainer.compile(
      optimizer=stages.make_optimizer(stage.optimizer,
                                      schedules.learning_rate(stage, stage.lr, steps_per_epoch),
                                      weight_decay=stage.weight_decay),
      loss=losses.SmoothedCrossEntropy(stage.label_smoothing), metrics=["accuracy"])
  return trainer


def _plain_model(name: str) -> keras.Model:
  net = models.MODELS[name](num_classes=_NUM_CLASSES)
  net.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  return net


def _models(name: str, policy: str, steps: int) -> list[keras.Model]:
  """(project, project without augmentation, plain) models of `name` built under `policy`."""
  caller_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(policy)
  try:
    return [_project_trainer(name, steps, augment.AugmentParams()),
            _project_trainer(name, steps, None), _plain_model(name)]
  finally:
    keras.mixed_precision.set_global_policy(caller_policy)


@dataclasses.dataclass(frozen=True)
class Rates:
  """Images per second of (project, project without augmentation, plain fit): by the wall clock,
  and per second of this process's CPU time (the work an image costs, whatever share of the
  cores other processes take)."""
  wall: tuple[float, float, float]
  cpu: tuple[float, float, float]


def measure(name: str, batch: int, steps: int, repeats: int,
            precisions: Sequence[str] = ("float32",)) -> dict[str, Rates]:
  """Precision -> `Rates` of `name`, each the best of `repeats`. Every run is taken in turns, in
  reverse order every other repeat, so a change in the machine's load hits each alike."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(batch * steps, 48, 48, 1), dtype=np.uint8)
  labels = rng.integers(0, _NUM_CLASSES, size=batch * steps)
  uint8_ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache().repeat()
  floats = images.astype(np.float32) / 255.0
  runs = []
  for p in precisions:
    project, no_aug, plain = _models(name, precision.KERAS_POLICIES[p], steps)
    runs += [lambda n, t=t: t.fit(uint8_ds, steps_per_epoch=n, epochs=1, verbose=0)
             for t in (project, no_aug)]
    runs.append(lambda n, m=plain: m.fit(floats[:batch * n], labels[:batch * n],
                                         batch_size=batch, epochs=1, verbose=0, shuffle=False))
  for run in runs:
    run(3)  # Tracing, compilation, cache fill.
  wall, cpu = [0.0] * len(runs), [0.0] * len(runs)
  for repeat in range(repeats):
    for i in range(len(runs))[::-1 if repeat % 2 else 1]:
      start, start_cpu = time.perf_counter(), time.process_time()
      runs[i](steps)
      wall[i] = max(wall[i], batch * steps / (time.perf_counter() - start))
      cpu[i] = max(cpu[i], batch * steps / (time.process_time() - start_cpu))
  return {p: Rates(tuple(wall[3 * i:3 * i + 3]), tuple(cpu[3 * i:3 * i + 3]))
          for i, p in enumerate(precisions)}


def main(argv):
  del argv
  cpu = precision.cpu_flags()
  print(f"CPU bfloat16 instructions: amx_bf16 {'amx_bf16' in cpu}, "
        f"avx512_bf16 {'avx512_bf16' in cpu}")
  peak = matmul_gflops()
  print(f"Peak (float32 2048x2048 matmul): {peak:.1f} GFLOP/s "
        f"(bfloat16: {matmul_gflops(dtype=tf.bfloat16):.1f} GFLOP/s)\n")
  print("| model | precision | MFLOPs fwd | project images/s | no-aug images/s | "
        "plain fit images/s | project / plain | project % of peak | plain % of peak | "
        "project vs float32 | plain vs float32 | project vs float32, CPU time | "
        "plain vs float32, CPU time |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for name in _MODELS.value:
    mflops = complexity.complexity(models.MODELS[name](num_classes=_NUM_CLASSES)).mflops
    rates = measure(name, _BATCH.value, _STEPS.value, _REPEATS.value, _PRECISIONS.value)
    base = rates.get("float32")
    for p, rate in rates.items():
      project, no_aug, plain = rate.wall
      share = [100 * r * 3 * mflops / 1e3 / peak for r in (project, plain)]
      speedups = ["-"] * 4  # Over float32 (project, plain): by the wall clock, by CPU time.
      if base:
        speedups = [f"{getattr(rate, clock)[i] / getattr(base, clock)[i]:.2f}x"
                    for clock in ("wall", "cpu") for i in (0, 2)]
      print(f"| {name} | {p} | {mflops:.1f} | {project:.0f} | {no_aug:.0f} | {plain:.0f} | "
            f"{project / plain:.2f} | {share[0]:.0f}% | {share[1]:.0f}% | "
            f"{' | '.join(speedups)} |", flush=True)


if __name__ == "__main__":
  quiet.run(main)
