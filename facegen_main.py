"""Writes a generated-faces data set in fer2013.csv form (and optionally a contact sheet PNG).

  python facegen_main.py --out=/tmp/faces --num_rows=10000 [--seed=0] \
      [--distribution=balanced|fer] [--sheet=docs/generated_faces.png]

writes /tmp/faces/fer2013.csv and /tmp/faces/generated.json (its parameters; and, with --sheet, a
contact sheet PNG: one row per emotion). Build it with `tfds build builders/generated_faces
--manual_dir=/tmp/faces` (builders/fer2013 refuses it), or let train_main generate and build its
own.
"""

from __future__ import annotations

from emotion_tfds import quiet  # First: before TensorFlow loads (emotion_tfds/quiet.py).

# isort: split

from absl import flags

from emotion_tfds.data import facegen

_OUT = flags.DEFINE_string("out", None, "Folder to write fer2013.csv and generated.json into.")
_NUM_ROWS = flags.DEFINE_integer("num_rows", facegen.DEFAULT_ROWS, "Number of faces.",
                                 lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives the same file.")
_DISTRIBUTION = flags.DEFINE_enum("distribution", "balanced", list(facegen.DISTRIBUTIONS),
                                  "Class shares: equal, or FER-2013's.")
_SHEET = flags.DEFINE_string("sheet", None, "Also write a contact sheet PNG here.")


def main(argv: list[str]) -> None:
  del argv
  path = facegen.write_dataset(_OUT.value, _NUM_ROWS.value, _SEED.value, _DISTRIBUTION.value)
  print(f"Wrote {_NUM_ROWS.value} rows to {path}")
  if _SHEET.value:
    print(f"Wrote contact sheet {facegen.contact_sheet(_SHEET.value, seed=_SEED.value)}")


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  quiet.run(main)
