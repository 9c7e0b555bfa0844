"""Imports run one way: the core (tfnorm) imports neither the run directory layer
(tfnorm.run) nor the analysis (tfnorm.analysis); tfnorm.run imports only the core;
tfnorm.analysis the core and tfnorm.run; the Keras bridge (tfnorm.keras) the core and
tfnorm.run; the library never imports the scripts (experiments), which may import
anything. Every import counts, at module level or inside a function."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each layer and the layers it may import (itself included).
MAY_IMPORT = {
    "core": {"core"},
    "run": {"core", "run"},
    "analysis": {"core", "run", "analysis"},
    "keras": {"core", "run", "keras"},
    "experiments": {"core", "run", "analysis", "keras", "experiments"},
}


def layer_of(module):
    """The layer of a dotted module name of this project, or None for anything else."""
    parts = module.split(".")
    if parts[0] == "experiments":
        return "experiments"
    if parts[0] != "tfnorm":
        return None
    if len(parts) > 1 and parts[1] in ("run", "analysis", "keras"):
        return parts[1]
    return "core"


def imported_modules(path, module):
    """(line, dotted name) of every project module that ``path`` (the module ``module``)
    imports; ``from tfnorm import x`` counts as tfnorm.x (x may be a subpackage)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                parent = package.split(".")
                parent = parent[:len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def modules_under(root):
    """(path, dotted name) of every module of tfnorm/ and experiments/."""
    for package in ("tfnorm", "experiments"):
        for folder, _, files in os.walk(os.path.join(root, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    yield path, dotted.removesuffix(".__init__")


def upward_imports(root):
    """One line per import statement that reaches above its module's layer."""
    found = {}
    for path, module in modules_under(root):
        layer = layer_of(module)
        for line, name in imported_modules(path, module):
            target = layer_of(name)
            if target is not None and target not in MAY_IMPORT[layer]:
                found.setdefault((os.path.relpath(path, root), line),
                                 f"{layer} imports {name} ({target})")
    return [f"{path}:{line}: {what}" for (path, line), what in sorted(found.items())]


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(ROOT) == []


def test_every_layer_is_where_the_test_looks():
    layers = {layer_of(module) for _, module in modules_under(ROOT)}
    assert layers == set(MAY_IMPORT)


@pytest.mark.parametrize("module, statement", [
    ("tfnorm/loop.py", "from tfnorm.run import records\n"),
    ("tfnorm/loop.py", "def f():\n    from tfnorm.analysis import stats\n"),
    ("tfnorm/norms/maths.py", "from tfnorm import run\n"),
    ("tfnorm/run/records.py", "import tfnorm.analysis.stats\n"),
    ("tfnorm/run/records.py", "from ..analysis import verdicts\n"),
    ("tfnorm/analysis/stats.py", "from tfnorm.keras import layers\n"),
    ("tfnorm/keras/layers.py", "from experiments import cli\n"),
])
def test_a_planted_upward_import_is_found(tmp_path, module, statement):
    # The same scan on a copy of the library with one upward import added.
    for package in ("tfnorm", "experiments"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            if "__pycache__" in folder:
                continue
            target = tmp_path / os.path.relpath(folder, ROOT)
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), encoding="utf-8") as handle:
                        (target / name).write_text(handle.read(), encoding="utf-8")
    assert upward_imports(str(tmp_path)) == []
    planted = tmp_path / module
    planted.write_text(planted.read_text(encoding="utf-8") + "\n" + statement, encoding="utf-8")
    found = upward_imports(str(tmp_path))
    assert len(found) == 1 and found[0].startswith(module + ":"), found
