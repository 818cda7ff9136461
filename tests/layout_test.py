"""The package's layers: no module imports a part above it in the data flow, train never imports
serve, and the report side needs nothing from training or serving (read from the source files'
import statements, top-level and function-level alike)."""

from __future__ import annotations

import ast
import pathlib

from absl.testing import absltest
import support

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "emotion_tfds"
# From the bottom. Top-level modules of the package are the shared layer.
LAYERS = ("shared", "ravdess", "data", "models", "report", "train", "serve", "experiment")
MAINS_LAYER = len(LAYERS)


def layer_of(module: str) -> int:
  """Layer index of a dotted emotion_tfds module name."""
  parts = module.split(".")
  if len(parts) == 1:  # "emotion_tfds" itself.
    return 0
  if parts[1] in LAYERS:
    return LAYERS.index(parts[1])
  return 0  # A top-level module: shared.


def project_imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, imported emotion_tfds module) of every import statement in `path`."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names if a.name.startswith("emotion_tfds")]
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emotion_tfds"):
      for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        is_module = (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() or (
            PACKAGE.parent / candidate.replace(".", "/")).is_dir()
        found.append((node.lineno, candidate if is_module else node.module))
  return found


def module_name(path: pathlib.Path) -> str:
  return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


class LayoutTest(absltest.TestCase):

  def test_layer_of(self):
    self.assertEqual(layer_of("emotion_tfds.labels"), 0)
    self.assertEqual(layer_of("emotion_tfds.train.loop"), LAYERS.index("train"))
    self.assertEqual(layer_of("emotion_tfds.experiment"), LAYERS.index("experiment"))

  def test_no_module_imports_a_layer_above_it(self):
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
      name = module_name(path)
      for line, imported in project_imports(path):
        if layer_of(imported) > layer_of(name):
          violations.append(f"{path.relative_to(REPO)}:{line} ({LAYERS[layer_of(name)]}) imports "
                            f"{imported} ({LAYERS[layer_of(imported)]})")
    self.assertEqual(violations, [])

  def test_builders_import_only_the_shared_layer_and_the_crops_format(self):
    allowed = {"emotion_tfds.labels", "emotion_tfds.image_spec",
               "emotion_tfds.ravdess.crops_folder"}
    for path in sorted((REPO / "builders").rglob("*_dataset_builder.py")):
      imported = {module for _, module in project_imports(path)}
      self.assertLessEqual(imported, allowed, path)

  def test_mains_do_not_import_each_other(self):
    mains = {p.stem for p in REPO.glob("*_main.py")}
    self.assertGreaterEqual(len(mains), 7)
    for path in REPO.glob("*_main.py"):
      tree = ast.parse(path.read_text())
      imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                  for a in node.names}
      imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
      self.assertFalse(imported & mains, path)

  def test_a_violation_is_found(self):
    """The checker itself: an import of serve from train is reported."""
    path = support.tempdir(self) / "probe.py"
    path.write_text("from emotion_tfds.serve import loader\nimport emotion_tfds.train.loop\n")
    self.assertEqual(project_imports(path), [(1, "emotion_tfds.serve.loader"),
                                             (2, "emotion_tfds.train.loop")])
    self.assertGreater(layer_of("emotion_tfds.serve.loader"), layer_of("emotion_tfds.train.loop"))


if __name__ == "__main__":
  absltest.main()
