"""Training curves of a finished (or running) train_main run, from its TensorBoard event files.

Prints one markdown row per stage and epoch (training accuracy, validation accuracy, macro-F1) and,
with --output, draws them as a PNG (pretraining stages on a panel of their own):

  python curves_main.py --model_dir=runs/seed --output=docs/seed_real_curves.png
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from emotion_tfds import curves

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "train_main --model_dir of the run.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG file for the accuracy curves.")
_TITLE = flags.DEFINE_string("title", "", "Title of the picture.")


def main(argv: list[str]) -> None:
  del argv
  try:
    stages = curves.read_run(_MODEL_DIR.value)
  except FileNotFoundError as error:
    sys.exit(f"curves_main: {error}")
  print(curves.markdown_table(stages))
  if _OUTPUT.value:
    print(f"wrote {curves.curves_png(stages, _OUTPUT.value, _TITLE.value)}")


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  app.run(main)
