"""A run's manifest: what made a model (code, settings, packages, machine, precision, data).

`run_manifest` gathers the code and machine side (git commit, package versions, CPU) around what
the caller passes in: the settings, the Keras precision policy and the data provenance
(`emotion_tfds.data.datasets.provenance`). train_main writes it as `<model_dir>/manifest.json`
and into the exported SavedModel's assets (`emotion_tfds.experiment`). Nothing here fails a run:
what cannot be read is "unknown", or absent.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys

MANIFEST_FILE = "manifest.json"
UNKNOWN = "unknown"
# Distribution name -> module name, for the versions a manifest records (plus Python's).
PACKAGES = {"tensorflow": "tensorflow", "keras": "keras",
            "tensorflow-datasets": "tensorflow_datasets", "numpy": "numpy"}
# The CPU features that decide the speed and the precision choice of a run, where present.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
_CPUINFO = pathlib.Path("/proc/cpuinfo")
_SOURCE_DIR = pathlib.Path(__file__).resolve().parent  # In the repository's checkout, if any.
_GIT_TIMEOUT_S = 10


def git_commit(directory: str | os.PathLike = _SOURCE_DIR) -> dict:
  """{"commit": the checked-out commit of `directory`'s git repository, or "unknown",
  "uncommitted_changes": whether tracked files differ from it (None when unknown)}."""
  commit = _git(directory, "rev-parse", "HEAD")
  status = _git(directory, "status", "--porcelain", "--untracked-files=no") if commit else None
  return {"commit": commit or UNKNOWN,
          "uncommitted_changes": None if status is None else bool(status)}


def _git(directory: str | os.PathLike, *args: str) -> str | None:
  """git's stripped output in `directory`, or None when git or the repository is missing."""
  try:
    done = subprocess.run(["git", "-C", os.fspath(directory), *args], capture_output=True,
                          text=True, timeout=_GIT_TIMEOUT_S, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return done.stdout.strip()


def package_versions() -> dict[str, str]:
  """Versions of Python and of `PACKAGES` ("unknown" for one that is not installed)."""
  versions = {"python": platform.python_version()}
  for distribution, module in PACKAGES.items():
    try:
      versions[distribution] = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # e.g. tensorflow-cpu: ask the module.
      versions[distribution] = getattr(sys.modules.get(module), "__version__", UNKNOWN)
  return versions


def cpu(cpuinfo: str | os.PathLike = _CPUINFO) -> dict:
  """{"model", "flags": those of `CPU_FLAGS` it has, "cores"}, read from /proc/cpuinfo; where
  there is none, the model is platform.processor()'s and "flags" is absent."""
  try:
    text = pathlib.Path(cpuinfo).read_text()
  except OSError:
    return {"model": platform.processor() or UNKNOWN, "cores": os.cpu_count()}
  fields = {}
  for line in text.split("\n\n")[0].splitlines():  # The first processor's block.
    key, _, value = line.partition(":")
    fields[key.strip()] = value.strip()
  present = set(fields.get("flags", "").split())
  return {"model": fields.get("model name") or platform.processor() or UNKNOWN,
          "flags": [flag for flag in CPU_FLAGS if flag in present], "cores": os.cpu_count()}


def run_manifest(*, flags: dict | None, config: dict, precision: str, data: dict) -> dict:
  """The manifest of a run.

  Args:
    flags: the main's flag values after parsing (None when the run was not started by a main).
    config: the run's resolved settings (e.g. its TrainConfig as a dict).
    precision: the Keras dtype policy the run computed in, e.g. "float32" or "mixed_bfloat16".
    data: dataset name -> its provenance.

  Returns:
    A JSON-ready dict: created (UTC), code (git commit), command, flags, config, versions,
    machine (CPU, platform), precision, data.
  """
  return {
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "code": git_commit(),
      "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv else [],
      "flags": flags,
      "config": config,
      "versions": package_versions(),
      "machine": {"cpu": cpu(), "platform": platform.platform()},
      "precision": precision,
      "data": data,
  }


def trained_dataset(model_path: str | os.PathLike) -> str | None:
  """The target dataset of the run that wrote `model_path`, from its manifest (`config.dataset`):
  the manifest.json beside a .keras or .tflite file, or in a SavedModel's assets; None without a
  readable one."""
  path = pathlib.Path(model_path)
  file = path / "assets" / MANIFEST_FILE if path.is_dir() else path.parent / MANIFEST_FILE
  try:
    return json.loads(file.read_text())["config"]["dataset"]
  except (OSError, ValueError, KeyError, TypeError):
    return None


def write(path: str | os.PathLike, manifest: dict) -> pathlib.Path:
  """Writes `manifest` as indented JSON (values JSON cannot hold become strings)."""
  path = pathlib.Path(path)
  path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
  return path
