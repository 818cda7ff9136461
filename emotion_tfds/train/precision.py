"""The run's compute precision: which floating-point type fits the hardware, and why.

`float32` computes and stores in float32. `bfloat16` and `float16` set the Keras policies
`mixed_bfloat16` and `mixed_float16`: layers compute in the 16-bit type while their variables,
and so the optimizer state, the weight averages, the checkpoints and every export, stay float32;
the models' softmax outputs and the loss are float32 too. float16's small range needs loss
scaling: `Model.compile` wraps the optimizer in a `keras.optimizers.LossScaleOptimizer` (dynamic
scale) under `mixed_float16`; bfloat16 has float32's range and needs none.

`auto` picks by `choose`: bfloat16 on TPUs (the type of their matrix units), float16 on GPUs
(tensor cores), bfloat16 on CPUs with AMX-BF16 tiles (`amx_bf16` among the CPU flags; measured on
an Intel Xeon with AMX: the train step 1.5-2.6x faster for fastnet, vgg and base_cnn), float32
elsewhere. That includes CPUs with AVX512-BF16 but no AMX: on an AMD EPYC (Zen 4, `avx512_bf16`)
`benchmarks.train_step` measured bfloat16 slower than float32 for every model (docs: the
benchmark's table).
"""

from __future__ import annotations

from collections.abc import Collection
import pathlib

PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
KERAS_POLICIES: dict[str, str] = {"float32": "float32", "bfloat16": "mixed_bfloat16",
                                  "float16": "mixed_float16"}
CPUINFO = "/proc/cpuinfo"


def choose(device_kinds: Collection[str], cpu_flags: Collection[str]) -> tuple[str, str]:
  """The precision `auto` takes, and why.

  Args:
    device_kinds: the kinds of device the run trains on ("CPU", "GPU", "TPU").
    cpu_flags: the CPU's feature flags as /proc/cpuinfo lists them (empty when unknown).

  Returns:
    (precision, reason): one of "float32", "bfloat16", "float16", and a sentence saying why.
  """
  if "TPU" in device_kinds:
    return "bfloat16", "TPU: bfloat16 is the type of its matrix units"
  if "GPU" in device_kinds:
    return "float16", "GPU: float16 runs on its tensor cores, with dynamic loss scaling"
  if "amx_bf16" in cpu_flags:
    return "bfloat16", "CPU with AMX-BF16 (amx_bf16): bfloat16 matrix tiles"
  if "avx512_bf16" in cpu_flags:
    return "bfloat16", "CPU with AVX512-BF16 (avx512_bf16, no AMX): bfloat16 measured faster"
  if not cpu_flags:
    return "float32", "CPU whose flags are unknown (no readable /proc/cpuinfo)"
  return "float32", "CPU without bfloat16 instructions (neither amx_bf16 nor avx512_bf16)"


def resolve(requested: str, device_kinds: Collection[str],
            cpu_flags: Collection[str]) -> tuple[str, str]:
  """(precision, reason) of `requested` (one of PRECISIONS): `choose`'s for "auto"."""
  if requested not in PRECISIONS:
    raise ValueError(f"Unknown precision {requested!r}; expected one of {PRECISIONS}.")
  if requested == "auto":
    return choose(device_kinds, cpu_flags)
  return requested, f"--precision={requested}"


def mixed(device_kinds: Collection[str]) -> str:
  """What the old `--mixed_precision` meant: float16 on GPUs, bfloat16 on TPUs and CPUs."""
  return "float16" if "GPU" in device_kinds and "TPU" not in device_kinds else "bfloat16"


def cpu_flags(cpuinfo: str | pathlib.Path = CPUINFO) -> frozenset[str]:
  """The first CPU's flags in `cpuinfo` ("flags" on x86, "Features" on ARM); empty when the file
  is absent or unreadable (macOS, Windows) or lists none."""
  try:
    text = pathlib.Path(cpuinfo).read_text(errors="replace")
  except OSError:
    return frozenset()
  for line in text.splitlines():
    key, _, value = line.partition(":")
    if key.strip() in ("flags", "Features"):
      return frozenset(value.split())
  return frozenset()
