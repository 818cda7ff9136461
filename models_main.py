"""Prints every registered model's parameters and forward MFLOPs per 48x48 image.

  python models_main.py [--num_classes=7]
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

from absl import flags

from emotion_tfds import models
from emotion_tfds.models import complexity

_NUM_CLASSES = flags.DEFINE_integer("num_classes", 7, "Classes of the softmax head.", lower_bound=2)


def table(num_classes: int) -> str:
  """A markdown table: model, parameters, forward MFLOPs per image."""
  rows = ["| model | parameters | MFLOPs / image (forward) |", "|---|---:|---:|"]
  for name in sorted(models.MODELS):
    stats = complexity.complexity(models.MODELS[name](num_classes=num_classes))
    rows.append(f"| {name} | {stats.params:,} | {stats.mflops:.1f} |")
  return "\n".join(rows)


def main(argv):
  del argv
  print(table(_NUM_CLASSES.value))


if __name__ == "__main__":
  quiet.run(main)
