"""Tests for emotion_tfds.labels."""

from absl.testing import absltest
import numpy as np

from emotion_tfds import labels


class LabelsTest(absltest.TestCase):

  def test_fer7_is_csv_id_order(self):
    self.assertEqual(labels.FER7,
                     ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))

  def test_seed6_drops_fear(self):
    self.assertCountEqual(labels.SEED6, set(labels.FER7) - {"fear"})
    np.testing.assert_array_equal(labels.fer7_to("seed6"), [0, 1, -1, 2, 4, 5, 3])

  def test_round_trip_seed6_fer7(self):
    to_fer = labels.mapping("seed6", "fer7")
    back = labels.fer7_to("seed6")[to_fer]
    np.testing.assert_array_equal(back, np.arange(6))

  def test_release_order_maps_by_name(self):
    fer = labels.release_to("fer7")
    for release_id, name in enumerate(labels.EMOTION_DETECTION_RELEASE):
      self.assertTrue(labels.FER7[fer[release_id]].startswith(name[:4]))
    self.assertEqual(labels.release_to("seed6")[labels.EMOTION_DETECTION_RELEASE.index("fearful")], -1)

  def test_ravdess_calm(self):
    self.assertNotIn(2, labels.ravdess_to("seed6"))
    self.assertEqual(labels.ravdess_to("seed6", calm_as_neutral=True)[2],
                     labels.SEED6.index("neutral"))
    self.assertEqual(labels.ravdess_to("fer7")[6], labels.FER7.index("fear"))
    self.assertNotIn(6, labels.ravdess_to("seed6"))

  def test_unknown_scheme(self):
    with self.assertRaisesRegex(ValueError, "Unknown label scheme 'x'"):
      labels.get_scheme("x")
