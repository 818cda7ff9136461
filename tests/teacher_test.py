"""Tests for emotion_tfds.train.teacher: a distillation stage's teacher networks, loaded frozen and
checked against the stage's classes. (Distilling from them: distill_test.)"""

from __future__ import annotations

from absl.testing import absltest
import keras
import numpy as np
import support

from emotion_tfds import errors
from emotion_tfds import labels
from emotion_tfds.serve import loader
from emotion_tfds.train import stages
from emotion_tfds.train import teacher as teacher_lib


class TeacherTest(absltest.TestCase):

  def test_load_checks_the_stage_classes(self):
    root = support.tempdir(self)
    good = support.saved_small_cnn(root / "good", labels.SEED6, seed=7)
    other = support.saved_small_cnn(root / "other", labels.SEED6, seed=8)

    def stage(*paths):
      return stages.Stage("main", "all", 1, 0.1, 16, teacher=tuple(str(p) for p in paths),
                          distill_temperature=3.0, distill_weight=0.25)

    self.assertIsNone(teacher_lib.load(stages.Stage("main", "all", 1, 0.1, 16), labels.SEED6))
    loaded = teacher_lib.load(stage(good, other), labels.SEED6)
    self.assertLen(loaded.nets, 2)
    self.assertEqual(loaded.weight, 0.25)
    self.assertEqual(loaded.loss.get_config()["temperature"], 3.0)
    self.assertTrue(all(not net.trainable and not net.trainable_weights for net in loaded.nets))
    # The ensemble's probabilities are the mean of its networks'.
    images = support.random_images(16).astype(np.float32) / 255
    np.testing.assert_allclose(
        loaded.probabilities(images),
        (loaded.nets[0](images).numpy() + loaded.nets[1](images).numpy()) / 2, rtol=1e-6)
    # The class names beside a .keras file are the ones the serving loader reads.
    self.assertEqual(teacher_lib.LABELS_FILE, loader.LABELS_ASSET)

    with self.assertRaisesRegex(errors.ConfigError,
                                r"teacher .*good/model.keras predicts 6 classes, the stage's "
                                r"dataset 7 .*trained on the same dataset"):
      teacher_lib.load(stage(good), labels.FER7)
    shuffled = support.saved_small_cnn(root / "shuffled", labels.SEED6[::-1], seed=7)
    with self.assertRaisesRegex(errors.ConfigError, "labels.txt names the classes"):
      teacher_lib.load(stage(good, shuffled), labels.SEED6)
    with self.assertRaisesRegex(errors.MissingFileError, "teacher .*missing.keras does not exist"):
      teacher_lib.load(stage(root / "missing.keras"), labels.SEED6)
    (root / "model.h5").write_text("")
    with self.assertRaisesRegex(errors.UnusableModelError, "is not a .keras file"):
      teacher_lib.load(stage(root / "model.h5"), labels.SEED6)
    (root / "notes.keras").write_text("not a model")
    with self.assertRaisesRegex(errors.UnusableModelError,
                                r"^Stage main: teacher .*notes\.keras is not a Keras model .*; "
                                r"expected a trained \.keras model"):
      teacher_lib.load(stage(root / "notes.keras"), labels.SEED6)

  def test_a_teacher_needs_a_network_of_48x48_faces(self):
    with self.assertRaisesRegex(ValueError, "A teacher needs at least one network"):
      teacher_lib.Teacher([], temperature=2.0, weight=0.5)
    path = support.tempdir(self) / "rgb.keras"
    keras.Sequential([keras.Input((48, 48, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(6, activation="softmax")]).save(path)
    stage = stages.Stage("main", "all", 1, 0.1, 16, teacher=(str(path),))
    with self.assertRaisesRegex(errors.UnusableModelError,
                                r"^Stage main: teacher .*rgb\.keras takes input \(48, 48, 3\), not "
                                r"\(48, 48, 1\) faces\.$"):
      teacher_lib.load(stage, labels.SEED6)


if __name__ == "__main__":
  absltest.main()
