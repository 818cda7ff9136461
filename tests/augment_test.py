"""Tests for emotion_tfds.data.augment: batched, seeded augmentation in TensorFlow ops."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from emotion_tfds import preprocess
from emotion_tfds.data import augment

_SIZE = 48
_SEED = tf.constant([7, 11], tf.int64)
_GEOMETRY = dataclasses.replace(augment.NO_AUGMENTATION, crop=0.3, flip_prob=0.5)
# Every augmentation on.
_ALL = augment.AugmentParams(rotate=10.0, shift=0.1, erase_prob=0.5)


def _only(**strengths) -> augment.AugmentParams:
  return dataclasses.replace(augment.NO_AUGMENTATION, **strengths)


def _random_faces(batch: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (batch, _SIZE, _SIZE, 1), dtype=np.uint8)


def _ramp(axis: int) -> np.ndarray:
  """float32 [48, 48, 1] image whose value is the pixel's coordinate along `axis` divided by 47."""
  grid = np.meshgrid(np.arange(_SIZE), np.arange(_SIZE), indexing="ij")[axis]
  return (grid / (_SIZE - 1)).astype(np.float32)[..., None]


def _high_frequency_energy(images: np.ndarray) -> np.ndarray:
  """Per image, the mean squared difference between neighbouring pixels."""
  return (np.square(np.diff(images, axis=1)).mean(axis=(1, 2, 3))
          + np.square(np.diff(images, axis=2)).mean(axis=(1, 2, 3)))


class AugmentBatchTest(tf.test.TestCase):

  def test_shape_dtype_and_range(self):
    for images in (_random_faces(8), preprocess.to_model_input(_random_faces(8)).numpy()):
      out = augment.augment_batch(images, _SEED)
      self.assertEqual(out.shape, (8, _SIZE, _SIZE, 1))
      self.assertEqual(out.dtype, tf.float32)
      self.assertAllInRange(out, 0.0, 1.0)

  def test_no_augmentation_only_converts(self):
    faces = _random_faces(4)
    expected = preprocess.to_model_input(faces)
    self.assertAllClose(augment.augment_batch(faces, _SEED, augment.NO_AUGMENTATION), expected,
                        atol=0, rtol=0)
    self.assertAllClose(augment.augment_batch(expected, _SEED, augment.NO_AUGMENTATION), expected,
                        atol=0, rtol=0)

  def test_same_seed_same_batch_other_seed_other_batch(self):
    faces = _random_faces(8)
    first = augment.augment_batch(faces, _SEED)
    self.assertAllEqual(first, augment.augment_batch(faces, _SEED))
    self.assertNotAllClose(first, augment.augment_batch(faces, _SEED + 1))

  def test_each_image_gets_its_own_crop_and_flip(self):
    pattern = np.repeat(_ramp(1)[None] * _ramp(0)[None], 16, axis=0)  # 16 copies of one image
    out = augment.augment_batch(pattern, _SEED, _GEOMETRY).numpy()
    flat = out.reshape(16, -1)
    distances = np.abs(flat[:, None] - flat[None]).max(axis=-1) + np.eye(16)
    self.assertGreater(distances.min(), 1e-3, "two images got the same crop")
    boxes = augment.crop_boxes(_SEED, 16, _GEOMETRY).numpy()
    flipped = boxes[:, 1] > boxes[:, 3]
    self.assertTrue(flipped.any() and not flipped.all(), f"flips {flipped}")
    self.assertGreater(np.unique(np.round(boxes, 4), axis=0).shape[0], 15)

  def test_flip_mirrors_a_drawn_pattern(self):
    pattern = np.zeros((2, _SIZE, _SIZE, 1), np.uint8)
    pattern[:, 10:20, 5:12] = 255  # a bright block left of centre...
    pattern[:, 30, :] = np.arange(_SIZE, dtype=np.uint8)[:, None] * 5  # ...and a ramp row
    out = augment.augment_batch(pattern, _SEED, _only(flip_prob=1.0))
    self.assertAllClose(out, preprocess.to_model_input(pattern[:, :, ::-1]), atol=1e-6)

  def test_crop_and_flip_are_geometrically_right_on_ramps(self):
    # Bilinear resampling reproduces a linear ramp exactly: output column j of a box [y1, x1, y2,
    # x2] reads source column (x1 + j * (x2 - x1) / 47) * 47; rows likewise.
    batch = 16
    boxes = augment.crop_boxes(_SEED, batch, _GEOMETRY).numpy()
    steps = np.arange(_SIZE) / (_SIZE - 1)
    for axis, (start, end) in ((1, (1, 3)), (0, (0, 2))):
      ramps = np.repeat(_ramp(axis)[None], batch, axis=0)
      out = augment.augment_batch(ramps, _SEED, _GEOMETRY).numpy()[..., 0]
      expected = boxes[:, start, None] + steps * (boxes[:, end, None] - boxes[:, start, None])
      expected = expected[:, None, :] if axis == 1 else expected[:, :, None]
      self.assertAllClose(out, np.broadcast_to(expected, out.shape), atol=1e-5)

  def test_crop_and_flip_match_tf_image_crop_and_resize(self):
    faces = _random_faces(16)
    boxes = augment.crop_boxes(_SEED, 16, _GEOMETRY)
    expected = tf.image.crop_and_resize(preprocess.to_model_input(faces), boxes, tf.range(16),
                                        (_SIZE, _SIZE))
    self.assertAllClose(augment.augment_batch(faces, _SEED, _GEOMETRY), expected, atol=1e-5)

  def test_blur_lowers_high_frequency_energy_by_a_per_image_amount(self):
    faces = _random_faces(16)
    before = _high_frequency_energy(preprocess.to_model_input(faces).numpy())
    blurred = augment.augment_batch(faces, _SEED, _only(blur_sigma=1.5)).numpy()
    ratios = _high_frequency_energy(blurred) / before
    self.assertTrue(np.all(ratios <= 1.0 + 1e-6), ratios)
    self.assertLess(ratios.min(), 0.05)  # sigma near 1.5 removes nearly all of it...
    self.assertGreater(ratios.max(), 0.5)  # ...sigma near 0 little: each image has its own sigma
    self.assertLess(np.median(ratios), 0.3)
    # Blur keeps the mean brightness (up to the edge replication).
    self.assertAllClose(blurred.mean(axis=(1, 2, 3)), (faces / 255).mean(axis=(1, 2, 3)),
                        atol=0.01)

  def test_contrast_and_brightness_are_one_affine_per_image(self):
    faces = (_random_faces(16) // 2 + 64).astype(np.uint8)  # no clipping at +-0.1, x0.8..1.2
    x = preprocess.to_model_input(faces).numpy()
    out = augment.augment_batch(faces, _SEED, _only(contrast=0.2, brightness=0.1)).numpy()
    for image, result in zip(x, out):
      scale, offset = np.polyfit(image.ravel(), result.ravel(), 1)
      self.assertAllClose(result, scale * image + offset, atol=1e-5)
      self.assertBetween(scale, 0.8, 1.2)
      shift = result.mean() - image.mean()
      self.assertBetween(shift, -0.1 - 1e-6, 0.1 + 1e-6)
    self.assertGreater(np.ptp(out.std(axis=(1, 2, 3)) / x.std(axis=(1, 2, 3))), 0.1)

  def test_noise_is_gaussian_like_with_a_per_image_stddev(self):
    gray = np.full((64, _SIZE, _SIZE, 1), 0.5, np.float32)
    noise = augment.augment_batch(gray, _SEED, _only(noise_stddev=0.1)).numpy() - 0.5
    stddevs = noise.std(axis=(1, 2, 3))
    self.assertLessEqual(stddevs.max(), 0.1 * 1.05)
    self.assertGreater(np.ptp(stddevs), 0.05)
    self.assertAllClose(noise.mean(axis=(1, 2, 3)), np.zeros(64), atol=0.01)
    z = (noise / stddevs[:, None, None, None]).ravel()
    self.assertAllClose([z.mean(), z.std()], [0.0, 1.0], atol=0.01)
    self.assertAllClose(np.mean(z**4), 2.7, atol=0.05)  # N(0, 1): 3; uniform: 1.8
    # Neighbouring pixels are independent.
    self.assertLess(abs(np.corrcoef(z[:-1], z[1:])[0, 1]), 0.01)

  def test_rotation_turns_a_ramp_exactly_by_each_images_angle(self):
    # Each shear is bilinear along one axis, which keeps a linear ramp exact, so far enough from
    # the border (no edge repeat) the output is the ramp read at the rotated coordinates.
    batch, params = 8, _only(rotate=15.0)
    angles = augment.rotation_angles(_SEED, batch, params).numpy()
    self.assertAllInRange(angles, -np.radians(15.0), np.radians(15.0))
    self.assertGreater(np.unique(np.round(angles, 5)).size, batch - 1)
    centre = (_SIZE - 1) / 2
    u, v = np.meshgrid(np.arange(_SIZE) - centre, np.arange(_SIZE) - centre, indexing="ij")
    inside = slice(14, 34)
    for axis in (0, 1):
      ramps = np.repeat(_ramp(axis)[None], batch, axis=0)
      out = augment.augment_batch(ramps, _SEED, params).numpy()[..., 0]
      cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
      source = (u * cos + v * sin) if axis == 0 else (-u * sin + v * cos)
      expected = (source + centre) / (_SIZE - 1)
      self.assertAllClose(out[:, inside, inside], expected[:, inside, inside], atol=1e-5)

  def test_rotation_is_three_edge_repeating_bilinear_shears_over_the_whole_image(self):
    # The ramp test above stays away from the border; here the reference (numpy, float64) covers
    # it too: samples beyond a row or column repeat its edge pixel.
    def shear_rows(x, amount):  # out[b, i, j] = x[b, i, j + amount[b] * (i - centre)], clamped.
      columns = np.arange(_SIZE) + amount[:, None, None] * (np.arange(_SIZE) - centre)[:, None]
      columns = np.clip(columns, 0, _SIZE - 1)
      left = np.floor(columns).astype(int)
      right, t = np.minimum(left + 1, _SIZE - 1), columns - left
      return ((1 - t) * np.take_along_axis(x, left, axis=2)
              + t * np.take_along_axis(x, right, axis=2))

    batch, params, centre = 16, _only(rotate=45.0), (_SIZE - 1) / 2
    faces = preprocess.to_model_input(_random_faces(batch)).numpy()
    angles = augment.rotation_angles(_SEED, batch, params).numpy().astype(np.float64)
    expected = shear_rows(faces[..., 0].astype(np.float64), -np.tan(angles / 2))
    expected = shear_rows(expected.transpose(0, 2, 1), np.sin(angles)).transpose(0, 2, 1)
    expected = shear_rows(expected, -np.tan(angles / 2))
    out = augment.augment_batch(faces, _SEED, params).numpy()[..., 0]
    self.assertAllClose(out, expected, atol=1e-5)

  def test_positive_rotation_turns_counter_clockwise(self):
    image = np.zeros((1, _SIZE, _SIZE, 1), np.float32)
    image[0, 23:25, 38:42] = 1.0  # a block right of the centre
    params = _only(rotate=45.0)
    for seed in range(20):  # find a seed whose angle is clearly positive
      seed = tf.constant([seed, 1], tf.int64)
      if augment.rotation_angles(seed, 1, params).numpy()[0] > np.radians(30):
        break
    out = augment.augment_batch(image, seed, params).numpy()[0, ..., 0]
    rows, cols = np.nonzero(out > 0.5)
    self.assertLess(rows.mean(), 20, "the block should have moved up")
    self.assertGreater(cols.mean(), 28, "and stayed right of the centre")

  def test_shift_translates_with_edge_pixels_beyond_the_image(self):
    params = _only(shift=0.2)
    batch = 16
    boxes = augment.crop_boxes(_SEED, batch, params).numpy()
    self.assertAllClose(boxes[:, 2] - boxes[:, 0], np.ones(batch))  # no crop: full-size boxes
    self.assertTrue((boxes[:, 1] < 0).any() and (boxes[:, 1] > 0).any(), boxes[:, 1])
    steps = np.arange(_SIZE) / (_SIZE - 1)
    ramps = np.repeat(_ramp(1)[None], batch, axis=0)
    out = augment.augment_batch(ramps, _SEED, params).numpy()[..., 0]
    expected = np.clip(boxes[:, 1, None] + steps, 0.0, 1.0)[:, None, :]
    self.assertAllClose(out, np.broadcast_to(expected, out.shape), atol=1e-5)

  def test_erasing_fills_one_rectangle_per_erased_image(self):
    faces = preprocess.to_model_input(_random_faces(32)).numpy()
    out = augment.augment_batch(faces, _SEED, _only(erase_prob=0.5)).numpy()
    changed = np.abs(out - faces)[..., 0] > 1e-6
    erased = changed.any(axis=(1, 2))
    self.assertTrue(4 < erased.sum() < 28, f"{erased.sum()} of 32 erased at p=0.5")
    for image, mask, was_erased in zip(out[..., 0], changed, erased):
      if not was_erased:
        continue
      rows, cols = mask.any(axis=1), mask.any(axis=0)
      self.assertAllEqual(mask, rows[:, None] & cols[None, :])  # a rectangle
      self.assertAllInRange(mask.mean(), 0.01, 0.3)
      self.assertLess(np.ptp(image[mask]), 1e-6)  # one fill level

  def test_each_augmentation_alone_changes_the_image(self):
    faces = _random_faces(8)
    plain = preprocess.to_model_input(faces)
    off_by_default = {"rotate": 10.0, "shift": 0.1, "erase_prob": 1.0}
    for field in dataclasses.fields(augment.AugmentParams):
      strength = off_by_default.get(field.name, getattr(augment.AugmentParams(), field.name))
      with self.subTest(field.name):
        self.assertNotAllClose(augment.augment_batch(faces, _SEED, _only(**{field.name: strength})),
                               plain)

  def test_crop_draws_do_not_depend_on_the_other_augmentations(self):
    a = augment.crop_boxes(_SEED, 8, augment.AugmentParams())
    b = augment.crop_boxes(_SEED, 8, _only(crop=0.2, flip_prob=0.5))
    self.assertAllEqual(a, b)
    self.assertAllEqual(augment.rotation_angles(_SEED, 8, _only(rotate=10.0)),
                        augment.rotation_angles(_SEED, 8, dataclasses.replace(
                            augment.AugmentParams(), rotate=10.0, erase_prob=0.5)))

  def test_same_result_in_tf_data_map_with_unknown_batch_size(self):
    faces = _random_faces(16)
    ds = tf.data.Dataset.from_tensor_slices(faces).batch(8)  # static shape [None, 48, 48, 1]
    ds = ds.map(lambda x: augment.augment_batch(x, _SEED, _ALL))
    self.assertIsNone(ds.element_spec.shape[0])
    batches = list(ds)
    self.assertLen(batches, 2)
    self.assertAllClose(batches[1], augment.augment_batch(faces[8:], _SEED, _ALL), atol=1e-6)

  def test_same_result_inside_a_jit_compiled_step(self):
    faces = _random_faces(8)
    for params in (augment.AugmentParams(), _ALL):
      step = tf.function(lambda x, p=params: augment.augment_batch(x, _SEED, p), jit_compile=True)
      self.assertAllClose(step(faces), augment.augment_batch(faces, _SEED, params), atol=1e-5)

  def test_bad_input_raises(self):
    with self.assertRaisesRegex(ValueError, "crop"):
      augment.AugmentParams(crop=1.5)
    with self.assertRaisesRegex(ValueError, "rotate"):
      augment.AugmentParams(rotate=90.0)
    with self.assertRaisesRegex(ValueError, r"\[B, H, W, 1\]"):
      augment.augment_batch(np.zeros((2, _SIZE, _SIZE, 3), np.uint8), _SEED)
    with self.assertRaisesRegex(ValueError, "uint8 or float"):
      augment.augment_batch(np.zeros((2, _SIZE, _SIZE, 1), np.int32), _SEED)


class StepSeedTest(tf.test.TestCase):

  def test_step_seeds_are_reproducible_and_distinct(self):
    seeds = [augment.step_seed(3, tf.constant(step)).numpy() for step in range(5)]
    self.assertEqual(seeds[0].shape, (2,))
    self.assertAllEqual(seeds[2], augment.step_seed(3, tf.constant(2, tf.int64)))
    self.assertLen({tuple(s) for s in seeds}, 5)
    self.assertNotAllEqual(seeds[0], augment.step_seed(4, tf.constant(0)))
