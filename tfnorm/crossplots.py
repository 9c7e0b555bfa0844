"""The cross-scheme panel: one layer at one epoch, the article's four quantities of every
scheme on one figure, drawn only from the records of a ``experiments.compare`` directory
(``<compare_dir>/<scheme>/seed_<k>/records/epoch_NNNN.npz``). No TensorFlow.

Layout: a column per quantity (weight gradient, passed gradient, weights, update), a
row per scheme. Each column shares its x axis, so reading down a column compares the
schemes' distributions directly (nine step outlines overlaid on one axis cannot be told
apart where they pile up near 0).
A column's axis is symmetric-log when the schemes' scales differ by more than
``SYMLOG_RATIO`` (the unnormalized network's gradients are ~1000x smaller than batch
norm's), linear otherwise. Heights are fractions of entries per unit of the drawn axis
(see ``cross_scheme_figure``), so runs with different layer sizes read alike and areas
stay fractions on a symlog axis; each panel notes its std and non-zero share.
"""

import collections
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.scale  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from tfnorm import io, plots, records, runid, schemes  # noqa: E402
from tfnorm.records import QUANTITIES, SUMMARY_STATS  # noqa: E402

# The four panels' titles and colours, the same as in the per-run figures.
COLUMN_TITLES, COLUMN_COLORS = plots.PANEL_TITLES, plots.PANEL_COLORS
# Largest/smallest scale of a column above which it gets a symmetric-log axis.
SYMLOG_RATIO = 30.0
LINSCALE = 0.5  # width of the linear part of a symlog axis, in decades
DPI = 100


class CrossPanelError(ValueError):
    """The compare directory cannot give the figure asked for; the message names the
    file or the choice at fault."""


def seed_dir(compare_dir, scheme, seed):
    return os.path.join(compare_dir, scheme, f"seed_{seed}")


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
        run_dir = seed_dir(compare_dir, name, seed)
        if records.record_epochs(run_dir):
            runs[name] = run_dir
        elif wanted:
            raise CrossPanelError(f"{os.path.join(run_dir, records.RECORDS_DIR)}: no records "
                                  f"of scheme {name!r}, seed {seed}")
    if not runs:
        raise CrossPanelError(f"{compare_dir}: no <scheme>/seed_{seed}/records/epoch_NNNN.npz "
                              "of any scheme")
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
    largest |value| when the std is 0. Decides symlog and its linear threshold."""
    std, low, high = (SUMMARY_STATS.index(s) for s in ("std", "min", "max"))
    spreads = []
    for record in records_by_scheme.values():
        summary = record.summaries[layer, q]
        spread = summary[std] or max(abs(summary[low]), abs(summary[high]))
        if np.isfinite(spread) and spread > 0:
            spreads.append(float(spread))
    return (min(spreads), max(spreads)) if spreads else (1.0, 1.0)


def _axis_transform(symlog, threshold):
    """x -> position on the drawn axis (identity, or matplotlib's symlog transform)."""
    if not symlog:
        return lambda x: np.asarray(x, float)
    scale = matplotlib.scale.SymmetricalLogScale(None, linthresh=threshold,
                                                 linscale=LINSCALE)
    return scale.get_transform().transform


def _decade_ticks(threshold, reach, per_side=3):
    """0 and +-10^k down from ``reach``'s decade, above the linear part (whose labels
    would run into 0), at most ``per_side`` a side, so the labels do not overlap."""
    first, last = int(np.floor(np.log10(threshold))) + 1, int(np.floor(np.log10(reach)))
    stride = max(1, int(np.ceil((last - first + 1) / per_side)))
    decades = 10.0 ** np.arange(last, first - 1, -stride)[::-1]
    return np.concatenate([-decades[::-1], [0.0], decades])


def cross_scheme_figure(records_by_scheme, layer, seed=None):
    """Rows: schemes; columns: QUANTITIES; ``layer`` 0-based. Returns the figure.

    Heights are fractions of entries per unit of the drawn axis (a bin's fraction over
    its drawn width), so areas are fractions on a symlog axis too. Plain fractions per
    bin would draw the linear bin around 0, which spans decades on a symlog axis, as a
    flat-topped block hiding the shape; divided by its drawn width it is a low plateau,
    and the peak sits at the scheme's typical magnitude."""
    names = list(records_by_scheme)
    first = next(iter(records_by_scheme.values()))
    stat = {name: i for i, name in enumerate(SUMMARY_STATS)}
    fig, axes = plt.subplots(len(names), len(QUANTITIES), sharex="col", squeeze=False,
                             figsize=(13, 1.15 * len(names) + 1.3), dpi=DPI)
    for q, quantity in enumerate(QUANTITIES):
        smallest, largest = column_scale(records_by_scheme, layer, q)
        symlog = largest / smallest > SYMLOG_RATIO
        # Linear within a tenth of the smallest scheme's spread: every scheme's bulk
        # falls in the logarithmic part, where a factor of 10 is one step.
        threshold = 10.0 ** np.floor(np.log10(smallest / 10))
        drawn = _axis_transform(symlog, threshold)
        low = min(_edges(r, layer, q)[0] for r in records_by_scheme.values())
        high = max(_edges(r, layer, q)[-1] for r in records_by_scheme.values())
        for row, name in enumerate(names):
            record, ax = records_by_scheme[name], axes[row, q]
            counts = record.counts[layer, q].astype(float)
            edges = _edges(record, layer, q)
            heights = counts / max(counts.sum(), 1.0) / np.diff(drawn(edges))
            ax.stairs(heights, edges, fill=True, alpha=0.75, color=COLUMN_COLORS[quantity])
            ax.axvline(0.0, color="0.6", lw=0.6, zorder=0)
            summary = record.summaries[layer, q]
            ax.text(0.98, 0.92, f"std {summary[stat['std']]:.2g}\nnon-zero "
                    f"{summary[stat['nonzero_frac']]:.0%}", transform=ax.transAxes,
                    ha="right", va="top", fontsize=7, family="monospace",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=1))
            # Headroom so the note rarely covers a peak.
            ax.set_ylim(0, max(float(heights.max()), 1e-12) * 1.5)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
            if q == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
        bottom = axes[-1, q]
        if symlog:
            bottom.set_xscale("symlog", linthresh=threshold, linscale=LINSCALE)
            bottom.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(
                _decade_ticks(threshold, max(abs(low), abs(high)))))
            bottom.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            bottom.set_xlabel(f"symmetric log (linear within ±{threshold:.0e})", fontsize=8)
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
                 "(area = fraction)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=0.3, w_pad=0.8)
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
        io.save_figure(fig, out, dpi=DPI)
    finally:
        plt.close(fig)
    return out, epoch, list(loaded)
