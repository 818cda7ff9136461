"""Tests for emotion_tfds.seeds: the seeds a run derives are valid, fixed and never shared."""

from __future__ import annotations

import itertools

from absl.testing import absltest

from emotion_tfds import seeds


class SeedsTest(absltest.TestCase):

  def test_a_derived_seed_is_an_int31_that_depends_on_its_parts_and_their_order(self):
    derived = [seeds.derive_seed(*parts) for parts in itertools.product(range(3), repeat=3)]
    self.assertTrue(all(isinstance(s, int) and 0 <= s < 2**31 for s in derived), derived)
    self.assertLen(set(derived), len(derived))
    self.assertNotEqual(seeds.derive_seed(1, 2), seeds.derive_seed(2, 1))

  def test_the_seeds_of_a_run_keep_their_values(self):
    # A run's data order, augmentation and new heads follow from these: another derivation (or a
    # numpy whose SeedSequence changed) would make every run draw other numbers than before.
    self.assertEqual(seeds.stage_seed(0, seeds.Stream.AUGMENT, 0), 1484405855)
    self.assertEqual(seeds.stage_seed(3, seeds.Stream.STAGE, 1), 880429255)
    self.assertEqual(seeds.epoch_seed(7, 1, 3), 901120189)

  def test_no_two_uses_in_a_run_or_in_two_runs_share_a_seed(self):
    used = {}
    for seed, stage in itertools.product(range(3), range(4)):
      for stream in (seeds.Stream.AUGMENT, seeds.Stream.STAGE):
        used[(seed, stream.name, stage)] = seeds.stage_seed(seed, stream, stage)
      for epoch in range(6):
        used[(seed, "epoch", stage, epoch)] = seeds.epoch_seed(seed, stage, epoch)
    self.assertLen(set(used.values()), len(used))


if __name__ == "__main__":
  absltest.main()
