"""tfnorm.analysis.stats against values computed by hand or by an independent scipy routine.

Each test is written so that a plausible mistake fails it: the normal quantile instead
of Student's t, low and high swapped, pairs matched by position instead of seed id,
a zero-width interval for one seed, NaN silently averaged in or imputed."""

import math
import random

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tfnorm.analysis import stats

# [1, 2, 3, 4, 5]: mean 3, s = sqrt(2.5) = 1.581139, t_{0.975, 4} = 2.776445,
# half width 2.776445 * 1.581139 / sqrt(5) = 1.963243 (the normal 1.96 would give 1.385903).
BY_HAND_HALF_WIDTH = 1.963243


def test_t_interval_of_one_to_five_equals_the_hand_computation():
    result = stats.interval([1, 2, 3, 4, 5])
    assert result.mean == pytest.approx(3.0)
    assert result.half_width == pytest.approx(BY_HAND_HALF_WIDTH, abs=1e-6)
    assert result.low == pytest.approx(3 - BY_HAND_HALF_WIDTH, abs=1e-6)
    assert result.high == pytest.approx(3 + BY_HAND_HALF_WIDTH, abs=1e-6)
    assert (result.n, result.missing, result.censored, result.method) == (5, 0, 0, "t")


def test_t_interval_matches_scipy_and_narrows_with_confidence():
    values = np.random.default_rng(3).normal(0.9, 0.02, size=7)
    low, high = scipy_stats.t.interval(0.95, 6, loc=values.mean(),
                                       scale=scipy_stats.sem(values))
    result = stats.interval(values)
    assert (result.low, result.high) == pytest.approx((low, high), rel=1e-12)
    narrower = stats.interval(values, confidence=0.5)
    assert result.low < narrower.low < narrower.high < result.high


def test_one_seed_gives_an_infinite_interval_not_a_zero_width_one():
    result = stats.interval([0.7])
    assert result.mean == 0.7 and result.n == 1
    assert result.low == -math.inf and result.high == math.inf
    assert stats.verdict(stats.paired_difference([0.9], [0.1])) == stats.INCONCLUSIVE


def test_no_defined_value_gives_nan_and_an_inconclusive_verdict():
    result = stats.interval([math.nan, math.nan])
    assert result.n == 0 and result.missing == 2
    assert math.isnan(result.mean) and math.isnan(result.low) and math.isnan(result.high)
    assert stats.verdict(result, +1) == stats.verdict(result, -1) == stats.INCONCLUSIVE
    assert stats.format_interval(result) == "- (2 undefined)"


def test_nan_is_left_out_and_counted_never_averaged_in():
    with_nan = stats.interval([1, 2, math.nan, 3, 4, 5])
    assert with_nan[:5] == pytest.approx(stats.interval([1, 2, 3, 4, 5])[:5])
    assert (with_nan.n, with_nan.missing, with_nan.censored) == (5, 1, 0)


def test_censored_times_take_the_limit_and_are_counted():
    result = stats.interval([3, math.nan, 4], censored_at=11)
    assert result.mean == pytest.approx(6.0)
    assert (result.n, result.missing, result.censored) == (3, 0, 1)
    assert "(1 never)" in stats.format_interval(result)


def test_infinite_values_and_bad_confidence_are_refused():
    with pytest.raises(ValueError, match="infinite"):
        stats.interval([1.0, math.inf])
    with pytest.raises(ValueError, match="confidence"):
        stats.interval([1.0, 2.0], confidence=95)


def test_paired_difference_is_the_t_interval_of_per_seed_differences():
    a, b = [0.91, 0.93, 0.95, 0.90, 0.96], [0.80, 0.83, 0.84, 0.80, 0.84]
    differences = [0.11, 0.10, 0.11, 0.10, 0.12]
    result = stats.paired_difference(a, b)
    reference = stats.interval(differences)
    assert result[:5] == pytest.approx(reference[:5], abs=1e-12)
    assert result.method == "paired t"
    # Pairing removes the seed-to-seed spread both share: narrower than either alone.
    assert result.half_width < stats.interval(a).half_width
    swapped = stats.paired_difference(b, a)
    assert (swapped.low, swapped.high) == pytest.approx((-result.high, -result.low))


def test_paired_difference_refuses_unequal_lengths_and_mismatched_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="seeds differ"):
        stats.paired_difference([1, 2], [1, 2], seeds_a=[0, 1], seeds_b=[1, 0])
    with pytest.raises(ValueError, match="both sides"):
        stats.paired_difference([1, 2], [1, 2], seeds_a=[0, 1])
    assert stats.paired_difference([1, 2], [0, 0], seeds_a=[0, 1], seeds_b=[0, 1]).n == 2


def test_paired_difference_drops_a_pair_with_an_undefined_side_or_censors_it():
    dropped = stats.paired_difference([3, math.nan, 5], [1, 2, math.nan])
    assert (dropped.n, dropped.missing, dropped.mean) == (1, 2, 2.0)
    censored = stats.paired_difference([3, 4, 5], [math.nan, math.nan, 6], censored_at=11)
    assert (censored.n, censored.censored) == (3, 2)
    assert censored.mean == pytest.approx(((3 - 11) + (4 - 11) + (5 - 6)) / 3)


def interval_between(low, high):
    return stats.Interval((low + high) / 2, low, high, 5, (high - low) / 2, "t", 0, 0)


@pytest.mark.parametrize("low, high, direction, expected", [
    (0.1, 0.3, +1, "supported"),
    (0.1, 0.3, -1, "contradicted"),
    (-0.3, -0.1, -1, "supported"),
    (-0.3, -0.1, +1, "contradicted"),
    (-0.1, 0.3, +1, "inconclusive"),
    (-0.3, 0.1, -1, "inconclusive"),
    (0.0, 0.3, +1, "inconclusive"),     # a bound at 0 does not exclude it
    (-0.3, 0.0, -1, "inconclusive"),
    (-math.inf, math.inf, +1, "inconclusive"),
])
def test_verdict_in_both_directions(low, high, direction, expected):
    assert stats.verdict(interval_between(low, high), direction) == expected


def test_verdict_refuses_a_bad_direction_and_a_swapped_interval():
    with pytest.raises(ValueError, match="direction"):
        stats.verdict(interval_between(0.1, 0.3), direction=2)
    with pytest.raises(ValueError, match="low"):
        stats.verdict(stats.Interval(0.0, 0.3, 0.1, 5, 0.1, "t", 0, 0))


def test_verdict_from_data_end_to_end():
    faster, slower = [3, 4, 3, 5, 4], [7, 8, 6, 9, 8]
    assert stats.verdict(stats.paired_difference(faster, slower), -1) == stats.SUPPORTED
    assert stats.verdict(stats.paired_difference(faster, slower), +1) == stats.CONTRADICTED
    noisy = [0.5, -0.4, 0.3, -0.2, 0.1]
    assert stats.verdict(stats.paired_difference(noisy, [0] * 5), +1) == stats.INCONCLUSIVE


DEPTHS = np.arange(1, 9)


def test_fit_decay_recovers_an_exact_exponential_and_chooses_it():
    fit = stats.fit_decay(DEPTHS, 0.8 * 2.0 ** (-1.0 * DEPTHS))
    assert fit.better == "exponential"
    assert fit.exponential.rate == pytest.approx(1.0)
    assert fit.exponential.scale == pytest.approx(0.8)
    assert fit.exponential.low == pytest.approx(1.0) and fit.exponential.high == pytest.approx(1.0)
    assert fit.exponential.rss < 1e-20 < fit.power_law.rss


def test_fit_decay_recovers_an_exact_power_law_and_chooses_it():
    fit = stats.fit_decay(DEPTHS, 0.9 * DEPTHS ** -0.5)
    assert fit.better == "power_law"
    assert fit.power_law.rate == pytest.approx(0.5)
    assert fit.power_law.scale == pytest.approx(0.9)
    assert fit.power_law.rss < 1e-20 < fit.exponential.rss


@pytest.mark.parametrize("model, truth", [("exponential", 1.0), ("power_law", 0.5)])
def test_fit_decay_with_noisy_seeds_keeps_the_true_rate_inside_the_interval(model, truth):
    rng = np.random.default_rng(0)
    depths = np.repeat(DEPTHS, 5)  # five seeds per depth, all points used
    clean = 2.0 ** -depths if model == "exponential" else depths ** -0.5
    values = clean * np.exp(rng.normal(0, 0.1, size=depths.size))
    fit = stats.fit_decay(depths, values)
    chosen = getattr(fit, model)
    assert fit.better == model and chosen.n == 40
    assert chosen.low < truth < chosen.high
    assert 0 < chosen.high - chosen.low < 0.2 * truth


def test_fit_decay_interval_uses_t_with_n_minus_2_degrees_of_freedom():
    depths, values = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 0.3, 0.1, 0.07])
    reference = scipy_stats.linregress(depths, np.log(values))
    half = scipy_stats.t.ppf(0.975, 2) * reference.stderr / math.log(2)  # t_{2} = 4.303
    fit = stats.fit_decay(depths, values).exponential
    assert fit.rate == pytest.approx(-reference.slope / math.log(2))
    assert (fit.low, fit.high) == pytest.approx((fit.rate - half, fit.rate + half))


def test_fit_decay_refuses_what_has_no_logarithm():
    with pytest.raises(ValueError, match="<= 0"):
        stats.fit_decay([1, 2, 3], [0.5, 0.1, -0.01])
    with pytest.raises(ValueError, match="depths"):
        stats.fit_decay([0, 1, 2], [0.5, 0.2, 0.1])
    with pytest.raises(ValueError, match="two distinct"):
        stats.fit_decay([3, 3, 3], [0.5, 0.2, 0.1])
    with pytest.raises(ValueError, match="depths against"):
        stats.fit_decay([1, 2, 3], [0.5, 0.2])


def per_seed_rows():
    """Three schemes x five seeds, rows shuffled: batch beats none by 0.1 on every seed,
    and seed k's none accuracy grows with k, so pairing by position would not hold."""
    rows = []
    for seed in range(5):
        base = 0.5 + 0.05 * seed
        rows.append(dict(scheme="none", seed=seed, test_acc=base, epoch_to_95=math.nan))
        rows.append(dict(scheme="batch", seed=seed, test_acc=base + 0.1, epoch_to_95=3 + seed % 2))
        rows.append(dict(scheme="layer", seed=seed, test_acc=base + (-0.02, 0.02)[seed % 2],
                         epoch_to_95=4.0))
    random.Random(1).shuffle(rows)
    return rows


def test_summarize_pairs_by_seed_id_and_applies_the_verdict_rule():
    summary = stats.summarize(per_seed_rows(), ["test_acc", "epoch_to_95"], baseline="none",
                              directions={"epoch_to_95": -1}, censored_at={"epoch_to_95": 11})
    assert set(summary.per_scheme) == {"none", "batch", "layer"}
    none_acc = summary.per_scheme["none"]["test_acc"]
    assert none_acc.mean == pytest.approx(0.6) and none_acc.n == 5
    decided = {(c.scheme, c.metric): c for c in summary.comparisons}
    batch_acc = decided["batch", "test_acc"]
    assert batch_acc.difference.mean == pytest.approx(0.1)
    assert batch_acc.difference.half_width == pytest.approx(0, abs=1e-12)  # paired by seed
    assert batch_acc.verdict == stats.SUPPORTED
    assert decided["layer", "test_acc"].verdict == stats.INCONCLUSIVE
    assert decided["batch", "epoch_to_95"].verdict == stats.SUPPORTED
    assert decided["batch", "epoch_to_95"].difference.censored == 5
    assert len(stats.flat_rows(summary)) == 3 * 2 + 2 * 2


def test_summarize_refuses_unpaired_or_duplicated_seeds_and_unknown_baseline():
    rows = per_seed_rows()
    with pytest.raises(ValueError, match="pairing needs the same"):
        stats.summarize([r for r in rows if not (r["scheme"] == "batch" and r["seed"] == 2)],
                        ["test_acc"], baseline="none")
    with pytest.raises(ValueError, match="given twice"):
        stats.summarize(rows + rows[:1], ["test_acc"])
    with pytest.raises(ValueError, match="baseline"):
        stats.summarize(rows, ["test_acc"], baseline="group")
    with pytest.raises(ValueError, match="lacks"):
        stats.summarize(rows, ["best_acc"])


def test_markdown_table_shows_mean_interval_seeds_and_verdicts():
    summary = stats.summarize(per_seed_rows(), ["test_acc", "epoch_to_95"], baseline="none",
                              directions={"epoch_to_95": -1}, censored_at={"epoch_to_95": 11})
    text = stats.markdown_table(summary)
    lines = text.splitlines()
    assert lines[0] == "| scheme | test_acc | epoch_to_95 | seeds |"
    none_row = next(line for line in lines if line.startswith("| none |"))
    assert none_row == "| none | 0.6 [0.502, 0.698] | 11 [11, 11] (5 never) | 5 |"
    assert "| test_acc: batch > none | 0.1 [0.1, 0.1] | 5 | supported |" in lines
    assert any(line.startswith("| epoch_to_95: batch < none |") and
               line.endswith("| supported |") for line in lines)
