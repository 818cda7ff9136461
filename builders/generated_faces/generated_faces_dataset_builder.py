"""Generated cartoon faces (`emotion_tfds.data.facegen`) as a TFDS dataset of their own.

The default data of train_main, the tests and the benchmarks, which never carries FER-2013's name:
`generated_faces/fer7` and `generated_faces/seed6` hold the same label schemes as `fer2013/*`, read
from a csv in fer2013.csv form by the FER-2013 builder's reader. Build with
`tfds build builders/generated_faces --manual_dir=DIR --data_dir=DIR [--config=seed6]`, DIR holding
the `fer2013.csv` (and `generated.json`) that `python facegen_main.py --out=DIR` writes; train_main
generates and builds it by itself (`--generate_rows`).

The metadata (`builder.info.metadata`) records the csv (file name, sha256, data rows) and, when a
`generated.json` sits beside it, the generator's parameters (`generator`: num_rows, seed, ...).
"""

from __future__ import annotations

from etils import epath
import tensorflow_datasets as tfds

from builders.fer2013 import fer2013_dataset_builder as fer2013

_SOURCE = "generated_faces"


class Builder(fer2013.Builder):
  """Generated faces in fer2013.csv form, with FER-2013's label schemes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: the generated faces that train_main built as fer2013 1.0.0 "
               "before, under their own name; the metadata records the csv and the generator.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  `manual_dir` holds a csv of generated faces in fer2013.csv form (`fer2013.csv` or
  `fer2013.csv.gz`) and, when there is one, the `generated.json` of the generator's parameters
  (recorded in the metadata), as `python facegen_main.py --out=DIR --num_rows=N [--seed=S]` writes.
  """
  BUILDER_CONFIGS = [
      fer2013.Fer2013Config(name="fer7", scheme="fer7",
                            description="Seven emotions, labels in FER-2013's csv id order."),
      fer2013.Fer2013Config(name="seed6", scheme="seed6",
                            description="Six emotions without fear (fear rows dropped)."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "fer7"
  _example_source = _SOURCE
  _homepage = None
  _accepts_generated = True

  # As in builders/fer2013: this module's own folder, not the parent class's.
  pkg_dir_path = epath.Path(__file__).parent

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)
