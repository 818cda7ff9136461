"""Seeded augmentation of whole batches in TF ops: rotation, crop/shift, flip, blur,
contrast/brightness, random erasing, noise.

`augment_batch(images, seed, params)` takes uint8 (or float in [0, 1]) faces [B, H, W, 1] and
returns float32 [B, H, W, 1] in [0, 1], every image with its own random values. It is pure
TensorFlow, so the training step can run it on the accelerator, and
`pipeline.make_dataset(augment_on_host=...)` can map it in tf.data on the CPU instead. The same
`seed` (shape-[2] int tensor, as for `tf.random.stateless_*`) gives the same batch, on any device
and inside a jit-compiled step too.

The seed project applied five of these kinds (crop, flip, blur, contrast, noise) one image at a time
in OpenCV/numpy; rotation, shift and erasing are the ones published FER-2013 recipes add. Here they
cost a few fused passes over the batch, in this order:

  * Rotation is three shears (Paeth: x by -tan(a/2), y by sin(a), x by -tan(a/2)). A shear shifts
    each image row (or column) by its own amount: one gather per output pixel fetches the 2
    neighbouring source pixels (edge repeated), weighted by the fractional part of the shift.
    Bilinear resampling keeps a linear ramp exact, so the three shears are an exact rotation of it.
  * Crop, shift, flip and blur are one resampling per axis: out = A_y @ image @ A_x^T with a
    per-image matrix per axis. A row of A holds the bilinear weights of `tf.image.crop_and_resize` for the
    image's box (read right to left when flipped), convolved with the image's Gaussian blur kernel.
    So the three are two small batched matmuls. Blur taps that reach past the crop read the real
    pixels around it (edge-replicated at the image border, which a shift can reach).
  * Contrast and brightness are one affine per image: factor * (x - mean) + mean + delta.
  * Random erasing fills one rectangle per erased image with a uniform grey level (as
    `torchvision.transforms.RandomErasing`: area 2-25% of the image, aspect ratio log-uniform in
    [0.3, 3.3]), a mask made of one row test and one column test.
  * Noise is Gaussian-like: each pixel sums four independent 4-bit uniform integers, centred and
    scaled to unit variance. This is a discrete Irwin-Hall (n=4) approximation of N(0, 1): 61
    levels, CDF within 0.008 of the normal one (between levels), excess kurtosis -0.3, lighter
    tails (bounded at +-3.25 sigma; P(|z| > 3) is 0.05% instead of 0.27%).
    The 16 bits per pixel come from a counter-based generator: two rounds of the `lowbias32`
    integer hash (C. Wellons) of the pixel's index, keyed by two 32-bit words that
    `tf.random.stateless_uniform` (Philox) draws from the seed. Like Philox it is a pure function of
    (seed, position), but it is ~10x cheaper per bit and fuses with the rest; per-pixel
    `tf.random.stateless_normal` (Philox + Box-Muller) made noise the costliest augmentation.
  * The arithmetic is one XLA-compiled function, so it fuses into a few loops on CPU and GPU. The
    other random draws are `tf.random.stateless_uniform` ops outside it (XLA's CPU Philox is slow).

A strength of 0 skips that augmentation, e.g. `dataclasses.replace(params, noise_stddev=0.0)`. The
per-image random values of one augmentation do not depend on which others are on.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from emotion_tfds import preprocess
from emotion_tfds import seeds

# Columns of the per-image uniform draw [B, _NUM_DRAWS].
_SCALE, _OFFSET_Y, _OFFSET_X, _FLIP, _BLUR, _CONTRAST, _BRIGHTNESS, _NOISE = range(8)
_NUM_DRAWS = 8
# Columns of the second per-image draw [B, _NUM_EXTRA_DRAWS] (its own seed, so adding these kinds
# left the draws of the first eight unchanged).
(_ANGLE, _SHIFT_Y, _SHIFT_X, _ERASE, _ERASE_AREA, _ERASE_ASPECT, _ERASE_TOP, _ERASE_LEFT,
 _ERASE_FILL) = range(9)
_NUM_EXTRA_DRAWS = 9
# Random erasing: area fraction and aspect-ratio range of the rectangle (torchvision's ratios, a
# smaller largest area for 48x48 faces).
_ERASE_AREA_RANGE = (0.02, 0.25)
_ERASE_ASPECT_RANGE = (0.3, 3.3)
# Irwin-Hall n=4 over uniform integers 0..15: mean 4 * 7.5, variance 4 * (16**2 - 1) / 12.
_NIBBLE_SUM_MEAN = 30.0
_NIBBLE_SUM_STD = math.sqrt(85.0)
# Fixed, not "auto_select" (which lets CPU, GPU and XLA pick different generators), so a seed gives
# the same batch in tf.data, in a train step and in a jit-compiled train step.
_ALG = "philox"
# Blur kernels are truncated at this many sigmas of the largest sigma.
_BLUR_TRUNCATE = 2.0


# The allowed range of each `AugmentParams` strength.
LIMITS: dict[str, tuple[float, float]] = {
    "crop": (0.0, 0.9), "flip_prob": (0.0, 1.0), "blur_sigma": (0.0, 4.0), "contrast": (0.0, 1.0),
    "brightness": (0.0, 1.0), "noise_stddev": (0.0, 1.0), "rotate": (0.0, 45.0),
    "shift": (0.0, 0.5), "erase_prob": (0.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """Strengths of the augmentations; 0 turns one off. Intensities are in [0, 1] image units.

  Attributes:
    crop: largest fraction of the side cut away. Each image keeps a square of side ~ U[1 - crop, 1]
      (in `crop_and_resize` box units) at a uniform position, resized back to full size.
    flip_prob: probability of a horizontal flip.
    blur_sigma: largest Gaussian blur sigma in output pixels; each image's sigma ~ U[0, blur_sigma].
    contrast: each image's contrast factor ~ U[1 - contrast, 1 + contrast] around its mean.
    brightness: each image's brightness shift ~ U[-brightness, brightness].
    noise_stddev: largest standard deviation of the additive Gaussian-like noise; each image's
      ~ U[0, noise_stddev].
    rotate: largest rotation in degrees; each image's angle ~ U[-rotate, rotate] (positive turns
      the face counter-clockwise), about the image centre.
    shift: largest translation of the crop box per axis, as a fraction of the side; each image's
      ~ U[-shift, shift] per axis. The part beyond the image repeats its edge pixels.
    erase_prob: probability of erasing one random rectangle of the image.
  """
  crop: float = 0.2
  flip_prob: float = 0.5
  blur_sigma: float = 1.0
  contrast: float = 0.3
  brightness: float = 0.1
  noise_stddev: float = 0.04
  rotate: float = 0.0
  shift: float = 0.0
  erase_prob: float = 0.0

  def __post_init__(self):
    for name, (low, high) in LIMITS.items():
      value = getattr(self, name)
      if not low <= value <= high:
        raise ValueError(f"AugmentParams.{name}={value!r} is outside [{low}, {high}].")


# Every strength 0: `augment_batch` only converts to float32 [0, 1].
NO_AUGMENTATION = AugmentParams(crop=0.0, flip_prob=0.0, blur_sigma=0.0, contrast=0.0,
                                brightness=0.0, noise_stddev=0.0, rotate=0.0, shift=0.0,
                                erase_prob=0.0)


def step_seed(seed: int, step: tf.Tensor) -> tf.Tensor:
  """The augmentation seed of training step `step` of a run seeded with `seed`: int64 [2]."""
  base = tf.constant([seed, 0x5EED], tf.int64)
  return tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64), alg=_ALG)


def crop_boxes(seed: tf.Tensor, batch_size: int | tf.Tensor,
               params: AugmentParams = AugmentParams()) -> tf.Tensor:
  """The crop boxes `augment_batch(images, seed, params)` uses, float32 [B, 4].

  Boxes are in `tf.image.crop_and_resize` form [y1, x1, y2, x2] (normalized), with x1 > x2 for the
  flipped images, so `crop_and_resize(images, boxes, ..., method="bilinear")` reproduces the
  geometry (without rotation and blur, and inside the image).
  """
  draws, extra = _per_image_draws(_split(seed)[0], batch_size)
  side, y1, x1, flip = _geometry(draws, extra, params)
  x_left = tf.where(flip, x1 + side, x1)
  x_right = tf.where(flip, x1, x1 + side)
  return tf.stack([y1, x_left, y1 + side, x_right], axis=1)


def rotation_angles(seed: tf.Tensor, batch_size: int | tf.Tensor,
                    params: AugmentParams = AugmentParams()) -> tf.Tensor:
  """The rotation angles `augment_batch(images, seed, params)` uses, radians float32 [B]."""
  return _angles(_per_image_draws(_split(seed)[0], batch_size)[1], params)


def augment_batch(images: tf.Tensor, seed: tf.Tensor,
                  params: AugmentParams = AugmentParams()) -> tf.Tensor:
  """Augments a batch, each image with its own random values of every augmentation turned on.

  Args:
    images: uint8 [B, H, W, 1] (converted with `preprocess.to_model_input`) or float in [0, 1].
    seed: int32/int64 [2], the stateless seed; the same seed gives the same output.
    params: strengths (0 skips an augmentation).

  Returns:
    float32 [B, H, W, 1] in [0, 1].

  Raises:
    ValueError: if `images` is not [B, H, W, 1] or not uint8/floating.
  """
  images = tf.convert_to_tensor(images)
  if images.shape.rank != 4 or images.shape[-1] != 1 or None in images.shape[1:3]:
    raise ValueError(f"augment_batch expects images [B, H, W, 1] with known H and W, got "
                     f"{images.shape}.")
  if images.dtype != tf.uint8 and not images.dtype.is_floating:
    raise ValueError(f"augment_batch expects uint8 or float images, got {images.dtype.name}.")
  draw_seed, noise_seed = _split(seed)
  batch_size = tf.shape(images)[0]
  draws, extra = _per_image_draws(draw_seed, batch_size)
  noise_key = None
  if params.noise_stddev > 0:
    noise_key = tf.random.stateless_uniform([2], noise_seed, minval=None, maxval=None,
                                            dtype=tf.int32, alg=_ALG)
  return _augment_compiled(images, draws, extra, noise_key, dataclasses.astuple(params))


def _split(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(seed of the per-image draws, seed of the noise key) from the caller's seed."""
  halves = tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), 2, alg=_ALG)
  return tuple(tf.unstack(halves))


def _per_image_draws(seed: tf.Tensor,
                     batch_size: int | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """float32 [B, _NUM_DRAWS] and [B, _NUM_EXTRA_DRAWS] uniform in [0, 1)."""
  extra_seed = tf.random.experimental.stateless_fold_in(seed, seeds.EXTRA_AUGMENT_DRAW, alg=_ALG)
  return (_uniform([batch_size, _NUM_DRAWS], seed),
          _uniform([batch_size, _NUM_EXTRA_DRAWS], extra_seed))


def _uniform(shape: list, seed: tf.Tensor) -> tf.Tensor:
  """float32 uniform in [0, 1) from Philox integers.

  Float `stateless_uniform` gives other values under XLA than on CPU; integers do not.
  """
  bits = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.int32,
                                     alg=_ALG)
  # The top 24 bits (logical shift via a mask), scaled to [0, 1).
  top = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 8), 0xFFFFFF)
  return tf.cast(top, tf.float32) * (1.0 / (1 << 24))


def _geometry(draws: tf.Tensor, extra: tf.Tensor, params: AugmentParams):
  """Per-image crop side, top, left (normalized box units) and flip flag from the draws."""
  side = 1.0 - params.crop * draws[:, _SCALE]
  y1 = (1.0 - side) * draws[:, _OFFSET_Y]
  x1 = (1.0 - side) * draws[:, _OFFSET_X]
  if params.shift > 0:
    y1 += params.shift * (2.0 * extra[:, _SHIFT_Y] - 1.0)
    x1 += params.shift * (2.0 * extra[:, _SHIFT_X] - 1.0)
  flip = draws[:, _FLIP] < params.flip_prob
  return side, y1, x1, flip


def _angles(extra: tf.Tensor, params: AugmentParams) -> tf.Tensor:
  """Per-image rotation angle in radians from the draws."""
  return math.radians(params.rotate) * (2.0 * extra[:, _ANGLE] - 1.0)


@tf.function(jit_compile=True)
def _augment_compiled(images, draws, extra, noise_key, params_tuple):
  """The arithmetic of `augment_batch` as one XLA computation (params_tuple is static)."""
  params = AugmentParams(*params_tuple)
  if images.dtype == tf.uint8:
    x = preprocess.to_model_input(images)
  else:
    x = tf.cast(images, tf.float32)
  x = x[..., 0]
  height, width = x.shape[1], x.shape[2]

  if params.rotate > 0:
    x = _rotate(x, _angles(extra, params))

  if params.crop > 0 or params.flip_prob > 0 or params.blur_sigma > 0 or params.shift > 0:
    side, y1, x1, flip = _geometry(draws, extra, params)
    sigma = params.blur_sigma * draws[:, _BLUR]
    radius = math.ceil(_BLUR_TRUNCATE * params.blur_sigma)
    # crop_and_resize sampling: output pixel i reads source coordinate start + i * step, where
    # step = side * (size - 1) / (output size - 1) = side, as the output keeps the input's size.
    rows = _resampling_matrix(y1 * (height - 1), side, sigma, height, radius)
    x_start = tf.where(flip, (x1 + side) * (width - 1), x1 * (width - 1))
    cols = _resampling_matrix(x_start, tf.where(flip, -side, side), sigma, width, radius)
    x = tf.matmul(tf.matmul(rows, x), cols, transpose_b=True)

  if params.contrast > 0 or params.brightness > 0:
    factor = 1.0 + params.contrast * (2.0 * draws[:, _CONTRAST] - 1.0)
    delta = params.brightness * (2.0 * draws[:, _BRIGHTNESS] - 1.0)
    mean = tf.reduce_mean(x, axis=[1, 2])
    x = factor[:, None, None] * x + ((1.0 - factor) * mean + delta)[:, None, None]

  if params.erase_prob > 0:
    x = _erase(x, extra, params.erase_prob)

  if params.noise_stddev > 0:
    stddev = params.noise_stddev * draws[:, _NOISE]
    # 16 random bits per pixel: one 32-bit word holds the noise of two pixels.
    bits = _hashed_bits(noise_key, tf.shape(x)[0], height, (width + 1) // 2)
    x += stddev[:, None, None] * _gaussian_like(bits)[:, :, :width]

  return tf.clip_by_value(x, 0.0, 1.0)[..., None]


def _rotate(x: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
  """x [B, H, W] rotated by angle [B] (radians) about the centre: three shears, edges repeated.

  Output pixel (u, v) (centred row, column) reads the source at (u cos a + v sin a,
  -u sin a + v cos a). The shears are row shifts (`_shear_rows`), the middle one of the transposed
  image, i.e. a column shift.
  """
  along_x = -tf.tan(angle / 2.0)
  x = _shear_rows(x, along_x)
  x = tf.transpose(_shear_rows(tf.transpose(x, [0, 2, 1]), tf.sin(angle)), [0, 2, 1])
  return _shear_rows(x, along_x)


def _shear_rows(x: tf.Tensor, amount: tf.Tensor) -> tf.Tensor:
  """x [B, H, W] with row i shifted: out[b, i, j] = x[b, i, j + amount[b] * (i - (H - 1) / 2)].

  Bilinear between columns, clamped to the row's edge. Row i's shift splits into an integer part n
  and a fraction t: out[b, i, j] = (1 - t) x[b, i, c(j + n)] + t x[b, i, c(j + n + 1)], with c
  clamping a column to [0, W - 1], so that beyond the row its edge pixel repeats. One gather per
  output pixel reads both taps as a pair of neighbours of the row padded with its edge pixels.
  """
  height, width = x.shape[1], x.shape[2]
  rows = tf.range(height, dtype=tf.float32) - (height - 1) / 2.0
  offset = amount[:, None] * rows  # [B, H]
  whole = tf.floor(offset)
  fraction = (offset - whole)[:, :, None]
  # Pair k in [0, W] is (x[c(k - 1)], x[c(k)]), so output column j reads pair c'(j + n + 1), with
  # c' clamping to [0, W]: (x[c(j + n)], x[c(j + n + 1)]) for any integer n.
  padded = tf.concat([x[:, :, :1], x, x[:, :, -1:]], axis=2)  # [B, H, W + 2]
  pairs = tf.stack([padded[:, :, :-1], padded[:, :, 1:]], axis=3)  # [B, H, W + 1, 2]
  pair = tf.clip_by_value(tf.cast(whole, tf.int32)[:, :, None] + 1 + tf.range(width), 0, width)
  taps = tf.gather(pairs, pair, batch_dims=2)  # [B, H, W, 2]
  weights = tf.concat([1.0 - fraction, fraction], axis=2)[:, :, None, :]  # [B, H, 1, 2]
  # A reduction ends XLA's loop fusion, so the next shear gathers from this shear's output buffer
  # instead of recomputing it for each of its taps (the elementwise form is ~2x slower on CPU).
  return tf.reduce_sum(taps * weights, axis=3)


def _erase(x: tf.Tensor, extra: tf.Tensor, erase_prob: float) -> tf.Tensor:
  """x [B, H, W] with one rectangle of each erased image set to the image's fill level."""
  height, width = x.shape[1], x.shape[2]
  low, high = _ERASE_AREA_RANGE
  area = low + (high - low) * extra[:, _ERASE_AREA]
  low, high = (math.log(r) for r in _ERASE_ASPECT_RANGE)
  aspect = tf.exp(low + (high - low) * extra[:, _ERASE_ASPECT])
  box_height = tf.minimum(tf.sqrt(area * aspect), 1.0) * height
  box_width = tf.minimum(tf.sqrt(area / aspect), 1.0) * width
  top = (height - box_height) * extra[:, _ERASE_TOP]
  left = (width - box_width) * extra[:, _ERASE_LEFT]
  rows = tf.range(height, dtype=tf.float32)
  columns = tf.range(width, dtype=tf.float32)
  in_rows = (rows >= top[:, None]) & (rows < (top + box_height)[:, None])  # [B, H]
  in_columns = (columns >= left[:, None]) & (columns < (left + box_width)[:, None])  # [B, W]
  erased = ((extra[:, _ERASE] < erase_prob)[:, None, None] & in_rows[:, :, None]
            & in_columns[:, None])
  return tf.where(erased, extra[:, _ERASE_FILL, None, None], x)


def _resampling_matrix(start: tf.Tensor, step: tf.Tensor, sigma: tf.Tensor, size: int,
                       radius: int) -> tf.Tensor:
  """Per-image [B, size, size] matrix: bilinear resampling along one axis, then Gaussian blur.

  Output pixel i samples source coordinate start + i * step (crop_and_resize convention); its row is
  sum_d g(d) * bilinear(start + (i + d) * step) over blur taps d in [-radius, radius], with g the
  normalized Gaussian of the image's sigma (in output pixels). Sample points are clamped to the
  image, i.e. edge replication.
  """
  index = tf.range(size, dtype=tf.float32)
  centre = start[:, None] + step[:, None] * index  # [B, size] source coordinate of each output.
  if radius == 0:
    point = tf.clip_by_value(centre, 0.0, size - 1.0)
    return tf.nn.relu(1.0 - tf.abs(point[:, :, None] - index))
  taps = tf.range(-radius, radius + 1, dtype=tf.float32)
  # sigma = 0 leaves only the centre tap (exp(-d^2 / 1e-6) underflows to 0).
  weights = tf.exp(-tf.square(taps) / (2.0 * tf.square(sigma)[:, None] + 1e-6))
  weights /= tf.reduce_sum(weights, axis=1, keepdims=True)  # [B, 2 * radius + 1]
  matrix = 0.0
  for k in range(2 * radius + 1):
    point = tf.clip_by_value(centre + float(k - radius) * step[:, None], 0.0, size - 1.0)
    matrix += weights[:, k, None, None] * tf.nn.relu(1.0 - tf.abs(point[:, :, None] - index))
  return matrix


def _hashed_bits(key: tf.Tensor, batch_size: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """int32 random bits [B, H, W]: lowbias32(lowbias32(index ^ key[0]) ^ key[1]) per element."""
  index = tf.bitcast(tf.range(batch_size * height * width, dtype=tf.int32), tf.uint32)
  key = tf.bitcast(key, tf.uint32)
  bits = _lowbias32(tf.bitwise.bitwise_xor(_lowbias32(tf.bitwise.bitwise_xor(index, key[0])),
                                           key[1]))
  return tf.reshape(tf.bitcast(bits, tf.int32), [-1, height, width])


def _lowbias32(x: tf.Tensor) -> tf.Tensor:
  """Chris Wellons' lowbias32 integer hash (a bijection of uint32 with strong avalanche)."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
  x *= tf.constant(0x7FEB352D, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
  x *= tf.constant(0x846CA68B, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _gaussian_like(bits: tf.Tensor) -> tf.Tensor:
  """int32 [B, H, W2] random bits -> [B, H, 2 * W2] float32 noise, mean 0, variance 1.

  Each output is the sum of four 4-bit fields of one 16-bit half word (Irwin-Hall n=4), centred and
  scaled; the low halves fill the first W2 columns, the high halves the rest.
  """
  # Add neighbouring nibbles, then neighbouring bytes (masks drop the sign-extended bits).
  pairs = (tf.bitwise.bitwise_and(bits, 0x0F0F0F0F)
           + tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 4), 0x0F0F0F0F))
  quads = (tf.bitwise.bitwise_and(pairs, 0x00FF00FF)
           + tf.bitwise.bitwise_and(tf.bitwise.right_shift(pairs, 8), 0x00FF00FF))
  sums = tf.concat([tf.bitwise.bitwise_and(quads, 0xFFFF), tf.bitwise.right_shift(quads, 16)],
                   axis=2)
  return (tf.cast(sums, tf.float32) - _NIBBLE_SUM_MEAN) * (1.0 / _NIBBLE_SUM_STD)
