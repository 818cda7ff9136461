r"""Checks a training run's logs the way a person would in TensorBoard, through its HTTP data API.

Starts TensorBoard on `--logdir` (a run's `<model_dir>/tb`, or a folder of several model_dirs) bound
to 127.0.0.1 on a free port, then asks the server what its dashboards would show and checks that:

  * the scalars, images, text, hparams and custom-scalars dashboards are active;
  * every stage run has the validation curves, per-emotion recall/precision/F1 and no per-emotion
    "accuracy" tag, and every scalar tag has a description;
  * the stages of each run continue one another on the epoch axis (each starts where the previous
    one ended, no overlap);
  * HParams lists one trial per run, named after its model_dir, with the declared hyper-parameters
    (integers as integer domains) and the run's metrics;
  * the custom-scalars layout has one chart per per-emotion metric.

    python tools/check_tensorboard.py --logdir=runs/default/tb

Prints one line per check and exits 1 if any fails. With `--screenshot_dir`, a headless Chromium
(Debian package `chromium`) also saves the scalars, custom-scalars, HParams, images and text
dashboards as PNGs (`?forceSVG=true` makes the charts render without a GPU).
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import json
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from absl import app
from absl import flags

_LOGDIR = flags.DEFINE_string("logdir", None, "A run's <model_dir>/tb, or a folder of model_dirs.",
                              required=True)
_STARTUP_S = flags.DEFINE_float("startup_seconds", 120.0, "How long to wait for TensorBoard.")
_SCREENSHOT_DIR = flags.DEFINE_string(
    "screenshot_dir", None, "Save tensorboard_<dashboard>.png of each dashboard here.")
_CHROMIUM = flags.DEFINE_string("chromium", "chromium", "Chromium (or Chrome) executable.")
_WINDOW = flags.DEFINE_string("window_size", "1600,1000", "Browser window for screenshots (w,h).")

_DASHBOARDS = ("scalars", "images", "text", "hparams", "custom_scalars")
_STAGE_TAGS = ("eval/accuracy", "eval/macro_f1", "train/loss", "train/learning_rate")
_PER_EMOTION = ("recall", "precision", "f1")
_RUN_METRICS = ("run/final_accuracy", "run/best_accuracy", "run/final_macro_f1")
_INTEGER_HPARAMS = ("epochs", "batch", "seed")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir: str, startup_seconds: float) -> Iterator[str]:
  """Runs TensorBoard on `logdir` (127.0.0.1, a free port); yields its base URL once it answers."""
  port = free_port()
  process = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1",
       f"--port={port}", "--reload_interval=0"],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + startup_seconds
    while True:
      if process.poll() is not None:
        raise RuntimeError(f"TensorBoard exited ({process.returncode}): {process.stderr.read()}")
      try:
        get(url, "/data/plugins_listing")
        break
      except (urllib.error.URLError, ConnectionError):
        if time.monotonic() > deadline:
          raise RuntimeError(f"TensorBoard did not answer on {url} in {startup_seconds} s.")
        time.sleep(0.5)
    yield url
  finally:
    process.terminate()
    process.wait(timeout=30)


def get(url: str, path: str, **query: str):
  full = f"{url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
  with urllib.request.urlopen(full, timeout=60) as response:
    return json.loads(response.read())


def post(url: str, path: str, body: dict):
  request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=60) as response:
    return json.loads(response.read())


def check(url: str, logdir: str) -> list[tuple[str, bool, str]]:
  """(check, passed, detail) for everything the module docstring lists."""
  results = []

  def record(name: str, passed: bool, detail: str = "") -> None:
    results.append((name, bool(passed), detail))

  listing = get(url, "/data/plugins_listing")
  inactive = [d for d in _DASHBOARDS if not listing.get(d, {}).get("enabled")]
  record("dashboards active", not inactive, f"inactive: {inactive}" if inactive else "")

  tags = get(url, "/data/plugin/scalars/tags")
  stage_runs = {run: run_tags for run, run_tags in tags.items() if "eval/accuracy" in run_tags}
  record("stage runs with validation curves", stage_runs, f"{sorted(stage_runs)}")
  for run, run_tags in sorted(stage_runs.items()):
    missing = [t for t in _STAGE_TAGS if t not in run_tags]
    for metric in _PER_EMOTION:
      if not any(t.startswith(f"per_emotion/{metric}/") for t in run_tags):
        missing.append(f"per_emotion/{metric}/*")
    old = [t for t in run_tags if t.startswith("per_emotion/accuracy/")]
    record(f"{run}: tags", not missing and not old, f"missing {missing}, renamed {old}")
  undescribed = [f"{run}:{tag}" for run, run_tags in tags.items()
                 for tag, info in run_tags.items() if not info.get("description")]
  record("every scalar tag has a description", not undescribed, ", ".join(undescribed[:5]))

  for parent, stages in _runs_by_parent(stage_runs).items():
    spans = []
    for run in stages:
      points = get(url, "/data/plugin/scalars/scalars", run=run, tag="eval/accuracy")
      spans.append((points[0][0], min(p[1] for p in points), max(p[1] for p in points), run))
    spans.sort()  # By wall time: the order the stages ran.
    gaps = [f"{a[3]} ends at {a[2]}, {b[3]} starts at {b[1]}"
            for a, b in zip(spans, spans[1:]) if b[1] != a[2] + 1]
    record(f"{parent or '.'}: stages continue one epoch axis", not gaps, "; ".join(gaps))

  experiment = post(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
  hparams = {h.get("displayName") or h["name"]: h for h in experiment.get("hparamInfos", [])}
  metric_tags = [m["name"]["tag"] for m in experiment.get("metricInfos", [])]
  record("hparams declared", {"model", "stages", "optimizer", "seed"} <= set(hparams),
         f"{sorted(hparams)}")
  by_name = sorted(hparams, key=lambda n: hparams[n]["name"])  # TensorBoard's column order.
  shown = by_name[:5]
  record("the five hparams TensorBoard ticks are the recipe's main ones",
         shown == ["model", "dataset", "epochs", "lr", "batch"], f"{shown}")
  not_integer = [n for n in _INTEGER_HPARAMS
                 if n in hparams and "domainInterval" not in hparams[n]]
  record("integer hparams have interval domains", not not_integer, f"{not_integer}")
  record("run metrics declared", all(t in metric_tags for t in _RUN_METRICS)
         and any(t.startswith("run/f1/") for t in metric_tags), f"{metric_tags}")
  groups = post(url, "/data/plugin/hparams/session_groups", {
      "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                                "STATUS_FAILURE", "STATUS_RUNNING"],
      "colParams": [], "startIndex": 0, "sliceSize": 1000}).get("sessionGroups", [])
  parents = sorted(_runs_by_parent(stage_runs))
  record("one trial per run", len(groups) == len(parents),
         f"{len(groups)} trials for run folders {parents}: {[g['name'] for g in groups]}")
  expected = sorted(str((pathlib.Path(logdir) / parent).resolve().parent) for parent in parents)
  names = sorted(g["name"] for g in groups)
  record("trials named after their model_dir", names == expected, f"{names} != {expected}")

  layout = get(url, "/data/plugin/custom_scalars/layout")
  titles = [c.get("title", "") for cat in layout.get("category", []) for c in cat.get("chart", [])]
  missing = [m for m in _PER_EMOTION if f"{m} per emotion" not in titles]
  record("custom scalars: one chart per per-emotion metric", not missing, f"missing {missing}")
  return results


def screenshot(url: str, dashboard: str, path: pathlib.Path, chromium: str, window: str) -> None:
  """Saves `dashboard` (its URL fragment, e.g. "scalars") as rendered by headless Chromium."""
  subprocess.run(
      [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
       f"--window-size={window}", "--virtual-time-budget=20000", f"--screenshot={path}",
       f"{url}/?forceSVG=true#{dashboard}"],
      check=True, capture_output=True, timeout=180)
  if not path.exists() or path.stat().st_size < 10_000:
    raise RuntimeError(f"{chromium} did not render {dashboard} into {path}.")


def _runs_by_parent(stage_runs) -> dict[str, list[str]]:
  """Stage runs grouped by their training run's folder ('' when logdir is one run's tb)."""
  out: dict[str, list[str]] = {}
  for run in stage_runs:
    parent, _, _ = run.rpartition("/")
    out.setdefault(parent, []).append(run)
  return out


def main(argv):
  del argv
  with tensorboard(_LOGDIR.value, _STARTUP_S.value) as url:
    results = check(url, _LOGDIR.value)
    if _SCREENSHOT_DIR.value:
      out = pathlib.Path(_SCREENSHOT_DIR.value)
      out.mkdir(parents=True, exist_ok=True)
      for dashboard in ("scalars", "custom_scalars", "hparams", "images", "text"):
        path = out / f"tensorboard_{dashboard}.png"
        screenshot(url, dashboard, path, _CHROMIUM.value, _WINDOW.value)
        print(f"wrote {path}")
  for name, passed, detail in results:
    print(f"{'ok  ' if passed else 'FAIL'} {name}" + (f": {detail}" if detail and not passed else ""))
  failed = [name for name, passed, _ in results if not passed]
  print(f"{len(results) - len(failed)} of {len(results)} checks passed.")
  return 1 if failed else 0


if __name__ == "__main__":
  app.run(main)
