"""The shattered, saturation and nonzero studies end to end on tiny settings, each in its
own process (every study script defines its flags at import): outputs exist and are
well formed, the non-zero table holds the values of a hand-made run directory, and bad
input gives one line and exit status 2 before any work."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_study(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_columns(rows, columns):
    assert rows, "empty CSV"
    assert set(columns) <= set(rows[0]), f"missing {set(columns) - set(rows[0])}"


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def test_shattered_end_to_end(tmp_path):
    out = tmp_path / "shattered"
    result = run_study("shattered", f"--out_dir={out}", "--depths=1,3", "--seeds=2",
                       "--num_points=24", "--width=12", "--max_lag=4",
                       "--architectures=plain,batch,resnet", "--residual_betas=0.5",
                       "--conv_depths=2", "--conv_width=4", "--figure_depths=1,3")
    assert result.returncode == 0, result.stderr[-2000:]
    correlation = read_csv(out / "correlation.csv")
    assert_columns(correlation, ["family", "architecture", "depth", "seed",
                                 "neighbour_correlation"])
    # dense: 3 architectures x 2 depths x 2 seeds; conv: 3 x 1 x 1
    assert len(correlation) == 12 + 3
    assert {r["architecture"] for r in correlation} == {"plain", "batch", "resnet beta=0.5"}
    values = np.array([float(r["neighbour_correlation"]) for r in correlation])
    assert np.all(np.abs(values[np.isfinite(values)]) <= 1 + 1e-9)
    acf = read_csv(out / "autocorrelation.csv")
    assert {int(r["lag"]) for r in acf} == set(range(5))
    assert all(float(r["autocorrelation"]) == 1.0 for r in acf if r["lag"] == "0")
    coactivation = read_csv(out / "coactivation.csv")
    assert_columns(coactivation, ["layer", "active_rate", "coactivation_inputs",
                                  "coactivation_units"])
    assert all(0 <= float(r["coactivation_inputs"]) <= 1 for r in coactivation)
    gradients = read_csv(out / "gradients.csv")
    dense = [r for r in gradients if r["family"] == "dense"]
    assert len(dense) == 3 * 2 * 24
    summary = read_csv(out / "summary.csv")
    assert_columns(summary, ["neighbour_correlation_mean", "reference_2_pow_minus_L",
                             "reference_1_over_sqrt_L"])
    assert float([r for r in summary if r["depth"] == "3"][0]["reference_2_pow_minus_L"]) == 0.125
    for name in ("gradients_dense.png", "gradients_conv.png", "autocorrelation_dense.png",
                 "neighbour_correlation.png", "coactivation.png"):
        assert_png(out / name)


def test_saturation_end_to_end(tmp_path):
    out = tmp_path / "saturation"
    # One scheme, two inits: the second init reuses the compiled training step.
    result = run_study("saturation", f"--out_dir={out}", "--epochs=1", "--batch_size=200",
                       "--schemes=batch", "--init_stds=0.05,0.5", "--probe_size=8",
                       "--bins=5")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_csv(out / "saturation.csv")
    assert_columns(rows, ["init_std", "scheme", "stage", "layer", "saturated_frac",
                          "near_zero_input_grad_frac", "near_zero_passed_grad_frac"])
    # 2 init stds x 2 stages x 5 tanh layers
    assert len(rows) == 20
    assert {r["stage"] for r in rows} == {"init", "trained"}
    assert all(0 <= float(r[k]) <= 1 for r in rows
               for k in ("saturated_frac", "near_zero_input_grad_frac"))
    hists = read_csv(out / "histograms.csv")
    # 20 layer measurements x 2 quantities x 5 bins, each histogram counting every entry
    assert len(hists) == 200
    total = sum(int(r["count"]) for r in hists if r["layer"] == "1"
                and r["quantity"] == "activation" and r["stage"] == "init"
                and r["init_std"] == "0.05")
    assert total == 8 * 16 * 16 * 16  # probe images x layer 1's output positions x channels
    training = read_csv(out / "training.csv")
    assert len(training) == 2 and all(0 <= float(r["test_acc"]) <= 1 for r in training)
    for name in ("saturation.png", "preactivation_0.5.png", "activation_0.05.png"):
        assert_png(out / name)


def _write_metrics(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_nonzero_reads_a_compare_run_dir(tmp_path):
    run_dir = tmp_path / "compare"
    # Known fractions: scheme none seed s, layer i, epoch e -> 0.1 i + 0.01 e + 0.001 s;
    # batch always 1.0; none seed 1 stopped after epoch 2 (a diverged run).
    for seed in (0, 1):
        rows = [dict(epoch=e, train_acc=0.5, **{f"nonzero_grad_frac_{i}": 0.1 * i + 0.01 * e
                                                 + 0.001 * seed for i in (1, 2)})
                for e in (1, 2, 3) if not (seed == 1 and e == 3)]
        _write_metrics(run_dir / "none" / f"seed_{seed}" / "metrics.csv", rows)
        _write_metrics(run_dir / "batch" / f"seed_{seed}" / "metrics.csv",
                       [dict(epoch=e, nonzero_grad_frac_1=1.0, nonzero_grad_frac_2=1.0)
                        for e in (1, 2, 3)])
    out = tmp_path / "out"
    result = run_study("nonzero", f"--run_dir={run_dir}", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_csv(out / "nonzero.csv")
    assert_columns(rows, ["scheme", "layer", "epoch", "seeds", "mean", "min", "max"])
    cell = [r for r in rows if (r["scheme"], r["layer"], r["epoch"]) == ("none", "2", "2")][0]
    assert int(cell["seeds"]) == 2
    assert float(cell["mean"]) == pytest.approx(0.2 + 0.02 + 0.0005)
    assert float(cell["min"]) == pytest.approx(0.22)
    assert float(cell["max"]) == pytest.approx(0.221)
    last = [r for r in rows if (r["scheme"], r["layer"], r["epoch"]) == ("none", "1", "3")][0]
    assert int(last["seeds"]) == 1 and float(last["mean"]) == pytest.approx(0.13)
    summary = read_csv(out / "nonzero_summary.csv")
    batch = [r for r in summary if r["scheme"] == "batch"]
    assert [float(r["mean_over_training"]) for r in batch] == [1.0, 1.0]
    none_1 = [r for r in summary if (r["scheme"], r["layer"]) == ("none", "1")][0]
    assert float(none_1["first_epoch"]) == pytest.approx(0.1105)
    assert float(none_1["last_epoch"]) == pytest.approx(0.13)
    assert_png(out / "nonzero_claim.png")


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    # The scripts share experiments.study's checks; one process shows the behaviour.
    result = run_study("nonzero", "--run_dir=/nonexistent/compare", f"--out_dir={tmp_path}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == "error: --run_dir /nonexistent/compare: no such directory"
    assert "Traceback" not in result.stderr
