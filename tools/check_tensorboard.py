r"""Checks a training run's logs the way a person would in TensorBoard, through its HTTP data API.

Starts TensorBoard on `--logdir` (a run's `<model_dir>/tb`, or a folder of several model_dirs) bound
to 127.0.0.1 on a free port, then asks the server what its dashboards would show and checks that:

  * the scalars, images, text, hparams and custom-scalars dashboards are active;
  * no run is named "." (the run-level summaries are in `<model_dir>/tb/run`, not in `tb` itself);
  * every stage run (`tb/<stage>`) has the validation curves and no per-emotion tag, and every
    scalar tag has a description;
  * each training run has one run per emotion (`tb/per_emotion/<emotion>`) with the tags
    per_emotion/{recall,precision,f1}, over the same epochs as its stages;
  * the emotions' runs of a training run get a colour each, and so do its stages' runs
    (TensorBoard colours runs in the order it lists them, from a palette of 7);
  * the stages of each run continue one another on the epoch axis (each starts where the previous
    one ended, no overlap);
  * HParams lists one trial per run, named after its model_dir, held by its `tb/run` run, with the
    declared hyper-parameters (integers as integer domains) and the run's metrics, and shows each
    trial's final accuracy (a finished run);
  * the custom-scalars layout has one chart per per-emotion metric, whose tag matches one series in
    each emotion's run and none elsewhere: one line, in its run's colour, per emotion.

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
import tempfile
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
_PER_EMOTION_DIR = "per_emotion"  # <model_dir>/tb/per_emotion/<emotion>: one run per emotion.
_RUN_DIR = "run"  # <model_dir>/tb/run: the HParams trial, its metrics and the chart layout.
_PALETTE = 7  # TensorBoard 2.21's run colours, assigned in the order of /data/runs.
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

  runs = get(url, "/data/runs")
  record("no run named '.'", "." not in runs, f"runs: {runs}")
  tags = get(url, "/data/plugin/scalars/tags")
  stage_runs = {run: run_tags for run, run_tags in tags.items() if "eval/accuracy" in run_tags}
  record("stage runs with validation curves", stage_runs, f"{sorted(stage_runs)}")
  for run, run_tags in sorted(stage_runs.items()):
    missing = [t for t in _STAGE_TAGS if t not in run_tags]
    misplaced = [t for t in run_tags if t.startswith(f"{_PER_EMOTION_DIR}/")]
    record(f"{run}: tags", not missing and not misplaced,
           f"missing {missing}, per-emotion tags in a stage run {misplaced[:3]}")
  undescribed = [f"{run}:{tag}" for run, run_tags in tags.items()
                 for tag, info in run_tags.items() if not info.get("description")]
  record("every scalar tag has a description", not undescribed, ", ".join(undescribed[:5]))

  emotion_runs = _emotion_runs(tags)
  for parent, stages in _runs_by_parent(stage_runs).items():
    where = parent or logdir
    spans = []
    for run in stages:
      points = get(url, "/data/plugin/scalars/scalars", run=run, tag="eval/accuracy")
      spans.append((points[0][0], min(p[1] for p in points), max(p[1] for p in points), run))
    spans.sort()  # By wall time: the order the stages ran.
    gaps = [f"{a[3]} ends at {a[2]}, {b[3]} starts at {b[1]}"
            for a, b in zip(spans, spans[1:]) if b[1] != a[2] + 1]
    record(f"{where}: stages continue one epoch axis", not gaps, "; ".join(gaps))

    emotions = emotion_runs.get(parent, {})
    missing = {emotion: [m for m in _PER_EMOTION if f"{_PER_EMOTION_DIR}/{m}" not in tags[run]]
               for emotion, run in emotions.items()}
    missing = {emotion: m for emotion, m in missing.items() if m}
    record(f"{where}: one run per emotion, each with {'/'.join(_PER_EMOTION)}",
           emotions and not missing, f"emotions {sorted(emotions)}, missing {missing}")
    epochs = {point[1] for emotion, run in emotions.items() if emotion not in missing
              for point in get(url, "/data/plugin/scalars/scalars", run=run,
                               tag=f"{_PER_EMOTION_DIR}/recall")}
    stage_epochs = set(range(min(s[1] for s in spans), max(s[2] for s in spans) + 1))
    record(f"{where}: per-emotion runs span the stages' epochs", epochs == stage_epochs,
           f"per-emotion epochs {sorted(epochs)}, stage epochs {sorted(stage_epochs)}")
    for kind, kind_runs in (("emotions'", list(emotions.values())), ("stages'", stages)):
      colours = {run: runs.index(run) % _PALETTE for run in kind_runs}
      shared = len(set(colours.values())) < min(len(colours), _PALETTE)
      record(f"{where}: the {kind} runs have a colour each", not shared,
             f"palette index of each run: {colours}")

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
  sessions = sorted(s["name"] for g in groups for s in g.get("sessions", []))
  expected = sorted(f"{parent}/{_RUN_DIR}" if parent else _RUN_DIR for parent in parents)
  record(f"trials held by their run's tb/{_RUN_DIR}", sessions == expected,
         f"{sessions} != {expected}")
  no_result = [g["name"] for g in groups
               if not any(m["name"]["tag"] == _RUN_METRICS[0] for m in g.get("metricValues", []))]
  record("trials show their final accuracy", not no_result, f"none for {no_result}")

  layout = get(url, "/data/plugin/custom_scalars/layout")
  charts = {c.get("title", ""): c.get("multiline", {}).get("tag", [])
            for cat in layout.get("category", []) for c in cat.get("chart", [])}
  missing = [m for m in _PER_EMOTION if f"{m} per emotion" not in charts]
  record("custom scalars: one chart per per-emotion metric", not missing, f"missing {missing}")
  all_emotion_runs = {run for emotions in emotion_runs.values() for run in emotions.values()}
  for metric in _PER_EMOTION:
    for regex in charts.get(f"{metric} per emotion", []):
      matched = {run: list(get(url, "/data/plugin/custom_scalars/scalars", run=run,
                               tag=regex)["tag_to_events"]) for run in tags}
      matched = {run: found for run, found in matched.items() if found}
      wrong = {run: found for run, found in matched.items()
               if run not in all_emotion_runs or len(found) != 1}
      record(f"custom scalars: {metric} per emotion draws one series per emotion's run",
             set(matched) == all_emotion_runs and not wrong,
             f"{regex} matches {sorted(matched)}; not one series of an emotion's run: {wrong}")
  return results


def screenshot(url: str, dashboard: str, path: pathlib.Path, chromium: str, window: str) -> None:
  """Saves `dashboard` (its URL fragment, e.g. "scalars") as rendered by headless Chromium (a fresh
  profile, no network besides TensorBoard's)."""
  with tempfile.TemporaryDirectory(prefix="check_tensorboard_chromium_") as profile:
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", f"--window-size={window}",
         "--virtual-time-budget=20000", f"--screenshot={path}",
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


def _emotion_runs(runs) -> dict[str, dict[str, str]]:
  """{training run's folder: {emotion: run}} of the runs named <folder>/per_emotion/<emotion>."""
  out: dict[str, dict[str, str]] = {}
  for run in runs:
    folder, _, emotion = run.rpartition("/")
    parent, _, name = folder.rpartition("/")
    if name == _PER_EMOTION_DIR:
      out.setdefault(parent, {})[emotion] = run
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
