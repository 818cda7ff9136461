"""Shared test fixtures: generated faces built into a temporary TFDS data_dir (as generated_faces,
never as fer2013), and the real data.

The real files of `../shared/data` are found through the environment variable
EMOTION_TFDS_SHARED_DATA (set by .ci/run when the folder exists); tests that need them skip with a
visible reason when it is unset.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

SHARED_DATA_ENV = "EMOTION_TFDS_SHARED_DATA"
# Small but learnable: ~1,400 rows in all three splits; built once per test session.
GENERATED_ROWS = 1400
GENERATED_SEED = 0


def shared_data_path(relative: str) -> pathlib.Path:
  """Returns $EMOTION_TFDS_SHARED_DATA/relative, or skips the calling test with the reason."""
  root = os.environ.get(SHARED_DATA_ENV)
  if not root:
    pytest.skip(f"real data not available: set {SHARED_DATA_ENV} to the shared data folder")
  path = pathlib.Path(root) / relative
  if not path.exists():
    pytest.skip(f"real data not available: {path} does not exist")
  return path


@pytest.fixture(scope="session")
def real_fer_csv() -> pathlib.Path:
  """Path of the real fer2013.csv.gz (Training + PublicTest rows)."""
  return shared_data_path("fer2013.csv.gz")


@pytest.fixture(scope="session")
def real_ravdess_frames() -> pathlib.Path:
  """Folder of the 24 real RAVDESS frames Actor_NN.png."""
  return shared_data_path("ravdess_frames")


@pytest.fixture(scope="session")
def real_face_frames() -> dict:
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


@pytest.fixture(scope="session")
def generated_csv(tmp_path_factory) -> pathlib.Path:
  """A generated-faces fer2013.csv with all three Usage values, its generated.json beside it."""
  from emotion_tfds.data import facegen
  manual_dir = tmp_path_factory.mktemp("generated_manual")
  return facegen.write_dataset(manual_dir, num_rows=GENERATED_ROWS, seed=GENERATED_SEED)


@pytest.fixture(scope="session")
def generated_data_dir(tmp_path_factory, generated_csv) -> pathlib.Path:
  """A TFDS data_dir holding generated_faces/fer7 and generated_faces/seed6 built from
  `generated_csv`."""
  from emotion_tfds.data import datasets
  data_dir = tmp_path_factory.mktemp("tfds_data")
  for config in ("fer7", "seed6"):
    datasets.build(f"{datasets.GENERATED_FACES}/{config}", data_dir=data_dir,
                   manual_dir=generated_csv.parent)
  return data_dir


@pytest.fixture(scope="session")
def keras2_files(tmp_path_factory) -> pathlib.Path:
  """A folder of Emotion-detection networks written by real Keras 2 (tf-keras), in a subprocess:
  weights.h5 (save_weights), model.h5 (save), images.npy and their probabilities.npy
  (tests/keras2_files.py)."""
  out_dir = tmp_path_factory.mktemp("keras2_files")
  script = pathlib.Path(__file__).with_name("keras2_files.py")
  done = subprocess.run([sys.executable, str(script), str(out_dir)], capture_output=True, text=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
  assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
  return out_dir


@pytest.fixture(scope="class")
def data_dir(request, generated_data_dir):
  """Puts `generated_data_dir` on the test class as `self.data_dir` (a str)."""
  request.cls.data_dir = str(generated_data_dir)


@pytest.fixture(scope="class")
def keras2_release(request, keras2_files):
  """Puts `keras2_files` on the test class as `self.keras2`."""
  request.cls.keras2 = keras2_files


def pytest_collection_modifyitems(config, items):
  """Drops tf.test.TestCase's inherited `test_session` (a context manager, not a test)."""
  del config
  items[:] = [item for item in items if item.name != "test_session"]
