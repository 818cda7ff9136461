"""Training curves read back from a run's TensorBoard event files, and their picture.

`train.loop` writes one TensorBoard run folder per stage (`<model_dir>/tb/<stage>`, one point per
epoch at step = the run's epoch index, counting on across stages, see
`emotion_tfds.report.callbacks`). `read_run` gives, for each stage in the order it ran, the per-epoch
values of a few scalar tags; `curves_png` draws training and validation accuracy over all stages,
with the pretraining stages (another label set) on a panel of their own. The other folders of `tb`
(`per_emotion/<emotion>`, the run-level `run`) hold none of those tags and are left out, and so is
`tb` itself (where runs written before that layout kept their run-level summaries).
"""

from __future__ import annotations

import dataclasses
import io
import pathlib

import tensorflow as tf

from emotion_tfds import errors

TRAIN_ACCURACY = "train/accuracy"
EVAL_ACCURACY = "eval/accuracy"
EVAL_MACRO_F1 = "eval/macro_f1"
EPOCH_SECONDS = "train/epoch_seconds"
TAGS = (TRAIN_ACCURACY, EVAL_ACCURACY, EVAL_MACRO_F1, EPOCH_SECONDS)


@dataclasses.dataclass(frozen=True)
class StageCurves:
  """One stage's per-epoch scalars: `values[tag]` is a list ordered by epoch (step).

  `steps[tag]` holds the step of each value (the run's epoch index, from 0), `wall_times[tag]` its
  wall time (seconds since the epoch of Unix).
  """
  name: str
  values: dict[str, list[float]]
  wall_times: dict[str, list[float]] = dataclasses.field(default_factory=dict)
  steps: dict[str, list[int]] = dataclasses.field(default_factory=dict)

  def run_epochs(self, tag: str) -> list[int]:
    """The run's epoch number (from 1) of each value of `tag`."""
    return [step + 1 for step in self.steps.get(tag, range(len(self.values.get(tag, []))))]

  def epochs(self) -> int:
    return max((len(v) for v in self.values.values()), default=0)


def _scalar(value) -> float:
  if value.HasField("tensor"):
    return float(tf.make_ndarray(value.tensor))
  return float(value.simple_value)


def read_events(logdir: str | pathlib.Path) -> list[tf.compat.v1.Event]:
  """The summary events of the event files directly in `logdir` (not below), by wall time.

  Only events with values: a file's first event (its version) has a wall time in whole seconds.
  """
  events = [tf.compat.v1.Event.FromString(record.numpy())
            for path in pathlib.Path(logdir).glob("events.out.tfevents.*")
            for record in tf.data.TFRecordDataset(str(path))]
  events = [event for event in events if event.summary.value]
  return sorted(events, key=lambda event: event.wall_time)


def read_stage(logdir: pathlib.Path, tags: tuple[str, ...] = TAGS) -> tuple[float, StageCurves]:
  """(wall time of the first event, the stage's curves) from the event files in `logdir`.

  A step written more than once (an epoch repeated after a resume) keeps its latest value.
  """
  events = read_events(logdir)
  points: dict[str, dict[int, tuple[float, float]]] = {tag: {} for tag in tags}
  for event in events:
    for value in event.summary.value:
      if value.tag in points:
        points[value.tag][event.step] = (_scalar(value), event.wall_time)
  values = {tag: [by_step[s][0] for s in sorted(by_step)] for tag, by_step in points.items()}
  walls = {tag: [by_step[s][1] for s in sorted(by_step)] for tag, by_step in points.items()}
  steps = {tag: sorted(by_step) for tag, by_step in points.items()}
  first = events[0].wall_time if events else float("inf")
  return first, StageCurves(logdir.name, values, walls, steps)


def read_run(model_dir: str | pathlib.Path, tags: tuple[str, ...] = TAGS) -> list[StageCurves]:
  """Every stage of the run in `model_dir` that logged an epoch, in the order the stages ran.

  A stage is a folder directly in `model_dir/tb` with values of `tags`.

  Raises:
    FileNotFoundError: `model_dir/tb` holds no stage with event files.
  """
  tb = pathlib.Path(model_dir) / "tb"
  stages = [read_stage(d, tags) for d in sorted(tb.glob("*")) if d.is_dir()]
  stages = [s for s in stages if s[1].epochs()]
  if not stages:
    raise errors.MissingFileError(f"{tb}: no TensorBoard stage folder with per-epoch scalars "
                            f"({', '.join(tags)}); is this a train_main --model_dir?")
  return [curves for _, curves in sorted(stages, key=lambda s: s[0])]


def curves_image(stages: list[StageCurves], title: str = "") -> bytes:
  """PNG bytes: training (dashed) and validation (dots) accuracy per epoch of every stage.

  Stages whose name starts with "pretrain" go on a left panel, the others on the right panel; x is
  the run's epoch, one colour per stage.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  groups = [[s for s in stages if s.name.startswith("pretrain")],
            [s for s in stages if not s.name.startswith("pretrain")]]
  groups = [(g, panel) for g, panel in zip(groups, ("pretraining", "fine-tuning stages")) if g]
  colours = {stage.name: f"C{i % 10}" for i, stage in enumerate(stages)}
  fig = Figure(figsize=(6 * len(groups), 4.2), dpi=110, layout="constrained")
  FigureCanvasAgg(fig)
  for column, (group, panel) in enumerate(groups):
    ax = fig.add_subplot(1, len(groups), column + 1)
    ax.set_title(panel)
    for stage in group:
      for tag, style, kind in ((TRAIN_ACCURACY, "--", "training"),
                               (EVAL_ACCURACY, "-o", "validation")):
        ys = stage.values.get(tag, [])
        if ys:
          ax.plot(stage.run_epochs(tag), ys, style, color=colours[stage.name], markersize=3,
                  label=f"{stage.name} {kind}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish_axes(ax, "epoch", "accuracy")
  if title:
    fig.suptitle(title)
  return _png_bytes(fig)


def _finish_axes(ax, xlabel: str, ylabel: str) -> None:
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)


def _png_bytes(fig) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  return buffer.getvalue()


def curves_png(stages: list[StageCurves], path: str | pathlib.Path, title: str = ""
               ) -> pathlib.Path:
  """Writes `curves_image(stages, title)` to `path`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(curves_image(stages, title))
  return path


def markdown_table(stages: list[StageCurves]) -> str:
  """One row per stage and epoch (of the run): training and validation accuracy, macro-F1."""
  lines = ["| stage | epoch | training accuracy | validation accuracy | validation macro-F1 |",
           "| --- | ---: | ---: | ---: | ---: |"]
  columns = ((TRAIN_ACCURACY, "{:.1%}"), (EVAL_ACCURACY, "{:.1%}"), (EVAL_MACRO_F1, "{:.3f}"))
  for stage in stages:
    by_epoch = {tag: dict(zip(stage.run_epochs(tag), stage.values.get(tag, [])))
                for tag, _ in columns}
    for epoch in sorted(set().union(*by_epoch.values())):
      cells = [fmt.format(by_epoch[tag][epoch]) if epoch in by_epoch[tag] else "-"
               for tag, fmt in columns]
      lines.append(f"| {stage.name} | {epoch} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def minutes_to_accuracy(stages: list[StageCurves]) -> list[tuple[float, float]]:
  """(wall minutes since the run's first epoch began, validation accuracy) after every epoch.

  The start is the first validation point's wall time minus the first epoch's training seconds, so
  start-up (graph building, the first cache fill's share outside the epoch) is not counted; a
  resumed run's pause counts as wall time.
  """
  points = [(t, v) for stage in stages
            for t, v in zip(stage.wall_times.get(EVAL_ACCURACY, []),
                            stage.values.get(EVAL_ACCURACY, []))]
  if not points:
    return []
  points.sort()
  first_epoch = next((s.values[EPOCH_SECONDS][0] for s in stages
                      if s.values.get(EPOCH_SECONDS)), 0.0)
  start = points[0][0] - first_epoch
  return [((t - start) / 60.0, v) for t, v in points]


def time_to_accuracy_image(runs: dict[str, list[StageCurves]],
                           baselines: dict[str, list[tuple[float, float]]] | None = None,
                           title: str = "") -> bytes:
  """PNG bytes: validation accuracy against wall minutes, one line per run, baselines dashed.

  `baselines` maps a label to (minutes, accuracy) points measured elsewhere (e.g. documented runs
  whose event files are gone).
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(7, 4.5), dpi=110, layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for i, (label, stages) in enumerate(runs.items()):
    points = minutes_to_accuracy(stages)
    if points:
      xs, ys = zip(*points)
      ax.plot(xs, ys, "-o", color=f"C{i % 10}", markersize=3, label=label)
  for j, (label, points) in enumerate((baselines or {}).items()):
    xs, ys = zip(*points)
    ax.plot(xs, ys, "--s", color=f"C{(len(runs) + j) % 10}", markersize=4, label=label)
  _finish_axes(ax, "wall minutes (2-core CPU)", "validation accuracy (PublicTest)")
  if title:
    ax.set_title(title)
  return _png_bytes(fig)
