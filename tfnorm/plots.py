"""Figures, drawn only from files a run saved (records, metrics.csv), never from a model.

- ``four_panel_figure``: the article's four histograms of one layer at one epoch
  (top-left gradient w.r.t. the weights, top-right gradient passed to the previous
  layer, bottom-left weights, bottom-right update).
- ``draw_panels`` / ``write_gifs``: every panel PNG of a run and one GIF per layer.
- ``accuracy_figure``, ``nonzero_figure``: compare's figures over schemes and seeds.
"""

import io as _bytes_io
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tfnorm import io, records  # noqa: E402
from tfnorm.training import QUANTITIES, SUMMARY_STATS  # noqa: E402

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


def four_panel_figure(record, layer, fig=None):
    """The four histograms of ``layer`` (0-based) in ``record``; returns the figure.
    ``fig``: a figure made by an earlier call, cleared and reused (much faster)."""
    stat = {name: i for i, name in enumerate(SUMMARY_STATS)}
    if fig is None:
        fig = plt.figure(figsize=(8, 6))
    fig.clf()
    axes = fig.subplots(2, 2)
    for q, (name, ax) in enumerate(zip(QUANTITIES, axes.flat)):
        edges = records.histogram_edges(record, layer, q)
        ax.stairs(record.counts[layer, q], edges, fill=True, color=PANEL_COLORS[name],
                  alpha=0.8)
        summary = record.summaries[layer, q]
        title = PANEL_TITLES[name]
        if name == "passed_gradient" and layer == 0:
            title = "gradient passed to the input image"
        ax.set_title(title, fontsize=9)
        ax.text(0.02, 0.97, f"mean {summary[stat['mean']]:.3g}\nstd {summary[stat['std']]:.3g}"
                f"\nnon-zero {summary[stat['nonzero_frac']]:.1%}",
                transform=ax.transAxes, va="top", fontsize=7, family="monospace")
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    nonzero = record.summaries[layer, 0, stat["nonzero_frac"]]
    fig.suptitle(f"scheme {record.scheme} | layer {layer + 1} | epoch {record.epoch} | "
                 f"non-zero weight gradient {nonzero:.1%}", fontsize=11)
    # Fixed margins instead of tight_layout: the same layout in every frame of a GIF.
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.08, top=0.88, hspace=0.35,
                        wspace=0.22)
    return fig


def draw_epoch_panels(run_dir, epoch):
    """The four-panel PNG of every layer for one recorded epoch. Returns the paths."""
    record = records.load_record(records.record_path(run_dir, epoch))
    paths = []
    fig = None
    for layer in range(record.counts.shape[0]):
        fig = four_panel_figure(record, layer, fig)
        path = panel_path(run_dir, layer + 1, epoch)
        io.save_figure(fig, path, dpi=PANEL_DPI)
        paths.append(path)
    plt.close(fig)
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
    epochs whose panels all exist (after a resume)."""
    for epoch in records.record_epochs(run_dir):
        if only_missing:
            record_file = records.record_path(run_dir, epoch)
            with np.load(record_file) as stored:
                layers = stored["counts"].shape[0]
            if all(os.path.exists(panel_path(run_dir, layer, epoch))
                   for layer in range(1, layers + 1)):
                continue
        draw_epoch_panels(run_dir, epoch)
    return write_gifs(run_dir)


def _band(ax, epochs, runs, label, color):
    """Mean of ``runs`` (seeds x epochs, NaN past a run's end) with a min-max band."""
    runs = np.asarray(runs, float)
    mean = np.nanmean(runs, axis=0)
    ax.plot(epochs, mean, label=label, color=color, lw=1.5)
    if runs.shape[0] > 1:
        ax.fill_between(epochs, np.nanmin(runs, axis=0), np.nanmax(runs, axis=0),
                        color=color, alpha=0.2, lw=0)


def _colors(names):
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def accuracy_figure(curves, title=""):
    """curves: {scheme: {"epochs": [E], "train_acc": [seeds, E], "test_acc": [seeds, E]}}.
    Train and test accuracy against epoch, mean over seeds with a min-max band."""
    colors = _colors(list(curves))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for scheme, curve in curves.items():
        for ax, key in zip(axes, ("train_acc", "test_acc")):
            _band(ax, curve["epochs"], curve[key], scheme, colors[scheme])
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
    """curves: {scheme: {"epochs": [E], "nonzero": [seeds, layers, E]}}: per layer, the
    fraction of non-zero entries of the weight gradient against epoch, a curve per scheme."""
    colors = _colors(list(curves))
    num_layers = max(np.asarray(c["nonzero"]).shape[1] for c in curves.values())
    cols = min(3, num_layers)
    rows = -(-num_layers // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False,
                             sharex=True)
    for layer in range(num_layers):
        ax = axes.flat[layer]
        for scheme, curve in curves.items():
            nonzero = np.asarray(curve["nonzero"], float)
            if layer < nonzero.shape[1]:
                _band(ax, curve["epochs"], nonzero[:, layer], scheme, colors[scheme])
        ax.set_title(f"layer {layer + 1}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[num_layers:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("non-zero fraction of the weight gradient")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title or "non-zero entries of the gradient w.r.t. the weights (epoch mean)")
    fig.tight_layout()
    return fig
