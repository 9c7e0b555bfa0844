"""The studies experiments.ics, .landscape, .noisy_bn and .weightnorm end to end, on
tiny settings (40 digits images, one epoch), as the subprocesses a user runs: their
files exist and are well formed, and the values with a known answer have it."""

import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import study
from tfnorm import io

import stl10_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--limit=40", "--batch_size=10", "--epochs=1"]  # 4 steps per epoch


def run_study(module, out_dir, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", f"experiments.{module}",
                           f"--out_dir={out_dir}", *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def run_ok(module, out_dir, *flags):
    result = run_study(module, str(out_dir), *TINY, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def read(out_dir, name, columns):
    rows = io.read_csv(os.path.join(out_dir, name))
    assert rows, name
    assert list(rows[0].keys()) == columns, (name, list(rows[0].keys()))
    return rows


def floats(rows, column):
    values = np.array([float(r[column]) for r in rows])
    assert np.all(np.isfinite(values)), column
    return values


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


EPOCH_COLUMNS = ["scheme", "epoch", "train_loss", "train_acc", "test_loss", "test_acc",
                 "seconds"]


def test_ics(tmp_path):
    run_ok("ics", tmp_path, "--schemes=batch", "--layers=1,3", "--every=2")
    rows = read(tmp_path, "ics.csv", ["scheme", "step", "epoch", "layer", "distance", "cosine",
                                      "gradient_norm", "shifted_gradient_norm",
                                      "relative_distance", "loss"])
    # Steps 0 and 2 of 4, two layers.
    assert sorted((r["scheme"], r["step"], r["epoch"], r["layer"]) for r in rows) == sorted(
        ("batch", str(t), "1", str(l)) for t in (0, 2) for l in (1, 3))
    first = [r for r in rows if r["layer"] == "1"]
    third = [r for r in rows if r["layer"] == "3"]
    # Layer 1 has no earlier layer to move: no shift at all.
    assert np.all(floats(first, "distance") == 0.0)
    np.testing.assert_allclose(floats(first, "cosine"), 1.0, atol=1e-6)
    assert np.all(floats(third, "distance") > 0.0)
    assert np.all(np.abs(floats(third, "cosine")) <= 1.0 + 1e-9)
    assert [r["epoch"] for r in read(tmp_path, "accuracy.csv", EPOCH_COLUMNS)] == ["1"]
    read(tmp_path, "summary.csv", ["scheme", "layer", "median_distance",
                                   "median_relative_distance", "median_cosine"])
    assert_png(tmp_path / "ics.png")
    assert io.read_json(tmp_path / "config.json")["flags"]["layers"] == "1,3"


def test_landscape(tmp_path):
    run_ok("landscape", tmp_path, "--schemes=batch", "--points=3", "--every=2",
           "--learning_rate=0.2")
    rows = read(tmp_path, "landscape.csv", ["scheme", "step", "epoch", "loss", "loss_min",
                                            "loss_max", "predictiveness_min",
                                            "predictiveness_max", "smoothness",
                                            "gradient_norm"])
    assert [r["step"] for r in rows] == ["0", "2"]
    assert np.all(floats(rows, "loss_min") <= floats(rows, "loss_max"))
    assert np.all(floats(rows, "predictiveness_min") <= floats(rows, "predictiveness_max"))
    assert np.all(floats(rows, "smoothness") > 0)
    points = read(tmp_path, "landscape_points.csv", ["scheme", "step", "step_size", "loss",
                                                     "gradient_distance", "distance"])
    assert len(points) == 2 * 3
    np.testing.assert_allclose(floats(points, "step_size")[:3], [0.1, 0.45, 0.8])
    # ||x - x'|| = eta ||g||, and the largest ratio is the smoothness.
    for row in rows:
        mine = [p for p in points if p["step"] == row["step"]]
        np.testing.assert_allclose(floats(mine, "distance"),
                                   floats(mine, "step_size") * float(row["gradient_norm"]),
                                   rtol=1e-5)
        ratio = floats(mine, "gradient_distance") / floats(mine, "distance")
        np.testing.assert_allclose(ratio.max(), float(row["smoothness"]), rtol=1e-9)
    read(tmp_path, "accuracy.csv", EPOCH_COLUMNS)
    assert_png(tmp_path / "landscape.png")


def test_noisy_bn(tmp_path):
    run_ok("noisy_bn", tmp_path, "--schemes=none+noise")
    epochs = read(tmp_path, "accuracy.csv", EPOCH_COLUMNS)
    assert [r["scheme"] for r in epochs] == ["none+noise"]
    steps = read(tmp_path, "steps.csv", ["scheme", "step", "epoch", "train_loss", "train_acc"])
    assert len(steps) == 4
    activations = read(tmp_path, "activations.csv",
                       ["scheme", "epoch", "layer", "p5", "p25", "p50", "p75", "p95"])
    assert [(r["scheme"], r["epoch"]) for r in activations] == [
        ("none+noise", "0"), ("none+noise", "1")]
    for row in activations:
        assert np.all(np.diff([float(row[f"p{p}"]) for p in (5, 25, 50, 75, 95)]) >= 0)
    assert_png(tmp_path / "noisy_bn.png")


def test_weightnorm(tmp_path):
    run_ok("weightnorm", tmp_path, "--schemes=weight,none", "--timing_rounds=2",
           "--timing_steps=1", "--timing_size=32")
    summary = read(tmp_path, "summary.csv", ["scheme", "final_train_acc", "final_test_acc",
                                             "best_test_acc", "median_ms_per_step",
                                             "time_relative_to_none",
                                             "time_relative_to_weight"])
    by_scheme = {r["scheme"]: r for r in summary}
    assert float(by_scheme["none"]["time_relative_to_none"]) == 1.0
    assert float(by_scheme["weight"]["time_relative_to_weight"]) == 1.0
    assert float(by_scheme["weight"]["median_ms_per_step"]) > 0
    timing = read(tmp_path, "timing.csv", ["round", "scheme", "seconds_per_step"])
    assert sorted((r["round"], r["scheme"]) for r in timing) == [
        ("0", "none"), ("0", "weight"), ("1", "none"), ("1", "weight")]
    read(tmp_path, "accuracy.csv", EPOCH_COLUMNS)
    assert_png(tmp_path / "weightnorm.png")


def test_a_study_on_stl10_through_the_real_tfds_builder(tmp_path):
    with stl10_fixture.fake_stl10(tmp_path, n_train=20, n_test=10) as data_dir:
        pass  # the data_dir stays prepared; the subprocess must not need the network
    out_dir = tmp_path / "out"
    result = run_study("ics", str(out_dir), "--dataset=stl10", f"--data_dir={data_dir}",
                       "--limit=20", "--batch_size=10", "--epochs=1", "--schemes=batch",
                       "--layers=2", "--every=1")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read(out_dir, "ics.csv", ["scheme", "step", "epoch", "layer", "distance", "cosine",
                                     "gradient_norm", "shifted_gradient_norm",
                                     "relative_distance", "loss"])
    assert [r["step"] for r in rows] == ["0", "1"]
    assert np.all(floats(rows, "distance") > 0.0)
    epochs = read(out_dir, "accuracy.csv", EPOCH_COLUMNS)
    assert [r["epoch"] for r in epochs] == ["1"]
    assert io.read_json(out_dir / "config.json")["flags"]["dataset"] == "stl10"


def test_bad_flag_is_one_line_before_any_work(tmp_path):
    result = run_study("ics", str(tmp_path / "out"), "--layers=2,7")
    assert result.returncode == study.EXIT_BAD_INPUT
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --layers: layer 7 is outside the network's layers 1..6")
    assert not os.path.exists(tmp_path / "out" / "config.json")


def test_scheme_lists():
    assert study.parse_schemes("none, batch") == ["none", "batch"]
    assert study.parse_schemes("all", allowed=("a", "b")) == ["a", "b"]
    with pytest.raises(study.StudyError, match="unknown scheme 'bach'"):
        study.parse_schemes("none,bach")
    with pytest.raises(study.StudyError, match="named twice"):
        study.parse_schemes("none,none")
    with pytest.raises(study.StudyError, match="--limit must be positive, got 0"):
        study.require_positive(0, "--limit")
