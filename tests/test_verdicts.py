"""The four kinds of claim (tfnorm.analysis.verdicts, rules in tfnorm.analysis.stats) against cases computed
by hand: each rule with the interval inside, at and outside its margin, threshold or
value; NaN; censored pairs; and the committed studies' verdict tables regenerated from
their own summary.csv (the port to one Claim type changed no verdict).

Each case is written so that a plausible mistake fails it: a bound at the margin counted
as inside, a point value "supported", the mean of ratios instead of the log-ratio, a pair
censored on both sides kept as evidence, a threshold's direction flipped."""

import csv
import importlib
import math
import os

import pytest

from tfnorm.analysis import stats, verdicts

T2 = 4.302653  # t_{0.975, 2}: three seeds
HALF3 = T2 / math.sqrt(3)  # the half width of three values with s = 1: 2.484138


def interval_between(low, high, n=5):
    return stats.Interval((low + high) / 2, low, high, n, (high - low) / 2, "t", 0, 0)


def rows_of(**units):
    """Per-seed rows {scheme, seed, m} from unit -> values (seed = position)."""
    return [dict(scheme=unit, seed=seed, m=value) for unit, values in units.items()
            for seed, value in enumerate(values)]


def decide_one(claim, censored_at=None, **units):
    (decided,) = verdicts.decide([claim], rows_of(**units),
                                 censored_at={"m": censored_at} if censored_at else None)
    return decided


# ---- equivalence: supported strictly inside (-margin, margin), contradicted wholly outside

@pytest.mark.parametrize("low, high, expected", [
    (-0.1, 0.1, "supported"),        # inside
    (-0.2, 0.1, "inconclusive"),     # a bound exactly at -margin touches it
    (-0.1, 0.2, "inconclusive"),     # ... and at +margin
    (0.2, 0.5, "inconclusive"),      # wholly outside but touching +margin
    (0.21, 0.5, "contradicted"),     # wholly above the margin
    (-0.5, -0.21, "contradicted"),   # wholly below
    (-0.3, 0.3, "inconclusive"),     # wider than the margin on both sides
    (0.1, 0.3, "inconclusive"),      # straddles +margin
    (math.nan, math.nan, "inconclusive"),
])
def test_equivalence_rule_at_inside_and_outside_the_margin(low, high, expected):
    assert stats.equivalence_verdict(interval_between(low, high), 0.2) == expected


def test_equivalence_on_paired_rows_by_hand():
    # d = a - b = (1, 2, 3): mean 2, s = 1, interval 2 -+ 2.484138 = [-0.484, 4.484].
    claim = verdicts.equivalence("a about b", "m", "a", "b", margin=5.0)
    decided = decide_one(claim, a=[2.0, 4.0, 6.0], b=[1.0, 2.0, 3.0])
    assert decided.tested.low == pytest.approx(2 - HALF3, abs=1e-5)
    assert decided.tested.high == pytest.approx(2 + HALF3, abs=1e-5)
    assert decided.verdict == "supported"
    narrow = verdicts.equivalence("a about b", "m", "a", "b", margin=4.0)
    assert decide_one(narrow, a=[2.0, 4.0, 6.0], b=[1.0, 2.0, 3.0]).verdict == "inconclusive"
    # Identical differences (2, 2, 2): the interval is [2, 2]; a margin of exactly 2 is
    # touched (inconclusive), 1.9 lies below it (contradicted), 2.1 holds it (supported).
    same = dict(a=[3.0, 4.0, 5.0], b=[1.0, 2.0, 3.0])
    for margin, expected in ((2.0, "inconclusive"), (1.9, "contradicted"), (2.1, "supported")):
        claim = verdicts.equivalence("a about b", "m", "a", "b", margin=margin)
        assert decide_one(claim, **same).verdict == expected, margin


# ---- threshold: the unit's interval against a stated value, with a direction

def test_threshold_by_hand_in_both_directions():
    # a = (0.5, 0.55, 0.6): mean 0.55, s = 0.05, interval 0.55 -+ 0.124207 = [0.4258, 0.6742].
    a = [0.5, 0.55, 0.6]
    low, high = 0.55 - 0.05 * HALF3, 0.55 + 0.05 * HALF3
    exact = stats.interval(a)
    assert (exact.low, exact.high) == pytest.approx((low, high), abs=1e-6)
    below = [(0.7, "supported"), (0.6, "inconclusive"), (0.4, "contradicted"),
             (exact.high, "inconclusive")]  # a bound exactly at the value excludes nothing
    for value, expected in below:
        claim = verdicts.threshold("a stays below", "m", "a", value, -1)
        decided = decide_one(claim, a=a)
        assert decided.verdict == expected, value
        assert decided.a_value.low == pytest.approx(low, abs=1e-6)
        assert decided.tested.low == pytest.approx(low - value, abs=1e-6)
    above = verdicts.threshold("a passes 0.4", "m", "a", 0.4, +1)
    assert decide_one(above, a=a).verdict == "supported"
    assert decide_one(verdicts.threshold("a passes 0.7", "m", "a", 0.7, +1),
                      a=a).verdict == "contradicted"
    at_low = verdicts.threshold("a passes", "m", "a", exact.low, +1)
    assert decide_one(at_low, a=a).verdict == "inconclusive"


# ---- ratio and point value: contradicted when excluded, never supported

def test_ratio_is_the_paired_log_ratio_by_hand():
    # a / b = (2, 4, 8): ln = ln2 (1, 2, 3), mean 2 ln2 (ratio 4), s = ln2,
    # interval exp(2 ln2 -+ ln2 * 2.484138) = [0.7149, 22.38]. The mean of the ratios
    # (14/3 = 4.67) and the ratio of the means would both differ.
    decided = decide_one(verdicts.ratio("a four times b", "m", "a", "b", 4.0),
                         a=[2.0, 4.0, 8.0], b=[1.0, 1.0, 1.0])
    assert decided.tested.mean == pytest.approx(4.0)
    assert decided.tested.low == pytest.approx(math.exp(math.log(2) * (2 - HALF3)), rel=1e-5)
    assert decided.tested.high == pytest.approx(math.exp(math.log(2) * (2 + HALF3)), rel=1e-5)
    assert decided.verdict == "inconclusive"  # 4 inside: never "supported"
    assert decide_one(verdicts.ratio("30 times", "m", "a", "b", 30.0), a=[2.0, 4.0, 8.0],
                      b=[1.0, 1.0, 1.0]).verdict == "contradicted"


@pytest.mark.parametrize("value, expected", [
    (1.16, "contradicted"),   # the constant ratio 2 excludes 1.16
    (2.0, "inconclusive"),    # the interval [2, 2] touches it: never supported
    (2.5, "contradicted"),
])
def test_ratio_at_inside_and_outside_the_value(value, expected):
    claim = verdicts.ratio("a is value times b", "m", "a", "b", value)
    assert decide_one(claim, a=[2.0, 4.0, 8.0], b=[1.0, 2.0, 4.0]).verdict == expected


def test_ratio_is_symmetric_and_refuses_non_positive_values():
    a, b = [1.3, 2.1, 2.8, 1.9], [1.0, 1.1, 1.5, 1.2]
    for value in (1.0, 1.16, 1.7, 2.5):
        forth = decide_one(verdicts.ratio("", "m", "a", "b", value), a=a, b=b)
        back = decide_one(verdicts.ratio("", "m", "b", "a", 1 / value), a=a, b=b)
        assert forth.verdict == back.verdict
        assert forth.tested.low == pytest.approx(1 / back.tested.high)
    with pytest.raises(ValueError, match="> 0"):
        decide_one(verdicts.ratio("", "m", "a", "b", 1.0), a=[1.0, 0.0], b=[1.0, 1.0])


@pytest.mark.parametrize("low, high, value, expected", [
    (0.9, 1.1, 1.0, "inconclusive"),   # inside: never supported
    (1.0, 1.1, 1.0, "inconclusive"),   # a bound at the value
    (0.2, 0.4, 1.0, "contradicted"),
    (1.2, 1.4, 1.0, "contradicted"),
    (math.nan, math.nan, 1.0, "inconclusive"),
])
def test_point_value_rule(low, high, value, expected):
    assert stats.point_verdict(interval_between(low, high), value) == expected
    claim = verdicts.point_value("rate is value", "rate", "plain", value)
    tested = stats.shifted(interval_between(low, high), value)
    assert verdicts.judge(claim, tested).verdict == expected


def test_point_value_on_rows_is_never_supported():
    claim = verdicts.point_value("a is 1", "m", "a", 1.0)
    assert decide_one(claim, a=[0.9, 1.0, 1.1]).verdict == "inconclusive"
    assert decide_one(verdicts.point_value("a is 2", "m", "a", 2.0),
                      a=[0.9, 1.0, 1.1]).verdict == "contradicted"


# ---- difference (today's rule) through decide, NaN

def test_difference_pairs_by_seed_and_drops_an_undefined_pair():
    rows = rows_of(a=[3.0, 4.0, 5.5, math.nan], b=[1.0, 2.5, 3.0, 9.0])
    above, below = verdicts.decide([verdicts.difference("a above b", "m", "a", "b", +1),
                                    verdicts.difference("a below b", "m", "a", "b", -1)], rows)
    assert (above.verdict, below.verdict) == ("supported", "contradicted")
    assert above.tested.mean == pytest.approx(2.0) and above.tested.n == 3
    assert above.tested.missing == 1 and above.a_value.missing == 1


def test_nan_everywhere_is_inconclusive_for_every_kind():
    nan = dict(a=[math.nan] * 3, b=[math.nan] * 3)
    claims = [verdicts.difference("", "m", "a", "b", +1),
              verdicts.equivalence("", "m", "a", "b", 0.1),
              verdicts.threshold("", "m", "a", 0.5, -1),
              verdicts.ratio("", "m", "a", "b", 1.16),
              verdicts.point_value("", "m", "a", 1.0)]
    for decided in verdicts.decide(claims, rows_of(**nan)):
        assert decided.verdict == "inconclusive" and decided.tested.n == 0, decided.claim.kind


def test_constructors_refuse_a_claim_without_its_direction_margin_or_value():
    with pytest.raises(ValueError, match="direction"):
        verdicts.difference("", "m", "a", "b", 0)
    with pytest.raises(ValueError, match="direction"):
        verdicts.threshold("", "m", "a", 0.6, 2)
    for margin in (0.0, -0.1, math.inf, None):
        with pytest.raises(ValueError, match="margin"):
            verdicts.equivalence("", "m", "a", "b", margin)
    with pytest.raises(ValueError, match="value"):
        verdicts.point_value("", "m", "a", math.nan)
    with pytest.raises(ValueError, match="> 0"):
        verdicts.ratio("", "m", "a", "b", -1.16)


# ---- censored measures ("never" = epochs + 1)

# results/article/runs.csv, epoch_to_95 at 20 epochs ("never" counts as 21): Box-Cox's
# seed 4 and none's seeds 0, 2, 4 never reach 95%.
BOXCOX = [11.0, 13.0, 12.0, 14.0, math.nan]
NONE = [math.nan, 17.0, math.nan, 18.0, math.nan]
BATCH = [6.0, 5.0, 6.0, 7.0, 7.0]


def test_a_pair_censored_on_both_sides_makes_a_supported_difference_inconclusive():
    # Differences -10, -4, -9, -4, 0: mean -5.4, interval [-10.5, -0.3]: supported by the
    # substitution alone, but seed 4's pair (21 - 21) can move either way.
    faster = verdicts.difference("Box-Cox sooner", "m", "boxcox", "none", -1)
    decided = decide_one(faster, censored_at=21, boxcox=BOXCOX, none=NONE)
    assert decided.tested.mean == pytest.approx(-5.4) and decided.tested.high < 0
    assert decided.tested.censored == 3
    assert decided.verdict == "inconclusive"
    # Only none censored: each true difference can only be more negative: it stands.
    batch = verdicts.difference("BN sooner", "m", "batch", "none", -1)
    assert decide_one(batch, censored_at=21, batch=BATCH, none=NONE).verdict == "supported"
    # The same rule inside stats.summarize (compare's summary.md).
    rows = rows_of(boxcox=BOXCOX, none=NONE, batch=BATCH)
    summary = stats.summarize(rows, ["m"], baseline="none", directions={"m": -1},
                              censored_at={"m": 21})
    by = {c.scheme: c.verdict for c in summary.comparisons}
    assert by == {"boxcox": "inconclusive", "batch": "supported"}


def test_censoring_keeps_a_verdict_only_when_it_cannot_change_it():
    assert stats.censoring_moves([1, math.nan, math.nan, 2], [math.nan, 3, math.nan, 4]) == (
        -1, 1, 0)
    below = interval_between(-3.0, -1.0)
    assert stats.verdict(below, -1, censoring=(-1, -1)) == "supported"
    assert stats.verdict(below, -1, censoring=(-1, 1)) == "inconclusive"
    assert stats.verdict(below, +1, censoring=(-1,)) == "contradicted"
    assert stats.verdict(below, +1, censoring=(0,)) == "inconclusive"
    # A later A ("A sooner than B" with A censored) is evidence against the claim that
    # can only grow: a contradiction stands.
    above = interval_between(1.0, 3.0)
    assert stats.verdict(above, -1, censoring=(1,)) == "contradicted"
    # Equivalence: any censored pair could leave the margin.
    assert stats.equivalence_verdict(interval_between(-0.1, 0.1), 0.2, censoring=(-1,)) == (
        "inconclusive")
    assert stats.equivalence_verdict(interval_between(0.3, 0.5), 0.2, censoring=(1,)) == (
        "contradicted")


def test_censored_threshold_and_refused_kinds():
    # "BN never reaches 95% by epoch 10": BN's times (3, 4, never=11) below 10.5?
    # Censored seeds can only be later: "below" cannot stand, "above" can.
    times = [3.0, 4.0, math.nan]
    below = verdicts.threshold("reaches it before 10.5", "m", "batch", 10.5, -1)
    assert decide_one(below, censored_at=11, batch=times).verdict == "inconclusive"
    late = [12.0, 13.0, math.nan]  # 12, 13, 14 (never): well above 5
    above = verdicts.threshold("takes more than 5", "m", "batch", 5.0, +1)
    assert decide_one(above, censored_at=14, batch=late).verdict == "supported"
    with pytest.raises(ValueError, match="censored"):
        decide_one(verdicts.ratio("", "m", "a", "b", 2.0), censored_at=11, a=[1.0, 2.0],
                   b=[1.0, 2.0])


# ---- the tables

def test_rows_and_markdown_show_each_kind_with_its_margin_or_value():
    claims = [verdicts.difference("d", "m", "a", "b", +1),
              verdicts.equivalence("e", "m", "a", "b", 0.25),
              verdicts.threshold("t", "m", "a", 0.6, -1),
              verdicts.ratio("r", "m", "a", "b", 1.16),
              verdicts.point_value("v", "m", "a", 0.5, note="(a note)")]
    rows = verdicts.rows(verdicts.decide(claims, rows_of(a=[2.0, 4.0, 6.0],
                                                        b=[1.0, 2.0, 3.0])))
    assert [(r["kind"], r["margin_or_value"]) for r in rows] == [
        ("difference", ""), ("equivalence", 0.25), ("threshold", 0.6), ("ratio", 1.16),
        ("value", 0.5)]
    assert [r["direction"] for r in rows] == [1, 0, -1, 0, 0]
    assert rows[2]["b"] == 0.6 and rows[2]["b_value"] == "0.6"
    lines = verdicts.markdown(rows).splitlines()
    assert lines[0].startswith("| paper's sentence | kind |")
    assert lines[2].startswith("| d | difference | m: a 4 [")
    assert lines[3].startswith("| e | equivalence +-0.25 |")
    assert lines[4].startswith("| t | threshold 0.6 | m: a 4 [") and "; reference 0.6 |" in lines[4]
    assert "| ratio 1.16 |" in lines[5] and "| a / b = 2 [2, 2] (n = 3) |" in lines[5]
    assert lines[6].startswith("| v *(a note)* | value 0.5 |")
    assert [verdicts.describe(c) for c in claims] == [
        "m: a > b", "m: |a - b| < 0.25", "m: a < 0.6", "m: a / b = 1.16", "m: a = 0.5"]


# ---- the committed studies: their verdict step redone from their own files

STUDY_DIRS = {"ics": "papers.ics", "ics_init0.15": "papers.ics", "landscape": "papers.landscape",
              "landscape_init0.15": "papers.landscape", "noisy_bn": "papers.noisy_bn",
              "saturation": "papers.saturation", "shattered": "papers.shattered", "weightnorm": "papers.weightnorm",
              "weightnorm_sgd": "papers.weightnorm", "lr_range": "papers.lr_range"}
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


@pytest.mark.parametrize("directory", sorted(STUDY_DIRS))
def test_committed_verdicts_regenerate_from_their_own_files(directory, tmp_path):
    from experiments import study
    module = importlib.import_module(f"experiments.{STUDY_DIRS[directory]}")
    source = os.path.join(RESULTS, directory)
    study.redo_verdicts(module.STUDY, source, str(tmp_path))
    for name in (study.VERDICTS_CSV, study.VERDICTS_MD):
        with open(os.path.join(source, name)) as committed, open(tmp_path / name) as redone:
            assert redone.read() == committed.read(), name
    with open(tmp_path / study.VERDICTS_CSV) as f:
        assert {row["kind"] for row in csv.DictReader(f)} <= set(verdicts.KINDS)
