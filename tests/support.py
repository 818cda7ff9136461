"""Helpers shared by the tests; pytest puts tests/ on sys.path, so they import it as `support`.

The suite has one style: absltest / tf.test.TestCase classes. What several tests share is built
once per process by the cached functions below (generated faces and their TFDS builds, the Keras 2
files, the real photographs), called from a class's `setUpClass`; they live in temporary folders
removed when the process exits. The real files of `../shared/data` are found through the
environment variable EMOTION_TFDS_SHARED_DATA (set by .ci/run when the folder exists);
`shared_data_path` skips the calling test or class with a visible reason when it is unset.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING
import unittest

from emotion_tfds import image_spec

if TYPE_CHECKING:
  import keras
  import numpy as np

SHARED_DATA_ENV = "EMOTION_TFDS_SHARED_DATA"
# Small but learnable: ~1,400 rows in all three splits; built once per test process.
GENERATED_ROWS = 1400
GENERATED_SEED = 0


def process_tempdir(prefix: str) -> pathlib.Path:
  """A new empty folder, removed when this process exits (shared by the tests of a process)."""
  path = pathlib.Path(tempfile.mkdtemp(prefix=f"emotion_tfds_{prefix}_"))
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


def shared_data_path(relative: str) -> pathlib.Path:
  """$EMOTION_TFDS_SHARED_DATA/relative, or a skip of the calling test (or class, from setUpClass)
  with the reason."""
  root = os.environ.get(SHARED_DATA_ENV)
  if not root:
    raise unittest.SkipTest(f"real data not available: set {SHARED_DATA_ENV} to the shared data "
                            "folder")
  path = pathlib.Path(root) / relative
  if not path.exists():
    raise unittest.SkipTest(f"real data not available: {path} does not exist")
  return path


@functools.cache
def real_face_frames() -> dict[str, np.ndarray]:
  """Real BGR photographs with one frontal face each, never skipped: the 24 RAVDESS frames
  (name -> uint8 [224, 398, 3]) when the shared data is present, else scikit-image's astronaut
  ({"astronaut": uint8 [512, 512, 3]})."""
  import cv2
  root = os.environ.get(SHARED_DATA_ENV)
  paths = sorted((pathlib.Path(root) / "ravdess_frames").glob("Actor_*.png")) if root else []
  if paths:
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths}
  from skimage import data
  return {"astronaut": cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)}


def write_clip(path: pathlib.Path, frames: list[np.ndarray]) -> pathlib.Path:
  """Writes BGR `frames` as a 30 fps video at `path` (mp4v for .mp4, else MJPG), its folders
  too; returns `path`."""
  import cv2
  path.parent.mkdir(parents=True, exist_ok=True)
  fourcc = "mp4v" if path.suffix == ".mp4" else "MJPG"
  height, width = frames[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30.0, (width, height))
  if not writer.isOpened():
    raise RuntimeError(f"cv2.VideoWriter cannot write {path} with {fourcc}")
  for frame in frames:
    writer.write(frame)
  writer.release()
  return path


def truncate_file(path: pathlib.Path, keep: float) -> None:
  """Cuts the file at `path` to the first `keep` (0..1) of its bytes, as an interrupted copy."""
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])


@functools.cache
def generated_csv() -> pathlib.Path:
  """A generated-faces fer2013.csv with all three Usage values (GENERATED_ROWS rows), its
  generated.json beside it."""
  from emotion_tfds.data import facegen
  return facegen.write_dataset(process_tempdir("generated_manual"), num_rows=GENERATED_ROWS,
                               seed=GENERATED_SEED)


@functools.cache
def generated_data_dir() -> pathlib.Path:
  """A TFDS data_dir holding generated_faces/fer7 and generated_faces/seed6 built from
  `generated_csv` (never as fer2013)."""
  from emotion_tfds.data import datasets
  data_dir = process_tempdir("tfds_data")
  for config in ("fer7", "seed6"):
    datasets.build(f"{datasets.GENERATED_FACES}/{config}", data_dir=data_dir,
                   manual_dir=generated_csv().parent)
  return data_dir


@functools.cache
def keras2_files() -> pathlib.Path:
  """A folder of Emotion-detection networks written by real Keras 2 (tf-keras), in a subprocess:
  weights.h5 (save_weights), model.h5 (save), images.npy and their probabilities.npy
  (tests/keras2_files.py)."""
  out_dir = process_tempdir("keras2_files")
  script = pathlib.Path(__file__).with_name("keras2_files.py")
  done = subprocess.run([sys.executable, str(script), str(out_dir)], capture_output=True, text=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"{script} failed:\n{done.stderr[-3000:]}")
  return out_dir


def tempdir(test: unittest.TestCase) -> pathlib.Path:
  """A new empty folder, removed when `test` ends (absltest's create_tempdir needs parsed flags,
  which pytest does not parse)."""
  path = pathlib.Path(tempfile.mkdtemp(prefix=f"{type(test).__name__}_"))
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def old_default_layout(data_dir: pathlib.Path, generated_build: pathlib.Path,
                       config: str) -> pathlib.Path:
  """Lays `data_dir` out as the default run of an older version (fer2013 1.0.0) left it: generated
  faces built as fer2013/<config>/1.0.0 (here a copy of `generated_build`, a built version folder
  of generated_faces, renamed) beside manual/generated/fer2013.csv and its generated.json. Returns
  the fer2013 version folder."""
  target = data_dir / "fer2013" / config / "1.0.0"
  shutil.copytree(generated_build, target)
  for path in target.iterdir():
    if path.name.startswith("generated_faces-"):
      path.rename(target / path.name.replace("generated_faces-", "fer2013-"))
  info = json.loads((target / "dataset_info.json").read_text())
  info.update(name="fer2013", version="1.0.0")
  (target / "dataset_info.json").write_text(json.dumps(info))
  (target / "metadata.json").unlink()  # 1.0.0 recorded no source.
  manual_dir = data_dir / "manual" / "generated"
  manual_dir.mkdir(parents=True)
  (manual_dir / "fer2013.csv").write_bytes(b"emotion,pixels,Usage\n")  # Its rows do not matter.
  (manual_dir / "generated.json").write_text(json.dumps({"num_rows": 6000, "seed": 0}))
  return target


def random_images(n: int, seed: int = 0) -> np.ndarray:
  """`n` random uint8 images [n, 48, 48, 1], as stored."""
  import numpy as np
  return np.random.default_rng(seed).integers(0, 256, (n, *image_spec.IMAGE_SHAPE), dtype=np.uint8)


def random_float_images(n: int, seed: int = 0) -> np.ndarray:
  """`n` random float32 images [n, 48, 48, 1] in [0, 1), a network's input."""
  import numpy as np
  return np.random.default_rng(seed).random((n, *image_spec.IMAGE_SHAPE), dtype=np.float32)


def small_cnn(num_classes: int) -> keras.Model:
  """A ~10k-parameter CNN on float32 [0, 1] input, named as the project's models (input "image",
  softmax head "predictions"): learns the generated faces (~85% on seed6 in 6 epochs) in seconds,
  with enough weights that int8 TFLite is under half the float size."""
  import keras  # Not at the top: ravdess_test imports this module and no TensorFlow.
  inputs = keras.Input(image_spec.IMAGE_SHAPE, name="image")
  x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(inputs)
  x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
  x = keras.layers.MaxPooling2D(2)(x)
  x = keras.layers.Flatten()(x)
  outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
  return keras.Model(inputs, outputs)


def saved_small_cnn(folder: pathlib.Path, names: tuple[str, ...], seed: int = 0) -> pathlib.Path:
  """`small_cnn` of len(`names`) classes, initialised from `seed`, saved as folder/model.keras with
  the labels.txt of `names` beside it, as a run saves its network. Returns the model file."""
  import keras

  from emotion_tfds.serve import loader
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / loader.MODEL_FILE
  keras.utils.set_random_seed(seed)
  small_cnn(len(names)).save(path)
  loader.write_label_names(folder, names)
  return path


def read_run_folder(logdir: pathlib.Path) -> dict[str, list]:
  """tag -> [(step, summary value)] of the event files directly in `logdir` (not below it)."""
  from emotion_tfds.report import curves  # Not at the top: support imports no TensorFlow.
  out: dict[str, list] = {}
  for event in curves.read_events(logdir):
    for value in event.summary.value:
      out.setdefault(value.tag, []).append((event.step, value))
  return out


def tensorboard_runs(logdir: pathlib.Path) -> list[str]:
  """The runs TensorBoard lists for `--logdir=logdir`, in its order (by first event, then name),
  which is the order it colours them in."""
  from tensorboard import context
  from tensorboard.backend.event_processing import data_provider
  from tensorboard.backend.event_processing import plugin_event_multiplexer
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(logdir))
  multiplexer.Reload()
  runs = data_provider.MultiplexerDataProvider(multiplexer, str(logdir)).list_runs(
      context.RequestContext(), experiment_id="")
  return [run.run_name for run in sorted(runs, key=lambda run: (run.start_time, run.run_name))]


class WithGeneratedData:
  """Test-class mixin: `cls.data_dir` (str), the process's `generated_data_dir`, and `cls.csv_path`,
  the `generated_csv` it was built from."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = str(generated_data_dir())
    cls.csv_path = generated_csv()


class WithKeras2Files:
  """Test-class mixin: `cls.keras2`, the folder of real Keras 2 files (`keras2_files`)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.keras2 = keras2_files()
