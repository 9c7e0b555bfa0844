"""Figures, drawn only from files a run saved (records, metrics.csv), never from a model.

- ``FourPanels`` / ``four_panel_figure``: the article's four histograms of one layer at one epoch
  (top-left gradient w.r.t. the weights, top-right gradient passed to the previous
  layer, bottom-left weights, bottom-right update).
- ``draw_panels`` / ``write_gifs``: every panel PNG of a run and one GIF per layer.
- ``accuracy_figure``, ``nonzero_figure``: compare's figures over schemes and seeds.
"""

import io as _bytes_io
import os
import re
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tfnorm import io, records, stats  # noqa: E402
from tfnorm.schemes import SCHEMES  # noqa: E402
from tfnorm.records import QUANTITIES, SUMMARY_STATS  # noqa: E402

PANEL_TITLES = {
    "weight_gradient": "gradient w.r.t. the weights",
    "passed_gradient": "gradient passed to the previous layer",
    "weights": "weights",
    "update": "update",
}
PANEL_COLORS = {"weight_gradient": "tab:red", "passed_gradient": "tab:purple",
                "weights": "tab:blue", "update": "tab:green"}
PANEL_DPI = 80
GIF_WIDTH = 480  # frames are shrunk to this width: a 200-frame GIF stays a few MB
GIF_FRAME_MS = 400


def panel_path(run_dir, layer, epoch):
    """layer 1-based."""
    return os.path.join(run_dir, records.PANELS_DIR, f"layer{layer}_epoch{epoch:04d}.png")


def gif_path(run_dir, layer):
    return os.path.join(run_dir, records.PANELS_DIR, f"layer{layer}.gif")


class FourPanels:
    """The article's four histograms of one layer at one epoch, on one figure that is built
    once and redrawn per layer and epoch: only the bars, texts and tick positions change.
    (Building four axes and their ticks anew cost ~0.2 s a figure, as much as an epoch's
    training step of a small layer; redrawing costs a fraction of it.)"""

    def __init__(self):
        # Made at the dpi it is saved at: a savefig at another dpi lays every text out
        # anew (~25% of a panel's time).
        self.figure = plt.figure(figsize=(8, 6), dpi=PANEL_DPI)
        axes = self.figure.subplots(2, 2)
        # Fixed margins instead of tight_layout: the same layout in every frame of a GIF.
        self.figure.subplots_adjust(left=0.08, right=0.97, bottom=0.08, top=0.88,
                                    hspace=0.35, wspace=0.22)
        self.axes, self.bars, self.texts, self.titles = list(axes.flat), [], [], []
        for name, ax in zip(QUANTITIES, self.axes):
            self.bars.append(ax.stairs([0.0], [0.0, 1.0], fill=True, color=PANEL_COLORS[name],
                                       alpha=0.8))
            self.texts.append(ax.text(0.02, 0.97, "", transform=ax.transAxes, va="top",
                                      fontsize=7, family="monospace"))
            # An explicit y keeps matplotlib from measuring the tick labels to place it.
            self.titles.append(ax.set_title(PANEL_TITLES[name], fontsize=9, y=1.0))
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            # Text is most of a redraw's cost: a few ticks per axis are enough to read.
            ax.locator_params(nbins=4)
        self.suptitle = self.figure.suptitle("", fontsize=11)

    def draw(self, record, layer):
        """Show ``layer`` (0-based) of ``record``; returns the figure."""
        stat = {name: i for i, name in enumerate(SUMMARY_STATS)}
        for q, name in enumerate(QUANTITIES):
            ax, counts = self.axes[q], record.counts[layer, q]
            edges = records.histogram_edges(record, layer, q)
            self.bars[q].set_data(counts, edges)
            ax.set_xlim(edges[0], edges[-1])
            ax.set_ylim(0, max(1.0, float(counts.max())) * 1.05)
            summary = record.summaries[layer, q]
            self.texts[q].set_text(
                f"mean {summary[stat['mean']]:.3g}\nstd {summary[stat['std']]:.3g}"
                f"\nnon-zero {summary[stat['nonzero_frac']]:.1%}")
            title = PANEL_TITLES[name]
            if name == "passed_gradient" and layer == 0:
                title = "gradient passed to the input image"
            self.titles[q].set_text(title)
        nonzero = record.summaries[layer, 0, stat["nonzero_frac"]]
        self.suptitle.set_text(f"scheme {record.scheme} | layer {layer + 1} | epoch "
                               f"{record.epoch} | non-zero weight gradient {nonzero:.1%}")
        return self.figure

    def close(self):
        plt.close(self.figure)


def four_panel_figure(record, layer):
    """The four histograms of ``layer`` (0-based) in ``record``, on a new figure."""
    return FourPanels().draw(record, layer)


def draw_epoch_panels(run_dir, epoch, panels=None):
    """The four-panel PNG of every layer for one recorded epoch. Returns the paths.
    ``panels``: a FourPanels to draw on (kept open for the next epoch), else one of its own."""
    record = records.load_record(records.record_path(run_dir, epoch))
    own = panels is None
    panels = panels or FourPanels()
    paths = []
    for layer in range(record.counts.shape[0]):
        path = panel_path(run_dir, layer + 1, epoch)
        io.save_figure(panels.draw(record, layer), path, dpi=PANEL_DPI)
        paths.append(path)
    if own:
        panels.close()
    return paths


def write_gifs(run_dir):
    """One GIF per layer from that layer's panel PNGs, in epoch order. Returns the paths."""
    folder = os.path.join(run_dir, records.PANELS_DIR)
    frames = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = re.match(r"^layer(\d+)_epoch(\d+)\.png$", name)
        if match:
            frames.setdefault(int(match.group(1)), []).append(
                (int(match.group(2)), os.path.join(folder, name)))
    paths = []
    for layer, layer_frames in sorted(frames.items()):
        images = []
        for _, path in sorted(layer_frames):
            with Image.open(path) as image:
                image = image.convert("RGB")
                height = round(image.height * GIF_WIDTH / image.width)
                images.append(image.resize((GIF_WIDTH, height), Image.LANCZOS)
                              .quantize(colors=128))
        buffer = _bytes_io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                       duration=GIF_FRAME_MS, loop=0)
        path = gif_path(run_dir, layer)
        io.write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def draw_panels(run_dir, only_missing=False):
    """Every panel of every record in ``run_dir``, then the GIFs. ``only_missing``: skip
    epochs whose panels all exist (after a resume), and the GIFs too when no panel was
    drawn and every layer has its GIF. Returns the GIFs' paths."""
    panels, layers = None, 0
    for epoch in records.record_epochs(run_dir):
        record_file = records.record_path(run_dir, epoch)
        with np.load(record_file) as stored:
            layers = stored["counts"].shape[0]
        if only_missing and all(os.path.exists(panel_path(run_dir, layer, epoch))
                                for layer in range(1, layers + 1)):
            continue
        panels = panels or FourPanels()
        draw_epoch_panels(run_dir, epoch, panels)
    if panels is not None:
        panels.close()
    gifs = [gif_path(run_dir, layer) for layer in range(1, layers + 1)]
    if only_missing and panels is None and all(map(os.path.exists, gifs)):
        return gifs
    return write_gifs(run_dir)


def band(ax, epochs, runs, label, color, lw=1.5, **kwargs):
    """Mean of ``runs`` (seeds x epochs, NaN past a run's end) with its 95% Student t
    interval shaded (``tfnorm.stats.interval`` at each epoch; none for a single seed).
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
    the exact non-zero fraction, dashed the fraction above records.NEARZERO_TAU x RMS (1 -
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
    labels += ["exactly non-zero", f"|g| > {records.NEARZERO_TAU:g} RMS"]
    summary_ax.legend(handles, labels, fontsize=6, loc="lower left")
    seeds = sorted({np.asarray(c["nonzero"]).shape[0] for c in curves.values()})
    fig.suptitle(title or "Entries of each layer's gradient w.r.t. its weights: exactly "
                 f"non-zero (solid), above {records.NEARZERO_TAU:g} x its RMS (dashed; the rest "
                 "is the histogram's spike at 0)\nepoch means over its steps, "
                 f"{'/'.join(map(str, seeds))} seed(s), mean and 95% t interval", fontsize=9)
    fig.tight_layout()
    return fig
