"""Figures over schemes and seeds, drawn only from numbers runs saved: a mean with its
95% interval band (``band``), one colour per scheme (``scheme_colors``), compare's
accuracy figure and the non-zero-gradient figure."""

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfnorm.analysis import stats  # noqa: E402
from tfnorm.measures import NEARZERO_TAU  # noqa: E402
from tfnorm.schemes import SCHEMES  # noqa: E402


def band(ax, epochs, runs, label, color, lw=1.5, **kwargs):
    """Mean of ``runs`` (seeds x epochs, NaN past a run's end) with its 95% Student t
    interval shaded (``tfnorm.analysis.stats.interval`` at each epoch; none for a single seed).
    Epochs where no seed has a value (no test pass there: --eval_every) are skipped, so
    the line joins the epochs that have one."""
    runs = np.asarray(runs, float)
    measured = ~np.isnan(runs).all(axis=0) if runs.ndim == 2 else None
    if measured is not None and not measured.all():
        epochs, runs = np.asarray(epochs)[measured], runs[:, measured]
    intervals = [stats.interval(column) for column in runs.T]
    mean = np.array([i.mean for i in intervals])
    ax.plot(epochs, mean, label=label, color=color, lw=lw, **kwargs)
    low, high = (np.array([getattr(i, side) for i in intervals]) for side in ("low", "high"))
    shown = np.isfinite(low) & np.isfinite(high)
    if shown.any():
        ax.fill_between(np.asarray(epochs)[shown], low[shown], high[shown], color=color,
                        alpha=0.2, lw=0)


def scheme_colors(names):
    """One colour per scheme, the same in every figure of every script: a scheme of
    tfnorm.SCHEMES keeps its place in the registry's order; other names (variants such as
    'none+noise', architectures) take a second palette's, in the order given."""
    schemes, others = plt.get_cmap("tab10"), plt.get_cmap("Dark2")
    colors = {name: schemes(SCHEMES.index(name)) for name in names if name in SCHEMES}
    rest = [name for name in names if name not in SCHEMES]
    colors.update({name: others(i % others.N) for i, name in enumerate(rest)})
    return colors


def accuracy_figure(curves, title="", dashed=None):
    """curves: {scheme: {"epochs": [E], "train_acc": [seeds, E], "test_acc": [seeds, E]}}.
    Train and test accuracy against epoch, mean over seeds with a shaded 95% interval.
    dashed: {name: scheme}, curves drawn dashed in that scheme's colour (a variant)."""
    dashed = dashed or {}
    colors = scheme_colors([name for name in curves if name not in dashed])
    colors.update({name: colors[scheme] for name, scheme in dashed.items()})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for scheme, curve in curves.items():
        style = {"ls": "--"} if scheme in dashed else {}
        for ax, key in zip(axes, ("train_acc", "test_acc")):
            band(ax, curve["epochs"], curve[key], scheme, colors[scheme], **style)
    for ax, name in zip(axes, ("train accuracy", "test accuracy")):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].axhline(0.95, color="grey", ls=":", lw=1)
    axes[1].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def nonzero_figure(curves, title=""):
    """curves: {scheme: {"epochs": [E], "nonzero": [seeds, layers, E], optionally
    "nearzero": [seeds, layers, E]}} (epoch means of the weight gradient's exactly
    non-zero and near-zero fractions, NaN where a seed has no value). Left, a panel per
    layer: each fraction against epoch, a curve per scheme (mean with its 95% band): solid
    the exact non-zero fraction, dashed the fraction above NEARZERO_TAU x RMS (1 -
    near-zero), which a histogram's spike at 0 shows and which keeps falling where the
    exact one sits at its ceiling 1. Right: each seed's mean over training, per layer."""
    schemes = list(curves)
    colors = scheme_colors(schemes)
    num_layers = max(np.asarray(c["nonzero"]).shape[1] for c in curves.values())
    cols = min(3, num_layers)
    rows = -(-num_layers // cols)
    fig = plt.figure(figsize=(3.3 * (cols + 1) + 0.5, 2.7 * rows + 0.9))
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1] * cols + [1.3])
    axes = [fig.add_subplot(grid[layer // cols, layer % cols]) for layer in range(num_layers)]
    summary_ax = fig.add_subplot(grid[:, cols])
    styles = (("nonzero", "-", lambda f: f), ("nearzero", "--", lambda f: 1.0 - f))
    for scheme, curve in curves.items():
        for key, style, as_shown in styles:
            if key not in curve:
                continue
            shown = as_shown(np.asarray(curve[key], float))  # seeds x layers x epochs
            if np.isnan(shown).all():
                continue
            label = scheme if key == "nonzero" else None
            for layer in range(min(num_layers, shown.shape[1])):
                band(axes[layer], curve["epochs"], shown[:, layer],
                     label if layer == 0 else None, colors[scheme], lw=1.2, ls=style)
            with warnings.catch_warnings():  # a seed that stopped before any epoch
                warnings.simplefilter("ignore", RuntimeWarning)
                per_seed = np.nanmean(shown, axis=2)  # seeds x layers
            band(summary_ax, np.arange(1, per_seed.shape[1] + 1), per_seed, label,
                 colors[scheme], ls=style, marker="o", ms=3)
    for layer, ax in enumerate(axes):
        ax.set_title(f"layer {layer + 1}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for row in range(rows):
        axes[row * cols].set_ylabel("fraction of entries", fontsize=8)
    summary_ax.set_title("mean over training, per layer", fontsize=9)
    summary_ax.set_ylim(min(0.0, summary_ax.get_ylim()[0]), 1.02)
    summary_ax.set_xlabel("layer", fontsize=8)
    summary_ax.set_xticks(range(1, num_layers + 1))
    summary_ax.tick_params(labelsize=7)
    summary_ax.grid(alpha=0.3)
    handles, labels = summary_ax.get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="0.3", ls=style) for _, style, _ in styles]
    labels += ["exactly non-zero", f"|g| > {NEARZERO_TAU:g} RMS"]
    summary_ax.legend(handles, labels, fontsize=6, loc="lower left")
    seeds = sorted({np.asarray(c["nonzero"]).shape[0] for c in curves.values()})
    fig.suptitle(title or "Entries of each layer's gradient w.r.t. its weights: exactly "
                 f"non-zero (solid), above {NEARZERO_TAU:g} x its RMS (dashed; the rest "
                 "is the histogram's spike at 0)\nepoch means over its steps, "
                 f"{'/'.join(map(str, seeds))} seed(s), mean and 95% t interval", fontsize=9)
    fig.tight_layout()
    return fig
