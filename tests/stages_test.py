"""Tests for emotion_tfds.train.stages: parsing, validation, lr scaling and optimizers."""

from __future__ import annotations

from absl.testing import absltest
from absl.testing import parameterized
import keras

from emotion_tfds.train import stages


class ParseStagesTest(parameterized.TestCase):

  def test_issue_form(self):
    got = stages.parse_stages("head:10:1e-3:32,all:10:1e-4:128,all:10:1e-4:1024")
    self.assertEqual(got, [
        stages.Stage("stage1_head", "head", 10, 1e-3, 32),
        stages.Stage("stage2_all", "all", 10, 1e-4, 128),
        stages.Stage("stage3_all", "all", 10, 1e-4, 1024),
    ])

  def test_named_with_optimizer_and_dataset(self):
    got = stages.parse_stages(" warm:head:2:0.01:64:sgd , all:3:1e-4:16:momentum", prefix="pre",
                              dataset="fer2013/fer7")
    self.assertEqual(got, [
        stages.Stage("warm", "head", 2, 0.01, 64, "sgd", "fer2013/fer7"),
        stages.Stage("pre2_all", "all", 3, 1e-4, 16, "momentum", "fer2013/fer7"),
    ])

  def test_options(self):
    (got,) = stages.parse_stages(
        "main:all:12:0.1:128:nesterov:schedule=cosine:warmup=1.5:wd=5e-4:smooth=0.1:clip=2"
        ":balance=sqrt:augment=off:ema=0.999")
    self.assertEqual(got, stages.Stage(
        "main", "all", 12, 0.1, 128, "nesterov", schedule="cosine", warmup=1.5, weight_decay=5e-4,
        label_smoothing=0.1, clipnorm=2.0, balance="sqrt", augment=False, ema=0.999))
    (step,) = stages.parse_stages("all:10:0.1:64:sgd:schedule=step:drops=5/8:factor=0.2")
    self.assertEqual((step.drops, step.lr_factor), ((5, 8), 0.2))
    (plateau,) = stages.parse_stages("all:10:0.1:64:schedule=plateau:patience=3")
    self.assertEqual((plateau.patience, plateau.lr_factor), (3, 0.5))

  def test_options_round_trip(self):
    spec = ("a:all:12:0.1:128:nesterov:schedule=step:drops=4/8:factor=0.3:wd=0.0005:smooth=0.2,"
            "b:head:3:0.001:32:adam:schedule=plateau:patience=4:balance=weights:augment=off:ema=0.99")
    parsed = stages.parse_stages(spec)
    self.assertEqual(",".join(s.spec() for s in parsed), spec)
    self.assertEqual(stages.parse_stages(",".join(s.spec() for s in parsed)), parsed)

  def test_budget_option(self):
    (marked,) = stages.parse_stages("main:all:8:0.1:128:sgd:schedule=cosine:budget=on")
    self.assertTrue(marked.budget)
    self.assertEqual(marked.spec(), "main:all:8:0.1:128:sgd:schedule=cosine:budget=on")
    self.assertEqual(stages.parse_stages(marked.spec()), [marked])
    (unmarked,) = stages.parse_stages("all:8:0.1:128:budget=off")
    self.assertFalse(unmarked.budget)
    self.assertNotIn("budget", unmarked.spec())  # The default keeps old specs' form.

  def test_spec_round_trip(self):
    parsed = stages.parse_stages("a:head:2:0.001:64:rmsprop,all:1:5e-05:8")
    again = stages.parse_stages(",".join(s.spec() for s in parsed))
    self.assertEqual(parsed, again)

  @parameterized.parameters(
      ("", "Empty stage"),
      ("head:1:1e-3:32,", "Empty stage"),
      ("head:1:1e-3", "expected \\[name:\\]trainable"),
      ("frozen:1:1e-3:32", "expected \\[name:\\]trainable"),
      ("x:frozen:1:1e-3:32", "trainable must be one of"),
      ("head:ten:1e-3:32", "stage 1 'head:ten:1e-3:32': epochs must be an integer"),
      ("head:1:fast:32", "lr must be a number"),
      ("head:1:-1:32", "lr must be > 0"),
      ("head:0:1e-3:32", "epochs must be >= 1"),
      ("head:1:1e-3:0", "global_batch must be >= 1"),
      ("head:1:1e-3:3.5", "global_batch must be an integer"),
      ("head:1:1e-3:32:lbfgs", "optimizer must be one of"),
      ("head:1:1e-3:32,all:1:1e-3:32:adam:extra", "stage 2"),
      ("all:4:0.1:32:sgd:speed=2", "unknown option 'speed'"),
      ("all:4:0.1:32:wd=lots", "bad value 'lots' for option 'wd'"),
      ("all:4:0.1:32:schedule=linear", "schedule must be one of"),
      ("all:4:0.1:32:schedule=step", "needs drops"),
      ("all:4:0.1:32:schedule=step:drops=3/2", "drops must be increasing"),
      ("all:4:0.1:32:schedule=step:drops=4", "drops must be increasing"),
      ("all:4:0.1:32:drops=2", "drops= needs schedule=step"),
      ("all:4:0.1:32:schedule=plateau:warmup=1", "warmup is not available"),
      ("all:4:0.1:32:warmup=5", "warmup must be in"),
      ("all:4:0.1:32:smooth=1", "smooth must be in"),
      ("all:4:0.1:32:ema=1", "ema must be in"),
      ("all:4:0.1:32:balance=oversample", "balance must be one of"),
      ("all:4:0.1:32:augment=yes", "bad value 'yes' for option 'augment'"),
      ("all:4:0.1:32:schedule=plateau:factor=2", "factor must be in"),
      ("all:4:0.1:32:budget=yes", "bad value 'yes' for option 'budget'"),
      ("all:4:0.1:32:schedule=step:drops=2:budget=on", "budget=on cannot go with schedule=step"),
      ("9lives:head:1:1e-3:32", "Bad stage name"),
  )
  def test_errors(self, spec, message):
    with self.assertRaisesRegex(ValueError, message):
      stages.parse_stages(spec)

  @parameterized.parameters("main:all:x:0.05:64", "main:all:1:0.05:0", "main:all:1:0.05:64:ema=2")
  def test_an_error_names_the_stage_once(self, spec):
    with self.assertRaises(ValueError) as raised:
      stages.parse_stages(spec)
    message = str(raised.exception)
    self.assertTrue(message.startswith(f"stage 1 '{spec}': "), message)
    self.assertNotIn("stage 1", message[len("stage 1"):])
    self.assertNotIn("Stage main", message)

  def test_a_stage_built_directly_names_itself(self):
    with self.assertRaisesRegex(stages.StageError, r"^Stage main: ema must be in \[0, 1\)"):
      stages.Stage("main", "all", 1, 0.05, 64, ema=2)


class ScheduleTest(absltest.TestCase):

  def test_pretrain_first(self):
    pre = stages.parse_stages("all:1:1e-3:32", prefix="pretrain", dataset="fer2013/fer7")
    main = stages.parse_stages("head:1:1e-3:32")
    schedule = stages.with_pretraining(main, pre)
    self.assertEqual([s.name for s in schedule], ["pretrain1_all", "stage1_head"])
    self.assertEqual([s.dataset for s in schedule], ["fer2013/fer7", None])

  def test_duplicate_names(self):
    main = stages.parse_stages("a:head:1:1e-3:32,a:all:1:1e-3:32")
    with self.assertRaisesRegex(ValueError, "repeated: \\['a'\\]"):
      stages.with_pretraining(main)

  def test_empty(self):
    with self.assertRaisesRegex(ValueError, "no stages"):
      stages.with_pretraining([])


class LearningRateTest(absltest.TestCase):

  def test_scaling_rule(self):
    stage = stages.Stage("s", "all", 1, 1e-3, 256)
    self.assertEqual(stages.scaled_lr(stage, scale_lr=False, reference_batch=32), 1e-3)
    self.assertAlmostEqual(stages.scaled_lr(stage, scale_lr=True, reference_batch=32), 8e-3)
    with self.assertRaisesRegex(ValueError, "reference_batch"):
      stages.scaled_lr(stage, scale_lr=True, reference_batch=0)

  def test_optimizers(self):
    for name in stages.OPTIMIZERS:
      opt = stages.make_optimizer(name, 0.5)
      self.assertIsInstance(opt, keras.optimizers.Optimizer)
      self.assertAlmostEqual(float(opt.learning_rate.numpy()), 0.5)
    self.assertAlmostEqual(stages.make_optimizer("momentum", 0.1).momentum, 0.9)
    nesterov = stages.make_optimizer("nesterov", 0.1, weight_decay=5e-4, clipnorm=1.0)
    self.assertTrue(nesterov.nesterov)
    self.assertAlmostEqual(nesterov.weight_decay, 5e-4)
    self.assertAlmostEqual(nesterov.global_clipnorm, 1.0)
    self.assertIsNone(stages.make_optimizer("adam", 0.1).weight_decay)
    averaged = stages.make_optimizer("nesterov", 0.1, ema=0.99)
    self.assertEqual((averaged.use_ema, averaged.ema_momentum), (True, 0.99))
    self.assertFalse(stages.make_optimizer("nesterov", 0.1).use_ema)
    with self.assertRaisesRegex(ValueError, "Unknown optimizer"):
      stages.make_optimizer("lbfgs", 0.1)
