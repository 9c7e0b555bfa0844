"""The studies experiments.papers.ics, .landscape, .noisy_bn and .weightnorm end to end on tiny
settings (40 digits images, one epoch, two seeds), through ``study.main`` in this process:
their files exist and are well formed, every row carries its seed, and the values with a
known answer have it. The command line itself is tested in test_studies_depth.py."""

import os

import numpy as np
import pytest
from absl import flags

import stl10_fixture
from experiments import cli, study
from experiments.papers import ics, landscape, noisy_bn, weightnorm
from tfnorm.analysis import stats
from tfnorm.run import atomic

TINY = ["--train_limit=40", "--test_limit=40", "--batch_size=10", "--epochs=1"]  # 4 steps


def run_main(module, out_dir, *argv):
    """``module``'s study on a private FlagValues, as its command line would run it."""
    flag_values = flags.FlagValues()
    study.define_flags(module.STUDY, flag_values)
    flag_values(["study", f"--out_dir={out_dir}", *argv])
    study.main(module.STUDY, ["study"], flag_values)


def study_context(module, out_dir, *argv):
    """The Context the study's runs see (flags checked, data loaded), to rebuild a run's
    network in this process and check a saved number against an independent computation."""
    from tfnorm.run import runner
    flag_values = flags.FlagValues()
    study.define_flags(module.STUDY, flag_values)
    flag_values(["study", f"--out_dir={out_dir}", *argv])
    ctx = study.prepare(module.STUDY, flag_values)
    ctx.dataset = runner.load_data(dict(cli.resolve(ctx.values), **ctx.values))
    ctx.seed = ctx.seeds[0]
    return ctx


def assert_interval_columns(over, per_seed_rows, column, where):
    """summary_over_seeds.csv's mean and 95% t interval of ``column`` equal
    tfnorm.analysis.stats.interval of the per-seed values."""
    row = [r for r in over if all(r[k] == v for k, v in where.items())][0]
    values = floats([r for r in per_seed_rows if all(r[k] == v for k, v in where.items())],
                    column)
    expected = stats.interval(values)
    for side in ("mean", "low", "high"):
        assert float(row[f"{column}_{side}"]) == pytest.approx(getattr(expected, side))
    assert int(row["seeds"]) == len(values)


def read(out_dir, name, columns):
    rows = atomic.read_csv(os.path.join(out_dir, name))
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


EPOCH_COLUMNS = ["scheme", "seed", "epoch", "train_loss", "train_acc", "test_loss", "test_acc",
                 "seconds"]
ICS_COLUMNS = ["scheme", "seed", "step", "epoch", "layer", "distance", "cosine",
               "gradient_norm", "shifted_gradient_norm", "relative_distance", "loss"]


def test_ics_two_seeds(tmp_path):
    run_main(ics, tmp_path, *TINY, "--schemes=batch", "--layers=1,3", "--every=2", "--seeds=2")
    rows = read(tmp_path, "ics.csv", ICS_COLUMNS)
    # Steps 1 and 3 of 4 (steps count from 1), two layers, two seeds.
    assert sorted((r["seed"], r["step"], r["epoch"], r["layer"]) for r in rows) == sorted(
        (str(s), str(t), "1", str(l)) for s in (0, 1) for t in (1, 3) for l in (1, 3))
    first = [r for r in rows if r["layer"] == "1"]
    third = [r for r in rows if r["layer"] == "3"]
    # Layer 1 has no earlier layer to move: no shift at all.
    assert np.all(floats(first, "distance") == 0.0)
    np.testing.assert_allclose(floats(first, "cosine"), 1.0, atol=1e-6)
    assert np.all(floats(third, "distance") > 0.0)
    assert np.all(np.abs(floats(third, "cosine")) <= 1.0 + 1e-9)
    # The two seeds are different networks.
    assert len({r["distance"] for r in third if r["step"] == "1"}) == 2
    epochs = read(tmp_path, "accuracy.csv", EPOCH_COLUMNS)
    assert [(r["seed"], r["epoch"]) for r in epochs] == [("0", "1"), ("1", "1")]
    summary = read(tmp_path, "summary.csv", ["scheme", "seed", "layer", "median_distance",
                                             "median_relative_distance", "median_cosine"])
    assert [(r["seed"], r["layer"]) for r in summary] == [("0", "1"), ("1", "1"),
                                                          ("0", "3"), ("1", "3")]
    over = read(tmp_path, study.OVER_SEEDS_CSV,
                ["scheme", "layer", "seeds"] + [f"{c}_{s}" for c in (
                    "median_distance", "median_relative_distance", "median_cosine")
                    for s in ("mean", "low", "high")])
    for column in ("median_distance", "median_cosine"):
        assert_interval_columns(over, summary, column, {"layer": "3"})
    assert_png(tmp_path / "ics.png")
    config = atomic.read_json(tmp_path / "config.json")
    assert config["flags"]["layers"] == "1,3" and config["flags"]["seeds"] == 2
    assert config["flags"]["image_size"] == 32  # the dataset's default, filled in
    assert config["seed"] == 0 and "numpy" in config["versions"]
    # Independent of the probe: G and G' of layer 3 at step 1 from two backprops, the
    # first two layers moved by SGD in between (lr 0.1), on the run's first batch.
    import tensorflow as tf
    ctx = study_context(ics, tmp_path / "again", *TINY, "--schemes=batch")
    network = ctx.build_network("batch", init_std=0.05, placement="before", affine=True)
    images, labels = ctx.first_batch()
    before = network.backprop(images, labels)
    earlier = sum(len(b.trainable_variables) for b in network.blocks[:2])
    for variable, gradient in zip(network.trainable_variables[:earlier], before.grads):
        variable.assign_sub(0.1 * gradient)
    after = network.backprop(images, labels)
    g, g_shifted = (tf.cast(tf.reshape(r.grads[earlier], [-1]), tf.float64)
                    for r in (before, after))
    saved = [r for r in rows if (r["seed"], r["step"], r["layer"]) == ("0", "1", "3")][0]
    assert float(saved["distance"]) == pytest.approx(float(tf.norm(g - g_shifted)), rel=1e-4)
    cosine = float(tf.reduce_sum(g * g_shifted) / tf.norm(g) / tf.norm(g_shifted))
    assert float(saved["cosine"]) == pytest.approx(cosine, abs=1e-5)


def test_ics_verdicts_pair_batch_with_none_by_seed(tmp_path):
    run_main(ics, tmp_path, *TINY, "--schemes=none,batch", "--layers=3", "--every=2",
             "--seeds=2")
    summary = atomic.read_csv(tmp_path / "summary.csv")
    verdicts = atomic.read_csv(tmp_path / study.VERDICTS_CSV)
    assert [v["metric"] for v in verdicts] == ["median_distance", "median_cosine",
                                               "median_relative_distance"]
    first = verdicts[0]
    side = {s: floats([r for r in summary if r["scheme"] == s], "median_distance")
            for s in ("batch", "none")}
    difference = stats.paired_difference(side["batch"], side["none"])
    assert float(first["difference_low"]) == pytest.approx(difference.low)
    assert first["verdict"] == stats.verdict(difference, +1) and first["pairs"] == "2"
    assert "| median_distance (layer=3)" in (tmp_path / study.VERDICTS_MD).read_text()


def test_landscape(tmp_path):
    run_main(landscape, tmp_path, *TINY, "--schemes=batch", "--points=3", "--every=2",
             "--learning_rate=0.2", "--seeds=2")
    rows = read(tmp_path, "landscape.csv", ["scheme", "seed", "step", "epoch", "loss",
                                            "loss_min", "loss_max", "loss_with_x_min",
                                            "loss_with_x_max", "predictiveness_min",
                                            "predictiveness_max", "smoothness",
                                            "gradient_norm"])
    assert [(r["seed"], r["step"]) for r in rows] == [("0", "1"), ("0", "3"), ("1", "1"),
                                                      ("1", "3")]
    assert np.all(floats(rows, "loss_min") <= floats(rows, "loss_max"))
    assert np.all(floats(rows, "predictiveness_min") <= floats(rows, "predictiveness_max"))
    assert np.all(floats(rows, "smoothness") > 0)
    points = read(tmp_path, "landscape_points.csv", ["scheme", "seed", "step", "step_size",
                                                     "loss", "gradient_distance", "distance"])
    assert len(points) == 2 * 2 * 3
    np.testing.assert_allclose(floats(points, "step_size")[:3], [0.1, 0.45, 0.8])
    # ||x - x'|| = eta ||g||, and the largest ratio is the smoothness.
    for row in rows:
        mine = [p for p in points if (p["seed"], p["step"]) == (row["seed"], row["step"])]
        np.testing.assert_allclose(floats(mine, "distance"),
                                   floats(mine, "step_size") * float(row["gradient_norm"]),
                                   rtol=1e-5)
        ratio = floats(mine, "gradient_distance") / floats(mine, "distance")
        np.testing.assert_allclose(ratio.max(), float(row["smoothness"]), rtol=1e-9)
    read(tmp_path, "accuracy.csv", EPOCH_COLUMNS)
    summary = read(tmp_path, "summary.csv", ["scheme", "seed", "probes", "median_loss_spread",
                                             "median_loss_spread_with_x",
                                             "median_predictiveness_max", "median_smoothness",
                                             "median_gradient_norm"])
    assert summary[0]["probes"] == "2"
    over = atomic.read_csv(tmp_path / study.OVER_SEEDS_CSV)
    assert_interval_columns(over, summary, "median_loss_spread_with_x", {"scheme": "batch"})
    assert_png(tmp_path / "landscape.png")
    # The paper's range holds L(x) itself; L(x) at step 1 is the fresh network's loss.
    assert np.all(floats(rows, "loss_with_x_min") <= np.minimum(floats(rows, "loss"),
                                                                floats(rows, "loss_min")))
    ctx = study_context(landscape, tmp_path / "again", *TINY)
    network = ctx.build_network("batch", init_std=0.05, placement="before", affine=True)
    loss = float(network.loss(*ctx.first_batch()))
    assert float(rows[0]["loss"]) == pytest.approx(loss, rel=1e-5)


def test_noisy_bn_two_seeds(tmp_path):
    run_main(noisy_bn, tmp_path, *TINY, "--schemes=none+noise", "--seeds=2")
    epochs = read(tmp_path, "accuracy.csv", EPOCH_COLUMNS)
    assert [(r["scheme"], r["seed"]) for r in epochs] == [("none+noise", "0"),
                                                          ("none+noise", "1")]
    steps = read(tmp_path, "steps.csv", ["scheme", "seed", "step", "epoch", "train_loss",
                                         "train_acc"])
    assert [(r["seed"], r["step"]) for r in steps] == [(str(s), str(t)) for s in (0, 1)
                                                       for t in (1, 2, 3, 4)]
    activations = read(tmp_path, "activations.csv",
                       ["scheme", "seed", "epoch", "layer", "p5", "p25", "p50", "p75", "p95"])
    assert [(r["seed"], r["epoch"]) for r in activations] == [("0", "0"), ("0", "1"),
                                                              ("1", "0"), ("1", "1")]
    for row in activations:
        assert np.all(np.diff([float(row[f"p{p}"]) for p in (5, 25, 50, 75, 95)]) >= 0)
    summary = read(tmp_path, "summary.csv", ["scheme", "seed", "final_train_acc",
                                             "final_test_acc", "best_test_acc"])
    assert [r["seed"] for r in summary] == ["0", "1"]
    for row, epoch in zip(summary, epochs):
        assert row["final_test_acc"] == epoch["test_acc"]
    over = read(tmp_path, study.OVER_SEEDS_CSV, ["scheme", "seeds"] + [
        f"{c}_{s}" for c in ("final_train_acc", "final_test_acc", "best_test_acc")
        for s in ("mean", "low", "high")])
    assert_interval_columns(over, summary, "final_test_acc", {"scheme": "none+noise"})
    assert_png(tmp_path / "noisy_bn.png")
    # Independent: the epoch-0 percentiles are those of the fresh network's layer-3 output
    # on the first batch (noise of step 0 included), by numpy.
    ctx = study_context(noisy_bn, tmp_path / "again", *TINY)
    network = ctx.build_network("none", noise=True, init_std=0.15, placement="before",
                                affine=True)
    _, _, records = network.forward(ctx.first_batch()[0], training=True)
    expected = np.percentile(records[2]["output"].numpy().ravel(), [5, 50, 95])
    saved = activations[0]
    np.testing.assert_allclose([float(saved[k]) for k in ("p5", "p50", "p95")], expected,
                               rtol=1e-5, atol=1e-7)


def test_weightnorm(tmp_path):
    run_main(weightnorm, tmp_path, *TINY, "--schemes=weight,none", "--timing_rounds=2",
             "--timing_steps=1", "--timing_size=32", "--seeds=2")
    timing = read(tmp_path, "timing_summary.csv",
                  ["scheme", "seed", "median_ms_per_step", "time_relative_to_none",
                   "time_relative_to_weight"])
    by_scheme = {r["scheme"]: r for r in timing}
    assert float(by_scheme["none"]["time_relative_to_none"]) == 1.0
    assert float(by_scheme["weight"]["time_relative_to_weight"]) == 1.0
    assert float(by_scheme["weight"]["median_ms_per_step"]) > 0
    rounds = read(tmp_path, "timing.csv", ["round", "scheme", "seed", "seconds_per_step"])
    assert sorted((r["round"], r["scheme"], r["seed"]) for r in rounds) == [
        ("0", "none", "1"), ("0", "weight", "1"), ("1", "none", "1"), ("1", "weight", "1")]
    summary = read(tmp_path, "summary.csv", ["scheme", "seed", "final_train_acc",
                                             "final_test_acc", "best_test_acc",
                                             "epoch1_train_loss", "epoch_to_95"])
    assert [(r["scheme"], r["seed"]) for r in summary] == [
        ("weight", "0"), ("weight", "1"), ("none", "0"), ("none", "1")]
    epochs = read(tmp_path, "accuracy.csv", EPOCH_COLUMNS)
    assert [r["epoch1_train_loss"] for r in summary] == [r["train_loss"] for r in epochs]
    assert len(epochs) == 4
    assert_png(tmp_path / "weightnorm.png")
    verdicts = atomic.read_csv(tmp_path / study.VERDICTS_CSV)
    assert [(v["a"], v["b"], v["metric"]) for v in verdicts] == [
        ("weight", "none", "epoch_to_95"), ("weight", "none", "final_train_acc")]


def test_the_init_only_ablation_is_weight_norm_at_init_without_the_reparameterization(
        tmp_path):
    """none+ddi computes, before any step, the same function as the initialized 'weight'
    network (kernel g v/||v||, bias b copied), with a plain kernel as its variable."""
    ctx = study_context(weightnorm, tmp_path, *TINY)
    images = ctx.first_batch()[0]
    plain = weightnorm.init_only_network(ctx)
    reparameterized = weightnorm.build(ctx, "weight")
    np.testing.assert_allclose(plain.forward(images)[0].numpy(),
                               reparameterized.forward(images)[0].numpy(), rtol=1e-4,
                               atol=1e-5)
    assert not plain.blocks[0].layer.weight_norm and plain.blocks[0].layer.bias is not None
    # Standardized output of layer 1 on the init batch (the data-dependent init).
    out = plain.blocks[0].layer.forward(images)[0].numpy().reshape(-1, 16)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-3)


def test_a_study_on_stl10_through_the_real_tfds_builder(tmp_path):
    with stl10_fixture.fake_stl10(tmp_path, n_train=20, n_test=10) as data_dir:
        pass  # the data_dir stays prepared; the study must not need the network
    out_dir = tmp_path / "out"
    run_main(ics, out_dir, "--dataset=stl10", f"--data_dir={data_dir}", "--train_limit=20",
             "--test_limit=20", "--batch_size=10", "--epochs=1", "--schemes=batch",
             "--layers=2", "--every=1", "--seeds=1")
    rows = read(out_dir, "ics.csv", ICS_COLUMNS)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert np.all(floats(rows, "distance") > 0.0)
    epochs = read(out_dir, "accuracy.csv", EPOCH_COLUMNS)
    assert [r["epoch"] for r in epochs] == ["1"]
    config = atomic.read_json(out_dir / "config.json")
    assert config["flags"]["dataset"] == "stl10" and config["flags"]["image_size"] == 96


def test_config_json_is_written_before_any_training(tmp_path, monkeypatch):
    def crash(ctx):
        assert atomic.read_json(tmp_path / "config.json")["flags"]["every"] == 2
        raise RuntimeError("crashed in the first run")

    monkeypatch.setattr(ics, "STUDY", ics.STUDY._replace(run=crash))
    with pytest.raises(RuntimeError, match="crashed"):
        run_main(ics, tmp_path, *TINY, "--every=2")
    assert os.path.exists(tmp_path / "config.json")


def test_a_bad_flag_is_one_line_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(ics, tmp_path / "out", "--layers=2,7")
    assert exit_info.value.code == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err.splitlines() == [
        "error: --layers: layer 7 is outside the network's layers 1..6"]
    assert not os.path.exists(tmp_path / "out" / "config.json")


def test_over_seeds():
    rows = [dict(scheme="a", seed=s, layer=1, x=float(s), flag=True) for s in (0, 1, 2)]
    rows += [dict(scheme="b", seed=0, layer=1, x=5.0, flag=True)]
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t_{0.975, 2} s / sqrt(n), s = 1
    a, b = study.over_seeds(rows, ("scheme", "layer"))
    assert a == pytest.approx(dict(scheme="a", layer=1, seeds=3, x_mean=1.0,
                                   x_low=1.0 - half, x_high=1.0 + half))
    assert b == dict(scheme="b", layer=1, seeds=1, x_mean=5.0, x_low=-np.inf, x_high=np.inf)


def test_over_seeds_gives_every_unit_the_missing_column_when_one_has_a_nan(tmp_path):
    rows = [dict(scheme="a", seed=s, x=1.0) for s in (0, 1)]
    rows += [dict(scheme="b", seed=0, x=2.0), dict(scheme="b", seed=1, x=float("nan"))]
    a, b = study.over_seeds(rows, ("scheme",))
    assert (a["x_missing"], b["x_missing"]) == ("", 1) and list(a) == list(b)
    atomic.write_csv(tmp_path / "over.csv", [a, b])  # one header for both


def test_the_studies_share_the_drivers_flags():
    """One vocabulary: a study's --train_limit is the driver's flag, same help, same check."""
    driver, one_study = flags.FlagValues(), flags.FlagValues()
    cli.define_run_flags(driver)
    study.define_flags(ics.STUDY, one_study)
    for name in ("dataset", "train_limit", "test_limit", "image_size", "data_dir"):
        assert driver[name].help == one_study[name].help, name
    assert "limit" not in one_study
    assert one_study["seeds"].value == 5 and one_study["epochs"].value == 5
