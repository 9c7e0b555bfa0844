"""A run's four-panel figures, drawn only from the records it saved, never from a model.

- ``FourPanels`` / ``four_panel_figure``: the article's four histograms of one layer at one epoch
  (top-left gradient w.r.t. the weights, top-right gradient passed to the previous
  layer, bottom-left weights, bottom-right update).
- ``draw_panels`` / ``write_gifs``: every panel PNG of a run and one GIF per layer.

The figures over schemes and seeds are ``tfnorm.analysis.figures``.
"""

import io
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tfnorm.measures import QUANTITIES, SUMMARY_STATS  # noqa: E402
from tfnorm.run import atomic, records  # noqa: E402

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
        atomic.save_figure(panels.draw(record, layer), path, dpi=PANEL_DPI)
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
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                       duration=GIF_FRAME_MS, loop=0)
        path = gif_path(run_dir, layer)
        atomic.write_bytes(path, buffer.getvalue())
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
