"""What compare writes from its runs' metrics.csv files: the per-seed measurements
(runs.csv), per scheme their means with 95% intervals and the paired differences
against the baseline with their verdicts (summary.csv, summary.md, by ``tfnorm.analysis.stats``),
and the figures (accuracy.png, nonzero.png: mean with a shaded 95% band).

Measurements per run (one row per scheme and seed):
  final_test_acc, best_test_acc, final_train_acc   at the last epoch / the best epoch
                             (of the epochs with a test pass: --eval_every)
  epoch_to_90, epoch_to_95   first epoch whose train accuracy reaches 90% / 95%; a run
                             that never does counts as epochs + 1 ("never", a lower bound)
  nonzero_<i>                non-zero fraction of layer i's weight gradient, the mean over
                             the epochs of each epoch's mean over its steps (the article's
                             "number of non-zero gradients")
  nearzero_<i>               the same mean of the fraction of its entries within
                             measures.NEARZERO_TAU x its RMS of 0 (what a histogram's spike
                             at 0 holds)
  update_freq_<i>            the same mean of the fraction of layer i's weights whose step
                             is above NEARZERO_TAU x the step's RMS
  movement_<i>               the mean over the epochs of ||W_e - W_(e-1)|| / ||W_(e-1)||
  parameters                 the network's trainable numbers (config.json)
A diverged run's measurements are undefined (left out of the intervals, and counted), and
so are those of a run not complete (compare interrupted, or a worker failed): the summary
is of what is complete. Each run is read through its audit (``tfnorm.run.rundir.view``): its
state and rows are what its checkpoint, metrics and records agree on, never status.json.
"""

import math
import os

import numpy as np

from tfnorm import measures
from tfnorm.analysis import compare_grid, stats
from tfnorm.analysis.compare_grid import (ACCURACY_FIGURE, NONZERO_FIGURE, RUNS_CSV, SUMMARY_CSV,
                                          SUMMARY_MD)
from tfnorm.run import atomic, records, rundir
THRESHOLDS = (0.90, 0.95)
ACCURACY_METRICS = ("final_test_acc", "best_test_acc", "final_train_acc", "epoch_to_90",
                    "epoch_to_95")
# Per layer: runs.csv's name -> the metrics.csv column whose mean over the epochs it is.
LAYER_MEANS = {"nonzero": measures.LAYER_STATS[0], "nearzero": "nearzero_grad_frac",
               "update_freq": "update_freq", "movement": "weight_movement"}
# The claims checked against the baseline: higher accuracy, sooner to a threshold, more
# non-zero gradient entries (so fewer near zero), more frequent updates, more movement.
DIRECTIONS = {"epoch_to_90": -1, "epoch_to_95": -1}
NEAR_ZERO_DIRECTION = -1
# The article's stored STL-10 numbers (one run each): train accuracy at his epoch 199
# (our 200) and test accuracy there.
ARTICLE_STL10 = {"none": (0.565, 0.412), "batch": (0.999, 0.419), "layer": (0.981, 0.343),
                 "instance": (0.994, 0.124), "boxcox": (0.743, 0.459)}
NONZERO = measures.LAYER_STATS[0]
NEARZERO = LAYER_MEANS["nearzero"]


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
    evaluated = [t for t in test if not math.isnan(t)]  # nan: no test pass (--eval_every)
    row["best_test_acc"] = max(evaluated) if complete else math.nan
    row["final_train_acc"] = train[-1] if complete else math.nan
    for threshold in THRESHOLDS:
        # The first epoch that reached it is a fact however the run went on.
        reached = first_epoch_reaching(train, threshold)
        row[f"epoch_to_{round(threshold * 100)}"] = (
            reached if complete or not math.isnan(reached) else math.nan)
    for name, column in LAYER_MEANS.items():
        for layer in range(1, layers + 1):
            # NaN for a column an older tfnorm did not write.
            row[f"{name}_{layer}"] = (float(np.mean([r.get(f"{column}_{layer}", math.nan)
                                                     for r in rows]))
                                      if complete else math.nan)
    row["parameters"] = records.read_parameter_count(config["out_dir"]) or math.nan
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
             "nonzero": np.full((len(runs), layers, epochs), np.nan),
             "nearzero": np.full((len(runs), layers, epochs), np.nan)}
    for seed, (_, rows) in enumerate(runs):
        for e, row in enumerate(rows[:epochs]):
            curve["train_acc"][seed, e] = row["train_acc"]
            curve["test_acc"][seed, e] = row["test_acc"]
            for layer in range(records.num_layers_of(row)):
                curve["nonzero"][seed, layer, e] = row[f"{NONZERO}_{layer + 1}"]
                curve["nearzero"][seed, layer, e] = row.get(f"{NEARZERO}_{layer + 1}", np.nan)
    return curve


def summarize(rows, baseline, epochs):
    """stats.summarize over the runs' rows: accuracies, times to threshold and non-zero
    fractions, each scheme paired by seed against ``baseline`` (None: no pairing). A time
    to threshold that no epoch reached is "never" (censored at epochs + 1) only when every
    run is finished: a run not complete may still reach it, so then it is undefined."""
    layers = sorted(int(k.split("_")[1]) for k in rows[0] if k.startswith("nonzero_"))
    per_layer = tuple(f"{name}_{layer}" for name in LAYER_MEANS for layer in layers
                      if f"{name}_{layer}" in rows[0])
    directions = dict(DIRECTIONS, **{f"nearzero_{layer}": NEAR_ZERO_DIRECTION
                                     for layer in layers})
    finished = all(row["state"] in rundir.FINISHED for row in rows)
    return stats.summarize(rows, ACCURACY_METRICS + per_layer, baseline=baseline,
                           directions=directions,
                           censored_at={f"epoch_to_{round(t * 100)}": epochs + 1
                                        for t in THRESHOLDS} if finished else None)


def _split(summary, keep):
    """The part of ``summary`` about the metrics that ``keep`` accepts."""
    metrics = tuple(m for m in summary.metrics if keep(m))
    return stats.Summary(metrics, {s: {m: v[m] for m in metrics}
                                   for s, v in summary.per_scheme.items()},
                         [c for c in summary.comparisons if keep(c.metric)])


def _parameters(rows, scheme):
    """The scheme's parameter count, or "-" if its runs do not say."""
    counts = {row["parameters"] for row in rows if row["scheme"] == scheme
              and not math.isnan(row["parameters"])}
    return ", ".join(str(int(c)) for c in sorted(counts)) or "-"


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
             "gradient, averaged over training; nearzero_i: the fraction of its entries "
             f"with |g| <= {measures.NEARZERO_TAU:g} x its RMS (exact zeros included), the "
             "same average; update_freq_i: the fraction of layer i's weights whose update "
             f"at a step is above {measures.NEARZERO_TAU:g} x the update's RMS, the same "
             "average; movement_i: ||W_e - W_(e-1)|| / ||W_(e-1)|| of layer i's effective "
             "weights, averaged over the epochs.", "", *_data_notes(base),
             (f"Verdicts: each claim (scheme better than {baseline}) is decided on the 95% "
              "interval of the paired difference, seed by seed: *supported* if it excludes "
              "0 on the claimed side, *contradicted* if it excludes 0 on the other side, "
              "*inconclusive* otherwise (tfnorm.analysis.stats.verdict)." if summary.comparisons or
              baseline in summary.per_scheme else
              f"No paired comparison: the baseline {baseline} is not among the schemes."), "",
             f"![accuracy]({ACCURACY_FIGURE})", "", f"![non-zero gradients]({NONZERO_FIGURE})",
             "", "## Accuracy and speed", "",
             stats.markdown_table(_split(summary, lambda m: m in ACCURACY_METRICS)),
             "## Non-zero gradient entries per layer", "",
             *_per_layer_tables(summary), "## Trainable parameters", "",
             "| scheme | parameters |", "|---|---|"]
    lines += [f"| {scheme} | {_parameters(rows, scheme)} |" for scheme in summary.per_scheme]
    lines += [""]
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


def _per_layer_tables(summary):
    """The non-zero, near-zero and weight-update tables (one line when no run has finished
    an epoch yet)."""
    if not any(m.startswith("nonzero_") for m in summary.metrics):
        return ["No run has finished an epoch yet.\n"]
    return [stats.markdown_table(_split(summary, lambda m: m.startswith("nonzero_"))),
            "## Near-zero gradient entries per layer", "",
            stats.markdown_table(_split(summary, lambda m: m.startswith("nearzero_"))),
            "## Weight updates per layer", "",
            stats.markdown_table(_split(summary, lambda m: m.startswith(("update_freq_",
                                                                         "movement_"))))]


def _data_notes(base):
    """The lines a setting with --train_per_class or --eval_every adds (none otherwise)."""
    notes = []
    if base.get("train_per_class"):
        notes.append(f"Training set: {base['train_per_class']} images of each class, drawn "
                     "with the run's seed (so seed k of every scheme trains on the same "
                     "images), in file order; test set: every other image.")
    if base.get("eval_every", 1) > 1:
        notes.append(f"Test pass every {base['eval_every']} epochs and at the last: "
                     "best_test_acc is the best of those epochs.")
    return [" ".join(notes), ""] if notes else []


def write(base, configs, baseline, results_dir=None):
    """runs.csv, summary.csv, summary.md and the figures into base['out_dir'] (copies
    in ``results_dir`` with the last epoch's panels of every scheme's first seed), from
    every run's audited view: a run not finished is counted, never read further.
    Returns the stats.Summary."""
    import matplotlib.pyplot as plt  # after the flags were checked

    from tfnorm.analysis import figures
    out_dir = base["out_dir"]
    views = [rundir.view(config["out_dir"], config) for config in configs]
    layers = max([records.num_layers_of(v.rows[0]) for v in views if v.rows] or [0])
    rows = [run_row(config, found, layers) for config, found in zip(configs, views)]
    schemes = list(dict.fromkeys(c["scheme"] for c in configs))
    summary = summarize(rows, baseline if baseline in schemes else None, base["epochs"])
    found = curves(configs, views)
    seeds = sorted({c["seed"] for c in configs})
    title = f"{base['dataset']}: mean and 95% interval over {len(seeds)} seed(s)"
    for name, figure in ((ACCURACY_FIGURE, figures.accuracy_figure(found, title)),
                         (NONZERO_FIGURE, compare_grid.nonzero_figure(found))):
        atomic.save_figure(figure, os.path.join(out_dir, name), dpi=100)
        plt.close(figure)
    atomic.write_csv(os.path.join(out_dir, RUNS_CSV), rows)
    atomic.write_csv(os.path.join(out_dir, SUMMARY_CSV), stats.flat_rows(summary))
    atomic.write_text(os.path.join(out_dir, SUMMARY_MD),
                      markdown(summary, rows, base, seeds, baseline, views))
    if results_dir:
        for name in (ACCURACY_FIGURE, NONZERO_FIGURE, RUNS_CSV, SUMMARY_CSV, SUMMARY_MD):
            with open(os.path.join(out_dir, name), "rb") as f:
                atomic.write_bytes(os.path.join(results_dir, name), f.read())
        _copy_panels(configs, views, results_dir, seeds[0])
    return summary


def _copy_panels(configs, views, results_dir, first_seed):
    from tfnorm.run import four_panels
    for config, found in zip(configs, views):
        if config["seed"] != first_seed or found.state != "complete":
            continue
        epochs = [e for e in records.record_epochs(config["out_dir"]) if e <= found.epoch]
        layers = records.num_layers_of(found.rows[0]) if epochs else 0
        for layer in range(1, layers + 1):
            source = four_panels.panel_path(config["out_dir"], layer, epochs[-1])
            if os.path.exists(source):
                with open(source, "rb") as f:
                    atomic.write_bytes(os.path.join(results_dir, "panels",
                                                    f"{config['scheme']}_layer{layer}.png"),
                                   f.read())
