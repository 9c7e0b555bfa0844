"""The over-fitting regime's pieces: a per-class training set drawn per seed (the same for
every scheme), the test pass every K epochs (which epochs have a test value, the best
over those only, a resume between them), the schemes the quirk leaves unchanged, and
experiments.article.overfit's claims on hand-made runs."""

import csv
import os
import types

import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from experiments import cli
from experiments.article import claims, overfit, sentences, summary
from runs import checked_config
from tfnorm import errors
from tfnorm.run import records, rundir, runner, stopping

TINY = dict(scheme="batch", epochs=5, eval_every=2, image_size=16, train_per_class=2,
            test_limit=40, batch_size=20, progress=False, panels=False)


def test_the_training_set_is_the_seeds_and_the_same_for_every_scheme(tmp_path):
    def loaded(scheme, seed):
        config = checked_config(dict(TINY, image_size=8), tmp_path / f"{scheme}{seed}",
                                scheme=scheme, seed=seed)
        return runner.load_data(config)

    batch, instance, other = loaded("batch", 1), loaded("instance", 1), loaded("batch", 2)
    np.testing.assert_array_equal(batch.train_images, instance.train_images)
    np.testing.assert_array_equal(batch.test_labels, instance.test_labels)
    np.testing.assert_array_equal(np.bincount(batch.train_labels), [2] * 10)
    assert not np.array_equal(batch.train_images, other.train_images)


@pytest.mark.parametrize("flags, expected", [
    (dict(train_per_class=5), "--train_per_class=5: 50 training images are not whole batches "
     "of 20 (the last 10 would never be trained); use a multiple of 2"),
    (dict(train_per_class=3, batch_size=25), "use a multiple of 5"),
    (dict(train_per_class=175), "must be 0 (off) or 1 to 174"),
    (dict(train_per_class=-2), "must be 0 (off) or 1 to 174"),
    (dict(train_per_class=2, train_limit=10), "not with --train_limit"),
    (dict(train_per_class=2, dataset="stl10"), "only with --dataset=digits"),
    (dict(eval_every=0), "--eval_every=0: must be a positive integer"),
])
def test_bad_sizes_and_cadences_are_refused_in_one_line(flags, expected):
    with pytest.raises(errors.ConfigError) as error:
        cli.validate(cli.resolve(dict(TINY, **flags)), check_out_dir=False)
    assert expected in str(error.value) and "\n" not in str(error.value)


def metrics_without_seconds(run_dir):
    with open(os.path.join(run_dir, records.METRICS_FILE)) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_the_test_pass_runs_every_k_epochs_and_a_resume_between_them_changes_nothing(
        tmp_path, monkeypatch):
    builds = runner.Builds()
    reference = checked_config(TINY, tmp_path / "reference")
    runner.run(reference, builds=builds)
    rows = records.read_metrics(reference["out_dir"])
    evaluated = [row["epoch"] for row in rows if not np.isnan(row["test_acc"])]
    assert evaluated == [2, 4, 5]
    assert all(np.isnan(row["test_loss"]) == np.isnan(row["test_acc"]) for row in rows)
    found = rundir.view(reference["out_dir"], reference)
    measured = summary.run_row(reference, found, records.num_layers_of(found.rows[0]))
    assert measured["final_test_acc"] == rows[-1]["test_acc"]
    assert measured["best_test_acc"] == max(rows[e - 1]["test_acc"] for e in evaluated)

    # Stopped before epoch 4's step (epoch 3, not evaluated, done), then resumed.
    killed = checked_config(TINY, tmp_path / "killed")
    calls = iter(range(1, 100))
    monkeypatch.setattr(stopping, "requested", lambda: next(calls) == 4)
    with pytest.raises(errors.Interrupted):
        runner.run(killed, builds=builds)
    assert [row["epoch"] for row in records.read_metrics(killed["out_dir"])] == [1, 2, 3]
    found = rundir.audit(killed["out_dir"], killed)
    assert (found.resume_epoch, found.repairs) == (3, [])  # rows without a test value pass
    monkeypatch.undo()
    runner.run(killed, builds=builds)
    assert metrics_without_seconds(killed["out_dir"]) == \
        metrics_without_seconds(reference["out_dir"])


def test_each_setting_plans_its_runs_where_compare_trains_them(tmp_path):
    from absl import flags
    flag_values = flags.FlagValues()
    overfit.define_flags(flag_values)
    flag_values(["overfit", f"--out_dir={tmp_path}", "--seeds=2", "--seed=3"])
    for side, schemes, quirk in (("quirk_off", overfit.SCHEMES, False),
                                 ("quirk_on", ("layer", "instance"), True)):
        planned = overfit.side_configs(flag_values, side)
        assert [(c["scheme"], c["seed"]) for c in planned] == [
            (scheme, seed) for scheme in schemes for seed in (3, 4)]
        assert all(c[overfit.QUIRK] is quirk and c["train_per_class"] == 6 for c in planned)
        assert planned[0]["out_dir"] == os.path.join(str(tmp_path), side, schemes[0], "seed_3")


def test_the_accuracy_figure_is_drawn_from_the_runs_of_both_settings(tmp_path, monkeypatch):
    config = checked_config(TINY, tmp_path / "run")
    runner.run(config)
    monkeypatch.setattr(overfit, "side_configs", lambda flag_values, side: [config])
    given = types.SimpleNamespace(results_dir=str(tmp_path / "results"), seeds=1)
    overfit.accuracy_figure(given, dict(config, train_per_class=2))
    with open(tmp_path / "results" / "accuracy.png", "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("scheme", ["none", "batch", "boxcox"])
def test_the_quirk_changes_nothing_for_the_schemes_that_do_not_take_it(scheme):
    """Why experiments.article.overfit trains these once for both settings: the registry gives
    them no per_position_running_stats, so their network, its running statistics, its
    training gradients and its evaluation are the same with the option."""
    assert scheme not in overfit.quirk_schemes()
    images = tf.random.stateless_uniform([4, 16, 16, 3], seed=[1, 2], dtype=tf.float64)
    labels = tf.constant([0, 3, 7, 9])
    on, off = (tfnorm.article_network(scheme, dtype=tf.float64, seed=2,
                                      per_position_running_stats=positions)
               for positions in (4, 0))
    assert len(on.statistics) == len(off.statistics)
    trained = []
    for network in (on, off):  # a training step's gradients, its running statistics moved
        result = network.backprop(images, labels)
        network.update_statistics(result.caches)
        trained.append((result, network.forward(images, training=False)[0]))
    (step_on, eval_on), (step_off, eval_off) = trained
    assert float(step_on.loss) == float(step_off.loss)
    for a, b in zip(step_on.grads + [eval_on], step_off.grads + [eval_off], strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def hand_made_runs(gaps):
    """{scheme: {seed: row}} with final train accuracy 1 (0.5 for none and boxcox) and
    final test accuracy 1 - gap + 0.01 seed."""
    runs = {}
    for scheme, gap in gaps.items():
        train = 0.5 if scheme in ("none", "boxcox") else 1.0
        runs[scheme] = {seed: dict(final_train_acc=train + 0.001 * seed,
                                   final_test_acc=train - gap + 0.01 * seed,
                                   best_test_acc=train - gap + 0.02, epoch_to_95=float(
                                       "nan") if train < 1 else 10.0 + seed)
                        for seed in range(5)}
    return sentences.with_derived(runs)


def test_the_claims_decide_his_ranking_and_the_thresholds():
    runs = hand_made_runs(dict(none=0.05, batch=0.25, layer=0.3, instance=0.5, boxcox=0.1))
    rows, markdown = claims.side_by_side(sentences.overfit_claims(), {"here": runs}, epochs=200)
    verdicts = {row["claim"]: row["verdict"] for row in rows}
    assert verdicts["final_gap: batch < layer"] == verdicts["final_gap: layer < instance"] \
        == verdicts["final_test_acc: batch > layer"] == "supported"
    assert verdicts["final_train_acc: none < 0.6"] == "supported"
    assert verdicts["epoch_to_95: batch < 131"] == "supported"
    # A threshold is the interval of value - threshold: 0.5 + 0.001 seed - 0.6 over 5 seeds.
    threshold = next(r for r in rows if r["claim"] == "final_train_acc: boxcox < 0.6")
    assert threshold["mean"] == pytest.approx(-0.098) and threshold["n"] == 5
    assert "holds here" in overfit.ranking(rows)
    reversed_runs = hand_made_runs(dict(none=0.05, batch=0.5, layer=0.3, instance=0.2,
                                        boxcox=0.1))
    rows, _ = claims.side_by_side(sentences.overfit_claims(), {"there": reversed_runs}, 20)
    assert "holds neither setting" in overfit.ranking(rows)
    assert "| [L] | threshold 131 | epoch_to_95: batch < 131 |" in markdown
    assert "here: tested [95% CI], n" in markdown and "| [A] |" not in markdown
