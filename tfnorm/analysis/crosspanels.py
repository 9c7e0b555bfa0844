"""The cross-scheme panel: one layer at one epoch, the article's four quantities of every
scheme on one figure, drawn only from the records of a ``experiments.article.compare`` directory
(each run's ``records/epoch_NNNN.npz``, the layout ``tfnorm.analysis.compare_grid``'s).
No TensorFlow.

Layout: a column per quantity (weight gradient, passed gradient, weights, update), a
row per scheme. Each column shares its x axis, so reading down a column compares the
schemes' distributions directly (nine step outlines overlaid on one axis cannot be told
apart where they pile up near 0).
A column whose schemes' scales differ by more than ``LOG_RATIO`` (the unnormalized
network's passed gradients are ~1000x smaller than batch norm's) shows magnitudes,
log10 |x|, on a log axis (the records' magnitude histograms), with the exact zeros and
the near-zero entries (|x| <= NEARZERO_TAU x RMS, left of the dashed line, dark)
counted apart: a linear histogram's spike at 0 is both. (A symmetric-log axis
would draw the one linear bin holding 0 as a wide flat block hiding it.) Other columns
are linear, the article's histograms. Heights are fractions of all entries per unit of
the drawn axis (per decade on a log axis), so runs with different layer sizes read alike
and areas are fractions; each panel notes its std, and its zero and near-zero shares.
"""

import collections
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfnorm import schemes  # noqa: E402
from tfnorm.analysis import compare_grid  # noqa: E402
from tfnorm.measures import NEARZERO_TAU, QUANTITIES, SUMMARY_STATS  # noqa: E402
from tfnorm.run import atomic, four_panels, records, runid  # noqa: E402

# The four panels' titles and colours, the same as in the per-run figures.
COLUMN_TITLES, COLUMN_COLORS = four_panels.PANEL_TITLES, four_panels.PANEL_COLORS
# Largest/smallest scale of a column above which it shows magnitudes on a log axis.
LOG_RATIO = 30.0
NEAR_ZERO_COLOR = "0.2"  # the near-zero part of a magnitude histogram (the spike at 0)
DPI = 100


class CrossPanelError(ValueError):
    """The compare directory cannot give the figure asked for; the message names the
    file or the choice at fault."""


def find_runs(compare_dir, seed, wanted=None):
    """{scheme: run directory} of ``seed``, in ``tfnorm.SCHEMES`` order: ``wanted`` (each
    must have records) or every registered scheme whose run has records."""
    for name in wanted or ():
        try:
            schemes.check(name)
        except schemes.UnknownScheme as error:
            raise CrossPanelError(f"--schemes: {error}") from None
    names = [s for s in schemes.SCHEMES if not wanted or s in wanted]
    runs = collections.OrderedDict()
    for name in names:
        run_dir = compare_grid.run_dir(compare_dir, name, seed)
        if records.record_epochs(run_dir):
            runs[name] = run_dir
        elif wanted:
            raise CrossPanelError(f"{os.path.join(run_dir, records.RECORDS_DIR)}: no records "
                                  f"of scheme {name!r}, seed {seed}")
    if not runs:
        where = compare_grid.run_dir("", "<scheme>", seed)  # <scheme>/<the seed's folder>
        raise CrossPanelError(f"{compare_dir}: no {where}/records/epoch_NNNN.npz of any scheme")
    return runs


def common_epochs(runs):
    """Epochs recorded by every run, ascending."""
    shared = None
    for run_dir in runs.values():
        epochs = set(records.record_epochs(run_dir))
        shared = epochs if shared is None else shared & epochs
    return sorted(shared or ())


def load_records(runs, epoch, seed=None):
    """{scheme: Record} of ``epoch``; all must have the same number of layers, and each be
    of its folder's scheme (and ``seed``, if given)."""
    loaded = collections.OrderedDict()
    for name, run_dir in runs.items():
        path = records.record_path(run_dir, epoch)
        try:
            loaded[name] = records.load_record(path, runid.RunIdentity(name, seed, None))
        except records.RunDirError as error:
            raise CrossPanelError(str(error)) from None
        except (OSError, ValueError, KeyError) as error:
            raise CrossPanelError(f"{path}: unreadable record ({error})") from None
    layers = {name: record.counts.shape[0] for name, record in loaded.items()}
    if len(set(layers.values())) != 1:
        raise CrossPanelError(f"the runs have different numbers of layers: {layers}")
    return loaded


def _edges(record, layer, q):
    """Bin edges; a constant quantity (all entries equal) gets a hair-wide bin around it."""
    low, high = record.ranges[layer, q]
    if high <= low:
        pad = max(abs(low), 1e-12) * 1e-3
        return np.linspace(low - pad, high + pad, record.counts.shape[-1] + 1)
    return records.histogram_edges(record, layer, q)


def column_scale(records_by_scheme, layer, q):
    """(smallest, largest) positive spread of a quantity over schemes: the std, or the
    largest |value| when the std is 0. Decides the log axis."""
    std, low, high = (SUMMARY_STATS.index(s) for s in ("std", "min", "max"))
    spreads = []
    for record in records_by_scheme.values():
        summary = record.summaries[layer, q]
        spread = summary[std] or max(abs(summary[low]), abs(summary[high]))
        if np.isfinite(spread) and spread > 0:
            spreads.append(float(spread))
    return (min(spreads), max(spreads)) if spreads else (1.0, 1.0)


def _magnitude_edges(record, layer, q):
    """The magnitude histogram's bin edges, as magnitudes |x| (not their logs)."""
    low, high = record.magnitude_ranges[layer, q]
    return 10.0 ** np.linspace(low, high, record.magnitude_counts.shape[-1] + 1)


def _rms(summary, stat):
    return float(np.hypot(summary[stat["mean"]], summary[stat["std"]]))


def cross_scheme_figure(records_by_scheme, layer, seed=None):
    """Rows: schemes; columns: QUANTITIES; ``layer`` 0-based. Returns the figure.

    Heights are fractions of all entries per unit of the drawn axis: per unit of x on a
    linear axis, per decade on a magnitude axis (whose exact zeros are in no bin: the
    panel's note counts them), so areas are fractions of entries."""
    names = list(records_by_scheme)
    first = next(iter(records_by_scheme.values()))
    stat = {name: i for i, name in enumerate(SUMMARY_STATS)}
    fig, axes = plt.subplots(len(names), len(QUANTITIES), sharex="col", squeeze=False,
                             figsize=(13, 1.15 * len(names) + 1.3), dpi=DPI)
    for q, quantity in enumerate(QUANTITIES):
        smallest, largest = column_scale(records_by_scheme, layer, q)
        magnitudes = largest / smallest > LOG_RATIO
        edges_of = _magnitude_edges if magnitudes else _edges
        low = min(edges_of(r, layer, q)[0] for r in records_by_scheme.values())
        high = max(edges_of(r, layer, q)[-1] for r in records_by_scheme.values())
        for row, name in enumerate(names):
            record, ax = records_by_scheme[name], axes[row, q]
            summary = record.summaries[layer, q]
            entries = max(float(record.counts[layer, q].sum()), 1.0)
            if magnitudes:
                counts = record.magnitude_counts[layer, q].astype(float)
                edges = _magnitude_edges(record, layer, q)
                heights = counts / entries / np.diff(np.log10(edges))
            else:
                counts = record.counts[layer, q].astype(float)
                edges = _edges(record, layer, q)
                heights = counts / entries / np.diff(edges)
                ax.axvline(0.0, color="0.6", lw=0.6, zorder=0)
            ax.stairs(heights, edges, fill=True, alpha=0.75, color=COLUMN_COLORS[quantity])
            if magnitudes:
                # The near-zero part, dark: the bins below tau x RMS, the last one cut there.
                threshold = NEARZERO_TAU * _rms(summary, stat)
                cut = np.minimum(edges, threshold)
                ax.stairs(np.where(np.diff(cut) > 0, heights, 0.0), cut, fill=True,
                          color=NEAR_ZERO_COLOR)
                ax.axvline(threshold, color=NEAR_ZERO_COLOR, ls="--", lw=0.8)
            zero = 1.0 - summary[stat["nonzero_frac"]]
            # Magnitudes pile up on the right of a log axis: the note goes left.
            ax.text(0.02 if magnitudes else 0.98, 0.92, f"std {summary[stat['std']]:.2g}\n"
                    f"zero {zero:.0%}\nnear-zero {summary[stat['nearzero_frac']]:.0%}",
                    transform=ax.transAxes, ha="left" if magnitudes else "right", va="top",
                    fontsize=7, family="monospace",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=1))
            # Headroom so the note rarely covers a peak.
            ax.set_ylim(0, max(float(heights.max(initial=0.0)), 1e-12) * 1.5)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
            if q == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
        bottom = axes[-1, q]
        if magnitudes:
            bottom.set_xscale("log")
            bottom.set_xlabel(f"|x|, log axis; dark: <= {NEARZERO_TAU:g} RMS",
                              fontsize=8)
        else:
            bottom.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            bottom.set_xlabel("linear", fontsize=8)
        bottom.set_xlim(low, high)
        title = COLUMN_TITLES[quantity]
        if quantity == "passed_gradient" and layer == 0:
            title = "gradient passed to the input image"
        axes[0, q].set_title(title, fontsize=10)
    seed_text = f", seed {seed}" if seed is not None else ""
    fig.suptitle(f"layer {layer + 1}, epoch {first.epoch}{seed_text}: every scheme, x shared "
                 "down each column; height = fraction of entries per unit of the drawn axis "
                 "(area = fraction)\nnotes: the shares exactly 0 (in no bin of a log axis) "
                 f"and near 0, |x| <= {NEARZERO_TAU:g} x RMS (dark: what a linear "
                 "histogram's spike at 0 holds)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96), h_pad=0.3, w_pad=0.8)
    return fig


def draw_cross_panels(compare_dir, layer, out, epoch=None, seed=0, wanted=None):
    """Find the runs, pick the epoch (default: the last one all runs recorded), draw and
    save the PNG atomically. ``layer`` 1-based. Returns (path, epoch, schemes drawn)."""
    runs = find_runs(compare_dir, seed, wanted)
    epochs = common_epochs(runs)
    if not epochs:
        raise CrossPanelError(f"{compare_dir}: the runs of seed {seed} share no recorded epoch")
    epoch = epochs[-1] if epoch is None else epoch
    if epoch not in epochs:
        raise CrossPanelError(f"--epoch {epoch}: not recorded by every run (common: {epochs})")
    loaded = load_records(runs, epoch, seed)
    num_layers = next(iter(loaded.values())).counts.shape[0]
    if not 1 <= layer <= num_layers:
        raise CrossPanelError(f"--layer {layer}: the network has layers 1..{num_layers}")
    fig = cross_scheme_figure(loaded, layer - 1, seed)
    try:
        atomic.save_figure(fig, out, dpi=DPI)
    finally:
        plt.close(fig)
    return out, epoch, list(loaded)
