"""Tests of emotion_tfds.manifest: commit, versions and CPU of a run, readable anywhere."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import platform
import subprocess

from absl.testing import absltest
import support

from emotion_tfds import manifest

_REPO = pathlib.Path(__file__).resolve().parents[1]
_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: another
flags\t\t: fpu
"""


class ManifestTest(absltest.TestCase):

  def test_git_commit_of_this_checkout_and_unknown_outside_one(self):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    code = manifest.git_commit()
    self.assertEqual(code["commit"], head)
    self.assertIsInstance(code["uncommitted_changes"], bool)
    self.assertEqual(manifest.git_commit(support.tempdir(self)),
                     {"commit": "unknown", "uncommitted_changes": None})

  def test_cpu_model_and_the_flags_that_matter(self):
    path = support.tempdir(self) / "cpuinfo"
    path.write_text(_CPUINFO)
    found = manifest.cpu(path)
    self.assertEqual(found["model"], "Intel(R) Xeon(R) Platinum 8480+")
    self.assertEqual(found["flags"], ["avx2", "avx512f", "avx512_bf16", "amx_bf16"])
    path.write_text("processor\t: 0\nflags\t\t: fpu sse2\n")
    self.assertEqual(manifest.cpu(path)["flags"], [])
    # No /proc/cpuinfo (macOS, Windows): what platform knows, no flags, no failure.
    elsewhere = manifest.cpu(path.parent / "missing")
    self.assertEqual(elsewhere["model"], platform.processor() or "unknown")
    self.assertNotIn("flags", elsewhere)

  def test_versions(self):
    versions = manifest.package_versions()
    self.assertEqual(set(versions), {"python", *manifest.PACKAGES})
    self.assertEqual(versions["python"], platform.python_version())
    self.assertEqual(versions["keras"], importlib.metadata.version("keras"))
    self.assertEqual(versions["tensorflow-datasets"],
                     importlib.metadata.version("tensorflow-datasets"))

  def test_run_manifest_holds_what_it_is_given_and_writes_as_json(self):
    data = {"generated_faces/seed6": {"description": "generated faces"}}
    written = manifest.run_manifest(flags={"dataset": "generated_faces/seed6"},
                                    config={"seed": 0}, precision="mixed_bfloat16", data=data)
    self.assertEqual(
        set(written), {"created", "code", "command", "flags", "config", "versions", "machine",
                       "precision", "data"})
    self.assertEqual((written["flags"], written["config"], written["precision"], written["data"]),
                     ({"dataset": "generated_faces/seed6"}, {"seed": 0}, "mixed_bfloat16", data))
    self.assertEqual(written["machine"]["cpu"], manifest.cpu())
    path = manifest.write(support.tempdir(self) / manifest.MANIFEST_FILE, written)
    self.assertEqual(json.loads(path.read_text()), written)

  def test_trained_dataset_beside_a_model_file_or_in_a_saved_model(self):
    root = support.tempdir(self)
    run = {"config": {"dataset": "fer2013/fer7"}}
    manifest.write(root / manifest.MANIFEST_FILE, run)
    self.assertEqual(manifest.trained_dataset(root / "model.keras"), "fer2013/fer7")
    (root / "saved_model" / "assets").mkdir(parents=True)
    self.assertIsNone(manifest.trained_dataset(root / "saved_model"))
    manifest.write(root / "saved_model" / "assets" / manifest.MANIFEST_FILE, run)
    self.assertEqual(manifest.trained_dataset(root / "saved_model"), "fer2013/fer7")
    (root / manifest.MANIFEST_FILE).write_text('{"config": null}')
    self.assertIsNone(manifest.trained_dataset(root / "model.keras"))
    (root / manifest.MANIFEST_FILE).write_text("{not json")
    self.assertIsNone(manifest.trained_dataset(root / "model.keras"))


if __name__ == "__main__":
  absltest.main()
