"""The shattered-gradients study's verdicts (experiments/papers/shattered.py): the decay of the
neighbour correlation with depth fitted with ``tfnorm.analysis.stats.fit_decay`` (decay_fit.csv)
and compared with the paper's rates, and the paper's sentences paired by seed at the
deepest depth."""

import math

from tfnorm.analysis import stats, verdicts

FAMILIES = ("dense", "conv")
# Balduzzi et al. as REFERENCE.md section 3 words them: the correlation of nearby inputs'
# gradients decays like 2^-L in plain nets (exponential rate 1), like L^-1/2 in resnets.
REFERENCE_RATES = {"exponential": 1.0, "power_law": 0.5}


def white_noise_band(points):
    """2/sqrt(N): the lag-1 sample autocorrelation of N points of white noise lies within
    +-1.96/sqrt(N) 95% of the time (its standard deviation is about 1/sqrt(N))."""
    return 2.0 / math.sqrt(points)


def fit_rows(ctx, metric="neighbour_correlation"):
    """Per architecture and family, ``tfnorm.analysis.stats.fit_decay`` of the neighbour correlation
    (``metric``: per network, or across networks with --ensemble) against depth (every
    seed a point), on the depths where every seed's correlation is > 0 (a logarithm is
    needed; dropping single seeds would bias the rate)."""
    out = []
    for family in FAMILIES:
        for label in ctx.units:
            rows = ctx.rows("correlation.csv", family=family, architecture=label)
            if not rows:
                continue
            depths = sorted({r["depth"] for r in rows})
            kept = [d for d in depths if all(r[metric] > 0 for r in rows if r["depth"] == d)]
            kept = kept[:next((i for i, d in enumerate(depths) if d not in kept), len(kept))]
            points = [r for r in rows if r["depth"] in kept]
            if len(kept) < 2:
                continue
            fit = stats.fit_decay([r["depth"] for r in points], [r[metric] for r in points])
            for model in (fit.exponential, fit.power_law):
                out.append(dict(architecture=label, family=family, measure=metric,
                                model=model.model, rate=model.rate, low=model.low, high=model.high,
                                scale=model.scale, rss=model.rss, points=model.n,
                                depths="/".join(map(str, kept)), better=fit.better,
                                reference=REFERENCE_RATES[model.model]))
    return out


def fit_verdicts(fits):
    """The paper's rates against ours, as point values (tfnorm.analysis.verdicts.point_value):
    plain nets 2^-L (exponential rate 1), resnets L^-1/2 (power 1/2), each decided on the
    rate's interval from the fit (contradicted when it excludes the paper's rate,
    inconclusive otherwise: no interval supports a point). Returns [Decided]."""
    out = []
    for fit in fits:
        residual = fit["architecture"].startswith("resnet")
        if (fit["model"] == "power_law") != residual:
            continue
        shape = "L^-p, p = 1/2" if residual else "2^-rL, r = 1"
        across = ", across networks" if fit["measure"] != "neighbour_correlation" else ""
        claim = verdicts.point_value(
            f"Neighbour correlation decays like {shape} ({fit['architecture']}, "
            f"{fit['family']}{across})", f"{fit['model']} rate", fit["architecture"],
            fit["reference"], where=f"depths {fit['depths']}",
            note=f"(fit over seeds x depths; better fit: {fit['better']})")
        rate = stats.Interval(fit["rate"], fit["low"], fit["high"], fit["points"],
                              (fit["high"] - fit["low"]) / 2, "least squares fit", 0, 0)
        out.append(verdicts.judge(claim, stats.shifted(rate, fit["reference"]), rate))
    return out


def finish(ctx):
    fits = fit_rows(ctx)
    if ctx.values["ensemble"]:
        fits += fit_rows(ctx, "ensemble_neighbour_correlation")
    ctx.tables["decay_fit.csv"] = fits


def decay_verdicts(ctx):
    """fit_verdicts of decay_fit.csv (written by ``finish``)."""
    return fit_verdicts(ctx.tables.get("decay_fit.csv", []))


def claims(ctx):
    """Paired by seed at the deepest depth of each family: skip connections keep the
    gradients correlated; scaling the branch by a small beta more so; BN nets are
    resilient to shattering (their correlation above the plain net's); deep feedforward
    nets' gradients resemble white noise (below white noise's band); BN keeps the
    co-activation rate nearer 1/4 than the plain net."""
    white = white_noise_band(ctx.values["num_points"])
    out = []
    for family, key in (("dense", "depths"), ("conv", "conv_depths")):
        if family == "conv" and not ctx.values["conv"]:
            continue
        deepest = {"family": family, "depth": max(ctx.settings[key])}
        # Each residual family against its plain counterpart (without BN, with BN).
        for prefix, plain in (("resnet beta=", "plain"), ("resnet_batch beta=", "batch")):
            resnets = [u for u in ctx.units if u.startswith(prefix)]
            for label in resnets:
                if plain in ctx.units:
                    out.append(verdicts.difference(
                        "Skip connections reduce shattering (neighbour correlation above "
                        f"the {plain} net's)", "neighbour_correlation", label, plain, +1,
                        deepest))
            betas = sorted(resnets, key=lambda u: float(u.split("=")[1]))
            if len(betas) >= 2:
                out.append(verdicts.difference("Scaling the branch by a smaller beta "
                                               "reduces shattering", "neighbour_correlation",
                                               betas[0], betas[-1], +1, deepest))
        if {"batch", "plain"} <= set(ctx.units):
            out.append(verdicts.difference(
                "BN nets are resilient to shattering / white-noise gradients (neighbour "
                "correlation above the plain net's)", "neighbour_correlation", "batch", "plain",
                +1, deepest))
        for label in ("plain", "batch"):
            if label in ctx.units:
                out.append(verdicts.threshold(
                    "Deep feedforward nets' gradients resemble white noise (neighbour "
                    "correlation below 2/sqrt(N), white noise's 95% band)",
                    "neighbour_correlation", label, white, -1, deepest,
                    "(the threshold fixed by white noise of N points, not by our data; the "
                    "paper's feedforward nets: with or without BN, not known)"))
        if {"batch", "plain"} <= set(ctx.units):
            note = ("(dense: true by construction, BN centres every unit on the line itself, "
                    "so each is on for about half of its points)" if family == "dense" else
                    "(conv: BN centres each channel over the line's images and positions, "
                    "not each unit)")
            out.append(verdicts.difference("BN keeps the co-activation rate near 1/4 "
                                           "(|rate - 1/4| below the plain net's)",
                                           "coactivation_gap", "batch", "plain", -1, deepest,
                                           note))
    return out
