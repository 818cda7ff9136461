"""Writes the Emotion-detection network with real Keras 2 (tf-keras), as its release does.

Run as a script (`python tests/keras2_files.py OUT_DIR`) so that tf-keras never shares a process
with Keras 3. It writes, from one seeded Sequential built as atulapra/Emotion-detection's
src/emotions.py builds it (default Keras 2 layer names):

  weights.h5        model.save_weights(...), the release's `model.h5` form;
  model.h5          model.save(...), a full-model HDF5 file;
  images.npy        8 float32 [48, 48, 1] images in [0, 1];
  probabilities.npy the model's softmax on those images, [8, 7].
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import tf_keras
from tf_keras import layers


def emotion_detection_network() -> tf_keras.Model:
  """src/emotions.py of Emotion-detection, with 7 classes."""
  return tf_keras.Sequential([
      layers.Conv2D(32, kernel_size=(3, 3), activation="relu", input_shape=(48, 48, 1)),
      layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
      layers.MaxPooling2D(pool_size=(2, 2)),
      layers.Dropout(0.25),
      layers.Conv2D(128, kernel_size=(3, 3), activation="relu"),
      layers.MaxPooling2D(pool_size=(2, 2)),
      layers.Conv2D(128, kernel_size=(3, 3), activation="relu"),
      layers.MaxPooling2D(pool_size=(2, 2)),
      layers.Dropout(0.25),
      layers.Flatten(),
      layers.Dense(1024, activation="relu"),
      layers.Dropout(0.5),
      layers.Dense(7, activation="softmax"),
  ])


def main(out_dir: pathlib.Path) -> None:
  tf_keras.utils.set_random_seed(0)
  model = emotion_detection_network()
  # Bias the classes apart so that a head in the wrong order changes the predictions.
  kernel, _ = model.layers[-1].get_weights()
  model.layers[-1].set_weights([kernel * 20.0, np.linspace(-1.0, 1.0, 7, dtype=np.float32)])
  images = np.random.default_rng(0).random((8, 48, 48, 1), dtype=np.float32)
  out_dir.mkdir(parents=True, exist_ok=True)
  model.save_weights(out_dir / "weights.h5")
  model.save(out_dir / "model.h5")
  np.save(out_dir / "images.npy", images)
  np.save(out_dir / "probabilities.npy", model.predict(images, verbose=0))


if __name__ == "__main__":
  main(pathlib.Path(sys.argv[1]))
