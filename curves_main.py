"""Training curves of a finished (or running) train_main run, from its TensorBoard event files.

Prints one markdown row per stage and epoch (training accuracy, validation accuracy, macro-F1) and,
with --output, draws them as a PNG (pretraining stages on a panel of their own):

  python curves_main.py --model_dir=runs/seed --output=docs/seed_real_curves.png

With --compare, draws validation accuracy against wall minutes of several runs in one picture
(time to accuracy), with --baseline points of runs measured earlier:

  python curves_main.py --compare="fast=runs/fer7_fast,best=runs/fer7_best" \
      --baseline="Emotion-detection=85:0.620" --output=docs/time_to_accuracy.png
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

import pathlib

from absl import flags

from emotion_tfds import errors
from emotion_tfds.report import curves

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "train_main --model_dir of the run.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG file for the accuracy curves.")
_TITLE = flags.DEFINE_string("title", "", "Title of the picture.")
_COMPARE = flags.DEFINE_list(
    "compare", [], "label=model_dir pairs: draw validation accuracy against wall minutes.")
_BASELINE = flags.DEFINE_multi_string(
    "baseline", [], "label=minutes:accuracy[,minutes:accuracy...]: measured reference points.")


def _parse_baseline(text: str) -> tuple[str, list[tuple[float, float]]]:
  label, _, points = text.rpartition("=")
  try:
    return label, [(float(m), float(a)) for m, a in (p.split(":") for p in points.split(","))]
  except ValueError:
    raise errors.ConfigError(f"--baseline {text!r}: expected label=minutes:accuracy,...") from None


def compare(pairs: list[str], baselines: list[str], output: str, title: str) -> None:
  """Prints minutes/accuracy per run and writes the time-to-accuracy PNG to `output`."""
  runs = {}
  for pair in pairs:
    label, _, model_dir = pair.rpartition("=")
    if not model_dir:
      raise errors.ConfigError(f"--compare {pair!r}: expected label=model_dir.")
    runs[label] = curves.read_run(model_dir)
    points = curves.minutes_to_accuracy(runs[label])
    print(f"{label}: " + ", ".join(f"{m:.1f} min {a:.1%}" for m, a in points))
  image = curves.time_to_accuracy_image(runs, dict(map(_parse_baseline, baselines)), title)
  if output:
    pathlib.Path(output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(output).write_bytes(image)
    print(f"wrote {output}")


def main(argv: list[str]) -> None:
  del argv
  if _COMPARE.value:
    compare(_COMPARE.value, _BASELINE.value, _OUTPUT.value, _TITLE.value)
    return
  if not _MODEL_DIR.value:
    raise errors.ConfigError("--model_dir (or --compare) is required.")
  stages = curves.read_run(_MODEL_DIR.value)
  print(curves.markdown_table(stages))
  if _OUTPUT.value:
    print(f"wrote {curves.curves_png(stages, _OUTPUT.value, _TITLE.value)}")


if __name__ == "__main__":
  quiet.run(main)
