"""Tests for an ensemble's student (train_main --student_stages, experiment.run_ensemble): its
schedule from the flags, and train_main's two-member run on generated faces with its student,
run twice (in this process: a second TensorFlow start would double the test's time)."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib

from absl import flags
from absl.testing import absltest
import keras
import numpy as np
import support
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import experiment

# Registers fastnet's SpaceToDepth, which load_model of a fastnet model.keras must find.
from emotion_tfds import models  # noqa: F401
from emotion_tfds.serve import loader
from emotion_tfds.train import checkpoints
import train_main

# Two one-epoch members of two steps and a student of one distilled stage (float32 pinned: the
# "auto" precision differs between machines).
_RUN = ("--model=fastnet_small", "--pretrain_stages=", "--stages=main:all:1:1e-3:16",
        "--max_steps_per_epoch=2", "--novalidate", "--precision=float32", "--progress=none",
        "--ensemble_members=2", "--student_stages=distil:all:1:1e-3:16:distill_w=0.7")


class _Flags(absltest.TestCase):

  def tearDown(self):
    flags.FLAGS.unparse_flags()
    super().tearDown()

  def parse(self, *flag_list: str):
    """train_main's config and student schedule of `flag_list`."""
    flags.FLAGS(["train_main", *flag_list])
    config = train_main.make_config()
    return config, train_main.make_student_stages(config)


class StudentScheduleTest(_Flags):

  def test_pretrains_as_a_member_then_distils_from_the_members(self):
    config, schedule = self.parse(
        "--model_dir=runs/ens", "--ensemble_members=3",
        "--student_stages=distil:all:2:0.05:16:distill_t=2:distill_w=0.7,"
        "tuned:all:1:1e-3:16:teacher=other.keras")
    members = tuple(f"runs/ens/member_{k}/model.keras" for k in range(3))
    pretrain, distil, tuned = schedule
    self.assertEqual(pretrain, config.stages[0])  # The recipe's, without a teacher.
    self.assertEqual((pretrain.name, pretrain.teacher), ("pretrain", ()))
    self.assertEqual((distil.teacher, distil.distill_temperature, distil.distill_weight),
                     (members, 2.0, 0.7))
    self.assertEqual(tuned.teacher, ("other.keras",))
    student = experiment.student_config(config, 3, schedule)
    self.assertEqual((student.seed, student.model_dir, student.stages),
                     (config.seed + 3, "runs/ens/student", schedule))
    self.assertEqual(student.model, config.model)

  def test_refused_without_an_ensemble_or_with_a_time_budget(self):
    with self.assertRaisesRegex(errors.ConfigError,
                                r"^--student_stages distils from the ensemble the same command "
                                r"trains; give --ensemble_members=2 or more \(got 1\)\.$"):
      self.parse("--student_stages=all:1:1e-3:16")
    flags.FLAGS.unparse_flags()
    with self.assertRaisesRegex(errors.ConfigError, r"contains \+, which a stage spec cannot"):
      self.parse("--student_stages=all:1:1e-3:16", "--ensemble_members=2", "--model_dir=a+b")
    flags.FLAGS.unparse_flags()
    config, schedule = self.parse("--student_stages=all:1:1e-3:16", "--ensemble_members=2",
                                  "--time_budget=10")
    with self.assertRaisesRegex(errors.ConfigError, "train an ensemble \\(and its student\\) with "
                                "epochs"):
      experiment.run_ensemble(config, 2, student_stages=schedule)


def _checkpoint_tensors(run_dir: pathlib.Path) -> list[np.ndarray]:
  """Every tensor of a run's latest checkpoint."""
  path = tf.train.latest_checkpoint(str(run_dir / checkpoints.CKPT_DIR))
  reader = tf.train.load_checkpoint(path)
  return [np.asarray(reader.get_tensor(name)) for name, _ in tf.train.list_variables(path)]


def _accuracy(run_dir: pathlib.Path) -> float:
  return json.loads((run_dir / "eval_test.json").read_text())["totals"]["accuracy"]


class StudentRunTest(support.WithGeneratedData, _Flags):

  def test_trains_saves_compares_and_reuses_every_run(self):
    model_dir = support.tempdir(self) / "run"
    run = (f"--data_dir={self.data_dir}", f"--model_dir={model_dir}", *_RUN)
    flags.FLAGS(["train_main", *run])
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
      train_main.main([])
    output = stdout.getvalue()
    member_dirs = [model_dir / f"member_{k}" for k in range(2)]
    student_dir = model_dir / "student"
    self.assertIn(f"Student of the ensemble (seed 2) in {student_dir}", output)
    members = [_accuracy(d) for d in member_dirs]
    student = _accuracy(student_dir)
    self.assertEqual(
        output.strip().splitlines()[-1],
        f"Accuracy: members {members[0]:.2%}, {members[1]:.2%}; ensemble "
        f"{_accuracy(model_dir):.2%}; student {student:.2%} (student - best member: "
        f"{100 * (student - max(members)):+.2f} points)")

    # The student: a whole run, saved, whose distilled stage names the members' networks.
    teachers = [str(d / loader.MODEL_FILE) for d in member_dirs]
    spec = f"distil:all:1:0.001:16:adam:teacher={'+'.join(teachers)}:distill_w=0.7"
    self.assertTrue((student_dir / "saved_model" / "saved_model.pb").exists())
    student_net = keras.models.load_model(student_dir / loader.MODEL_FILE)
    (stage,) = json.loads((student_dir / "manifest.json").read_text())["config"]["stages"]
    self.assertEqual((stage["teacher"], stage["distill_weight"]), (teachers, 0.7))
    self.assertEqual(json.loads((model_dir / "manifest.json").read_text())["student"],
                     {"model_dir": str(student_dir), "seed": 2, "stages": spec})
    # Its checkpoint and model.keras hold the student alone: no kernel of a member's.
    stored = [*_checkpoint_tensors(student_dir), *student_net.get_weights()]
    for member in teachers:
      for kernel in (w for w in keras.models.load_model(member).get_weights() if w.ndim > 1):
        self.assertFalse(any(a.shape == kernel.shape and np.array_equal(a, kernel)
                             for a in stored))

    # The same command again (here in this process) trains nothing: each run is reused.
    checkpoint_times = {p: p.stat().st_mtime_ns
                        for d in [*member_dirs, student_dir]
                        for p in (d / checkpoints.CKPT_DIR).iterdir()}
    flags.FLAGS.unparse_flags()
    config, schedule = self.parse(*run)
    again = experiment.run_ensemble(config, 2, student_stages=schedule)
    self.assertEqual([r.history for r in [*again.members, again.student]], [[], [], []])
    self.assertEqual(again.student.resumed_from, (0, 1))
    self.assertEqual({p: p.stat().st_mtime_ns for p in checkpoint_times}, checkpoint_times)
    self.assertAlmostEqual(again.student.report.totals.accuracy, student)


if __name__ == "__main__":
  absltest.main()
