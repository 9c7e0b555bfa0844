"""Figures over schemes and seeds, drawn only from numbers runs saved: a mean with its
95% interval band (``band``), one colour per scheme (``scheme_colors``), compare's
accuracy figure (its non-zero-gradient figure: ``tfnorm.analysis.compare_dir``)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfnorm.analysis import stats  # noqa: E402
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
