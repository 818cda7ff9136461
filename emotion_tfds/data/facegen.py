"""Generated cartoon faces in fer2013.csv form: the embedded default data set of training and tests.

Each row is a 48x48 grayscale cartoon face whose expression follows its FER-2013 label (brows, eyes,
mouth, nose wrinkles), drawn with per-face jitter and random pose, lighting and noise, so a small CNN
has to learn the expressions rather than read them off. The same seed always gives the same bytes.

The command is `facegen_main.py` at the repository root. `write_dataset` writes the folder that
builders/generated_faces builds: the csv and a `generated.json` of its parameters, which the
generated_faces dataset records and builders/fer2013 refuses (generated faces never become
`fer2013`).
"""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np

from emotion_tfds import image_spec
from emotion_tfds import labels

# Usage column values and their shares (FER-2013's own split names).
USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
USAGE_FRACTIONS: tuple[float, ...] = (0.8, 0.1, 0.1)
# FER-2013's class counts (all 35,887 rows), for distribution="fer".
FER_CLASS_COUNTS: tuple[int, ...] = (4953, 547, 5121, 8989, 6077, 4002, 6198)
DISTRIBUTIONS: tuple[str, ...] = ("balanced", "fer")

# Faces of the default run (train_main, facegen_main) unless told otherwise.
DEFAULT_ROWS = 6000
# A generated-faces folder (`write_dataset`): the csv, in fer2013.csv's form and name, and its
# parameters (builders/fer2013 refuses a csv with this file beside it).
CSV_NAME = "fer2013.csv"
PARAMS_NAME = "generated.json"
_CANVAS = 96  # Faces are drawn at 2x in a canonical pose, then warped to 48x48.
_SHIFT = 4  # Fractional bits of cv2 drawing coordinates.
_ONE = 1 << _SHIFT
_CENTER_X, _CENTER_Y = 48.0, 50.0

# Expression parameters in canonical canvas pixels, one row per FER id (angry, disgust, fear, happy,
# sad, surprise, neutral). A face moves from neutral towards its emotion's row by a random intensity.
_PARAMS = ("brow_tilt", "brow_height", "eye_open", "mouth_curve", "mouth_open", "mouth_width",
           "mouth_tilt", "wrinkle", "teeth")
_EXPRESSIONS = np.array([
    # tilt  height  eye   curve  open  width  mtilt  wrinkle  teeth
    [8.0,   7.5,   3.0,  -2.5,   3.5,  12.0,   0.0,   0.0,    1.0],   # angry
    [4.0,   8.5,   2.3,  -3.5,   2.5,  11.0,   5.0,   1.0,    0.0],   # disgust
    [-5.0, 15.0,   6.5,  -3.0,   6.0,  15.0,   0.0,   0.0,    0.0],   # fear
    [0.0,  12.0,   2.0,   8.0,   4.0,  16.0,   0.0,   0.0,    0.6],   # happy
    [-6.5, 11.5,   3.2,  -6.5,   0.0,  11.0,   0.0,   0.0,    0.0],   # sad
    [-1.0, 17.0,   7.0,   0.0,  13.0,   7.5,   0.0,   0.0,    0.0],   # surprise
    [0.0,  11.0,   4.0,   0.0,   0.0,  12.0,   0.0,   0.0,    0.0],   # neutral
], dtype=np.float32)
_NEUTRAL = _EXPRESSIONS[labels.FER7.index("neutral")]
# Per-face Gaussian jitter of each parameter (same units), on top of the intensity.
_JITTER = np.array([1.2, 1.2, 0.6, 1.2, 1.0, 1.5, 0.8, 0.15, 0.2], dtype=np.float32)
_INTENSITY_RANGE = (0.6, 1.0)
_MOUTH_T = np.linspace(-1.0, 1.0, 21)  # Positions along the mouth, corner to corner.


def sample_labels(num_rows: int, rng: np.random.Generator,
                  distribution: str = "balanced") -> np.ndarray:
  """Returns shuffled FER ids (int64 [num_rows]): equal classes, or FER-2013's shares for 'fer'."""
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"Unknown distribution {distribution!r}; expected one of {DISTRIBUTIONS}.")
  if distribution == "balanced":
    ids = np.arange(num_rows, dtype=np.int64) % len(labels.FER7)
  else:
    shares = np.array(FER_CLASS_COUNTS, dtype=np.float64) / sum(FER_CLASS_COUNTS)
    counts = np.floor(shares * num_rows).astype(np.int64)
    counts[np.argsort(-(shares * num_rows - counts))[:num_rows - counts.sum()]] += 1
    ids = np.repeat(np.arange(len(labels.FER7), dtype=np.int64), counts)
  return rng.permutation(ids)


def assign_usage(face_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Returns a Usage index (0 Training, 1 PublicTest, 2 PrivateTest) per row, stratified by class.

  Each class is split ~80/10/10 on its own, and every class with at least 3 rows gets at least one
  row in each split.
  """
  usage = np.zeros(len(face_labels), dtype=np.int64)
  for label in np.unique(face_labels):
    rows = rng.permutation(np.flatnonzero(face_labels == label))
    n = len(rows)
    n_eval = [int(round(n * f)) for f in USAGE_FRACTIONS[1:]]
    if n >= 3:
      n_eval = [max(1, k) for k in n_eval]
    usage[rows[:n_eval[0]]] = 1
    usage[rows[n_eval[0]:n_eval[0] + n_eval[1]]] = 2
  return usage


def _pt(x: float, y: float) -> tuple[int, int]:
  """Float canvas coordinates -> a fixed-point cv2 point (drawn with `shift=_SHIFT`)."""
  return round(x * _ONE), round(y * _ONE)


def _curve(points: np.ndarray) -> np.ndarray:
  """Float canvas points [K, 2] -> int32 fixed-point points for cv2 polylines/fillPoly."""
  return np.round(points * _ONE).astype(np.int32)


def _mouths(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mouth outlines of all faces: (upper lip, lower lip, teeth edge), fixed-point int32 [N, K, 2].

  The mouth is a curve through the corners (mouth_curve > 0 smiles), opened into a lens by
  mouth_open; mouth_tilt lifts one corner (disgust).
  """
  p = {name: params[:, k:k + 1] for k, name in enumerate(_PARAMS)}
  t = _MOUTH_T
  mid = _CENTER_Y + 17 - p["mouth_curve"] * t**2 - p["mouth_tilt"] * np.maximum(t, 0)
  half = np.maximum(p["mouth_open"], 0) / 2 * (1 - t**2) ** 0.7
  x = np.broadcast_to(_CENTER_X + np.maximum(p["mouth_width"], 4.0) * t, mid.shape)
  return tuple(_curve(np.stack([x, y], axis=-1)) for y in (mid - half, mid + half, mid - half / 5))


def _pose_matrices(angle: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
  """Affine maps [N, 2, 3] of canvas -> canvas: rotate (degrees) and scale about the face centre,
  move it to the canvas centre, then shift (canvas pixels); as cv2.getRotationMatrix2D."""
  alpha = scale * np.cos(np.deg2rad(angle))
  beta = scale * np.sin(np.deg2rad(angle))
  cx, cy = _CENTER_X, _CENTER_Y
  return np.stack([
      np.stack([alpha, beta, (1 - alpha) * cx - beta * cy + _CANVAS / 2 - cx + shift[:, 0]], -1),
      np.stack([-beta, alpha, beta * cx + (1 - alpha) * cy + _CANVAS / 2 - cy + shift[:, 1]], -1),
  ], axis=1)


def _draw_face(canvas: np.ndarray, p: dict[str, float], style: list[float],
               mouth: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
  """Draws one face in canonical pose on `canvas` (uint8 [_CANVAS, _CANVAS], background filled).

  Args:
    canvas: the image to draw on, in place.
    p: expression parameters (`_PARAMS` names) of this face.
    style: per-face appearance draws in [0, 1): skin, ink, face shape, eye spacing, hair, etc.
    mouth: this face's (upper lip, lower lip, teeth edge) from `_mouths`.
  """
  aa, sh = cv2.LINE_AA, _SHIFT
  skin = int(150 + 90 * style[0])
  ink = int(20 + 60 * style[1])
  cx, cy = _CENTER_X, _CENTER_Y
  face_w, face_h = 30 + 6 * style[2], 38 + 6 * style[3]
  if style[4] < 0.5:  # Hair: a dark cap showing above the forehead.
    hair = int(ink + 40 * style[5])
    cv2.ellipse(canvas, _pt(cx, cy - 4 - 8 * style[6]), _pt(face_w + 2, face_h), 0, 0, 360, hair,
                -1, aa, sh)
  cv2.ellipse(canvas, _pt(cx, cy), _pt(face_w, face_h), 0, 0, 360, skin, -1, aa, sh)
  for side in (-1, 1):  # Ears.
    cv2.ellipse(canvas, _pt(cx + side * face_w, cy), _pt(4, 7), 0, 0, 360, skin, -1, aa, sh)

  eye_dx = 11 + 3 * style[7]
  eye_y = cy - 8
  eye_open = max(p["eye_open"], 0.8)
  pupil_dx = (style[8] - 0.5) * 3
  for side in (-1, 1):
    ex = cx + side * eye_dx
    cv2.ellipse(canvas, _pt(ex, eye_y), _pt(6.0, eye_open), 0, 0, 360, min(255, skin + 40), -1,
                aa, sh)
    cv2.ellipse(canvas, _pt(ex, eye_y), _pt(6.0, eye_open), 0, 0, 360, ink, 1, aa, sh)
    pupil = min(2.8, eye_open)
    cv2.ellipse(canvas, _pt(ex + pupil_dx, eye_y), _pt(pupil, pupil), 0, 0, 360, ink, -1, aa, sh)
    # Brow: the inner end drops by brow_tilt (angry) or rises (sad, fear).
    inner = _pt(cx + side * (eye_dx - 6), eye_y - p["brow_height"] + p["brow_tilt"] / 2)
    outer = _pt(cx + side * (eye_dx + 7), eye_y - p["brow_height"] - p["brow_tilt"] / 2)
    cv2.line(canvas, inner, outer, ink, 3, aa, sh)

  # Nose, and the wrinkles of disgust across its bridge.
  nose_y = cy + 6
  nose = np.array([[cx - 1, cy - 4], [cx - 3, nose_y], [cx + 2, nose_y]])
  cv2.polylines(canvas, [_curve(nose)], False, ink, 1, aa, sh)
  if p["wrinkle"] > 0.5:
    for k in range(3):
      y = cy - 3 + 3 * k
      cv2.line(canvas, _pt(cx - 6, y + 1), _pt(cx + 6, y - 1), ink, 2, aa, sh)

  upper, lower, teeth = mouth
  if p["mouth_open"] > 1.5:
    cv2.fillPoly(canvas, [np.concatenate([upper, lower[::-1]])], ink, aa, sh)
    if p["teeth"] > 0.5:
      cv2.fillPoly(canvas, [np.concatenate([upper, teeth[::-1]])], 235, aa, sh)
  cv2.polylines(canvas, [upper, lower], False, ink, 2, aa, sh)


def render(face_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Draws one face per label.

  Args:
    face_labels: FER ids, int [N].
    rng: the only source of randomness.

  Returns:
    uint8 [N, 48, 48] images.
  """
  n = len(face_labels)
  intensity = rng.uniform(*_INTENSITY_RANGE, size=(n, 1)).astype(np.float32)
  target = _EXPRESSIONS[face_labels]
  params = _NEUTRAL + intensity * (target - _NEUTRAL)
  params += rng.standard_normal((n, len(_PARAMS))).astype(np.float32) * _JITTER
  # Disgust raises either corner of the mouth.
  params[:, _PARAMS.index("mouth_tilt")] *= rng.choice([-1.0, 1.0], size=n)
  style = rng.random((n, 9))
  # Pose: rotation (degrees), scale, shift (output pixels).
  angle = rng.normal(0.0, 8.0, n).clip(-20, 20)
  scale = rng.uniform(0.84, 1.12, n)
  shift = rng.normal(0.0, 3.6, (n, 2)).clip(-9.0, 9.0)  # Canvas pixels (2 per output pixel).
  background = rng.integers(20, 236, n).tolist()

  mouths = _mouths(params)
  matrices = _pose_matrices(angle, scale, shift)
  size = image_spec.IMAGE_SIZE
  images = np.empty((n, size, size), dtype=np.float32)
  canvas = np.empty((_CANVAS, _CANVAS), dtype=np.uint8)
  for i, (face_params, face_style) in enumerate(zip(params.tolist(), style.tolist())):
    canvas.fill(background[i])
    _draw_face(canvas, dict(zip(_PARAMS, face_params)), face_style, tuple(m[i] for m in mouths))
    # Warp at canvas resolution, then area-downsample (warpAffine has no anti-aliasing).
    warped = cv2.warpAffine(canvas, matrices[i], (_CANVAS, _CANVAS), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=background[i])
    images[i] = cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)

  # Lighting: a linear gradient, global contrast and brightness; then sensor noise.
  yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j].astype(np.float32)
  gradient = rng.normal(0.0, 25.0, (n, 2)).astype(np.float32)
  images += gradient[:, :1, None] * xx + gradient[:, 1:, None] * yy
  contrast = rng.uniform(0.6, 1.2, (n, 1, 1)).astype(np.float32)
  brightness = rng.normal(0.0, 20.0, (n, 1, 1)).astype(np.float32)
  images -= 128.0
  images *= contrast
  images += 128.0 + brightness
  noise = rng.standard_normal(images.shape, dtype=np.float32)
  noise *= rng.uniform(0.0, 10.0, (n, 1, 1)).astype(np.float32)
  images += noise
  np.clip(np.round(images, out=images), 0, 255, out=images)
  return images.astype(np.uint8)


def generate(num_rows: int, seed: int = 0,
             distribution: str = "balanced") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Generates a data set in memory.

  Args:
    num_rows: number of faces.
    seed: random seed; the same seed gives the same data.
    distribution: 'balanced' (equal classes) or 'fer' (FER-2013's class shares).

  Returns:
    (images uint8 [N, 48, 48], FER ids int64 [N], Usage indices into `USAGES` int64 [N]).
  """
  if num_rows < 1:
    raise ValueError(f"num_rows must be positive, got {num_rows}.")
  rng = np.random.default_rng(seed)
  face_labels = sample_labels(num_rows, rng, distribution)
  usage = assign_usage(face_labels, rng)
  return render(face_labels, rng), face_labels, usage


def write_csv(path: str | pathlib.Path, num_rows: int, seed: int = 0,
              distribution: str = "balanced") -> pathlib.Path:
  """Writes `num_rows` generated faces as a fer2013.csv file (header `emotion,pixels,Usage`).

  Args:
    path: the csv file to write; parent folders are created.
    num_rows: number of data rows.
    seed: random seed; the same seed gives a byte-identical file.
    distribution: 'balanced' (equal classes) or 'fer' (FER-2013's class shares).

  Returns:
    The path written.
  """
  path = pathlib.Path(path)
  images, face_labels, usage = generate(num_rows, seed, distribution)
  # Each pixel becomes its decimal digits plus a space, NUL-padded to 4 bytes; NULs are then dropped.
  tokens = np.array([f"{v} ".encode("ascii") for v in range(256)], dtype="S4")
  flat = tokens[images.reshape(len(images), -1)]
  lines = [b"emotion,pixels,Usage\n"]
  for label, row, u in zip(face_labels.tolist(), flat, usage.tolist()):
    pixels = row.tobytes().replace(b"\0", b"")[:-1]
    lines.append(b"%d,%s,%s\n" % (label, pixels, USAGES[u].encode("ascii")))
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"".join(lines))
  return path


def generator_params(num_rows: int, seed: int = 0, distribution: str = "balanced") -> dict:
  """The `generated.json` of a `write_dataset` folder: what made the csv."""
  return {"generator": __name__, "num_rows": num_rows, "seed": seed, "distribution": distribution}


def write_dataset(out_dir: str | pathlib.Path, num_rows: int, seed: int = 0,
                  distribution: str = "balanced") -> pathlib.Path:
  """Writes `out_dir/fer2013.csv` (`write_csv`) and `out_dir/generated.json` (its parameters).

  The folder is the manual_dir of the generated_faces dataset (builders/generated_faces).

  Returns:
    The csv's path.
  """
  out_dir = pathlib.Path(out_dir)
  path = write_csv(out_dir / CSV_NAME, num_rows, seed, distribution)
  (out_dir / PARAMS_NAME).write_text(
      json.dumps(generator_params(num_rows, seed, distribution)) + "\n")
  return path


def contact_sheet(path: str | pathlib.Path, per_class: int = 8, seed: int = 0,
                  zoom: int = 2) -> pathlib.Path:
  """Writes a PNG with one row of `per_class` generated faces per emotion (FER id order).

  Args:
    path: the PNG file to write.
    per_class: faces per row.
    seed: random seed.
    zoom: integer upscaling of each face.

  Returns:
    The path written.
  """
  path = pathlib.Path(path)
  rng = np.random.default_rng(seed)
  face_labels = np.repeat(np.arange(len(labels.FER7)), per_class)
  images = render(face_labels, rng)
  size = image_spec.IMAGE_SIZE * zoom
  label_w = 70
  sheet = np.full((len(labels.FER7) * size, label_w + per_class * size), 255, dtype=np.uint8)
  for k, name in enumerate(labels.FER7):
    cv2.putText(sheet, name, (4, k * size + size // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1,
                cv2.LINE_AA)
    for j in range(per_class):
      face = cv2.resize(images[k * per_class + j], (size, size), interpolation=cv2.INTER_NEAREST)
      sheet[k * size:(k + 1) * size, label_w + j * size:label_w + (j + 1) * size] = face
  path.parent.mkdir(parents=True, exist_ok=True)
  if not cv2.imwrite(str(path), sheet):
    raise OSError(f"Could not write contact sheet {path}.")
  return path
