r"""Train every scheme (and seed), then compare them: the article's accuracy figure, the
non-zero-gradient figure, summary.csv and summary.md.

    python -m experiments.compare                    # all schemes on digits, a few minutes
    python -m experiments.compare --out_dir=runs/compare --results_dir=results   # make demo
    python -m experiments.compare --dataset=stl10 --schemes=none,batch,layer,instance,boxcox \
        --stl10_archive=/path/to/stl10_binary.tar.gz --out_dir=runs/stl10 --jobs=2

Runs go to <out_dir>/<scheme>/seed_<k>/ (each an experiments.train run directory). A run
already complete with the same configuration is reused; an interrupted one resumes;
one that diverged is reported, not retried (it would diverge again: runs are
deterministic). --jobs=N trains N runs at a time in subprocesses; the results are the
same as with --jobs=1, which trains in this process.
"""

import math
import os
import sys
import warnings

from absl import flags, logging
import matplotlib.pyplot as plt
import numpy as np

from experiments import cli, workers
from tfnorm import errors, io, plots, records, rundir, stopping
from tfnorm.records import LAYER_STATS

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    """The command line's flags (defined only when run as a script)."""
    fv = {"flag_values": flag_values}
    cli.define_run_flags(flag_values)
    flags.DEFINE_string("schemes", None, "Comma-separated schemes (default: all of "
                        "tfnorm.SCHEMES).", **fv)
    flags.DEFINE_integer("seeds", 5, "Runs per scheme, with seeds seed, seed+1, ...; "
                         "schemes are paired by seed (same initialization seed and data "
                         "order).", **fv)
    flags.DEFINE_integer("seed", 0, "The first seed.", **fv)
    flags.DEFINE_string("out_dir", "runs/compare", "Where the runs, figures and summaries "
                        "go.", **fv)
    flags.DEFINE_string("results_dir", None, "Also copy the figures, summaries and the "
                        "last-epoch four-panel figure of every layer for each scheme here.",
                        **fv)
    flags.DEFINE_integer("jobs", 2, "Processes training at a time: 1 trains every run in "
                         "this process, N > 1 splits the grid into N shards trained by N "
                         "subprocesses (same results). Default 2, for 2 cores.", **fv)
    flags.DEFINE_string("shard", None, "K/N: train only shard K of N of the scheme x seed "
                        "grid (contiguous blocks) and write no summary, e.g. one task of a "
                        "cluster's job array; then --summarize merges the runs.", **fv)
    flags.DEFINE_boolean("summarize", False, "Train nothing: merge the finished runs of the "
                         "grid into the summary and figures (refused if any is missing).",
                         **fv)
    flags.DEFINE_integer("panel_seeds", 1, "Draw the four-panel figures and GIFs for the "
                         "first N seeds of each scheme (the others keep their records: "
                         "experiments.panels draws them later).", **fv)

TARGET_TRAIN_ACC = 0.95
ACCURACY_FIGURE = "accuracy.png"
NONZERO_FIGURE = "nonzero.png"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SUMMARY_COLUMNS = ("scheme", "seeds", "status", "epochs", "final_train_acc",
                   "final_test_acc", "final_test_acc_min", "final_test_acc_max",
                   "best_test_acc", "best_test_epoch", "first_epoch_train_acc_95")
# The article's stored STL-10 numbers (one run each, REFERENCE.md section 1): train
# accuracy at his epoch 199 (our 200) and test accuracy there.
ARTICLE_STL10 = {"none": (0.565, 0.412), "batch": (0.999, 0.419), "layer": (0.981, 0.343),
                 "instance": (0.994, 0.124), "boxcox": (0.743, 0.459)}


def run_dir(out_dir, scheme, seed):
    return os.path.join(out_dir, scheme, f"seed_{seed}")


def plan(base, schemes, seeds, first_seed, panel_seeds=1):
    """The configuration of every run of the grid, scheme by scheme, each validated
    (before any work); panels only for the first ``panel_seeds`` seeds."""
    configs = []
    for scheme in schemes:
        for seed in range(first_seed, first_seed + seeds):
            config = dict(base, scheme=scheme, seed=seed,
                          out_dir=run_dir(base["out_dir"], scheme, seed),
                          panels=base["panels"] and seed < first_seed + panel_seeds)
            cli.validate(config)
            configs.append(config)
    return configs


def train_here(configs, progress):
    """Train ``configs`` one after the other in this process, sharing the traced steps of
    runs that differ only in their seed (``runner.Builds``). Returns after a Ctrl-C too,
    the run in progress stopped at a safe point."""
    from tfnorm import runner  # TensorFlow loads here, after every flag was checked
    builds = runner.Builds()
    for config in configs:
        if stopping.requested():
            return
        try:
            runner.run(config, builds=builds)
        except errors.Divergence as error:
            logging.warning("%s", error)
        except errors.Interrupted:
            return
        progress.finished(config)


def train_all(configs, jobs, command_of_shard=None):
    """Train every run of ``configs`` that is not finished (each reused run is audited:
    ``rundir.is_finished``): in this process with jobs=1, else in ``jobs`` worker
    processes (``command_of_shard(k, n)``: the command line training shard k of n).
    Raises errors.Interrupted after a SIGINT or SIGTERM, once the runs in progress
    stopped at a safe point; finished runs are kept."""
    todo = [c for c in configs if not rundir.is_finished(c["out_dir"], c)]
    for config in configs:
        if config not in todo:
            logging.info("reusing %s", config["out_dir"])
    jobs = max(1, min(jobs, len(todo)))
    progress = workers.Progress(len(configs), len(configs) - len(todo), jobs)
    if jobs == 1:
        train_here(todo, progress)
    else:
        workers.run_shards(lambda k: command_of_shard(k, jobs), jobs, todo, progress,
                           os.path.dirname(os.path.dirname(todo[0]["out_dir"])))
    if stopping.requested():
        raise errors.Interrupted(what=f"with {progress.done} of {progress.total} runs "
                                 "complete")


def collect(configs):
    """Per scheme: epochs, train/test accuracy and per-layer non-zero fractions
    (seeds x ... arrays, NaN past a diverged run's last epoch), and statuses."""

    curves = {}
    for config in configs:
        rows = records.read_metrics(config["out_dir"])
        epochs = config["epochs"]
        num_layers = records.num_layers_of(rows[0].keys()) if rows else 0
        train_acc = np.full(epochs, np.nan)
        test_acc = np.full(epochs, np.nan)
        nonzero = np.full((max(num_layers, 1), epochs), np.nan)
        for row in rows:
            e = row["epoch"] - 1
            train_acc[e], test_acc[e] = row["train_acc"], row["test_acc"]
            for layer in range(num_layers):
                nonzero[layer, e] = row[f"{LAYER_STATS[0]}_{layer + 1}"]
        status = records.read_status(config["out_dir"]) or {"state": "missing"}
        curve = curves.setdefault(config["scheme"], {
            "epochs": np.arange(1, epochs + 1), "train_acc": [], "test_acc": [],
            "nonzero": [], "statuses": [], "seeds": []})
        curve["train_acc"].append(train_acc)
        curve["test_acc"].append(test_acc)
        curve["nonzero"].append(nonzero)
        curve["statuses"].append(status)
        curve["seeds"].append(config["seed"])
    for curve in curves.values():
        for key in ("train_acc", "test_acc", "nonzero"):
            curve[key] = np.stack(curve[key])
    return curves


def _finite_or_none(value):
    return None if value is None or math.isnan(value) else float(value)


def summarize(curves):
    """One row per scheme (SUMMARY_COLUMNS); accuracies over the mean-over-seeds curves."""
    rows = []
    for scheme, curve in curves.items():
        train_acc, test_acc = curve["train_acc"], curve["test_acc"]
        last = test_acc[:, -1]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # epochs no run reached: NaN
            mean_train = np.nanmean(train_acc, axis=0) if np.isfinite(train_acc).any() else \
                np.full(train_acc.shape[1], np.nan)
            mean_test = np.nanmean(test_acc, axis=0) if np.isfinite(test_acc).any() else \
                np.full(test_acc.shape[1], np.nan)
        reached = np.flatnonzero(mean_train >= TARGET_TRAIN_ACC)
        diverged = [f"seed {seed} diverged at epoch {s.get('epoch')}"
                    for seed, s in zip(curve["seeds"], curve["statuses"])
                    if s.get("state") == "diverged"]
        incomplete = [f"seed {seed} {s.get('state')}"
                      for seed, s in zip(curve["seeds"], curve["statuses"])
                      if s.get("state") not in ("complete", "diverged")]
        finite_last = last[np.isfinite(last)]
        best = int(np.nanargmax(mean_test)) if np.isfinite(mean_test).any() else None
        rows.append({
            "scheme": scheme, "seeds": len(curve["seeds"]),
            "status": "; ".join(diverged + incomplete) or "complete",
            "epochs": len(curve["epochs"]),
            "final_train_acc": _finite_or_none(np.nanmean(train_acc[:, -1])
                                               if np.isfinite(train_acc[:, -1]).any() else None),
            "final_test_acc": _finite_or_none(finite_last.mean() if finite_last.size else None),
            "final_test_acc_min": _finite_or_none(finite_last.min() if finite_last.size else None),
            "final_test_acc_max": _finite_or_none(finite_last.max() if finite_last.size else None),
            "best_test_acc": _finite_or_none(mean_test[best] if best is not None else None),
            "best_test_epoch": best + 1 if best is not None else None,
            "first_epoch_train_acc_95": int(reached[0]) + 1 if reached.size else None,
        })
    return rows


def _cell(value, percent=True):
    if value is None:
        return "-"
    if isinstance(value, float) and percent:
        return f"{value:.3f}"
    return str(value)


def summary_markdown(rows, base, configs):
    dataset = base["dataset"]
    seeds = sorted({c["seed"] for c in configs})
    lines = [f"# Comparison on {dataset}", "",
             f"{base['epochs']} epochs, batch {base['batch_size']}, {base['optimizer']} at "
             f"learning rate {base['learning_rate']:g}, seeds {', '.join(map(str, seeds))}. "
             f"Accuracies are means over seeds (final test: with min-max); train accuracy "
             f"is the mean of the epoch's batch accuracies, test accuracy is over the whole "
             f"test set. 'epoch to 95%': the first epoch at which the mean train accuracy "
             f"reaches {TARGET_TRAIN_ACC:.0%} ('-': never).", "",
             f"![accuracy]({ACCURACY_FIGURE})", "", f"![non-zero gradients]({NONZERO_FIGURE})",
             "",
             "| scheme | final train acc | final test acc (min-max) | best test acc (epoch) "
             "| epoch to 95% train | status |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        spread = (f" ({_cell(row['final_test_acc_min'])}-{_cell(row['final_test_acc_max'])})"
                  if row["seeds"] > 1 and row["final_test_acc"] is not None else "")
        lines.append(f"| {row['scheme']} | {_cell(row['final_train_acc'])} | "
                     f"{_cell(row['final_test_acc'])}{spread} | {_cell(row['best_test_acc'])} "
                     f"({_cell(row['best_test_epoch'])}) | "
                     f"{_cell(row['first_epoch_train_acc_95'])} | {row['status']} |")
    if dataset == "stl10":
        lines += ["", "The article's stored STL-10 numbers (one run each, his epoch 199 = our "
                  "epoch 200):", "", "| scheme | article train acc | article test acc |",
                  "|---|---|---|"]
        for scheme, (train_acc, test_acc) in ARTICLE_STL10.items():
            lines.append(f"| {scheme} | {train_acc:.3f} | {test_acc:.3f} |")
    return "\n".join(lines) + "\n"


def write_outputs(base, configs, results_dir=None):
    """Figures and summaries into out_dir (and copies into results_dir). Returns the rows."""
    out_dir = base["out_dir"]
    curves = collect(configs)
    rows = summarize(curves)
    title = f"{base['dataset']}: {len(next(iter(curves.values()))['seeds'])} seed(s) per scheme"
    for name, figure in ((ACCURACY_FIGURE, plots.accuracy_figure(curves, title)),
                         (NONZERO_FIGURE, plots.nonzero_figure(curves))):
        io.save_figure(figure, os.path.join(out_dir, name), dpi=100)
        plt.close(figure)
    io.write_csv(os.path.join(out_dir, SUMMARY_CSV),
                 [{k: ("" if v is None else v) for k, v in row.items()} for row in rows],
                 list(SUMMARY_COLUMNS))
    io.write_text(os.path.join(out_dir, SUMMARY_MD), summary_markdown(rows, base, configs))
    if results_dir:
        for name in (ACCURACY_FIGURE, NONZERO_FIGURE, SUMMARY_CSV, SUMMARY_MD):
            with open(os.path.join(out_dir, name), "rb") as f:
                io.write_bytes(os.path.join(results_dir, name), f.read())
        first_seed = min(c["seed"] for c in configs)
        for config in configs:
            if config["seed"] != first_seed:
                continue
            epochs = records.record_epochs(config["out_dir"])
            if not epochs:
                continue
            for layer in range(1, len(curves[config["scheme"]]["nonzero"][0]) + 1):
                source = plots.panel_path(config["out_dir"], layer, epochs[-1])
                if os.path.exists(source):
                    with open(source, "rb") as f:
                        io.write_bytes(os.path.join(results_dir, "panels",
                                                    f"{config['scheme']}_layer{layer}.png"),
                                       f.read())
    return rows


# The flags a worker gets from its parent (besides --shard, --jobs=1 and the run flags).
GRID_FLAGS = ("schemes", "seeds", "seed", "out_dir", "panel_seeds")


def check_flags(flag_values=FLAGS):
    """(base configuration, schemes, shard or None), every flag checked before any work."""
    base = cli.resolve(dict(cli.flag_values(flag_values, cli.RUN_FLAGS),
                            out_dir=flag_values.out_dir, seed=flag_values.seed))
    schemes = cli.parse_schemes(flag_values.schemes)
    for name in ("seeds", "jobs"):
        if flag_values[name].value <= 0:
            raise cli.ConfigError(f"--{name}={flag_values[name].value}: must be a positive "
                                  "integer")
    if flag_values.panel_seeds < 0:
        raise cli.ConfigError(f"--panel_seeds={flag_values.panel_seeds}: must be 0 or more")
    if not base["out_dir"]:
        raise cli.ConfigError("--out_dir: required")
    shard = workers.parse_shard(flag_values.shard) if flag_values.shard else None
    if shard and flag_values.summarize:
        raise cli.ConfigError("--shard and --summarize: a shard trains, --summarize merges")
    cli.check_seed(flag_values.seed, count=flag_values.seeds)
    cli.validate(dict(base, scheme=schemes[0]), check_out_dir=False)
    return base, schemes, shard


def worker_command(flag_values, index, count):
    """The command line of the worker training shard ``index`` of ``count``."""
    values = dict(cli.flag_values(flag_values, cli.RUN_FLAGS + GRID_FLAGS), progress=False)
    return ([sys.executable, "-m", "experiments.compare", f"--shard={index}/{count}",
             "--jobs=1"] + cli.to_command_line(values, cli.RUN_FLAGS + GRID_FLAGS))


def check_complete(configs):
    """--summarize: every run of the grid finished, or one line naming those that are not."""
    missing = [f"{c['scheme']} seed {c['seed']}" for c in configs
               if not rundir.is_finished(c["out_dir"], c)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise cli.ConfigError(f"--summarize: {len(missing)} of {len(configs)} runs are not "
                              f"finished ({shown}); train them first (the same command "
                              "without --summarize, or its shards)")


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    base, schemes, shard = check_flags(FLAGS)
    cli.check_writable(base["out_dir"], "--out_dir")
    if FLAGS.results_dir:
        cli.check_writable(FLAGS.results_dir, "--results_dir")
    configs = plan(base, schemes, FLAGS.seeds, FLAGS.seed, FLAGS.panel_seeds)
    if shard:
        train_all(workers.shard(configs, *shard), jobs=1)
        logging.info("shard %d/%d done; merge the shards with --summarize", *shard)
        return
    if FLAGS.summarize:
        check_complete(configs)
    else:
        try:
            train_all(configs, FLAGS.jobs, lambda k, n: worker_command(FLAGS, k, n))
        except errors.Interrupted:
            # What is complete is summarized; the runs not finished show as such there.
            write_outputs(base, configs, FLAGS.results_dir)
            raise
    rows = write_outputs(base, configs, FLAGS.results_dir)
    for row in rows:
        logging.info("%-10s final test acc %s, epoch to 95%% train %s, %s", row["scheme"],
                     _cell(row["final_test_acc"]), _cell(row["first_epoch_train_acc_95"]),
                     row["status"])
    logging.info("summary: %s", os.path.join(base["out_dir"], SUMMARY_MD))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
