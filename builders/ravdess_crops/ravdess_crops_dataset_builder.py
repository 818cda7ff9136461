"""RAVDESS face crops as a TFDS dataset: 48x48 grayscale faces cut from RAVDESS videos.

Build with `tfds build builders/ravdess_crops --manual_dir=CROPS --data_dir=DIR`, where CROPS is
the folder `python ravdess_main.py --ravdess_dir=RAVDESS --out=CROPS` wrote (manifest.csv
and Actor_NN/*.png). Mixed into FER-2013's train split at input time by `emotion_tfds.data.mixtures`
(e.g. `--dataset=fer2013/seed6+ravdess_crops`); see BUILD.md, "RAVDESS crops".
"""

from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from emotion_tfds import image_spec
from emotion_tfds import labels
from emotion_tfds.ravdess import crops_folder

_HOMEPAGE = "https://zenodo.org/record/1188976"
_NUM_SHARDS = 4


class Builder(tfds.core.GeneratorBasedBuilder):
  """RAVDESS face crops (one split, every actor), labelled with FER-2013's seven emotion names."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: the crops of a manifest.csv, one train split."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  `manual_dir` is a crops folder: manifest.csv plus the Actor_NN/*.png crops it lists, as written by
  `python ravdess_main.py --ravdess_dir=RAVDESS --out=CROPS` from the RAVDESS videos
  (Video_Speech_Actor_NN.zip and Video_Song_Actor_NN.zip, unzipped) of
  https://zenodo.org/record/1188976
  """

  # As in builders/fer2013: TFDS 4.9.10 finds the builder's folder through package resources,
  # which a namespace package (a stale editable install) breaks; this module's path is the same.
  pkg_dir_path = epath.Path(__file__).parent

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=image_spec.IMAGE_SHAPE, encoding_format="png"),
            "label": tfds.features.ClassLabel(names=labels.FER7),
            "crop_file": tfds.features.Text(doc="Path in the crops folder, e.g. Actor_01/....png."),
            "source_video": tfds.features.Text(doc="The video it was cut from."),
            "actor": tfds.features.Scalar(dtype=np.int64, doc="RAVDESS actor 1..24."),
            "intensity": tfds.features.Scalar(dtype=np.int64, doc="1 normal, 2 strong."),
        }),
        supervised_keys=("image", "label"),
        homepage=_HOMEPAGE,
    )

  def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                            download_config: tfds.download.DownloadConfig) -> None:
    """Reads the manifest and checks every crop, then writes the split in up to 4 shards.

    A bad manifest or crop fails here, before any example is written.
    """
    crops_dir = epath.Path(dl_manager.manual_dir)
    crops = crops_folder.read_manifest(crops_dir)
    if not crops:
      raise ValueError(f"{crops_dir / crops_folder.MANIFEST_NAME} lists no crops.")
    self._examples = [(crop, crops_folder.read_crop(crops_dir, crop)) for crop in crops]
    if download_config.num_shards is None:
      download_config = download_config.replace(num_shards=min(_NUM_SHARDS, len(crops)))
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      del self._examples

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The crops were read by `_download_and_prepare`.
    return {"train": self._generate_examples(self._examples)}

  def _generate_examples(self, examples: list[tuple[crops_folder.Crop, bytes]]):
    for crop, png in examples:
      yield crop.crop_file, {
          "image": png, "label": crop.emotion, "crop_file": crop.crop_file,
          "source_video": crop.source_video, "actor": crop.actor, "intensity": crop.intensity}
