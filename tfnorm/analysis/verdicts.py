"""Claims and their verdicts: the project's one Claim type, the one ``decide`` and the
verdict tables (rows of verdicts.csv, their markdown), on the rules of tfnorm.analysis.stats.

A claim is a sentence made testable, and it declares the question it asks, its kind:

    kind         the sentence asks                       interval tested (95%, by seed)
    difference   A's metric above (+1) / below (-1) B's    paired A_i - B_i
    equivalence  A's metric within +-margin of B's         paired A_i - B_i
    threshold    A's metric above (+1) / below (-1) value  A_i - value
    ratio        A / B equals value ("16% slower": 1.16)   paired ln(A_i / B_i), exp'd
    value        A's metric equals value (a decay rate 1)  A_i - value

and the rule of its kind decides it (tfnorm.analysis.stats: ``verdict`` for difference and
threshold, ``equivalence_verdict``, ``point_verdict`` for ratio and value, which are
never *supported*). The margin of an equivalence is stated with the claim and chosen
before looking at the data; a claim's table row shows its kind and margin or value.
Build claims with the constructors below, e.g.::

    difference("BN trains faster", "final_train_acc", "batch", "none", +1)
    equivalence("noisy BN trains about as well as BN", "final_train_acc", "noisybatch",
                "batch", margin=0.01)
    threshold("noise alone does not converge", "final_train_acc", "none+noise", 0.5, -1)
    ratio("BN is 16% slower than weight norm", "seconds_per_step", "batch", "weight", 1.16)
    point_value("plain nets decorrelate like 2^-L", "exponential rate", "plain", 1.0)

``where`` ({column: value}) picks the rows of a multi-row table (e.g. {"layer": 2});
``note`` is what the reader must know beside the verdict (a setting we could not match).
"""

import collections
import math

from tfnorm.analysis import stats

DIFFERENCE, EQUIVALENCE, THRESHOLD, RATIO, VALUE = (
    "difference", "equivalence", "threshold", "ratio", "value")
KINDS = (DIFFERENCE, EQUIVALENCE, THRESHOLD, RATIO, VALUE)
# The kinds whose other side is a stated number rather than a unit.
_AGAINST_A_NUMBER = (THRESHOLD, VALUE)

Claim = collections.namedtuple(
    "Claim", ["sentence", "kind", "metric", "a", "b", "direction", "margin", "value",
              "where", "note"])
Claim.__doc__ = """A sentence as a claim of one kind (see the module docstring): on column
``metric``, unit ``a`` against unit ``b`` (difference, equivalence, ratio) or against the
stated ``value`` (threshold, value; b is None); ``direction`` +1/-1 (difference,
threshold; 0 otherwise); ``margin`` (equivalence); ``value`` (threshold, ratio, value).
Build it with the constructors, which check it."""

Decided = collections.namedtuple("Decided", ["claim", "a_value", "b_value", "tested",
                                             "verdict"])
Decided.__doc__ = """A claim and its evidence: the Interval of a's metric and of b's (None
against a number) over the seeds used, the Interval the rule tested (``tested``: a - b,
a - value or a / b, see the module docstring) and the verdict."""


def _claim(sentence, kind, metric, a, b=None, direction=0, margin=None, value=None,
           where=None, note=""):
    if kind in (DIFFERENCE, THRESHOLD) and direction not in (1, -1):
        raise ValueError(f"{kind} claim {sentence!r}: direction must be +1 or -1")
    if kind == EQUIVALENCE and not (margin is not None and math.isfinite(margin)
                                    and margin > 0):
        raise ValueError(f"equivalence claim {sentence!r}: margin must be finite and > 0")
    if kind in (THRESHOLD, RATIO, VALUE) and not (value is not None and math.isfinite(value)):
        raise ValueError(f"{kind} claim {sentence!r}: value must be a finite number")
    if kind == RATIO and value <= 0:
        raise ValueError(f"ratio claim {sentence!r}: value must be > 0")
    return Claim(sentence, kind, metric, a, b, direction, margin, value, where or {}, note)


def difference(sentence, metric, a, b, direction, where=None, note=""):
    """"a's metric is larger (direction +1) or smaller (-1) than b's", paired by seed."""
    return _claim(sentence, DIFFERENCE, metric, a, b, direction, where=where, note=note)


def equivalence(sentence, metric, a, b, margin, where=None, note=""):
    """"a's metric is within +-margin of b's", paired by seed (margin stated beforehand)."""
    return _claim(sentence, EQUIVALENCE, metric, a, b, margin=margin, where=where, note=note)


def threshold(sentence, metric, a, value, direction, where=None, note=""):
    """"a's metric is above (direction +1) or below (-1) value", over a's seeds."""
    return _claim(sentence, THRESHOLD, metric, a, None, direction, value=value, where=where,
                  note=note)


def ratio(sentence, metric, a, b, value, where=None, note=""):
    """"a's metric is value times b's" (1.16: 16% more), paired log-ratio by seed."""
    return _claim(sentence, RATIO, metric, a, b, value=value, where=where, note=note)


def point_value(sentence, metric, a, value, where=None, note=""):
    """"a's metric equals value", over a's seeds (or an interval given to ``judge``)."""
    return _claim(sentence, VALUE, metric, a, None, value=value, where=where, note=note)


def judge(claim, tested, a_value=None, b_value=None, censoring=()):
    """The verdict of ``claim`` on the Interval ``tested`` by its kind's rule, as a
    Decided; for an interval computed elsewhere (a fit's rate), or by ``decide``.
    ``censoring``: stats.censoring_moves of the tested pairs."""
    if claim.kind in (DIFFERENCE, THRESHOLD):
        decided = stats.verdict(tested, claim.direction, censoring)
    elif claim.kind == EQUIVALENCE:
        decided = stats.equivalence_verdict(tested, claim.margin, censoring)
    elif claim.kind == RATIO:
        decided = stats.point_verdict(tested, claim.value, censoring)
    elif claim.kind == VALUE:
        decided = stats.point_verdict(tested, 0.0, censoring)
    else:
        raise ValueError(f"claim {claim.sentence!r}: unknown kind {claim.kind!r}")
    return Decided(claim, a_value, b_value, tested, decided)


def decide(claims, rows, key="scheme", censored_at=None, confidence=0.95):
    """Each claim decided on ``rows`` (per-seed dicts with columns ``key``, "seed" and the
    metrics): a's values against b's over the seeds both have (a pair with a NaN side is
    dropped), or a's values against the claim's value. ``censored_at`` {metric: limit}:
    the times to a threshold whose NaN means "never" (difference and threshold claims
    only; the verdict stands only if the censoring cannot change it, tfnorm.analysis.stats).
    Returns [Decided]."""
    censored_at = censored_at or {}
    out = []
    for claim in claims:
        mine = [r for r in rows if all(r[k] == v for k, v in claim.where.items())]
        side_a = {r["seed"]: r[claim.metric] for r in mine if r[key] == claim.a}
        limit = censored_at.get(claim.metric)
        if limit is not None and claim.kind not in (DIFFERENCE, THRESHOLD):
            raise ValueError(f"claim {claim.sentence!r}: a censored measure "
                             f"({claim.metric}) is decided as a difference or a threshold")
        if claim.kind in _AGAINST_A_NUMBER:
            a = [side_a[s] for s in sorted(side_a)]
            a_value = stats.interval(a, confidence, limit)
            tested = stats.shifted(a_value, claim.value)
            moves = stats.censoring_moves(a) if limit is not None else ()
            out.append(judge(claim, tested, a_value, None, moves))
            continue
        side_b = {r["seed"]: r[claim.metric] for r in mine if r[key] == claim.b}
        seeds = sorted(set(side_a) & set(side_b))
        a, b = [side_a[s] for s in seeds], [side_b[s] for s in seeds]
        if claim.kind == RATIO:
            tested = stats.paired_log_ratio(a, b, confidence)
        else:
            tested = stats.paired_difference(a, b, confidence, censored_at=limit)
        moves = stats.censoring_moves(a, b) if limit is not None else ()
        out.append(judge(claim, tested, stats.interval(a, confidence, limit),
                         stats.interval(b, confidence, limit), moves))
    return out


# ---- the tables ----

def reference(claim):
    """The claim's margin or value ("" for a difference)."""
    return claim.margin if claim.kind == EQUIVALENCE else (
        "" if claim.kind == DIFFERENCE else claim.value)


def kind_label(kind, margin_or_value=""):
    """The kind with its margin or value: "difference", "equivalence +-0.01",
    "threshold 0.6", "ratio 1.16", "value 1"."""
    if kind == DIFFERENCE:
        return DIFFERENCE
    return f"{kind} {'+-' if kind == EQUIVALENCE else ''}{float(margin_or_value):g}"


def describe(claim):
    """The claim tested, in one line: "metric: a > b", "metric: |a - b| < 0.01",
    "metric: a < 0.6", "metric: a / b = 1.16", "metric: a = 1"."""
    sign = ">" if claim.direction > 0 else "<"
    if claim.kind == DIFFERENCE:
        text = f"{claim.a} {sign} {claim.b}"
    elif claim.kind == EQUIVALENCE:
        text = f"|{claim.a} - {claim.b}| < {claim.margin:g}"
    elif claim.kind == THRESHOLD:
        text = f"{claim.a} {sign} {claim.value:g}"
    elif claim.kind == RATIO:
        text = f"{claim.a} / {claim.b} = {claim.value:g}"
    else:
        text = f"{claim.a} = {claim.value:g}"
    return f"{claim.metric}: {text}"


def _where(claim):
    where = claim.where
    return where if isinstance(where, str) else ", ".join(f"{k}={v}" for k, v in where.items())


def rows(decided):
    """The rows of verdicts.csv, one per Decided: the claim (sentence, kind, margin or
    value, metric, where, a, b or the value, direction: 0 for the kinds without one),
    both sides' intervals, the tested interval ("difference" columns: a - b, a - value,
    or for a ratio a / b), the number of pairs or seeds, the verdict and the note."""
    out = []
    for d in decided:
        claim, tested = d.claim, d.tested
        against_number = claim.kind in _AGAINST_A_NUMBER
        out.append(dict(
            sentence=claim.sentence, kind=claim.kind, margin_or_value=reference(claim),
            metric=claim.metric, where=_where(claim), a=claim.a,
            b=claim.value if against_number else claim.b, direction=claim.direction,
            pairs=tested.n, a_value=stats.format_interval(d.a_value),
            b_value=(f"{claim.value:g}" if against_number
                     else stats.format_interval(d.b_value)),
            difference=stats.format_interval(tested), difference_mean=tested.mean,
            difference_low=tested.low, difference_high=tested.high, verdict=d.verdict,
            note=claim.note))
    return out


def markdown(verdict_rows):
    """verdicts.md from ``rows``: sentence (and note), kind with its margin or value, our
    numbers with 95% intervals, the tested interval, the verdict."""
    lines = ["| paper's sentence | kind | measured (mean [95% CI] over seeds) | a - b, paired "
             "[95% CI] | verdict |", "|---|---|---|---|---|"]
    for r in verdict_rows:
        at = f" ({r['where']})" if r["where"] else ""
        note = f" *{r['note']}*" if r["note"] else ""
        kind = kind_label(r["kind"], r["margin_or_value"])
        against_number = r["kind"] in _AGAINST_A_NUMBER
        other = "reference " if against_number else f"{r['b']} "
        tested = f"a / b = {r['difference']}" if r["kind"] == RATIO else r["difference"]
        lines.append(f"| {r['sentence']}{note} | {kind} | {r['metric']}{at}: {r['a']} "
                     f"{r['a_value']}; {other}{r['b_value']} | {tested} (n = {r['pairs']}) "
                     f"| {r['verdict']} |")
    return "\n".join(lines) + "\n"
