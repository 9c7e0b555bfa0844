"""pyproject.toml: the checkout installs as a package that imports from where it was
installed, with no network (no dependencies fetched, no build isolation: the virtualenv's
setuptools builds it)."""

import os
import shutil
import subprocess
import sys

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
