"""Every recipe in configs/ parses into a valid TrainConfig (stage options, augmentation flags) and
gives its own command in its header."""

from __future__ import annotations

import dataclasses
import os
import pathlib

from absl import flags
from absl.testing import parameterized

import train_main

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.cfg"))


class ConfigsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # Recipes are run from the repository root; a recipe may name another (--flagfile=configs/...).
    self.addCleanup(os.chdir, os.getcwd())
    os.chdir(REPO)

  def tearDown(self):
    flags.FLAGS.unparse_flags()
    super().tearDown()

  @parameterized.parameters(*CONFIGS)
  def test_parses_and_its_header_gives_its_command(self, name):
    header = (REPO / "configs" / name).read_text().split("\n--", 1)[0]
    self.assertIn(f"#   python train_main.py --flagfile=configs/{name}", header)
    flags.FLAGS(["train_main", f"--flagfile={REPO / 'configs' / name}"])
    train_main.make_config()  # Raises errors.ConfigError for a spec or setting that cannot work.

  def test_fast_recipe_is_what_its_header_says(self):
    flags.FLAGS(["train_main", f"--flagfile={REPO / 'configs' / 'fer7_fast.cfg'}"])
    config = train_main.make_config()
    (stage,) = config.stages
    self.assertEqual((config.model, config.dataset), ("fastnet_small", "fer2013/fer7"))
    self.assertEqual(stage.epochs, 24)
    self.assertEqual((stage.optimizer, stage.schedule, stage.ema), ("nesterov", "cosine", 0.999))
    self.assertEqual((config.keep_best, config.final_tta), ("accuracy", "flip"))
    params = config.augment_params
    self.assertEqual((params.crop, params.flip_prob, params.blur_sigma, params.contrast,
                      params.brightness, params.noise_stddev), (0.15, 0.5, 0.0, 0.3, 0.1, 0.0))

  def test_seed_recipe_pretrains_without_augmentation(self):
    flags.FLAGS(["train_main", f"--flagfile={REPO / 'configs' / 'seed.cfg'}"])
    config = train_main.make_config()
    self.assertEqual([s.augment for s in config.stages], [False, True, True, True])
    self.assertEqual(config.augment_on, "device")

  def test_ensemble_recipe_is_three_fer7_best_members_and_a_student_they_teach(self):
    flags.FLAGS(["train_main", f"--flagfile={REPO / 'configs' / 'fer7_ensemble.cfg'}"])
    config = train_main.make_config()
    flags.FLAGS(["train_main", f"--flagfile={REPO / 'configs' / 'fer7_best.cfg'}"])
    best = train_main.make_config()
    self.assertEqual((config.model, config.dataset, config.augment_params, config.final_tta),
                     (best.model, best.dataset, best.augment_params, best.final_tta))
    (member,) = config.stages
    self.assertEqual((member.epochs, member.ema), (32, 0.999))
    self.assertEqual(flags.FLAGS.ensemble_members, 3)
    (student,) = train_main.make_student_stages(config)
    self.assertEqual(student.teacher, tuple(f"runs/fer7_ensemble/member_{k}/model.keras"
                                            for k in range(3)))
    # The student is the members' recipe plus the teacher: a paired comparison.
    self.assertEqual(dataclasses.replace(student, teacher=(), distill_weight=0.5),
                     dataclasses.replace(member, distill_weight=0.5))
    self.assertEqual((student.distill_temperature, student.distill_weight), (4.0, 0.5))
