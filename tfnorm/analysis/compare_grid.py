"""The compare directory: a grid of runs, one per scheme and seed, and what is read from
it. The one owner of its layout, of its per-seed table (runs.csv), of deciding claims on
that table and writing them (claims.md/csv; the article's tables are built by
experiments.article.claims), and of the non-zero-gradient figure.

Layout (``LAYOUT``)::

    <compare_dir>/<scheme>/seed_<k>/   a run directory (tfnorm.run.records) per scheme and seed
    <compare_dir>/runs.csv             one row per run: scheme, seed, state, its measurements
    <compare_dir>/summary.csv, .md     per scheme: means with 95% intervals, paired verdicts
    <compare_dir>/accuracy.png, nonzero.png   the figures over schemes and seeds

Writers: ``experiments.article.compare`` trains into ``run_dir``;
``experiments.article.summary`` writes runs.csv and the summary. Every reader goes through
``find_runs`` (the run folders) or ``read_runs`` / ``read_rows`` (runs.csv). No TensorFlow;
matplotlib loads only when the figure is drawn.
"""

import collections
import csv
import os
import re
import warnings

import numpy as np

from tfnorm.analysis import verdicts
from tfnorm.errors import ConfigError, DamagedFile
from tfnorm.measures import NEARZERO_TAU
from tfnorm.run import atomic

LAYOUT = "<scheme>/seed_<k>"
RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
ACCURACY_FIGURE = "accuracy.png"
NONZERO_FIGURE = "nonzero.png"
# A run's folder: seed_<k>; an older tfnorm's seed<k> is read too.
_RUN_FOLDER = re.compile(r"^seed_?(\d+)$")
_WAY_OUT = "rerun experiments.article.compare there to write it again"


def run_dir(compare_dir, scheme, seed):
    """The run directory of ``scheme`` and ``seed`` in ``compare_dir``."""
    return os.path.join(compare_dir, scheme, f"seed_{seed}")


def find_runs(compare_dir, schemes=None):
    """{scheme: {seed: run directory}} of the run folders under ``compare_dir`` (of
    ``schemes`` only, if given), in the folders' name order."""
    found = {}
    names = sorted(os.listdir(compare_dir)) if os.path.isdir(compare_dir) else []
    for scheme in (n for n in names if schemes is None or n in schemes):
        folder = os.path.join(compare_dir, scheme)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            match = _RUN_FOLDER.match(name)
            if match and os.path.isdir(os.path.join(folder, name)):
                found.setdefault(scheme, {})[int(match.group(1))] = os.path.join(folder, name)
    return found


def read_rows(compare_dir, flag="--compare_dir"):
    """The rows of ``compare_dir``'s runs.csv as written (strings). One line naming the
    directory (``flag``: the flag that named it) or the file when it is missing, damaged,
    not compare's runs.csv, or holds no run."""
    path = os.path.join(compare_dir, RUNS_CSV)
    if not os.path.isfile(path):
        raise ConfigError(f"{flag} {compare_dir}: no {RUNS_CSV} (run "
                          "experiments.article.compare there first)")
    try:
        rows = atomic.read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DamagedFile(f"{path}: unreadable ({type(error).__name__}); "
                          f"{_WAY_OUT}") from None
    if not rows:
        raise ConfigError(f"{path}: holds no run; {_WAY_OUT}")
    missing = [name for name in ("scheme", "seed") if name not in rows[0]]
    if missing:
        raise DamagedFile(f"{path}: not compare's runs.csv (no column "
                          f"{', '.join(missing)}); {_WAY_OUT}")
    return rows


def read_runs(compare_dir, flag="--compare_dir"):
    """{scheme: {seed: row}} of runs.csv, numbers as floats (NaN: undefined)."""
    path = os.path.join(compare_dir, RUNS_CSV)
    runs = collections.defaultdict(dict)
    for line, row in enumerate(read_rows(compare_dir, flag), start=2):
        try:
            values = {k: (float(v) if v not in ("", None) else float("nan"))
                      for k, v in row.items() if k not in ("scheme", "state")}
            seed = int(values.pop("seed"))
        except (TypeError, ValueError):
            raise DamagedFile(f"{path}: line {line} is damaged (not numbers); "
                              f"{_WAY_OUT}") from None
        if seed in runs[row["scheme"]]:
            raise DamagedFile(f"{path}: {row['scheme']} seed {seed} is given twice; "
                              f"{_WAY_OUT}")
        runs[row["scheme"]][seed] = values
    return runs


# ---- the claims tables, decided on runs.csv

def decide_runs(claims, runs, epochs):
    """tfnorm.analysis.verdicts.decide on ``runs`` ({scheme: {seed: row}}), epoch_to_*
    censored at epochs + 1; a metric runs.csv lacks (no run of the grid complete) is
    undefined."""
    undefined = {c.metric: float("nan") for c in claims}
    per_seed = [dict(undefined, **values, scheme=scheme, seed=seed)
                for scheme, seeds in runs.items() for seed, values in seeds.items()]
    censored = {c.metric: epochs + 1 for c in claims if c.metric.startswith("epoch_to_")}
    return verdicts.decide(claims, per_seed, censored_at=censored)


def write_claims(out_dir, header, rows, markdown):
    """claims.md (``header`` then the table) and claims.csv into ``out_dir``; returns the
    markdown's path."""
    path = os.path.join(out_dir, "claims.md")
    atomic.write_text(path, header + markdown)
    atomic.write_csv(os.path.join(out_dir, "claims.csv"), rows)
    return path


# ---- the non-zero-gradient figure

def nonzero_figure(curves, title=""):
    """curves: {scheme: {"epochs": [E], "nonzero": [seeds, layers, E], optionally
    "nearzero": [seeds, layers, E]}} (epoch means of the weight gradient's exactly
    non-zero and near-zero fractions, NaN where a seed has no value). Left, a panel per
    layer: each fraction against epoch, a curve per scheme (mean with its 95% band): solid
    the exact non-zero fraction, dashed the fraction above measures.NEARZERO_TAU x RMS (1 -
    near-zero), which a histogram's spike at 0 shows and which keeps falling where the
    exact one sits at its ceiling 1. Right: each seed's mean over training, per layer."""
    from tfnorm.analysis.figures import band, scheme_colors  # sets matplotlib's Agg backend
    import matplotlib.pyplot as plt
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
