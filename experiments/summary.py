"""What compare writes from its runs' metrics.csv files: the per-seed measurements
(runs.csv), per scheme their means with 95% intervals and the paired differences
against the baseline with their verdicts (summary.csv, summary.md, by ``tfnorm.stats``),
and the figures (accuracy.png, nonzero.png: mean with a shaded 95% band).

Measurements per run (one row per scheme and seed):
  final_test_acc, best_test_acc, final_train_acc   at the last epoch / the best epoch
  epoch_to_90, epoch_to_95   first epoch whose train accuracy reaches 90% / 95%; a run
                             that never does counts as epochs + 1 ("never", a lower bound)
  nonzero_<i>                non-zero fraction of layer i's weight gradient, the mean over
                             the epochs of each epoch's mean over its steps (the article's
                             "number of non-zero gradients")
A diverged run's accuracies are undefined (left out of the intervals, and counted), and
so are those of a run not complete (compare interrupted, or a worker failed): the summary
is of what is complete. Each run is read through its audit (``tfnorm.rundir.view``): its
state and rows are what its checkpoint, metrics and records agree on, never status.json.
"""

import math
import os

import numpy as np

from tfnorm import io, records, rundir, stats

ACCURACY_FIGURE = "accuracy.png"
NONZERO_FIGURE = "nonzero.png"
RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
THRESHOLDS = (0.90, 0.95)
ACCURACY_METRICS = ("final_test_acc", "best_test_acc", "final_train_acc", "epoch_to_90",
                    "epoch_to_95")
# The claims checked against the baseline: higher accuracy, sooner to a threshold, more
# non-zero gradient entries.
DIRECTIONS = {"epoch_to_90": -1, "epoch_to_95": -1}
# The article's stored STL-10 numbers (one run each): train accuracy at his epoch 199
# (our 200) and test accuracy there.
ARTICLE_STL10 = {"none": (0.565, 0.412), "batch": (0.999, 0.419), "layer": (0.981, 0.343),
                 "instance": (0.994, 0.124), "boxcox": (0.743, 0.459)}
NONZERO = records.LAYER_STATS[0]


def first_epoch_reaching(train_acc, threshold):
    reached = np.flatnonzero(np.asarray(train_acc) >= threshold)
    return float(reached[0] + 1) if reached.size else math.nan


def run_row(config, found, layers):
    """The measurements of one run (see the module docstring) and its state, from its
    audited view ``found`` (a rundir.View); nonzero_1..``layers``."""
    rows = found.rows
    complete = found.state == "complete"
    row = {"scheme": config["scheme"], "seed": config["seed"], "state": found.state}
    test = [r["test_acc"] for r in rows]
    train = [r["train_acc"] for r in rows]
    row["final_test_acc"] = test[-1] if complete else math.nan
    row["best_test_acc"] = max(test) if complete else math.nan
    row["final_train_acc"] = train[-1] if complete else math.nan
    for threshold in THRESHOLDS:
        # The first epoch that reached it is a fact however the run went on.
        reached = first_epoch_reaching(train, threshold)
        row[f"epoch_to_{round(threshold * 100)}"] = (
            reached if complete or not math.isnan(reached) else math.nan)
    for layer in range(1, layers + 1):
        row[f"nonzero_{layer}"] = (float(np.mean([r[f"{NONZERO}_{layer}"] for r in rows]))
                                   if complete else math.nan)
    return row


def curves(configs, views):
    """Per scheme the per-epoch train/test accuracy and non-zero fractions of every seed
    (seeds x epochs and seeds x layers x epochs, NaN past a run's last audited epoch)."""
    found = {}
    for config, view in zip(configs, views):
        found.setdefault(config["scheme"], []).append((config["epochs"], view.rows))
    return {scheme: _curve(runs) for scheme, runs in found.items()}


def _curve(runs):
    epochs = runs[0][0]
    layers = max([records.num_layers_of(rows[0]) for _, rows in runs if rows] or [1])
    curve = {"epochs": np.arange(1, epochs + 1),
             "train_acc": np.full((len(runs), epochs), np.nan),
             "test_acc": np.full((len(runs), epochs), np.nan),
             "nonzero": np.full((len(runs), layers, epochs), np.nan)}
    for seed, (_, rows) in enumerate(runs):
        for e, row in enumerate(rows[:epochs]):
            curve["train_acc"][seed, e] = row["train_acc"]
            curve["test_acc"][seed, e] = row["test_acc"]
            for layer in range(records.num_layers_of(row)):
                curve["nonzero"][seed, layer, e] = row[f"{NONZERO}_{layer + 1}"]
    return curve


def summarize(rows, baseline, epochs):
    """stats.summarize over the runs' rows: accuracies, times to threshold and non-zero
    fractions, each scheme paired by seed against ``baseline`` (None: no pairing). A time
    to threshold that no epoch reached is "never" (censored at epochs + 1) only when every
    run is finished: a run not complete may still reach it, so then it is undefined."""
    layers = sorted(int(k.split("_")[1]) for k in rows[0] if k.startswith("nonzero_"))
    metrics = ACCURACY_METRICS + tuple(f"nonzero_{layer}" for layer in layers)
    finished = all(row["state"] in rundir.FINISHED for row in rows)
    return stats.summarize(rows, metrics, baseline=baseline, directions=DIRECTIONS,
                           censored_at={f"epoch_to_{round(t * 100)}": epochs + 1
                                        for t in THRESHOLDS} if finished else None)


def _split(summary, keep):
    """The part of ``summary`` about the metrics that ``keep`` accepts."""
    metrics = tuple(m for m in summary.metrics if keep(m))
    return stats.Summary(metrics, {s: {m: v[m] for m in metrics}
                                   for s, v in summary.per_scheme.items()},
                         [c for c in summary.comparisons if keep(c.metric)])


def markdown(summary, rows, base, seeds, baseline, views):
    states = {}
    for row, found in zip(rows, views):
        if row["state"] != "complete":
            detail = (f" after epoch {found.epoch} of {base['epochs']}"
                      if found.state == "incomplete" else
                      f" ({found.message})" if found.message and found.state != "diverged"
                      else "")
            states.setdefault(row["scheme"], []).append(
                f"seed {row['seed']} {row['state']}{detail}")
    lines = [f"# Comparison on {base['dataset']}", "",
             f"{base['epochs']} epochs, batch {base['batch_size']}, {base['optimizer']} at "
             f"learning rate {base['learning_rate']:g}, image size {base['image_size']}, "
             f"seeds {', '.join(map(str, seeds))} (each scheme's seed k has the same data "
             "order and initialization seed).", "",
             "Every cell: the mean over seeds and its 95% Student t interval [low, high]. "
             "Train accuracy is the mean of the epoch's batch accuracies, test accuracy is "
             "over the whole test set. epoch_to_90/95: the first epoch at which train "
             "accuracy reaches 90%/95%; a seed that never does counts as "
             f"{base['epochs'] + 1} and is marked 'never' (the mean is then a lower "
             "bound). nonzero_i: the fraction of non-zero entries of layer i's weight "
             "gradient, averaged over training.", "",
             (f"Verdicts: each claim (scheme better than {baseline}) is decided on the 95% "
              "interval of the paired difference, seed by seed: *supported* if it excludes "
              "0 on the claimed side, *contradicted* if it excludes 0 on the other side, "
              "*inconclusive* otherwise (tfnorm.stats.verdict)." if summary.comparisons or
              baseline in summary.per_scheme else
              f"No paired comparison: the baseline {baseline} is not among the schemes."), "",
             f"![accuracy]({ACCURACY_FIGURE})", "", f"![non-zero gradients]({NONZERO_FIGURE})",
             "", "## Accuracy and speed", "",
             stats.markdown_table(_split(summary, lambda m: m in ACCURACY_METRICS)),
             "## Non-zero gradient entries per layer", "",
             stats.markdown_table(_split(summary, lambda m: m.startswith("nonzero_")))
             if any(m.startswith("nonzero_") for m in summary.metrics) else
             "No run has finished an epoch yet.\n"]
    if states:
        lines += ["## Runs not complete", "", "Their accuracies are left out (undefined)"
                  + ("; with runs not finished, a time to a threshold that no epoch reached "
                     "is undefined too, not 'never'." if any(
                         v.state not in rundir.FINISHED for v in views) else "."), ""]
        lines += [f"- {s}: {'; '.join(v)}" for s, v in states.items()] + [""]
    if base["dataset"] == "stl10":
        lines += ["The article's stored STL-10 numbers (one run each, his epoch 199 = our "
                  "epoch 200):", "", "| scheme | article train acc | article test acc |",
                  "|---|---|---|"]
        lines += [f"| {s} | {tr:.3f} | {te:.3f} |" for s, (tr, te) in ARTICLE_STL10.items()]
    return "\n".join(lines) + "\n"


def write(base, configs, baseline, results_dir=None):
    """runs.csv, summary.csv, summary.md and the figures into base['out_dir'] (copies
    in ``results_dir`` with the last epoch's panels of every scheme's first seed), from
    every run's audited view: a run not finished is counted, never read further.
    Returns the stats.Summary."""
    import matplotlib.pyplot as plt  # after the flags were checked

    from tfnorm import plots
    out_dir = base["out_dir"]
    views = [rundir.view(config["out_dir"], config) for config in configs]
    layers = max([records.num_layers_of(v.rows[0]) for v in views if v.rows] or [0])
    rows = [run_row(config, found, layers) for config, found in zip(configs, views)]
    schemes = list(dict.fromkeys(c["scheme"] for c in configs))
    summary = summarize(rows, baseline if baseline in schemes else None, base["epochs"])
    found = curves(configs, views)
    seeds = sorted({c["seed"] for c in configs})
    title = f"{base['dataset']}: mean and 95% interval over {len(seeds)} seed(s)"
    for name, figure in ((ACCURACY_FIGURE, plots.accuracy_figure(found, title)),
                         (NONZERO_FIGURE, plots.nonzero_figure(found))):
        io.save_figure(figure, os.path.join(out_dir, name), dpi=100)
        plt.close(figure)
    io.write_csv(os.path.join(out_dir, RUNS_CSV), rows)
    io.write_csv(os.path.join(out_dir, SUMMARY_CSV), stats.flat_rows(summary))
    io.write_text(os.path.join(out_dir, SUMMARY_MD),
                  markdown(summary, rows, base, seeds, baseline, views))
    if results_dir:
        for name in (ACCURACY_FIGURE, NONZERO_FIGURE, RUNS_CSV, SUMMARY_CSV, SUMMARY_MD):
            with open(os.path.join(out_dir, name), "rb") as f:
                io.write_bytes(os.path.join(results_dir, name), f.read())
        _copy_panels(configs, views, results_dir, seeds[0])
    return summary


def _copy_panels(configs, views, results_dir, first_seed):
    from tfnorm import plots
    for config, found in zip(configs, views):
        if config["seed"] != first_seed or found.state != "complete":
            continue
        epochs = [e for e in records.record_epochs(config["out_dir"]) if e <= found.epoch]
        layers = records.num_layers_of(found.rows[0]) if epochs else 0
        for layer in range(1, layers + 1):
            source = plots.panel_path(config["out_dir"], layer, epochs[-1])
            if os.path.exists(source):
                with open(source, "rb") as f:
                    io.write_bytes(os.path.join(results_dir, "panels",
                                                f"{config['scheme']}_layer{layer}.png"),
                                   f.read())
