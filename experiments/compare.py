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

import concurrent.futures
import contextlib
import ctypes
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

from absl import flags, logging
import matplotlib.pyplot as plt
import numpy as np

from experiments import cli, train
from tfnorm import errors, io, plots, records, rundir, stopping
from tfnorm.records import LAYER_STATS

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    """The command line's flags (defined only when run as a script)."""
    fv = {"flag_values": flag_values}
    cli.define_run_flags(flag_values)
    flags.DEFINE_string("schemes", None, "Comma-separated schemes (default: all of "
                        "tfnorm.SCHEMES).", **fv)
    flags.DEFINE_integer("seeds", 1, "Runs per scheme, with seeds seed, seed+1, ...", **fv)
    flags.DEFINE_integer("seed", 0, "The first seed.", **fv)
    flags.DEFINE_string("out_dir", "runs/compare", "Where the runs, figures and summaries "
                        "go.", **fv)
    flags.DEFINE_string("results_dir", None, "Also copy the figures, summaries and the "
                        "last-epoch four-panel figure of every layer for each scheme here.",
                        **fv)
    flags.DEFINE_integer("jobs", 2, "Runs trained at a time: 1 trains in this process, more "
                         "in subprocesses (same results). Default 2, for 2 cores.", **fv)

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


def plan(base, schemes, seeds, first_seed):
    """The configuration of every run of the grid, each validated (before any work)."""
    configs = []
    for scheme in schemes:
        for seed in range(first_seed, first_seed + seeds):
            config = dict(base, scheme=scheme, seed=seed,
                          out_dir=run_dir(base["out_dir"], scheme, seed))
            cli.validate(config)
            configs.append(config)
    return configs


def _train_here(config):
    from tfnorm import runner  # TensorFlow loads here, after every flag was checked
    try:
        runner.run(config)
    except errors.Divergence as error:
        logging.warning("%s", error)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent():
    """A preexec_fn that makes a training subprocess get SIGKILL when this process dies,
    however it dies (Linux's prctl PR_SET_PDEATHSIG), so that a killed compare leaves no
    training behind; None where there is no prctl. The child loses nothing: rerunning
    compare resumes it from its last checkpoint.

    The signal comes when the thread that started the child ends: the pool's thread
    waits in subprocess.run for the child, so it outlives it unless the process dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    death_signal = ctypes.c_ulong(signal.SIGKILL)

    def set_death_signal():
        # Between fork and exec, with other threads' locks possibly held: only the
        # system calls, everything prepared in the parent.
        prctl(PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return set_death_signal


def _train_subprocess(config):
    """experiments.train in a subprocess; its output is kept in <run>/train.log."""
    command = ([sys.executable, "-m", "experiments.train"]
               + cli.to_command_line(dict(config, progress=False), train.TRAIN_FLAGS))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if stopping.requested():  # a queued run is not started after Ctrl-C
        raise errors.Interrupted(what="before this run started")
    # Its own session: a Ctrl-C at the terminal reaches this process only, which passes
    # one SIGINT on to each run (``_pass_on``), so that each stops at a safe point.
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=root, preexec_fn=_die_with_parent(),
                             start_new_session=True)
    with _children_lock:
        _children.add(child)
    try:
        stdout, stderr = child.communicate()
    finally:
        with _children_lock:
            _children.discard(child)
    io.write_text(os.path.join(config["out_dir"], "train.log"), stdout + stderr)
    lines = stderr.strip().splitlines() or ["(no message)"]
    if child.returncode == errors.Divergence.exit_code:
        logging.warning("%s", lines[-1])
    elif child.returncode == errors.Interrupted.exit_code:
        raise errors.Interrupted(what=f"during {config['scheme']} seed {config['seed']}")
    elif child.returncode != 0:
        raise cli.ConfigError(f"{config['scheme']} seed {config['seed']}: {lines[-1]}")


_children = set()
_children_lock = threading.Lock()


def _pass_on(signum):
    with _children_lock:
        for child in _children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)


def _final_test_acc(config):
    rows = records.read_metrics(config["out_dir"])
    return f"{rows[-1]['test_acc']:.3f}" if rows else "-"


class Progress:
    """One line after each finished run: [k/N], scheme, seed, final test accuracy, the
    run's seconds and an estimate of the time left (the mean time of the runs trained so
    far, times those left, over the runs trained at a time)."""

    def __init__(self, total, done, jobs):
        self.total, self.done, self.jobs = total, done, jobs
        self.seconds = []

    def finished(self, config, seconds):
        self.done += 1
        self.seconds.append(seconds)
        left = (self.total - self.done) * sum(self.seconds) / len(self.seconds) / self.jobs
        logging.info("[%d/%d] %s seed %d: final test acc %s, %.0f s; about %.0f s left",
                     self.done, self.total, config["scheme"], config["seed"],
                     _final_test_acc(config), seconds, left)


def train_all(configs, jobs):
    """Train every run of ``configs`` that is not finished (each reused run is audited:
    ``rundir.is_finished``). Raises errors.Interrupted after a SIGINT or SIGTERM, once the
    runs in progress stopped at a safe point; finished runs are kept."""
    todo = [c for c in configs if not rundir.is_finished(c["out_dir"], c)]
    for config in configs:
        if config not in todo:
            logging.info("reusing %s", config["out_dir"])
    progress = Progress(len(configs), len(configs) - len(todo), jobs)
    if jobs == 1:
        for config in todo:
            if stopping.requested():
                break
            logging.info("training %s seed %d", config["scheme"], config["seed"])
            start = time.monotonic()
            try:
                _train_here(config)
            except errors.Interrupted:
                break
            progress.finished(config, time.monotonic() - start)
        if stopping.requested():
            raise errors.Interrupted(what=f"with {progress.done} of {progress.total} runs "
                                     "complete")
        return
    stopping.on_request(_pass_on)
    interrupted = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_timed, _train_subprocess, c): c for c in todo}
        for future in concurrent.futures.as_completed(futures):
            try:
                progress.finished(futures[future], future.result())
            except errors.Interrupted as error:
                interrupted = interrupted or error
    if interrupted or stopping.requested():
        raise errors.Interrupted(what=f"with {progress.done} of {progress.total} runs complete")


def _timed(function, *args):
    start = time.monotonic()
    function(*args)
    return time.monotonic() - start


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


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    base = cli.resolve(dict(cli.flag_values(FLAGS, cli.RUN_FLAGS),
                            out_dir=FLAGS.out_dir, seed=FLAGS.seed))
    schemes = cli.parse_schemes(FLAGS.schemes)
    if FLAGS.seeds <= 0:
        raise cli.ConfigError(f"--seeds={FLAGS.seeds}: must be a positive integer")
    if FLAGS.jobs <= 0:
        raise cli.ConfigError(f"--jobs={FLAGS.jobs}: must be a positive integer")
    if not base["out_dir"]:
        raise cli.ConfigError("--out_dir: required")
    cli.check_seed(FLAGS.seed, count=FLAGS.seeds)
    cli.validate(dict(base, scheme=schemes[0]), check_out_dir=False)
    cli.check_writable(base["out_dir"], "--out_dir")
    if FLAGS.results_dir:
        cli.check_writable(FLAGS.results_dir, "--results_dir")
    configs = plan(base, schemes, FLAGS.seeds, FLAGS.seed)
    try:
        train_all(configs, FLAGS.jobs)
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
