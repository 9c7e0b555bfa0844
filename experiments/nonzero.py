"""The article's central claim in one figure: normalization raises the fraction of
non-zero entries of each layer's weight gradient, per layer and scheme, across training.

    python -m experiments.nonzero --run_dir=runs/compare

Reads a compare output directory (experiments.compare): <run_dir>/<scheme>/seed_<k>/
metrics.csv (seed<k>/ is read too), each with the columns epoch and
nonzero_grad_frac_1..L (the epoch's mean, over its training steps, of the fraction
of exactly non-zero entries of layer i's weight gradient). Writes to --out_dir
(default <run_dir>/nonzero):

- nonzero.csv: scheme, layer, epoch, seeds, mean, low, high (the 95% Student t interval
  over seeds, ``tfnorm.stats.interval``; -inf/inf for one seed), min, max;
- nonzero_summary.csv: per scheme and layer, the fraction at the first and last epoch
  (seed means) and its mean over training with the 95% interval over seeds (each seed's
  own mean over its epochs);
- nonzero_claim.png: left, one panel per layer, the fraction against epoch, a curve
  per scheme (mean with its shaded 95% interval, ``tfnorm.plots.band``); right, the
  mean over training against layer with its interval, a line per scheme.

Paired differences between schemes and their verdicts are compare's summary and
``experiments.claims``; this script draws the claim's figure and tables.
"""

import glob
import os
import re

import numpy as np
from absl import flags, logging

from experiments import cli, study
from tfnorm import io, records, rundir, stats
from tfnorm.schemes import SCHEMES

FLAGS = flags.FLAGS
COLUMN = re.compile(r"^nonzero_grad_frac_(\d+)$")
SEED_DIR = re.compile(r"^seed_?(\d+)$")


def define_flags(flag_values=FLAGS):
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("run_dir", None, "A compare output directory: "
                        "<scheme>/seed_<k>/metrics.csv.", **fv)
    cli.define_flags(("out_dir", "schemes"), dict(out_dir=None), flag_values)
    flag_values["out_dir"].help = ("Where the CSV files and the figure go (default "
                                   "<run_dir>/nonzero).")
    flag_values["schemes"].help = ("Comma-separated schemes to show (default: every scheme "
                                   "found, in the order of tfnorm.SCHEMES).")


def require(condition, message):
    if not condition:
        raise cli.ConfigError(message)


def find_runs(run_dir, schemes=None):
    """{scheme: {seed: metrics.csv path}} under run_dir; raises cli.ConfigError if there is
    none."""
    require(os.path.isdir(run_dir), f"--run_dir {run_dir}: no such directory")
    runs = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "*", "seed*", "metrics.csv"))):
        seed_dir = os.path.basename(os.path.dirname(path))
        scheme = os.path.basename(os.path.dirname(os.path.dirname(path)))
        match = SEED_DIR.match(seed_dir)
        if match and (schemes is None or scheme in schemes):
            runs.setdefault(scheme, {})[int(match.group(1))] = path
    require(runs, f"--run_dir {run_dir}: no <scheme>/seed_<k>/metrics.csv"
                  + (f" for the schemes {', '.join(schemes)}" if schemes else "")
                  + " (run experiments.compare first)")
    if schemes:
        missing = [s for s in schemes if s not in runs]
        require(not missing, f"--schemes: no runs of {', '.join(missing)} in {run_dir}")
    return runs


def read_run(path):
    """(epochs (E,), nonzero fractions (L, E)) from one metrics.csv: of a run (its
    config.json), the rows its audit keeps (``rundir.view``: none past its checkpoint);
    of a folder holding only a metrics.csv, its rows as they are."""
    run_dir = os.path.dirname(path)
    config = cli.stored_config(run_dir)
    if config is not None:
        found = rundir.view(run_dir, config)
        require(found.state != "damaged", found.message)
        rows = [{k: str(v) for k, v in row.items()} for row in found.rows]
    else:
        require(not rundir.checkpoint_epochs(run_dir),
                f"{run_dir}: holds checkpoints but no {records.CONFIG_FILE}: whose run it is "
                "cannot be checked")
        rows = io.read_csv(path)
    require(rows, f"{path}: no epochs recorded yet")
    layers = sorted(int(m.group(1)) for m in map(COLUMN.match, rows[0]) if m)
    require("epoch" in rows[0] and layers,
                  f"{path}: expected the columns epoch and nonzero_grad_frac_1..L")
    try:
        epochs = np.array([int(r["epoch"]) for r in rows])
        values = np.array([[float(r[f"nonzero_grad_frac_{layer}"]) for r in rows]
                           for layer in layers])
    except ValueError as error:
        raise cli.ConfigError(f"{path}: unreadable value ({error})") from None
    return epochs, values


def collect(runs):
    """Per scheme: epochs (E,) and fractions (seeds, L, E), NaN where a seed stopped early."""
    curves = {}
    for scheme, seeds in runs.items():
        per_seed = [read_run(path) for _, path in sorted(seeds.items())]
        epochs = np.array(sorted({int(e) for seed_epochs, _ in per_seed for e in seed_epochs}))
        num_layers = max(values.shape[0] for _, values in per_seed)
        stacked = np.full((len(per_seed), num_layers, epochs.size), np.nan)
        for i, (seed_epochs, values) in enumerate(per_seed):
            columns = np.searchsorted(epochs, seed_epochs)
            stacked[i, :values.shape[0], :][:, columns] = values
        curves[scheme] = dict(epochs=epochs, nonzero=stacked, seeds=sorted(seeds))
    return curves


def table_rows(curves):
    rows, summary = [], []
    for scheme, curve in curves.items():
        nonzero = curve["nonzero"]
        with np.errstate(all="ignore"):
            mean = np.nanmean(nonzero, axis=0)
        for layer in range(nonzero.shape[1]):
            for e, epoch in enumerate(curve["epochs"]):
                values = nonzero[:, layer, e]
                present = values[~np.isnan(values)]
                if present.size == 0:
                    continue
                band = stats.interval(present)
                rows.append(dict(scheme=scheme, layer=layer + 1, epoch=int(epoch),
                                 seeds=int(present.size), mean=band.mean, low=band.low,
                                 high=band.high, min=float(present.min()),
                                 max=float(present.max())))
            layer_mean = mean[layer][~np.isnan(mean[layer])]
            if layer_mean.size:
                with np.errstate(all="ignore"):
                    per_seed = np.nanmean(nonzero[:, layer, :], axis=1)
                over_training = stats.interval(per_seed)
                summary.append(dict(scheme=scheme, layer=layer + 1,
                                    seeds=len(curve["seeds"]), epochs=int(layer_mean.size),
                                    first_epoch=float(layer_mean[0]),
                                    last_epoch=float(layer_mean[-1]),
                                    mean_over_training=over_training.mean,
                                    mean_over_training_low=over_training.low,
                                    mean_over_training_high=over_training.high))
    return rows, summary


def plot(curves, out_dir):
    import matplotlib.pyplot as plt  # after the flags and files were checked

    from tfnorm import plots
    schemes = list(curves)
    num_layers = max(c["nonzero"].shape[1] for c in curves.values())
    colors = plots.scheme_colors(schemes)
    # Layers in a grid of up to 3 columns, the summary panel to the right of it, full height.
    cols = min(3, num_layers)
    rows = -(-num_layers // cols)
    fig = plt.figure(figsize=(3.0 * (cols + 1) + 0.5, 2.6 * rows + 0.6))
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1] * cols + [1.3])
    axes = [fig.add_subplot(grid[layer // cols, layer % cols]) for layer in range(num_layers)]
    axes.append(fig.add_subplot(grid[:, cols]))
    for layer in range(num_layers):
        ax = axes[layer]
        for scheme, curve in curves.items():
            if layer >= curve["nonzero"].shape[1]:
                continue
            plots.band(ax, curve["epochs"], curve["nonzero"][:, layer],
                       scheme if layer == 0 else None, colors[scheme], lw=1.2)
        ax.set_title(f"layer {layer + 1}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for row in range(rows):
        axes[row * cols].set_ylabel("non-zero fraction", fontsize=8)
    ax = axes[-1]
    for scheme, curve in curves.items():
        # Seeds x layers: each seed's mean over its epochs (the summary's intervals).
        with np.errstate(all="ignore"):
            per_seed = np.nanmean(curve["nonzero"], axis=2)
        plots.band(ax, np.arange(1, per_seed.shape[1] + 1), per_seed, scheme,
                   colors[scheme], marker="o", ms=3)
    ax.set_title("mean over training, per layer", fontsize=9)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_xticks(range(1, num_layers + 1))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    seeds = sorted({len(c["seeds"]) for c in curves.values()})
    fig.suptitle("Non-zero entries of each layer's gradient w.r.t. its weights, per scheme "
                 f"(epoch means; {'/'.join(map(str, seeds))} seed(s), 95% t interval)", fontsize=9)
    return study.save_figure(fig, out_dir, "nonzero_claim.png")


def check():
    """Every flag and the files they name (no TensorFlow is ever imported here). Returns
    (runs, out_dir, scheme order)."""
    require(FLAGS.run_dir, "--run_dir: required (a compare output directory)")
    schemes = cli.parse_schemes(FLAGS.schemes) if FLAGS.schemes else None
    runs = find_runs(FLAGS.run_dir, schemes)
    out_dir = FLAGS.out_dir or os.path.join(FLAGS.run_dir, "nonzero")
    cli.check_writable(out_dir)
    order = schemes or [s for s in SCHEMES if s in runs] + sorted(s for s in runs
                                                                   if s not in SCHEMES)
    return {scheme: runs[scheme] for scheme in order}, out_dir


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    runs, out_dir = check()
    curves = collect(runs)
    rows, summary = table_rows(curves)
    io.write_csv(os.path.join(out_dir, "nonzero.csv"), rows)
    io.write_csv(os.path.join(out_dir, "nonzero_summary.csv"), summary)
    path = plot(curves, out_dir)
    logging.info("wrote %s", path)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
