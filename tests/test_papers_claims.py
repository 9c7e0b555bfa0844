"""The papers' sentences as claims of their kind (noisy_bn, weightnorm, lr_range,
saturation), on hand-made per-seed rows whose verdicts are computed by hand: the kind each
sentence is decided as, its margin, threshold or value, censoring; and lr_range end to end
on a tiny grid (one rate that trains, one that overflows in its first steps)."""

import math
import types

import pytest

from experiments import study
from experiments.papers import lr_range, noisy_bn, weightnorm
from tfnorm.analysis import verdicts
from tfnorm.run import atomic


def context(units, summary=(), values=None, settings=None, **tables):
    return types.SimpleNamespace(units=list(units), values=values or {}, settings=settings,
                                 tables={study.SUMMARY_CSV: list(summary), **tables})


def rows(metric, **units):
    return [dict(scheme=unit.replace("_", "+"), seed=seed, **{metric: value})
            for unit, values in units.items() for seed, value in enumerate(values)]


def by_sentence(decided):
    return {(d.claim.sentence, d.claim.metric): d for d in decided}


# ---- noisy BN: an equivalence with BN, differences against the models without BN, and
# a threshold for noise alone

BN = [0.99, 0.995, 1.0]  # s = 0.005: margin 1.96 sqrt(2) 0.005 = 0.0138593 -> 0.0139


def noisy_bn_decided(noisy, alone):
    summary = []
    for metric in ("final_train_acc", "final_test_acc"):
        for unit, values in dict(batch=BN, noisybatch=noisy, none=[0.5, 0.6, 0.7],
                                 none_noise=alone).items():
            summary += rows(metric, **{unit: values})
    merged = {}
    for row in summary:
        merged.setdefault((row["scheme"], row["seed"]), {}).update(row)
    ctx = context(noisy_bn.VARIANTS, merged.values())
    return noisy_bn.claims(ctx), verdicts.decide(noisy_bn.claims(ctx), list(merged.values()))


def test_noisy_bn_sentences_by_kind_with_the_margin_from_bns_own_seeds():
    claims, decided = noisy_bn_decided([b - 0.01 for b in BN], [0.1, 0.12, 0.11])
    assert [(c.kind, c.metric, c.a, c.b) for c in claims] == [
        ("equivalence", "final_train_acc", "noisybatch", "batch"),
        ("difference", "final_train_acc", "batch", "none"),
        ("difference", "final_train_acc", "batch", "none+noise"),
        ("difference", "final_train_acc", "noisybatch", "none"),
        ("difference", "final_train_acc", "noisybatch", "none+noise"),
        ("equivalence", "final_test_acc", "noisybatch", "batch"),
        ("difference", "final_test_acc", "batch", "none"),
        ("difference", "final_test_acc", "batch", "none+noise"),
        ("difference", "final_test_acc", "noisybatch", "none"),
        ("difference", "final_test_acc", "noisybatch", "none+noise"),
        ("threshold", "final_train_acc", "none+noise", None)]
    assert claims[0].margin == 0.0139 and claims[5].margin == 0.0139
    assert claims[-1].value == 0.2 and claims[-1].direction == -1
    assert all(c.direction == +1 for c in claims if c.kind == "difference")
    # noisy = BN - 0.01 on every seed: the interval is [-0.01, -0.01], inside 0.0139.
    assert decided[0].verdict == "supported"
    # noise alone at 0.11 [0.085, 0.135]: below 0.2.
    assert decided[-1].verdict == "supported"
    _, decided = noisy_bn_decided([b - 0.015 for b in BN], [0.9, 0.95, 0.92])
    assert decided[0].verdict == "contradicted"  # -0.015 lies wholly below -0.0139
    assert decided[-1].verdict == "contradicted"  # 0.923 [..] lies above 0.2


# ---- weight norm: a ratio against the paper's 16%, early progress, convergence by optimizer

VALUES = dict(epochs=10, optimizer="sgd", learning_rate=0.1, timing_size=96)


def timing_rows(ratios):
    """Three timing rounds, BN's time ``ratios`` times WN's."""
    return [dict(round=k, scheme=s, seed=0, seconds_per_step=t * (r if s == "batch" else 1))
            for k, (t, r) in enumerate(zip((0.010, 0.012, 0.011), ratios))
            for s in ("batch", "weight")]


@pytest.mark.parametrize("ratios, expected, slower_expected", [
    ((1.9, 2.0, 2.1), "contradicted", "supported"),
    # BN - WN = (1, 1.92, 2.42) ms: 1.78 [-0.01, 3.57], the direction not even separated.
    ((1.10, 1.16, 1.22), "inconclusive", "inconclusive")])
def test_the_papers_16_percent_is_a_ratio_against_1_16(ratios, expected, slower_expected):
    ctx = context(["batch", "weight", "none"], values=VALUES,
                  **{"timing.csv": timing_rows(ratios)})
    as_ratio, slower = weightnorm.timing_verdicts(ctx)
    assert (as_ratio.claim.kind, as_ratio.claim.value) == ("ratio", 1.16)
    # The paired log-ratio: the geometric mean of the rounds' ratios.
    assert as_ratio.tested.mean == pytest.approx(math.prod(ratios) ** (1 / 3))
    assert as_ratio.verdict == expected
    assert (slower.claim.kind, slower.verdict) == ("difference", slower_expected)


def weightnorm_summary():
    """Epochs to 95%: weight 3, 4, 5; none never (NaN) on seeds 0 and 1, 10 on seed 2;
    epoch-1 loss: batch 1.0 below weight's 1.5 on every seed."""
    out = []
    for scheme, to_95, loss in (("weight", [3, 4, 5], 1.5), ("none", [math.nan, math.nan, 10],
                                                             2.0), ("batch", [2, 2, 3], 1.0)):
        out += [dict(scheme=scheme, seed=seed, epoch_to_95=float(t), epoch1_train_loss=loss,
                     final_train_acc=0.9, final_test_acc=0.9) for seed, t in enumerate(to_95)]
    return out


def test_convergence_is_labelled_by_optimizer_and_censored_at_epochs_plus_one():
    ctx = context(["weight", "none", "batch"], weightnorm_summary(), dict(VALUES))
    (decided,) = weightnorm.convergence_verdicts(ctx)
    assert decided.claim.sentence == "WN gives faster convergence than none (SGD)"
    assert (decided.claim.kind, decided.claim.direction) == ("difference", -1)
    # none's "never" counts as 11: d = (3 - 11, 4 - 11, 5 - 10) = (-8, -7, -5), s = 1.528,
    # [-10.46, -2.87]; only none is censored, so the true gap can only widen: it stands.
    assert decided.tested.mean == pytest.approx(-20 / 3)
    assert decided.tested.high == pytest.approx(-20 / 3 + 4.302653 * math.sqrt(7 / 3) /
                                                math.sqrt(3), abs=1e-5)
    assert decided.tested.censored == 2 and decided.verdict == "supported"
    ctx.values["optimizer"] = "article_adam"
    (decided,) = weightnorm.convergence_verdicts(ctx)
    assert decided.claim.sentence.endswith("(article_adam, not SGD)")


def test_early_progress_is_batch_below_weight_on_the_first_epochs_loss():
    ctx = context(["weight", "none", "batch"], weightnorm_summary(), dict(VALUES))
    decided = by_sentence(verdicts.decide(weightnorm.claims(ctx), ctx.tables[study.SUMMARY_CSV]))
    early = decided[("BN yields better progress for initial iterations than WN (SGD)",
                     weightnorm.EARLY_METRIC)]
    assert (early.claim.a, early.claim.b, early.claim.direction) == ("batch", "weight", -1)
    assert early.tested.mean == pytest.approx(-0.5) and early.verdict == "supported"


# ---- lr_range: the largest rate that trains, censored at the grid's top

RATES = (0.1, 0.2, 0.4)


def grid(trains):
    return [dict(learning_rate=rate, trains=t) for rate, t in zip(RATES, trains)]


def test_the_largest_rate_that_trains_with_censoring_at_the_top_and_below_the_grid():
    assert lr_range.largest_rate(grid([1, 1, 0]), RATES) == (0.2, math.log2(0.2))
    assert lr_range.largest_rate(grid([0, 1, 0]), RATES) == (0.2, math.log2(0.2))
    largest, log2 = lr_range.largest_rate(grid([1, 0, 1]), RATES)
    assert largest == 0.4 and math.isnan(log2)  # at the top: censored
    assert lr_range.largest_rate(grid([0, 0, 0]), RATES) == (0.0, math.log2(0.05))


@pytest.mark.parametrize("batch, none, expected", [
    ([math.nan] * 3, [math.log2(0.1), math.log2(0.2), math.log2(0.1)], "supported"),
    # none too trains at the top on one seed: that pair can move either way.
    ([math.nan] * 3, [math.log2(0.1), math.nan, math.log2(0.1)], "inconclusive"),
    ([math.log2(0.1)] * 3, [math.log2(0.2)] * 3, "contradicted"),
])
def test_bn_allows_a_larger_rate_is_a_censored_difference(batch, none, expected):
    summary = rows(lr_range.METRIC, batch=batch, none=none)
    ctx = context(["none", "batch"], summary, settings=RATES,
                  values=dict(learning_rates="0.1,0.2,0.4", optimizer="sgd", epochs=3,
                              min_train_acc=0.5))
    (decided,) = lr_range.extra_verdicts(ctx)
    assert (decided.claim.kind, decided.claim.a, decided.claim.b,
            decided.claim.direction) == ("difference", "batch", "none", +1)
    assert decided.verdict == expected


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_lr_range_on_a_tiny_grid(tmp_path):
    from absl import flags
    flag_values = flags.FlagValues()
    study.define_flags(lr_range.STUDY, flag_values)
    # 1e39 is inf in float32: the first update makes the weights non-finite on any CPU.
    flag_values(["study", f"--out_dir={tmp_path}", "--train_limit=40", "--test_limit=40",
                 "--batch_size=10", "--epochs=1", "--seeds=1", "--learning_rates=0.1,1e39",
                 "--min_train_acc=0"])
    study.main(lr_range.STUDY, ["study"], flag_values)
    grid_rows = atomic.read_csv(tmp_path / lr_range.GRID_CSV)
    assert [(r["scheme"], r["learning_rate"], r["diverged_at_step"] == "0", r["trains"])
            for r in grid_rows] == [("none", "0.1", True, "1"), ("none", "1e+39", False, "0"),
                                    ("batch", "0.1", True, "1"), ("batch", "1e+39", False, "0")]
    assert grid_rows[1]["final_train_acc"] == "nan"
    epochs = atomic.read_csv(tmp_path / study.ACCURACY_CSV)
    assert [(r["scheme"], r["learning_rate"], r["epoch"]) for r in epochs] == [
        ("none", "0.1", "1"), ("batch", "0.1", "1")]
    assert epochs[0]["train_acc"] == grid_rows[0]["final_train_acc"]
    summary = atomic.read_csv(tmp_path / study.SUMMARY_CSV)
    assert [(r["scheme"], r["largest_lr"], float(r[lr_range.METRIC])) for r in summary] == [
        ("none", "0.1", math.log2(0.1)), ("batch", "0.1", math.log2(0.1))]
    (verdict,) = atomic.read_csv(tmp_path / study.VERDICTS_CSV)
    assert (verdict["kind"], verdict["verdict"]) == ("difference", "inconclusive")
    assert (tmp_path / "lr_range.png").exists()


# ---- saturation: seed 002's "and so" as a claim of its own

def test_saturations_and_so_is_bns_lead_at_the_wide_init_against_the_narrow_one():
    from experiments.papers import saturation
    accuracy = {(0.5, "batch"): (0.90, 0.92, 0.91), (0.5, "none"): (0.80, 0.80, 0.80),
                (0.05, "batch"): (0.95, 0.96, 0.97), (0.05, "none"): (0.90, 0.90, 0.90)}
    summary = [dict(scheme=scheme, seed=seed, init_std=std, final_test_acc=value)
               for (std, scheme), values in accuracy.items() for seed, value in enumerate(values)]
    ctx = context(["none", "batch"], summary, settings=(0.05, 0.5))
    ctx.seeds = [0, 1, 2]
    (decided,) = saturation.lead_verdicts(ctx)
    # Leads (0.10, 0.12, 0.11) at 0.5 against (0.05, 0.06, 0.07) at 0.05: differences
    # (0.05, 0.06, 0.04), 0.05 -+ 4.302653 x 0.01 / sqrt(3).
    assert decided.tested.mean == pytest.approx(0.05)
    assert decided.tested.low == pytest.approx(0.05 - 4.302653 * 0.01 / math.sqrt(3), abs=1e-6)
    assert (decided.claim.kind, decided.claim.direction, decided.verdict) == (
        "difference", +1, "supported")
    assert decided.a_value.mean == pytest.approx(0.11)
