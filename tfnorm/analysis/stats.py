"""Intervals over seeds, paired differences and the one verdict rule (numpy + scipy only).

Every number the project reports is a mean over seeds with a 95% Student t interval,
and every comparison is paired by seed (same seed = same initialization and data order):

    mean  m = (1/n) sum x_i,   s^2 = 1/(n-1) sum (x_i - m)^2
    half width h = t_{(1+c)/2, n-1} * s / sqrt(n),   interval [m - h, m + h]

A claim is decided on a 95% interval by the rule of the question it asks (the claim
types and tables are tfnorm.analysis.verdicts; the rules are here, once):

- difference, ``verdict``: "A > B" (direction +1) or "A < B" (-1) on the interval of the
  paired differences d_i = A_i - B_i: *supported* when it excludes 0 on the claimed side,
  *contradicted* when it excludes 0 on the other side, *inconclusive* otherwise. A
  threshold ("A's metric stays below 0.6") is the same rule on A_i - value.
- equivalence, ``equivalence_verdict``: "A and B are within +-margin": *supported* when
  the interval of d lies inside (-margin, +margin), *contradicted* when it lies wholly
  outside, *inconclusive* otherwise.
- point value, ``point_verdict`` ("16% slower" = a ratio 1.16, a decay rate 1):
  *contradicted* when the interval excludes the value, *inconclusive* otherwise, never
  supported: an interval that holds the value holds its neighbours too, so the data
  cannot single it out (to support "about 16%", state a margin: an equivalence).

Boundaries: the interval is closed, so a bound exactly at 0, at the value or at +-margin
touches it: it neither excludes 0 nor lies wholly inside or outside the margin (such a
case is inconclusive in every rule).

Missing values (NaN) mean "undefined for this seed". By default they are never
imputed: ``interval`` uses the defined values and counts the others in ``missing``;
``paired_difference`` drops a pair when either side is undefined and counts it.
Times to a threshold ("epoch at which train accuracy first reaches 95%") are the one
exception, because "never" is information, not noise: dropping it would throw away
the strongest evidence (a baseline that never gets there leaves no pair at all). The
caller passes ``censored_at`` = epochs + 1 and "never" becomes that value, counted in
``censored``. It is a lower bound of the true time, so a censored pair's true
difference can move from the substituted one: only up when A alone is censored, only
down when B alone is, either way when both are (``censoring_moves``). The rules take
those moves and keep a verdict only when the censoring cannot change it: every censored
pair can only move further to the side the interval already excludes (a claim "A
sooner than B" supported while only B has censored seeds: the true gap is larger). Any
other censored pair makes the verdict inconclusive; in particular a pair censored on
both sides, and any censored pair under an equivalence (it could leave the margin). We
bound the move of the mean, not of the interval's width (a larger true gap also spreads
the differences); this is the bounds argument, not a survival-analysis method.
Tables print the counts beside every interval. Infinite values are refused.
"""

import collections
import math

import numpy as np

Interval = collections.namedtuple(
    "Interval", ["mean", "low", "high", "n", "half_width", "method", "missing", "censored"])
Interval.__doc__ = """Mean of n values with [low, high] = mean -+ half_width; ``missing``:
NaN values left out; ``censored``: NaN values set to ``censored_at`` (counted in n).
n=1: (-inf, inf); n=0: all NaN."""

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"


def _t_quantile(confidence, dof):
    """t_{(1+c)/2, dof}. scipy is imported here, not with the module: a script that
    imports tfnorm.analysis.stats answers a bad flag before paying for scipy.stats (0.5-1 s here)."""
    from scipy import stats as scipy_stats
    return float(scipy_stats.t.ppf((1 + confidence) / 2, dof))


def _finite_or_nan(values, name, censored_at=None):
    """values as floats; with ``censored_at``, NaN replaced by it. Returns (values, censored)."""
    values = np.asarray(values, dtype=float).ravel()
    if np.isinf(values).any():
        raise ValueError(f"{name}: infinite value(s) at {np.flatnonzero(np.isinf(values))}")
    if censored_at is None:
        return values, np.zeros(values.shape, bool)
    censored = np.isnan(values)
    return np.where(censored, float(censored_at), values), censored


def interval(values, confidence=0.95, censored_at=None):
    """Student t interval of the mean over seeds (see the module docstring for the formula).

    n = 1 has no spread to estimate: (-inf, +inf), never a zero-width interval.
    n = 0 (nothing defined): mean, low, high, half_width NaN."""
    values, censored = _finite_or_nan(values, "interval", censored_at)
    return _t_interval(values, confidence, "t", int(censored.sum()))


def _t_interval(values, confidence, method, censored):
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    defined = values[~np.isnan(values)]
    n, missing = defined.size, int(values.size - defined.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, method, missing, censored)
    mean = float(defined.mean())
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, math.inf, method, missing, censored)
    quantile = _t_quantile(confidence, n - 1)
    half = float(quantile * defined.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, half, method, missing, censored)


def paired_difference(a, b, confidence=0.95, seeds_a=None, seeds_b=None, censored_at=None):
    """t interval of d_i = a_i - b_i over seeds, a and b in the same seed order.

    Unequal lengths are refused; so are seed ids (if given) that differ in any
    position. A pair with a NaN on either side is dropped and counted in ``missing``;
    with ``censored_at``, NaN becomes that value and ``censored`` counts such pairs."""
    a, censored_a = _finite_or_nan(a, "paired_difference a", censored_at)
    b, censored_b = _finite_or_nan(b, "paired_difference b", censored_at)
    if a.size != b.size:
        raise ValueError(f"paired_difference: {a.size} values against {b.size}; a pair "
                         "needs the same seeds on both sides")
    if (seeds_a is None) != (seeds_b is None):
        raise ValueError("paired_difference: give seed ids for both sides or neither")
    if seeds_a is not None and list(seeds_a) != list(seeds_b):
        raise ValueError(f"paired_difference: seeds differ ({list(seeds_a)} against "
                         f"{list(seeds_b)}); pair the same seeds in the same order")
    return _t_interval(a - b, confidence, "paired t", int((censored_a | censored_b).sum()))


def censoring_moves(a, b=None):
    """Which way each censored pair's true difference a - b can move from the substituted
    one (NaN = censored, before ``censored_at`` replaces it): +1 when only a is censored
    (a's true time is later), -1 when only b is, 0 when both are (either way). With b
    None (a threshold on a alone) every censored a moves +1. Returns a tuple, one entry
    per censored pair."""
    a = np.isnan(np.asarray(a, dtype=float).ravel())
    b = np.zeros(a.shape, bool) if b is None else np.isnan(np.asarray(b, dtype=float).ravel())
    return tuple(0 if ca and cb else 1 if ca else -1 for ca, cb in zip(a, b) if ca or cb)


def _side(value_interval, reference):
    """+1 if the interval lies strictly above ``reference``, -1 strictly below, 0 if it
    holds or touches it (also NaN: no evidence either way)."""
    low, high = value_interval.low, value_interval.high
    if low > high:
        raise ValueError(f"interval with low {low} > high {high}")
    return 1 if low > reference else -1 if high < reference else 0


def _censoring_allows(side, censoring):
    """A verdict on one ``side`` of the reference stands when every censored pair can
    only move further to that side; side 0 (inside a margin) needs no censored pair."""
    return all(side != 0 and move == side for move in censoring)


def verdict(difference_interval, direction=+1, censoring=()):
    """The difference rule: the claim "A > B" (direction +1) or "A < B" (-1) on the
    interval of d = A - B is supported if the interval lies strictly on the claimed side
    of 0, contradicted if strictly on the other side, inconclusive otherwise (also NaN,
    and when ``censoring``, from ``censoring_moves``, could change the verdict)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 (A > B) or -1 (A < B), got {direction}")
    side = _side(difference_interval, 0.0)
    if side == 0 or not _censoring_allows(side, censoring):
        return INCONCLUSIVE
    return SUPPORTED if side == direction else CONTRADICTED


def equivalence_verdict(difference_interval, margin, censoring=()):
    """The equivalence rule: "A and B are within +-margin" (margin > 0, chosen before the
    data) is supported if the interval of d = A - B lies inside (-margin, margin),
    contradicted if it lies wholly above margin or wholly below -margin, inconclusive
    otherwise (a bound at +-margin touches it; NaN; censoring that could change it)."""
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be finite and > 0, got {margin}")
    above, below = _side(difference_interval, margin), _side(difference_interval, -margin)
    if above == 1 or below == -1:  # wholly outside the margin, on one side
        side = 1 if above == 1 else -1
        return CONTRADICTED if _censoring_allows(side, censoring) else INCONCLUSIVE
    if above == -1 and below == 1 and _censoring_allows(0, censoring):
        return SUPPORTED  # strictly inside (-margin, margin)
    return INCONCLUSIVE


def point_verdict(value_interval, value, censoring=()):
    """The point rule: "the quantity equals ``value``" is contradicted if the interval
    excludes the value (a bound at it does not), inconclusive otherwise; never supported
    (see the module docstring)."""
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    side = _side(value_interval, value)
    return CONTRADICTED if side and _censoring_allows(side, censoring) else INCONCLUSIVE


def shifted(value_interval, value):
    """The interval of x - value (a threshold or a point value seen as a difference)."""
    return value_interval._replace(mean=value_interval.mean - value,
                                   low=value_interval.low - value,
                                   high=value_interval.high - value)


def paired_log_ratio(a, b, confidence=0.95):
    """The ratio A/B paired by seed: the t interval of ln(a_i / b_i), exponentiated:
    mean = exp(mean ln ratio) (the geometric mean ratio), [low, high] = exp(m -+ h),
    half_width = h on the log scale, method "paired log-ratio t". A pair with a NaN side
    is dropped and counted in ``missing``; values <= 0 have no logarithm and are refused.
    Why the log-ratio and not the ratio of means or the mean of a_i / b_i: it is the
    paired difference of ln a and ln b, so seeds pair and the same t rule applies; it is
    symmetric (ln(b/a) = -ln(a/b): "A 16% slower than B" and "B 14% faster than A" get
    the same verdict), and a mean of a_i / b_i is biased above the ratio (Jensen)."""
    a, _ = _finite_or_nan(a, "paired_log_ratio a")
    b, _ = _finite_or_nan(b, "paired_log_ratio b")
    if a.size != b.size:
        raise ValueError(f"paired_log_ratio: {a.size} values against {b.size}")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("paired_log_ratio: values must be > 0 (a ratio of times, sizes)")
    log = _t_interval(np.log(a) - np.log(b), confidence, "paired log-ratio t", 0)
    return log._replace(mean=math.exp(log.mean) if log.n else math.nan,
                        low=math.exp(log.low) if log.n else math.nan,
                        high=math.exp(log.high) if log.n else math.nan)


# ---- decay of the neighbour-gradient correlation with depth (Balduzzi et al.) ----

ModelFit = collections.namedtuple(
    "ModelFit", ["model", "rate", "low", "high", "scale", "rss", "n"])
ModelFit.__doc__ = """One model fitted to log(values): rate with its [low, high] interval,
the scale c, the residual sum of squares (in natural-log units) and the number of points."""
DecayFit = collections.namedtuple("DecayFit", ["exponential", "power_law", "better"])
DecayFit.__doc__ = """Both fits; ``better`` names the one with the smaller residual sum
of squares ("exponential" or "power_law"); both have two parameters, so RSS is fair."""


def _log_linear_fit(x, y, confidence):
    """Least squares y = a + b x; returns (a, b, b's half width, rss).
    SE(b) = sqrt(rss / (n - 2) / sum (x - mean x)^2), half width t_{(1+c)/2, n-2} SE(b)."""
    n, sxx = x.size, float(((x - x.mean()) ** 2).sum())
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    intercept = float(y.mean() - slope * x.mean())
    rss = float(((y - intercept - slope * x) ** 2).sum())
    if n <= 2:  # a line through two points: no residual to estimate the error from
        return intercept, slope, math.inf, rss
    quantile = _t_quantile(confidence, n - 2)
    return intercept, slope, quantile * math.sqrt(rss / (n - 2) / sxx), rss


def fit_decay(depths, values, confidence=0.95):
    """Fit corr(L) ~ c 2^(-r L) (exponential; plain nets r = 1, Balduzzi et al.) and
    corr(L) ~ c L^(-p) (power law; resnets p = 1/2) by least squares on ln(values):

        ln v = ln c - (r ln 2) L      and      ln v = ln c - p ln L

    ``depths`` and ``values`` are paired 1-D sequences: several seeds per depth are
    simply several points at that depth (all are used). The rate's interval is the
    slope's t interval with n - 2 degrees of freedom (n = number of points).

    Values must be > 0: a correlation <= 0 has no logarithm, and dropping it would
    keep only the larger values at the deepest depths and bias the rate towards a
    slower decay. Such values are refused (ValueError); average the seeds at each depth
    first (if the mean is positive) or fit only the depths where every value is > 0."""
    depths = np.asarray(depths, dtype=float).ravel()
    values = np.asarray(values, dtype=float).ravel()
    if depths.size != values.size or not np.isfinite(np.r_[depths, values]).all():
        raise ValueError(f"fit_decay: {depths.size} depths against {values.size} values, "
                         "all finite, are needed")
    if (values <= 0).any():
        bad = sorted(set(depths[values <= 0].tolist()))
        raise ValueError(f"fit_decay: {(values <= 0).sum()} value(s) <= 0 (at depths {bad}) "
                         "have no logarithm; average seeds per depth or drop those depths")
    if (depths <= 0).any():
        raise ValueError("fit_decay: depths must be >= 1 (the power law takes ln L)")
    if np.unique(depths).size < 2:
        raise ValueError("fit_decay: needs at least two distinct depths")
    y, fits = np.log(values), {}
    for model, x, to_rate in (("exponential", depths, math.log(2)),
                              ("power_law", np.log(depths), 1.0)):
        intercept, slope, half, rss = _log_linear_fit(x, y, confidence)
        rate = -slope / to_rate
        fits[model] = ModelFit(model, rate, rate - half / to_rate, rate + half / to_rate,
                               math.exp(intercept), rss, int(y.size))
    better = min(fits, key=lambda m: fits[m].rss)
    return DecayFit(fits["exponential"], fits["power_law"], better)


# ---- per-seed rows -> per-scheme summary and paired comparisons ----

Comparison = collections.namedtuple(
    "Comparison", ["scheme", "baseline", "metric", "direction", "difference", "verdict"])
Comparison.__doc__ = """The claim "scheme > baseline" (direction +1) or "<" (-1) on
``metric``: the Interval of the paired difference scheme - baseline, and its verdict."""
Summary = collections.namedtuple("Summary", ["metrics", "per_scheme", "comparisons"])
Summary.__doc__ = """per_scheme: {scheme: {metric: Interval}} in first-seen order;
comparisons: [Comparison] against the baseline (empty without one)."""


def _by_scheme(rows, metrics, scheme_key, seed_key):
    """{scheme: {seed: row}}; a (scheme, seed) given twice or a missing key is refused."""
    grouped = collections.OrderedDict()
    for row in rows:
        missing = [k for k in (scheme_key, seed_key, *metrics) if k not in row]
        if missing:
            raise ValueError(f"row {row} lacks {missing}")
        seeds = grouped.setdefault(row[scheme_key], {})
        if row[seed_key] in seeds:
            raise ValueError(f"scheme {row[scheme_key]!r}, seed {row[seed_key]!r} given twice")
        seeds[row[seed_key]] = row
    return grouped


def summarize(rows, metrics, baseline=None, directions=None, censored_at=None,
              confidence=0.95, scheme_key="scheme", seed_key="seed"):
    """Per scheme the Interval of each metric over its seeds; with a ``baseline`` scheme,
    the paired difference of every other scheme against it, seed by seed, with the
    verdict of the claim given by ``directions`` {metric: +1 or -1} (default +1: "the
    scheme's metric is larger"). Paired schemes must have exactly the baseline's seeds.
    ``censored_at`` {metric: limit}: the times-to-threshold whose NaN means "never"."""
    directions, censored_at = directions or {}, censored_at or {}
    grouped = _by_scheme(rows, metrics, scheme_key, seed_key)
    per_scheme = collections.OrderedDict(
        (scheme, {m: interval([seeds[s][m] for s in sorted(seeds)], confidence,
                              censored_at.get(m)) for m in metrics})
        for scheme, seeds in grouped.items())
    comparisons = []
    if baseline is not None:
        if baseline not in grouped:
            raise ValueError(f"baseline {baseline!r} not among schemes {list(grouped)}")
        base = grouped[baseline]
        for scheme, seeds in grouped.items():
            if scheme == baseline:
                continue
            if set(seeds) != set(base):
                raise ValueError(f"scheme {scheme!r} has seeds {sorted(seeds)}, baseline "
                                 f"{baseline!r} has {sorted(base)}: pairing needs the same")
            order = sorted(seeds)
            for m in metrics:
                direction = directions.get(m, 1)
                a, b = [seeds[s][m] for s in order], [base[s][m] for s in order]
                diff = paired_difference(a, b, confidence, censored_at=censored_at.get(m))
                moves = censoring_moves(a, b) if m in censored_at else ()
                comparisons.append(Comparison(scheme, baseline, m, direction, diff,
                                              verdict(diff, direction, moves)))
    return Summary(tuple(metrics), per_scheme, comparisons)


def format_interval(value, digits=3):
    """"mean [low, high]" (``digits`` significant digits), then the seeds left out
    ("2 undefined") or censored ("2 never": the mean is then a lower bound); n=0: "-"."""
    notes = [f"{value.missing} undefined"] * bool(value.missing) + [
        f"{value.censored} never"] * bool(value.censored)
    notes = f" ({', '.join(notes)})" if notes else ""
    if value.n == 0:
        return "-" + notes
    return (f"{value.mean:.{digits}g} [{value.low:.{digits}g}, {value.high:.{digits}g}]"
            + notes)


def markdown_table(summary, digits=3):
    """The per-scheme table (a row per scheme, cells "mean [low, high]", then the number
    of seeds) and the paired differences against the baseline with their verdicts."""
    lines = ["| scheme | " + " | ".join(summary.metrics) + " | seeds |",
             "|---" * (len(summary.metrics) + 2) + "|"]
    for scheme, cells in summary.per_scheme.items():
        seeds = max(v.n + v.missing for v in cells.values())
        lines.append(f"| {scheme} | " + " | ".join(format_interval(cells[m], digits)
                                                 for m in summary.metrics) + f" | {seeds} |")
    if summary.comparisons:
        lines += ["", "| claim | paired difference [95% CI] | pairs | verdict |",
                  "|---|---|---|---|"]
        for c in summary.comparisons:
            sign = ">" if c.direction == 1 else "<"
            lines.append(f"| {c.metric}: {c.scheme} {sign} {c.baseline} | "
                         f"{format_interval(c.difference, digits)} | {c.difference.n} "
                         f"| {c.verdict} |")
    return "\n".join(lines) + "\n"


def flat_rows(summary):
    """The summary as CSV-ready dicts: one per (scheme, metric) and one per comparison."""
    cells = [("scheme", s, "", m, v, "") for s, by_metric in summary.per_scheme.items()
             for m, v in by_metric.items()]
    cells += [("paired_difference", c.scheme, c.baseline, c.metric, c.difference, c.verdict)
              for c in summary.comparisons]
    return [dict(kind=kind, scheme=scheme, baseline=baseline, metric=metric, **v._asdict(),
                 verdict=decided) for kind, scheme, baseline, metric, v, decided in cells]
