"""The article's central claim in one figure: normalization raises the fraction of
non-zero entries of each layer's weight gradient, per layer and scheme, across training;
beside it the fraction of near-zero entries (within measures.NEARZERO_TAU x the gradient's
RMS of 0: a histogram's spike at 0), which still separates schemes where the exact
fraction sits at its ceiling 1.

    python -m experiments.article.nonzero --run_dir=runs/compare

Reads a compare output directory (experiments.article.compare; its layout:
tfnorm.analysis.compare_grid): each run's metrics.csv, with the columns epoch,
nonzero_grad_frac_1..L (the epoch's mean, over its training steps, of the fraction
of exactly non-zero entries of layer i's weight gradient) and nearzero_grad_frac_1..L
(the same of the near-zero fraction; a run of an older tfnorm has none: one warning,
and only the exact fraction is shown). Writes to --out_dir (default <run_dir>/nonzero):

- nonzero.csv: measure (nonzero, nearzero), scheme, layer, epoch, seeds, mean, low, high
  (the 95% Student t interval over seeds, ``tfnorm.analysis.stats.interval``; -inf/inf for one
  seed), min, max;
- nonzero_summary.csv: per measure, scheme and layer, the fraction at the first and last
  epoch (seed means) and its mean over training with the 95% interval over seeds (each
  seed's own mean over its epochs);
- nonzero_tau.csv: what measures.NEARZERO_TAU is set from, over every record of the runs
  (each layer's weight gradient at a recorded epoch's last step): the half-width of the
  50-bin histogram's bin that holds 0, (max - min) / 100, in units of the gradient's RMS,
  its median, 10th and 90th percentile, and tau;
- nonzero_claim.png: ``tfnorm.analysis.compare_grid.nonzero_figure`` (compare's nonzero.png): per layer
  both fractions against epoch, a curve per scheme (mean with its shaded 95% interval);
  right, the means over training against layer.

Paired differences between schemes and their verdicts are compare's summary and
``experiments.article.claims``; this script draws the claim's figure and tables.
"""

import os
import re
import warnings

import numpy as np
from absl import flags, logging

from experiments import cli, study
from tfnorm import measures
from tfnorm.analysis import compare_grid, stats
from tfnorm.run import atomic, records, rundir
from tfnorm.schemes import SCHEMES

FLAGS = flags.FLAGS
COLUMN = re.compile(r"^nonzero_grad_frac_(\d+)$")
MEASURES = {"nonzero": "nonzero_grad_frac", "nearzero": "nearzero_grad_frac"}


def define_flags(flag_values=FLAGS):
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("run_dir", None, "A compare output directory: "
                        f"{compare_grid.LAYOUT}/metrics.csv.", **fv)
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
    for scheme, seeds in compare_grid.find_runs(run_dir, schemes).items():
        for seed, folder in seeds.items():
            if os.path.isfile(os.path.join(folder, "metrics.csv")):
                runs.setdefault(scheme, {})[seed] = os.path.join(folder, "metrics.csv")
    require(runs, f"--run_dir {run_dir}: no {compare_grid.LAYOUT}/metrics.csv"
                  + (f" for the schemes {', '.join(schemes)}" if schemes else "")
                  + " (run experiments.article.compare first)")
    if schemes:
        missing = [s for s in schemes if s not in runs]
        require(not missing, f"--schemes: no runs of {', '.join(missing)} in {run_dir}")
    return runs


def read_run(path):
    """(epochs (E,), {measure: fractions (L, E)}) from one metrics.csv: of a run (its
    config.json), the rows its audit keeps (``rundir.view``: none past its checkpoint);
    of a folder holding only a metrics.csv, its rows as they are. The near-zero fractions
    are NaN in a run of an older tfnorm, which did not record them."""
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
        rows = atomic.read_csv(path)
    require(rows, f"{path}: no epochs recorded yet")
    layers = sorted(int(m.group(1)) for m in map(COLUMN.match, rows[0]) if m)
    require("epoch" in rows[0] and layers,
                  f"{path}: expected the columns epoch and nonzero_grad_frac_1..L")
    try:
        epochs = np.array([int(r["epoch"]) for r in rows])
        values = {measure: np.array([[float(r.get(f"{column}_{layer}", "nan")) for r in rows]
                                     for layer in layers])
                  for measure, column in MEASURES.items()}
    except ValueError as error:
        raise cli.ConfigError(f"{path}: unreadable value ({error})") from None
    return epochs, values


def collect(runs):
    """Per scheme: epochs (E,) and per measure the fractions (seeds, L, E), NaN where a
    seed stopped early."""
    curves, older = {}, []
    for scheme, seeds in runs.items():
        per_seed = [read_run(path) for _, path in sorted(seeds.items())]
        older += [path for (_, path), (_, values) in zip(sorted(seeds.items()), per_seed)
                  if np.isnan(values["nearzero"]).all()]
        epochs = np.array(sorted({int(e) for seed_epochs, _ in per_seed for e in seed_epochs}))
        num_layers = max(values["nonzero"].shape[0] for _, values in per_seed)
        curve = dict(epochs=epochs, seeds=sorted(seeds))
        for measure in MEASURES:
            stacked = np.full((len(per_seed), num_layers, epochs.size), np.nan)
            for i, (seed_epochs, values) in enumerate(per_seed):
                columns = np.searchsorted(epochs, seed_epochs)
                stacked[i, :values[measure].shape[0], :][:, columns] = values[measure]
            curve[measure] = stacked
        curves[scheme] = curve
    if older:
        logging.warning("%d of %d runs have no %s columns (runs of an older tfnorm, e.g. %s): "
                        "only their exact non-zero fraction is shown", len(older),
                        sum(map(len, runs.values())), MEASURES["nearzero"], older[0])
    return curves


def table_rows(curves):
    rows, summary = [], []
    for measure in MEASURES:
        for scheme, curve in curves.items():
            fractions = curve[measure]
            with warnings.catch_warnings():  # all NaN: a measure the run did not record
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(fractions, axis=0)
            for layer in range(fractions.shape[1]):
                for e, epoch in enumerate(curve["epochs"]):
                    values = fractions[:, layer, e]
                    present = values[~np.isnan(values)]
                    if present.size == 0:
                        continue
                    band = stats.interval(present)
                    rows.append(dict(measure=measure, scheme=scheme, layer=layer + 1,
                                     epoch=int(epoch), seeds=int(present.size),
                                     mean=band.mean, low=band.low, high=band.high,
                                     min=float(present.min()), max=float(present.max())))
                layer_mean = mean[layer][~np.isnan(mean[layer])]
                if layer_mean.size:
                    with np.errstate(all="ignore"):
                        per_seed = np.nanmean(fractions[:, layer, :], axis=1)
                    over_training = stats.interval(per_seed)
                    summary.append(dict(measure=measure, scheme=scheme, layer=layer + 1,
                                        seeds=len(curve["seeds"]),
                                        epochs=int(layer_mean.size),
                                        first_epoch=float(layer_mean[0]),
                                        last_epoch=float(layer_mean[-1]),
                                        mean_over_training=over_training.mean,
                                        mean_over_training_low=over_training.low,
                                        mean_over_training_high=over_training.high))
    return rows, summary


def central_bin_halfwidths(runs):
    """Over every readable record of ``runs`` and every layer: the half-width of the bin
    of the weight gradient's histogram that holds 0, (max - min) / (2 bins), over the
    gradient's RMS (from the record's mean and std). Returns (half-widths, unreadable
    records)."""
    halfwidths, unreadable = [], 0
    mean, std = (measures.SUMMARY_STATS.index(name) for name in ("mean", "std"))
    gradient = measures.QUANTITIES.index("weight_gradient")
    for seeds in runs.values():
        for path in seeds.values():
            run_dir = os.path.dirname(path)
            for epoch in records.record_epochs(run_dir):
                try:
                    record = records.load_record(records.record_path(run_dir, epoch))
                except records.RunDirError:
                    unreadable += 1
                    continue
                summaries = record.summaries[:, gradient]
                rms = np.hypot(summaries[:, mean], summaries[:, std])
                low, high = record.ranges[:, gradient, 0], record.ranges[:, gradient, 1]
                bins = record.counts.shape[-1]
                halfwidths += list(((high - low) / (2 * bins) / rms)[rms > 0])
    return np.array(halfwidths), unreadable


def tau_rows(runs):
    halfwidths, unreadable = central_bin_halfwidths(runs)
    if unreadable:
        logging.warning("%d records unreadable (runs of an older tfnorm?): left out of "
                        "nonzero_tau.csv", unreadable)
    if not halfwidths.size:
        return []
    return [dict(quantity="weight_gradient", layer_records=int(halfwidths.size),
                 median=float(np.median(halfwidths)),
                 p10=float(np.percentile(halfwidths, 10)),
                 p90=float(np.percentile(halfwidths, 90)), tau=measures.NEARZERO_TAU)]


def plot(curves, out_dir):
    figure = compare_grid.nonzero_figure(curves)  # matplotlib loads here, after the checks
    return study.save_figure(figure, out_dir, "nonzero_claim.png")


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
    atomic.write_csv(os.path.join(out_dir, "nonzero.csv"), rows)
    atomic.write_csv(os.path.join(out_dir, "nonzero_summary.csv"), summary)
    tau = tau_rows(runs)
    if tau:
        atomic.write_csv(os.path.join(out_dir, "nonzero_tau.csv"), tau)
    path = plot(curves, out_dir)
    logging.info("wrote %s", path)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
