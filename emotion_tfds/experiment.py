"""A whole training run as train_main runs it, composed above training, reporting and serving:
`train.loop.train` up to the final network, then the run's manifest (`manifest.json`: commit,
settings, versions, CPU, precision, data provenance), the evaluation on the report split
(per-emotion table, `eval_<split>.json`/`.md`, the run's TensorBoard result) and the saved files
(`model.keras` and the uint8-input SavedModel, which carries the manifest in its assets).

`run_ensemble` trains several networks of one recipe that way, each with its own seed in its own
folder, then evaluates and saves their ensemble (the mean of their probabilities) as one model,
and optionally trains a student: one more run whose stages distil from the members' networks.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from emotion_tfds import errors
from emotion_tfds import manifest
from emotion_tfds import workers
from emotion_tfds.data import datasets
from emotion_tfds.data import integrity
from emotion_tfds.models import ensemble
from emotion_tfds.report import evaluation
from emotion_tfds.report import metrics
from emotion_tfds.report import run_summaries
from emotion_tfds.serve import export
from emotion_tfds.serve import loader
from emotion_tfds.train import checkpoints
from emotion_tfds.train import config as config_lib
from emotion_tfds.train import inputs
from emotion_tfds.train import loop
from emotion_tfds.train import precision
from emotion_tfds.train import stages as stages_lib
from emotion_tfds.train import strategies

REPORT_PREFIX = "eval_"  # <model_dir>/eval_<split>.json and .md: the final evaluation.
MEMBER_DIR = "member_{}"  # <model_dir>/member_<k>: the run of an ensemble's member k.
STUDENT_DIR = "student"  # <model_dir>/student: the run of the network distilled from the members.
_SPEC_SEPARATORS = ",:+"  # What a path in a stage spec's teacher= cannot contain.


@dataclasses.dataclass
class RunResult:
  """What `run_experiment` returns.

  Attributes:
    model: the final network (float32 [0, 1] input, softmax output).
    report: per-emotion evaluation on the report split.
    history: one dict per epoch trained by this call: stage, epoch, the Keras logs, images_per_s.
    resumed_from: (stage index, epochs done) of the checkpoint this call started from, or None.
    manifest: the run's manifest (`write_manifest`).
  """
  model: keras.Model
  report: metrics.EmotionReport
  history: list[dict]
  resumed_from: tuple[int, int] | None
  manifest: dict


def run_experiment(config: config_lib.TrainConfig,
                   strategy: tf.distribute.Strategy | None = None,
                   extra_callbacks: Sequence[keras.callbacks.Callback] = (),
                   flag_values: dict | None = None) -> RunResult:
  """Trains (`loop.train`, same arguments and errors), writes the manifest (with `flag_values`,
  the main's flags), evaluates and saves the final network.

  Raises:
    errors.DamagedDataError: a file of the run's datasets cannot be read (`integrity`).
  """
  used = [config.dataset] + [config.stage_dataset(stage) for stage in config.stages]
  with integrity.naming_damaged_files(used, config.data_dir):
    trained = loop.train(config, strategy, extra_callbacks)
    run_manifest = write_manifest(trained, config, flag_values)
    report = evaluate_final(trained, config)
  export.save_trained(trained.network, trained.write_dir, datasets.label_names(trained.target),
                      announce=trained.chief, manifest=run_manifest)
  if not trained.chief:
    shutil.rmtree(trained.write_dir, ignore_errors=True)
  return RunResult(model=trained.network, report=report, history=trained.history,
                   resumed_from=trained.resumed_from, manifest=run_manifest)


def write_manifest(trained: loop.TrainedRun, config: config_lib.TrainConfig,
                   flag_values: dict | None = None) -> dict:
  """The run's manifest (`manifest.run_manifest`: the data of every dataset it trained on, the
  Keras precision policy it trained under), written to `<model_dir>/manifest.json` by the chief."""
  run_manifest = manifest.run_manifest(
      flags=flag_values, config=dataclasses.asdict(config),
      precision=precision.KERAS_POLICIES[trained.precision],
      data={name: datasets.provenance(builder) for name, builder in trained.builders.items()})
  if trained.chief:
    manifest.write(trained.write_dir / manifest.MANIFEST_FILE, run_manifest)
  return run_manifest


def evaluate_final(trained: loop.TrainedRun,
                   config: config_lib.TrainConfig) -> metrics.EmotionReport:
  """Evaluates the final network on `config.eval_split` (validation when the dataset has no such
  split) with `config.final_tta`; prints the table and writes the report and summary (chief)."""
  split = evaluation.report_split(trained.target, config.eval_split)
  report = evaluation.evaluate_network(trained.network, trained.target, split, trained.strategy,
                                       tta=config.final_tta)
  for suffix in (".json", ".md"):
    report.save(trained.write_dir / f"{REPORT_PREFIX}{split}{suffix}")
  if trained.chief:
    print(f"\nEvaluation of the final model on {config.dataset} {split} (TTA "
          f"{config.final_tta}):\n{report.format_table()}", flush=True)
    run_summaries.write_run_result(trained.write_dir / loop.TENSORBOARD_DIR, report,
                                   trained.best_validation_accuracy,
                                   step=sum(s.epochs for s in trained.config.stages))
  return report


@dataclasses.dataclass
class EnsembleResult:
  """What `run_ensemble` returns.

  Attributes:
    members: each member's run, member 0 first.
    model: the ensemble (`models.ensemble.average_networks` of the members' final networks).
    report: the ensemble's per-emotion evaluation on the report split.
    student: the run of the network distilled from the members, or None without student stages.
  """
  members: list[RunResult]
  model: keras.Model
  report: metrics.EmotionReport
  student: RunResult | None = None


def run_ensemble(config: config_lib.TrainConfig, num_members: int,
                 strategy: tf.distribute.Strategy | None = None,
                 extra_callbacks: Sequence[keras.callbacks.Callback] = (),
                 flag_values: dict | None = None,
                 student_stages: Sequence[stages_lib.Stage] = ()) -> EnsembleResult:
  """Trains `num_members` networks of `config`'s recipe, evaluates and saves their ensemble, then
  (with `student_stages`) trains one network distilled from them, the student.

  Member k is the whole run of `config` with seed `config.seed + k` in `<model_dir>/member_<k>/`
  (`run_experiment`: resumed after a kill, evaluated, saved), so member 0 is the single run of
  `config`. The ensemble, the mean of the members' probabilities, is evaluated as one run's final
  network is (`config.eval_split`, `config.final_tta`; `<model_dir>/eval_<split>.json` and `.md`)
  and saved as one uint8-input SavedModel holding every member, `<model_dir>/saved_model`, with
  its class names in `<model_dir>/labels.txt` and its manifest (member 0's, with the ensemble's
  settings, members and student) in `<model_dir>/manifest.json` and the SavedModel's assets.
  The student is the whole run of `student_config` in `<model_dir>/student/`, after which the
  chief prints the members', the ensemble's and the student's accuracies. A rerun of the same call
  reuses every run that finished and resumes the one that did not.

  Args:
    config: the recipe of every member.
    num_members: how many members (at least 2).
    strategy: an existing strategy (default: `strategies.make_strategy(config.strategy, ...)`).
    extra_callbacks: more Keras callbacks for every run's `fit` calls.
    flag_values: the main's flags, for every run's manifest.
    student_stages: the student's whole schedule (`student_config`), pretraining stages first;
      the stages that distil name the members' networks as teacher (`member_models`; train_main
      parses --student_stages with them). Empty: no student.

  Raises:
    errors.ConfigError: fewer than two members, a time budget (it sizes one network's run, not
      the command's), or a model_dir holding one network's checkpoints.
    Otherwise as `run_experiment`.
  """
  _check_ensemble(config, num_members)
  student = student_config(config, num_members, student_stages) if student_stages else None
  strategy = strategy or strategies.make_strategy(config.strategy, config.tpu)
  chief = workers.is_chief_worker(strategy)
  members = []
  for k in range(num_members):
    member = dataclasses.replace(config, model_dir=str(member_dir(config, k)),
                                 seed=config.seed + k)
    if chief:
      print(f"\nEnsemble member {k + 1}/{num_members} (seed {member.seed}) in {member.model_dir}",
            flush=True)
    members.append(run_experiment(member, strategy, extra_callbacks, flag_values))
  result = _save_ensemble(config, members, strategy, chief, student)
  if student is None:
    return result
  if chief:
    print(f"\nStudent of the ensemble (seed {student.seed}) in {student.model_dir}", flush=True)
  result.student = run_experiment(student, strategy, extra_callbacks, flag_values)
  if chief:
    print(f"\n{comparison_line(result)}", flush=True)
  return result


def member_dir(config: config_lib.TrainConfig, k: int) -> pathlib.Path:
  """`<model_dir>/member_<k>`: the folder of the run of member k of an ensemble of `config`."""
  return pathlib.Path(config.model_dir) / MEMBER_DIR.format(k)


def member_models(config: config_lib.TrainConfig, num_members: int) -> tuple[str, ...]:
  """The final networks of an ensemble of `config`, `<model_dir>/member_<k>/model.keras`: the
  teacher of its student's stages (`stages.parse_stages(..., teacher=...)`).

  Raises:
    errors.ConfigError: a model_dir that a stage spec's teacher= cannot hold (',', ':', '+').
  """
  bad = [c for c in _SPEC_SEPARATORS if c in config.model_dir]
  if bad:
    raise errors.ConfigError(f"--model_dir {config.model_dir} contains {' '.join(bad)}, which a "
                             "stage spec cannot hold in the student's teacher paths; use another "
                             "--model_dir.")
  return tuple(str(member_dir(config, k) / loader.MODEL_FILE) for k in range(num_members))


def student_config(config: config_lib.TrainConfig, num_members: int,
                   stages: Sequence[stages_lib.Stage]) -> config_lib.TrainConfig:
  """The run of the student of an ensemble of `config`: `config` with `stages` (its whole
  schedule), seed `config.seed + num_members` (no member's) and model_dir `<model_dir>/student`."""
  return dataclasses.replace(config, stages=tuple(stages), seed=config.seed + num_members,
                             model_dir=str(pathlib.Path(config.model_dir) / STUDENT_DIR))


def comparison_line(result: EnsembleResult) -> str:
  """One line: the members', the ensemble's and the student's accuracies on the report split, and
  the student's minus the best member's (percentage points)."""
  members = [m.report.totals.accuracy for m in result.members]
  student = result.student.report.totals.accuracy
  return (f"Accuracy: members {', '.join(f'{a:.2%}' for a in members)}; ensemble "
          f"{result.report.totals.accuracy:.2%}; student {student:.2%} (student - best member: "
          f"{100 * (student - max(members)):+.2f} points)")


def _check_ensemble(config: config_lib.TrainConfig, num_members: int) -> None:
  if num_members < 2:
    raise errors.ConfigError(f"An ensemble needs at least 2 members, not {num_members}.")
  if config.time_budget:
    raise errors.ConfigError(
        "--time_budget sizes a single network's run (the first member would take all of it); "
        "train an ensemble (and its student) with epochs instead.")
  model_dir = pathlib.Path(config.model_dir)
  if (model_dir / checkpoints.CKPT_DIR).exists():
    raise errors.ConfigError(
        f"{model_dir} holds the checkpoints of a single network's run ({checkpoints.CKPT_DIR}/); "
        "train the ensemble into another --model_dir.")


def _save_ensemble(config: config_lib.TrainConfig, members: list[RunResult],
                   strategy: tf.distribute.Strategy, chief: bool,
                   student: config_lib.TrainConfig | None) -> EnsembleResult:
  """Evaluates the members' ensemble and saves it (report, SavedModel, labels.txt, manifest with
  its members and `student`'s run) into model_dir; the chief prints the table."""
  model_dir = pathlib.Path(config.model_dir)
  network = ensemble.average_networks([m.model for m in members])
  target = inputs.built_dataset(config.dataset, config.data_dir, generate_rows=0)
  split = evaluation.report_split(target, config.eval_split)
  report = evaluation.evaluate_network(network, target, split, strategy, tta=config.final_tta)
  # As in a single run: the chief writes model_dir, the other workers a folder they then delete.
  write_dir = model_dir if chief else pathlib.Path(tempfile.mkdtemp(prefix="emotion_tfds_worker_"))
  for suffix in (".json", ".md"):
    report.save(write_dir / f"{REPORT_PREFIX}{split}{suffix}")
  label_names = datasets.label_names(target)
  ensemble_manifest = dict(members[0].manifest, config=dataclasses.asdict(config), ensemble=[
      {"model_dir": str(member_dir(config, k)), "seed": config.seed + k}
      for k in range(len(members))])
  if student is not None:
    ensemble_manifest["student"] = {
        "model_dir": student.model_dir, "seed": student.seed,
        "stages": ",".join(stage.spec() for stage in student.stages)}
  export.export_saved_model(network, write_dir / loader.SAVED_MODEL_DIR, label_names,
                            manifest=ensemble_manifest)
  loader.write_label_names(write_dir, label_names)
  if chief:
    manifest.write(write_dir / manifest.MANIFEST_FILE, ensemble_manifest)
    accuracies = ", ".join(f"{m.report.totals.accuracy:.2%}" for m in members)
    print(f"\nEvaluation of the ensemble of {len(members)} on {config.dataset} {split} (TTA "
          f"{config.final_tta}):\n{report.format_table()}\naccuracy: members {accuracies}; "
          f"ensemble {report.totals.accuracy:.2%}\nSaved {write_dir / loader.SAVED_MODEL_DIR}",
          flush=True)
  else:
    shutil.rmtree(write_dir, ignore_errors=True)
  return EnsembleResult(members=members, model=network, report=report)
