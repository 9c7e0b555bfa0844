"""pyproject.toml: the checkout installs as a package that imports from where it was
installed, with no network (no dependencies fetched, no build isolation: the virtualenv's
setuptools builds it)."""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_installed_package_imports_from_its_install_folder(tmp_path):
    # Built from a copy, so that the build's egg-info and build/ stay out of the checkout.
    source = tmp_path / "source"
    shutil.copytree(os.path.join(ROOT, "tfnorm"), source / "tfnorm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    target = tmp_path / "installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = subprocess.run(
        [sys.executable, "-c", "import sys, tfnorm; light = 'tensorflow' not in sys.modules; "
         "import tfnorm.norms.maths as maths; "
         "print(len(tfnorm.schemes.SCHEMES), tfnorm.__file__, maths.__file__, light)"],
        capture_output=True, text=True, timeout=300, cwd=elsewhere,
        env=dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="2"))
    assert check.returncode == 0, check.stderr[-3000:]
    count, init_file, maths_file, light = check.stdout.split()
    assert int(count) >= 9
    for path in (init_file, maths_file):  # the subpackage is installed too
        assert os.path.realpath(path).startswith(os.path.realpath(target)), path
    assert light == "True"  # ``import tfnorm`` alone loads no TensorFlow


def _distribution_name(name):
    """PEP 503's normal form: ``Tensorflow_CPU`` and ``tensorflow-cpu`` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports(package_dir):
    """{top-level module: first file importing it} for every absolute import under
    ``package_dir`` that is neither the standard library nor the package itself."""
    own = os.path.basename(package_dir)
    found = {}
    for folder, _, files in os.walk(package_dir):
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top != own and top not in sys.stdlib_module_names:
                        found.setdefault(top, os.path.relpath(path, ROOT))
    return found


def test_pyproject_declares_every_module_the_library_imports():
    # Installing with --no-deps (above) cannot see a missing dependency: the virtualenv
    # already has it. This compares what tfnorm/ imports with what pyproject.toml declares.
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        declared = {_distribution_name(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec).group())
                    for spec in tomllib.load(handle)["project"]["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    imported = _third_party_imports(os.path.join(ROOT, "tfnorm"))
    assert {"numpy", "tensorflow"} <= set(imported)  # the walk sees the library's imports
    missing = []
    for module, where in sorted(imported.items()):
        distributions = {_distribution_name(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            missing.append(f"{module} (imported by {where}; provided by "
                           f"{' or '.join(sorted(distributions))})")
    assert not missing, "pyproject.toml does not declare: " + "; ".join(missing)
