"""The shattered-gradients study's verdicts (experiments/shattered.py): the decay of the
neighbour correlation with depth fitted with ``tfnorm.stats.fit_decay`` (decay_fit.csv)
and compared with the paper's rates, and the paper's sentences paired by seed at the
deepest depth."""

import math

from experiments import study

FAMILIES = ("dense", "conv")
# Balduzzi et al. as REFERENCE.md section 3 words them: the correlation of nearby inputs'
# gradients decays like 2^-L in plain nets (exponential rate 1), like L^-1/2 in resnets.
REFERENCE_RATES = {"exponential": 1.0, "power_law": 0.5}


def white_noise_band(points):
    """2/sqrt(N): the lag-1 sample autocorrelation of N points of white noise lies within
    +-1.96/sqrt(N) 95% of the time (its standard deviation is about 1/sqrt(N))."""
    return 2.0 / math.sqrt(points)


def fit_rows(ctx, metric="neighbour_correlation"):
    """Per architecture and family, ``tfnorm.stats.fit_decay`` of the neighbour correlation
    (``metric``: per network, or across networks with --ensemble) against depth (every
    seed a point), on the depths where every seed's correlation is > 0 (a logarithm is
    needed; dropping single seeds would bias the rate)."""
    from tfnorm import stats
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
                                model=model.model,
                                rate=model.rate, low=model.low, high=model.high,
                                scale=model.scale, rss=model.rss, points=model.n,
                                depths="/".join(map(str, kept)), better=fit.better,
                                reference=REFERENCE_RATES[model.model]))
    return out


def fit_verdicts(fits):
    """The paper's rates against ours: plain nets 2^-L (exponential rate 1), resnets
    L^-1/2 (power 1/2). A point value: the rule contradicts it when the rate's interval
    excludes it and leaves it open otherwise (no interval 'supports' a point)."""
    out = []
    for fit in fits:
        residual = fit["architecture"].startswith("resnet")
        if (fit["model"] == "power_law") != residual:
            continue
        low, high, ref = fit["low"], fit["high"], fit["reference"]
        shape = "L^-p, p = 1/2" if residual else "2^-rL, r = 1"
        across = ", across networks" if fit["measure"] != "neighbour_correlation" else ""
        out.append(dict(
            sentence=f"Neighbour correlation decays like {shape} ({fit['architecture']}, "
                     f"{fit['family']}{across})", metric=f"{fit['model']} rate",
            where=f"depths {fit['depths']}", a=fit["architecture"], b=ref, direction=0,
            pairs=fit["points"], a_value=f"{fit['rate']:.3g} [{low:.3g}, {high:.3g}]",
            b_value=f"{ref:g}", difference=f"{fit['rate'] - ref:.3g} [{low - ref:.3g}, "
                                           f"{high - ref:.3g}]",
            difference_mean=fit["rate"] - ref, difference_low=low - ref,
            difference_high=high - ref,
            verdict="contradicted" if (low > ref or high < ref) else "inconclusive",
            note=f"(fit over seeds x depths; better fit: {fit['better']})"))
    return out


def finish(ctx):
    fits = fit_rows(ctx)
    if ctx.values["ensemble"]:
        fits += fit_rows(ctx, "ensemble_neighbour_correlation")
    ctx.tables["decay_fit.csv"] = fits
    ctx.tables[study.VERDICTS_CSV] = fit_verdicts(fits)


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
                    out.append(study.Claim("Skip connections reduce shattering (neighbour "
                                           f"correlation above the {plain} net's)",
                                           "neighbour_correlation", label, plain, +1, deepest))
            betas = sorted(resnets, key=lambda u: float(u.split("=")[1]))
            if len(betas) >= 2:
                out.append(study.Claim("Scaling the branch by a smaller beta reduces "
                                       "shattering", "neighbour_correlation", betas[0],
                                       betas[-1], +1, deepest))
        if {"batch", "plain"} <= set(ctx.units):
            out.append(study.Claim("BN nets are resilient to shattering / white-noise "
                                   "gradients (neighbour correlation above the plain net's)",
                                   "neighbour_correlation", "batch", "plain", +1, deepest))
        for label in ("plain", "batch"):
            if label in ctx.units:
                out.append(study.Claim(
                    "Deep feedforward nets' gradients resemble white noise (neighbour "
                    f"correlation below {white:.3g} = 2/sqrt(N), white noise's 95% band)",
                    "neighbour_correlation", label, white, -1, deepest,
                    "(a threshold, fixed by white noise of N points, not by our data; the "
                    "paper's feedforward nets: with or without BN, not known)"))
        if {"batch", "plain"} <= set(ctx.units):
            note = ("(dense: true by construction, BN centres every unit on the line itself, "
                    "so each is on for about half of its points)" if family == "dense" else
                    "(conv: BN centres each channel over the line's images and positions, "
                    "not each unit)")
            out.append(study.Claim("BN keeps the co-activation rate near 1/4 (|rate - 1/4| "
                                   "below the plain net's)", "coactivation_gap", "batch",
                                   "plain", -1, deepest, note))
    return out
