"""Tests for emotion_tfds.serve.evaluate: whose emotions a model predicts (checked against its class
count) and the arguments evaluate_file refuses. Evaluations of trained models through eval_main
and evaluate_file: eval_main_test."""

from __future__ import annotations

from absl.testing import absltest
import support

from emotion_tfds import errors
from emotion_tfds import labels
from emotion_tfds.serve import evaluate
from emotion_tfds.serve import loader


class SchemeCheckTest(absltest.TestCase):

  def _model(self, num_classes: int, names=None) -> loader.LoadedModel:
    return loader.LoadedModel(lambda x: x, num_classes, names, "m.keras")

  def test_class_count_mismatch_names_both(self):
    with self.assertRaisesRegex(
        ValueError, r"Model m\.keras has 6 classes, but dataset fer2013/fer7 has 7 emotions "
        r"\(angry, disgust, fear.*--model_scheme"):
      evaluate.model_emotions(self._model(6), "fer2013/fer7", labels.FER7)
    with self.assertRaisesRegex(ValueError, "7 classes, but --model_scheme=seed6 has 6"):
      evaluate.model_emotions(self._model(7), "fer2013/fer7", labels.FER7, "seed6")

  def test_scheme_sources(self):
    self.assertEqual(evaluate.model_emotions(self._model(7), "d", labels.FER7), labels.FER7)
    self.assertEqual(evaluate.model_emotions(self._model(6), "d", labels.FER7, "seed6"),
                     labels.SEED6)
    self.assertEqual(evaluate.model_emotions(self._model(6, labels.SEED6), "d", labels.FER7),
                     labels.SEED6)
    with self.assertRaisesRegex(ValueError, "none of which is in dataset d"):
      evaluate.model_emotions(self._model(2, ("calm", "bored")), "d", labels.FER7)


class EvaluateFileArgumentsTest(support.WithGeneratedData, absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = support.tempdir(self)

  def test_an_output_of_another_format_is_refused_before_the_model_is_read(self):
    with self.assertRaisesRegex(errors.ConfigError,
                                r"^--output .*report\.txt: suffix must be one of \('\.md', "
                                r"'\.json', '\.csv'\)\.$"):
      evaluate.evaluate_file(model_path=self.tmp / "absent.keras", data_dir=self.data_dir,
                             output=self.tmp / "report.txt")

  def test_a_split_the_dataset_lacks_names_the_splits_it_has(self):
    model_path = self.tmp / loader.MODEL_FILE
    support.small_cnn(6).save(model_path)
    with self.assertRaisesRegex(errors.ConfigError,
                                r"Dataset generated_faces/seed6 in .* has no split 'private'; it "
                                r"has \['test', 'train', 'validation'\]\."):
      evaluate.evaluate_file(model_path=model_path, data_dir=self.data_dir,
                             dataset="generated_faces/seed6", split="private")


if __name__ == "__main__":
  absltest.main()
