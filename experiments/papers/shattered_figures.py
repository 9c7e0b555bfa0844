"""The shattered-gradients study's figures (experiments/papers/shattered.py), drawn from its
tables: the gradient along the line (gradients_<family>.png, like the paper's Figure 1),
its autocorrelation (autocorrelation_<family>.png), the neighbour correlation against
depth (neighbour_correlation.png) and per layer the co-activation, active rate and
neighbour persistence (coactivation.png). --nofigures draws none."""

import numpy as np

from experiments import study
from experiments.papers.shattered_verdicts import FAMILIES


def families(ctx):
    return [f for f in FAMILIES if ctx.rows("correlation.csv", family=f)]


def plot_gradients(ctx, family):
    rows = ctx.rows("gradients.csv", family=family, seed=ctx.seeds[0])
    available = sorted({r["depth"] for r in rows})
    depths = [d for d in ctx.settings["figure_depths"] if d in available] or available[-4:]
    fig, axes = study.figure(len(depths), len(ctx.units), width=3.2, height=2.2, sharex=True)
    for col, label in enumerate(ctx.units):
        for row, depth in enumerate(depths):
            ax = axes[row][col]
            points = [(r["position"], r["gradient"]) for r in rows
                      if (r["architecture"], r["depth"]) == (label, depth)]
            ax.plot(*np.array(points).T, lw=0.8)
            ax.set_title(f"{label}, depth {depth}", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == len(depths) - 1:
                ax.set_xlabel("input x" if family == "dense" else "line position t", fontsize=8)
            if col == 0:
                ax.set_ylabel("df/dx" if family == "dense" else "df(x(t))/dt", fontsize=8)
    fig.suptitle(f"{family} nets: gradient of the output along the line (seed "
                 f"{ctx.seeds[0]})", fontsize=10)
    return fig


def plot_autocorrelation(ctx, family):
    import matplotlib
    fig, axes = study.figure(1, len(ctx.units), width=3.2, height=2.8, sharey=True)
    cmap = matplotlib.colormaps["viridis"]
    for ax, label in zip(axes[0], ctx.units):
        rows = ctx.rows("autocorrelation.csv", family=family, architecture=label)
        depths = sorted({r["depth"] for r in rows})
        for i, depth in enumerate(depths):
            lags, values = study.per_seed([r for r in rows if r["depth"] == depth], "lag",
                                          "autocorrelation", ctx.seeds)
            with np.errstate(all="ignore"):
                ax.plot(lags, np.nanmean(values, axis=0), lw=1, label=f"L={depth}",
                        color=cmap(i / max(1, len(depths) - 1)))
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("lag (points)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("autocorrelation of df/dx (mean over seeds)", fontsize=8)
    axes[0][-1].legend(fontsize=6)
    return fig


def plot_correlation(ctx):
    import matplotlib.ticker
    names = families(ctx)
    colors = study.colors(ctx.units)
    fig, axes = study.figure(1, len(names), width=5.0, height=3.8)
    for ax, family in zip(axes[0], names):
        rows = ctx.rows(study.OVER_SEEDS_CSV, family=family)
        for label in ctx.units:
            mine = [r for r in rows if r["architecture"] == label]
            depth = np.array([r["depth"] for r in mine])
            ax.plot(depth, [r["neighbour_correlation_mean"] for r in mine], "o-", ms=3,
                    color=colors[label], label=label)
            low = np.array([r["neighbour_correlation_low"] for r in mine], float)
            high = np.array([r["neighbour_correlation_high"] for r in mine], float)
            shown = np.isfinite(low) & np.isfinite(high)
            ax.fill_between(depth[shown], low[shown], high[shown], color=colors[label],
                            alpha=0.15)
        depth = np.array(sorted({r["depth"] for r in rows}), float)
        ax.plot(depth, 2.0 ** -depth, "k--", lw=1, label="$1/2^L$")
        ax.plot(depth, 1 / np.sqrt(depth), "k:", lw=1, label=r"$1/\sqrt{L}$")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_xticks(depth)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set(xlabel="depth L", ylabel="correlation of neighbours' gradients")
        ax.set_title(f"{family} nets (mean over seeds, 95% t interval)", fontsize=9)
        ax.legend(fontsize=6)
    return fig


def plot_coactivation(ctx):
    names = families(ctx)
    colors = study.colors(ctx.units)
    fig, axes = study.figure(3, len(names), width=5.0, height=3.0)
    for col, family in enumerate(names):
        rows = ctx.rows("coactivation.csv", family=family)
        deepest = max(r["depth"] for r in rows)
        for row, (key, title) in enumerate([("coactivation_inputs", "co-activation rate"),
                                            ("active_rate", "active rate"),
                                            ("neighbour_persistence",
                                             "P(on at x_n+1 | on at x_n)")]):
            ax = axes[row][col]
            for label in ctx.units:
                mine = [r for r in rows if r["architecture"] == label and r["depth"] == deepest]
                layers, values = study.per_seed(mine, "layer", key, ctx.seeds)
                ax.plot(layers, np.nanmean(values, axis=0), color=colors[label], lw=1,
                        label=label)
            ax.axhline(0.25 if row == 0 else 0.5, color="k", ls="--", lw=0.8,
                       label="1/4" if row == 0 else "1/2")
            ax.set(ylim=(0.4, 1.02) if row == 2 else (0, 1), xlabel="layer", ylabel=title)
            ax.set_title(f"{family} nets of depth {deepest}", fontsize=9)
            ax.legend(fontsize=6)
    return fig


def draw(ctx):
    if not ctx.values["figures"]:
        return {}
    figures = {}
    for family in families(ctx):
        figures[f"gradients_{family}.png"] = plot_gradients(ctx, family)
        figures[f"autocorrelation_{family}.png"] = plot_autocorrelation(ctx, family)
    figures["neighbour_correlation.png"] = plot_correlation(ctx)
    figures["coactivation.png"] = plot_coactivation(ctx)
    return figures


