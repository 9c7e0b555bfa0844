"""The shattered, saturation and nonzero studies end to end on tiny settings, through
their ``main`` in this process (two seeds each): outputs exist and are well formed with
per-seed rows; the non-zero table holds the values of a hand-made run directory. And for
each of the study scripts, the command line: a bad flag is one line on stderr and
exit status 2, before TensorFlow is imported, with TF_CPP_MIN_LOG_LEVEL unset."""

import csv
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags

from experiments import cli, study
from experiments.article import nonzero
from experiments.papers import saturation, shattered, shattered_verdicts
from tfnorm import measures
from tfnorm.analysis import stats
from tfnorm.run import records, runid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_study(module, *argv):
    flag_values = flags.FlagValues()
    study.define_flags(module.STUDY, flag_values)
    flag_values(["study", *argv])
    study.main(module.STUDY, ["study"], flag_values)


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
    run_study(shattered, f"--out_dir={out}", "--depths=1,3", "--seeds=2",
              "--num_points=24", "--width=12", "--max_lag=4",
              "--architectures=plain,batch,resnet", "--residual_betas=0.5",
              "--conv_depths=2", "--conv_width=4", "--figure_depths=1,3", "--ensemble=2")
    correlation = read_csv(out / "correlation.csv")
    assert_columns(correlation, ["architecture", "seed", "family", "depth",
                                 "neighbour_correlation"])
    # dense: 3 architectures x 2 depths x 2 seeds; conv: 3 x 1 x 2 (seeds per depth)
    assert len(correlation) == 12 + 6
    assert sorted({(r["family"], r["seed"]) for r in correlation}) == [
        ("conv", "0"), ("conv", "1"), ("dense", "0"), ("dense", "1")]
    assert {r["architecture"] for r in correlation} == {"plain", "batch", "resnet beta=0.5"}
    values = np.array([float(r["neighbour_correlation"]) for r in correlation])
    assert np.all(np.abs(values[np.isfinite(values)]) <= 1 + 1e-9)
    acf = read_csv(out / "autocorrelation.csv")
    assert {int(r["lag"]) for r in acf} == set(range(5))
    assert len(acf) == 5 * len(correlation)  # per seed
    assert all(float(r["autocorrelation"]) == 1.0 for r in acf if r["lag"] == "0")
    # --ensemble=2: each seed's network and one more (seed + 1000), correlated across them.
    assert all(float(r["ensemble_autocorrelation"]) == pytest.approx(1.0)
               for r in acf if r["lag"] == "0")
    assert_columns(correlation, ["ensemble_neighbour_correlation"])
    coactivation = read_csv(out / "coactivation.csv")
    assert_columns(coactivation, ["layer", "active_rate", "coactivation_inputs",
                                  "coactivation_units"])
    assert all(0 <= float(r["coactivation_inputs"]) <= 1 for r in coactivation)
    gradients = read_csv(out / "gradients.csv")
    dense = [r for r in gradients if r["family"] == "dense"]
    assert len(dense) == 3 * 2 * 24 and {r["seed"] for r in dense} == {"0"}  # the first seed
    summary = read_csv(out / "summary.csv")
    assert_columns(summary, ["architecture", "seed", "family", "depth", "neighbour_correlation",
                             "coactivation_inputs"])
    assert len(summary) == len(correlation)
    # The persistence product is over the layers of coactivation.csv, each P(on at n + 1 |
    # on at n) = (units on at both neighbours) / (units on), from the saved rates.
    row = [r for r in summary if (r["architecture"], r["seed"], r["family"], r["depth"])
           == ("plain", "1", "dense", "3")][0]
    layers = [r for r in coactivation if (r["architecture"], r["seed"], r["family"],
                                          r["depth"]) == ("plain", "1", "dense", "3")]
    assert len(layers) == 3
    assert float(row["persistence_product"]) == pytest.approx(np.prod(
        [float(r["coactivation_neighbours"]) / float(r["active_rate"]) for r in layers]))
    assert 0 < float(row["persistence_product"]) <= 1
    over = read_csv(out / "summary_over_seeds.csv")
    assert_columns(over, ["neighbour_correlation_mean", "neighbour_correlation_low",
                          "neighbour_correlation_high", "reference_2_pow_minus_L",
                          "reference_1_over_sqrt_L", "seeds"])
    assert len(over) == 9 and {r["seeds"] for r in over} == {"2"}
    cell = [r for r in over if (r["architecture"], r["family"], r["depth"])
            == ("plain", "dense", "3")][0]
    assert float(cell["reference_2_pow_minus_L"]) == 0.125
    values = [float(r["neighbour_correlation"]) for r in summary
              if (r["architecture"], r["family"], r["depth"]) == ("plain", "dense", "3")]
    assert float(cell["neighbour_correlation_mean"]) == pytest.approx(np.mean(values))
    assert float(cell["neighbour_correlation_low"]) == pytest.approx(stats.interval(values).low)
    # The seed picks the conv line's image pair: two seeds, two pairs.
    pairs = {r["seed"]: r["image_pair"] for r in correlation if r["family"] == "conv"}
    assert pairs["0"] != pairs["1"]
    fits = read_csv(out / "decay_fit.csv")
    assert {(r["family"], r["model"]) for r in fits} >= {("dense", "exponential"),
                                                         ("dense", "power_law")}
    assert {r["measure"] for r in fits} == {"neighbour_correlation",
                                            "ensemble_neighbour_correlation"}
    verdicts = read_csv(out / "verdicts.csv")
    assert any(v["metric"] == "coactivation_gap" for v in verdicts)
    resilient = [v for v in verdicts if v["sentence"].startswith("BN nets are resilient")]
    assert [(v["a"], v["b"], v["direction"]) for v in resilient] == [
        ("batch", "plain", "1"), ("batch", "plain", "1")]  # dense and conv
    white = [v for v in verdicts if v["sentence"].startswith("Deep feedforward")]
    assert {(v["a"], float(v["b"])) for v in white} == {("plain", 2 / np.sqrt(24)),
                                                       ("batch", 2 / np.sqrt(24))}
    # Independent of the probe: the co-activation rate of the depth-1 batch net of seed 0
    # by numpy, from the rectifiers' outputs on the line (inputs x inputs products).
    network = shattered.dense_network(dict(width=12, dtype="float32", bias_std=1.0,
                                           weight_variance=2.0, residual_branch="linear_last"),
                                      "batch", None, 1, 0)
    from tfnorm.probes import shattering
    _, _, records = shattering.input_gradients(
        network, shattering.line_inputs(24, -2.0, 2.0, "float32"))
    active = (records[0]["activation"].numpy() > 0).astype(float)
    pairs_on = active @ active.T  # [i, j]: units on for both inputs i and j
    expected = (pairs_on.sum() - np.trace(pairs_on)) / (24 * 23 * active.shape[1])
    saved = [r for r in coactivation if (r["architecture"], r["seed"], r["family"],
                                         r["depth"], r["layer"]) == ("batch", "0", "dense",
                                                                     "1", "1")][0]
    assert float(saved["coactivation_inputs"]) == pytest.approx(expected, rel=1e-6)
    for name in ("gradients_dense.png", "gradients_conv.png", "autocorrelation_dense.png",
                 "neighbour_correlation.png", "coactivation.png"):
        assert_png(out / name)


def test_shattered_weight_variance_scales_every_dense_kernel():
    base = dict(width=400, dtype="float64", bias_std=1.0, residual_branch="linear_last")
    he = shattered.dense_network(dict(base, weight_variance=2.0), "none", None, 2, 0)
    glorot = shattered.dense_network(dict(base, weight_variance=1.0), "none", None, 2, 0)
    hidden = he.blocks[1].layer.kernel.numpy()
    assert hidden.var() == pytest.approx(2.0 / 400, rel=0.02)  # He: 2 / fan_in
    for a, b in zip(he.blocks, glorot.blocks):
        np.testing.assert_allclose(b.layer.kernel.numpy(), a.layer.kernel.numpy() / np.sqrt(2))
        np.testing.assert_array_equal(b.layer.bias.numpy(), a.layer.bias.numpy())


class _Rows:
    """The part of a study Context that shattered_verdicts.fit_rows reads."""

    def __init__(self, rows, units):
        self.tables, self.units = {"correlation.csv": rows}, units

    def rows(self, name, **where):
        return [r for r in self.tables[name] if all(r[k] == v for k, v in where.items())]


def test_the_decay_fit_recovers_a_known_rate_and_the_verdict_uses_its_interval():
    rng = np.random.default_rng(1)  # noise of a fixed draw; the intervals are 95% ones
    depths = [1, 2, 4, 8, 16]
    rows = [dict(architecture="plain", seed=s, family="dense", depth=d,
                 neighbour_correlation=0.9 * 2.0 ** (-0.3 * d) * np.exp(rng.normal(0, 0.05)))
            for d in depths for s in range(5)]
    # resnet: a power law L^-1/2, then one seed non-positive at depth 16, so the fit stops
    # at depth 8 (single seeds are not dropped: that would bias the rate).
    rows += [dict(architecture="resnet beta=1", seed=s, family="dense", depth=d,
                  neighbour_correlation=(-0.01 if (d, s) == (16, 0) else
                                         d ** -0.5 * np.exp(rng.normal(0, 0.05))))
             for d in depths for s in range(5)]
    fits = shattered_verdicts.fit_rows(_Rows(rows, ["plain", "resnet beta=1"]))
    by = {(f["architecture"], f["model"]): f for f in fits}
    plain = by[("plain", "exponential")]
    assert plain["low"] < 0.3 < plain["high"] and plain["high"] - plain["low"] < 0.05
    assert plain["better"] == "exponential" and plain["points"] == 25
    resnet = by[("resnet beta=1", "power_law")]
    assert resnet["depths"] == "1/2/4/8" and resnet["low"] < 0.5 < resnet["high"]
    decided = {d.claim.a: d for d in shattered_verdicts.fit_verdicts(fits)}
    assert decided["plain"].claim.kind == "value" and decided["plain"].claim.value == 1.0
    assert decided["plain"].verdict == "contradicted"  # 0.3 is not the paper's 1
    assert decided["resnet beta=1"].verdict == "inconclusive"  # 1/2 inside the interval


def test_saturation_end_to_end(tmp_path):
    out = tmp_path / "saturation"
    # One scheme, two inits, two seeds: the later runs reuse the compiled training step.
    run_study(saturation, f"--out_dir={out}", "--epochs=1", "--batch_size=200",
              "--schemes=batch", "--init_stds=0.05,0.5", "--probe_size=8", "--bins=5",
              "--seeds=2")
    rows = read_csv(out / "saturation.csv")
    assert list(rows[0])[:5] == ["scheme", "seed", "init_std", "stage", "layer"]
    assert_columns(rows, ["saturated_frac", "near_zero_input_grad_frac",
                          "near_zero_passed_grad_frac"])
    # 2 seeds x 2 init stds x 2 stages x 5 tanh layers
    assert len(rows) == 40
    # The seeds are different networks.
    first = [r["saturated_frac"] for r in rows if (r["init_std"], r["stage"], r["layer"])
             == ("0.5", "init", "2")]
    assert len(first) == 2 and first[0] != first[1]
    assert {r["stage"] for r in rows} == {"init", "trained"}
    assert all(0 <= float(r[k]) <= 1 for r in rows
               for k in ("saturated_frac", "near_zero_input_grad_frac"))
    hists = read_csv(out / "histograms.csv")
    # 40 layer measurements x 2 quantities x 5 bins, each histogram counting every entry
    assert len(hists) == 400
    total = sum(int(r["count"]) for r in hists if r["layer"] == "1" and r["seed"] == "0"
                and r["quantity"] == "activation" and r["stage"] == "init"
                and r["init_std"] == "0.05")
    assert total == 8 * 16 * 16 * 16  # probe images x layer 1's output positions x channels
    accuracy = read_csv(out / "accuracy.csv")  # was training.csv
    assert [(r["seed"], r["init_std"]) for r in accuracy] == [
        ("0", "0.05"), ("0", "0.5"), ("1", "0.05"), ("1", "0.5")]
    assert all(0 <= float(r["test_acc"]) <= 1 for r in accuracy)
    assert not os.path.exists(out / "training.csv")
    summary = read_csv(out / "summary.csv")
    assert_columns(summary, ["scheme", "seed", "init_std", "learning_rate",
                             "saturated_frac_init", "saturated_frac_trained",
                             "final_test_acc"])
    # The learning rate follows the weight scale: 0.0008 x std / 0.05.
    assert sorted(float(r["learning_rate"]) for r in summary if r["seed"] == "0") == \
        pytest.approx([0.0008, 0.008])
    over = read_csv(out / "summary_over_seeds.csv")
    wide = [r for r in over if r["init_std"] == "0.5"][0]
    values = [float(r["saturated_frac_trained"]) for r in summary if r["init_std"] == "0.5"]
    expected = stats.interval(values)
    assert wide["seeds"] == "2" and float(wide["saturated_frac_trained_low"]) == \
        pytest.approx(expected.low) and float(wide["saturated_frac_trained_high"]) == \
        pytest.approx(expected.high)
    # Independent: the saturated fraction of layer 1 at init, seed 0, std 0.5, by numpy on
    # the fresh network's tanh output over the probe images.
    import tensorflow as tf
    import tfnorm
    from tfnorm import data
    dataset = data.load("digits")
    network = tfnorm.article_network("batch", num_classes=10, seed=0, activation="tanh",
                                     placement="before", final_activation="linear",
                                     init_std=0.5, groups=4)
    images = tf.constant(dataset.test_images[:8], tf.float32) / 255.0
    _, _, records = network.forward(images, training=True)
    expected = float(np.mean(np.abs(records[0]["activation"].numpy()) > 0.99))
    saved = [r for r in rows if (r["seed"], r["init_std"], r["stage"], r["layer"])
             == ("0", "0.5", "init", "1")][0]
    assert float(saved["saturated_frac"]) == pytest.approx(expected, abs=1e-9)
    for name in ("saturation.png", "preactivation_0.5.png", "activation_0.05.png"):
        assert_png(out / name)


def _write_metrics(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_nonzero_reads_a_compare_run_dir(tmp_path, monkeypatch):
    run_dir = tmp_path / "compare"
    # Known fractions: scheme none seed s, layer i, epoch e -> 0.1 i + 0.01 e + 0.001 s,
    # near zero 0.5 - 0.1 i + 0.001 s; batch always 1.0 and no near-zero columns (a run of
    # an older tfnorm); none seed 1 stopped after epoch 2 (a diverged run).
    for seed in (0, 1):
        rows = [dict(epoch=e, train_acc=0.5,
                     **{f"nonzero_grad_frac_{i}": 0.1 * i + 0.01 * e + 0.001 * seed
                        for i in (1, 2)},
                     **{f"nearzero_grad_frac_{i}": 0.5 - 0.1 * i + 0.001 * seed
                        for i in (1, 2)})
                for e in (1, 2, 3) if not (seed == 1 and e == 3)]
        _write_metrics(run_dir / "none" / f"seed_{seed}" / "metrics.csv", rows)
        _write_metrics(run_dir / "batch" / f"seed_{seed}" / "metrics.csv",
                       [dict(epoch=e, nonzero_grad_frac_1=1.0, nonzero_grad_frac_2=1.0)
                        for e in (1, 2, 3)])
    # One record: layer 1's weight gradient over [-1, 1] with RMS 0.5, layer 2's over
    # [-0.5, 1.5] with RMS 1: the bins holding 0 are 0.04 and 0.02 RMS wide a side.
    summaries = np.zeros((2, 4, len(measures.SUMMARY_STATS)))
    summaries[:, 0, measures.SUMMARY_STATS.index("std")] = (0.5, 1.0)
    ranges = np.zeros((2, 4, 2))
    ranges[:, 0] = ((-1.0, 1.0), (-0.5, 1.5))
    counts = np.ones((2, 4, 50), np.int64)
    records.save_record(str(run_dir / "none" / "seed_0"), 1, 1,
                        runid.RunIdentity("none", 0, ""), dict(
        counts=counts, ranges=ranges, summaries=summaries,
        layer_stats=np.zeros((2, len(measures.LAYER_STATS))), magnitude_counts=counts,
        magnitude_ranges=ranges))
    out = tmp_path / "out"
    flag_values = flags.FlagValues()
    nonzero.define_flags(flag_values)
    flag_values(["nonzero", f"--run_dir={run_dir}", f"--out_dir={out}"])
    monkeypatch.setattr(nonzero, "FLAGS", flag_values)
    nonzero.main(["nonzero"])
    rows = read_csv(out / "nonzero.csv")
    assert_columns(rows, ["measure", "scheme", "layer", "epoch", "seeds", "mean", "low",
                          "high", "min", "max"])
    near = [r for r in rows if (r["measure"], r["scheme"], r["layer"], r["epoch"])
            == ("nearzero", "none", "2", "1")]
    assert len(near) == 1 and float(near[0]["mean"]) == pytest.approx(0.3005)
    assert not [r for r in rows if (r["measure"], r["scheme"]) == ("nearzero", "batch")]
    rows = [r for r in rows if r["measure"] == "nonzero"]
    cell = [r for r in rows if (r["scheme"], r["layer"], r["epoch"]) == ("none", "2", "2")][0]
    assert int(cell["seeds"]) == 2
    assert float(cell["mean"]) == pytest.approx(0.2 + 0.02 + 0.0005)
    # 95% t interval of (0.22, 0.221), by hand: t(0.975, 1) = 12.7062, sd = 0.001/sqrt(2).
    half = 12.7062047 * (0.001 / 2 ** 0.5) / 2 ** 0.5
    assert float(cell["low"]) == pytest.approx(0.2205 - half, abs=1e-9)
    assert float(cell["high"]) == pytest.approx(0.2205 + half, abs=1e-9)
    assert float(cell["min"]) == pytest.approx(0.22)
    assert float(cell["max"]) == pytest.approx(0.221)
    last = [r for r in rows if (r["scheme"], r["layer"], r["epoch"]) == ("none", "1", "3")][0]
    assert int(last["seeds"]) == 1 and float(last["mean"]) == pytest.approx(0.13)
    assert float(last["low"]) == -float("inf") and float(last["high"]) == float("inf")
    summary = [r for r in read_csv(out / "nonzero_summary.csv") if r["measure"] == "nonzero"]
    batch = [r for r in summary if r["scheme"] == "batch"]
    assert [float(r["mean_over_training"]) for r in batch] == [1.0, 1.0]
    none_1 = [r for r in summary if (r["scheme"], r["layer"]) == ("none", "1")][0]
    assert float(none_1["first_epoch"]) == pytest.approx(0.1105)
    assert float(none_1["last_epoch"]) == pytest.approx(0.13)
    # Each seed's own mean over its epochs (0.12 over 3, 0.116 over the 2 it ran), then
    # their interval: half width t(0.975, 1) * 0.004 / sqrt(2) / sqrt(2).
    assert float(none_1["mean_over_training"]) == pytest.approx(0.118)
    half = 12.7062047 * 0.004 / 2
    assert float(none_1["mean_over_training_low"]) == pytest.approx(0.118 - half, abs=1e-9)
    assert float(none_1["mean_over_training_high"]) == pytest.approx(0.118 + half, abs=1e-9)
    assert_png(out / "nonzero_claim.png")
    (tau,) = read_csv(out / "nonzero_tau.csv")
    assert int(tau["layer_records"]) == 2 and float(tau["median"]) == pytest.approx(0.03)
    assert float(tau["tau"]) == measures.NEARZERO_TAU


# The wrapper runs a script as ``python -m`` would and prints, at exit, whether
# TensorFlow was imported.
NO_TENSORFLOW = ("import atexit, runpy, sys\n"
                 "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in "
                 "sys.modules))\n"
                 "sys.argv = sys.argv[1:]\n"
                 "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


@pytest.mark.parametrize("module, argv, expected", [
    ("papers.ics", ["--layers=2,7"], "error: --layers: layer 7 is outside the network's layers 1..6"),
    ("papers.ics", ["--seeds=0"], "error: --seeds=0: must be positive"),
    ("papers.landscape", ["--points=1"], "error: --points=1: must be at least 2"),
    ("papers.noisy_bn", ["--activation_layer=6"], "error: --activation_layer=6: must be in 1..5"),
    ("papers.weightnorm", ["--schemes=batch"], "error: --schemes: must include none"),
    ("papers.lr_range", ["--learning_rates=0.4,0.2"], "error: --learning_rates: need at least two "
     "rates, strictly increasing"),
    ("papers.lr_range", ["--min_train_acc=1.5"], "error: --min_train_acc=1.5: must be in [0, 1]"),
    ("papers.saturation", ["--init_stds=0"], "error: --init_stds: every std must be positive"),
    ("papers.saturation", ["--train_limit=-2"], "error: --train_limit=-2: must be 0 (all) or"),
    ("papers.shattered", ["--max_lag=0"], "error: --max_lag=0: must be in [1, 255]"),
    ("papers.shattered", ["--image_size=0"], "error: --image_size=0: must be a positive integer"),
    ("papers.shattered", ["--ensemble=1"], "error: --ensemble=1: must be 0 (off) or at least 2"),
    ("article.nonzero", ["--run_dir=/nonexistent/compare"],
     "error: --run_dir /nonexistent/compare: no such directory"),
    ("article.nonzero", ["--run_dir=/tmp", "--schemes=bach"], "error: --schemes: unknown scheme"),
])
def test_a_bad_flag_is_one_line_exit_2_and_no_tensorflow(module, argv, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, f"experiments.{module}",
                             f"--out_dir={tmp_path}/out", *argv], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - started
    assert result.returncode == cli.EXIT_BAD_INPUT, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert result.stdout.strip() == "tensorflow imported: False"
    assert not os.path.exists(tmp_path / "out" / "config.json")
    assert seconds < 10, seconds  # about a second; the machine is shared
