"""experiments.compare on two short runs: figures, summaries and results_dir; --jobs=2
(subprocesses) gives the same summary as --jobs=1 (this process); complete runs are
reused."""

import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import cli, compare
from tfnorm import io, plots, records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMES = ("none", "batch")
TRAIN_FLAGS = dict(epochs=2, image_size=16, train_limit=60, test_limit=40, progress=False)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The command line with --jobs=2, and (to save time) one of its runs again with
    --jobs=1 in this process: the summary is a function of the runs' metrics."""
    root = tmp_path_factory.mktemp("compare")
    out_dir, results_dir = str(root / "runs"), str(root / "results")
    result = subprocess.run(
        [sys.executable, "-m", "experiments.compare", f"--schemes={','.join(SCHEMES)}",
         f"--out_dir={out_dir}", f"--results_dir={results_dir}", "--jobs=2"]
        + cli.to_command_line(TRAIN_FLAGS, list(TRAIN_FLAGS)),
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    base = cli.resolve(dict(TRAIN_FLAGS, out_dir=str(root / "in_process")))
    configs = compare.plan(base, ["none"], 1, 0)
    compare.train_all(configs, jobs=1)
    compare.write_outputs(base, configs)
    return out_dir, results_dir, base["out_dir"], configs


def test_figures_and_summaries_are_written(compared):
    out_dir, results_dir, _, _ = compared
    for name in ("accuracy.png", "nonzero.png", "summary.csv", "summary.md"):
        assert os.path.getsize(os.path.join(out_dir, name)) > 0
        with open(os.path.join(out_dir, name), "rb") as a, \
                open(os.path.join(results_dir, name), "rb") as b:
            assert a.read() == b.read()
    assert sorted(os.listdir(os.path.join(results_dir, "panels"))) == sorted(
        f"{scheme}_layer{layer}.png" for scheme in SCHEMES for layer in range(1, 7))
    rows = io.read_csv(os.path.join(out_dir, "summary.csv"))
    assert [row["scheme"] for row in rows] == list(SCHEMES)
    assert list(rows[0]) == list(compare.SUMMARY_COLUMNS)
    markdown = open(os.path.join(out_dir, "summary.md")).read()
    assert "| none |" in markdown and "| batch |" in markdown


def test_summary_agrees_with_each_runs_metrics(compared):
    out_dir, _, _, _ = compared
    for row in io.read_csv(os.path.join(out_dir, "summary.csv")):
        metrics = records.read_metrics(compare.run_dir(out_dir, row["scheme"], 0))
        test_acc = [m["test_acc"] for m in metrics]
        train_acc = [m["train_acc"] for m in metrics]
        assert float(row["final_test_acc"]) == test_acc[-1]
        assert float(row["best_test_acc"]) == max(test_acc)
        assert int(row["best_test_epoch"]) == int(np.argmax(test_acc)) + 1
        reached = [m["epoch"] for m in metrics if m["train_acc"] >= 0.95]
        assert row["first_epoch_train_acc_95"] == (str(reached[0]) if reached else "")
        assert float(row["final_train_acc"]) == train_acc[-1]
        assert row["status"] == "complete"


def test_jobs_2_gives_the_same_results_as_jobs_1(compared):
    out_dir, _, in_process_dir, _ = compared
    subprocess_rows = io.read_csv(os.path.join(out_dir, "summary.csv"))
    in_process_rows = io.read_csv(os.path.join(in_process_dir, "summary.csv"))
    assert in_process_rows == [r for r in subprocess_rows if r["scheme"] == "none"]
    for scheme in ("none",):
        a = records.read_metrics(compare.run_dir(out_dir, scheme, 0))
        b = records.read_metrics(compare.run_dir(in_process_dir, scheme, 0))
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in a] == \
            [{k: v for k, v in r.items() if k != "seconds"} for r in b]


def test_complete_runs_are_reused(compared):
    _, _, in_process_dir, configs = compared
    metrics = [os.path.join(c["out_dir"], "metrics.csv") for c in configs]
    before = [os.path.getmtime(m) for m in metrics]
    compare.train_all(configs, jobs=1)
    assert [os.path.getmtime(m) for m in metrics] == before


def test_summarize_takes_means_over_seeds_and_reports_divergence():
    nan = float("nan")
    curves = {"batch": {
        "epochs": np.arange(1, 4),
        "train_acc": np.array([[0.5, 0.94, 0.99], [0.6, 0.97, 0.98]]),
        "test_acc": np.array([[0.4, 0.6, 0.5], [0.5, 0.7, 0.7]]),
        "nonzero": np.ones((2, 6, 3)), "seeds": [0, 1],
        "statuses": [{"state": "complete"}, {"state": "complete"}]},
        "boxcox": {
        "epochs": np.arange(1, 4),
        "train_acc": np.array([[0.2, nan, nan], [0.3, 0.4, 0.5]]),
        "test_acc": np.array([[0.2, nan, nan], [0.3, 0.35, 0.45]]),
        "nonzero": np.ones((2, 6, 3)), "seeds": [0, 1],
        "statuses": [{"state": "diverged", "epoch": 2}, {"state": "complete"}]}}
    batch, boxcox = compare.summarize(curves)
    assert batch["first_epoch_train_acc_95"] == 2  # mean 0.955 at epoch 2
    assert batch["final_test_acc"] == pytest.approx(0.6)
    assert (batch["final_test_acc_min"], batch["final_test_acc_max"]) == (0.5, 0.7)
    assert batch["best_test_acc"] == pytest.approx(0.65) and batch["best_test_epoch"] == 2
    assert boxcox["status"] == "seed 0 diverged at epoch 2"
    assert boxcox["final_test_acc"] == pytest.approx(0.45)
    assert boxcox["first_epoch_train_acc_95"] is None
    figure = plots.accuracy_figure(curves)
    # One min-max band per scheme and panel (two seeds).
    assert sum(len(ax.collections) for ax in figure.axes) == 4


def test_unknown_scheme_is_refused():
    with pytest.raises(cli.ConfigError, match="--schemes: unknown scheme 'bn'"):
        cli.parse_schemes("none,bn")


def _living_children(pid):
    """Pids of the live (not zombie) processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            if fields[0] != "Z" and int(fields[1]) == pid:
                children.append(int(entry))
    return children


def _is_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc: Linux")
def test_a_killed_compare_leaves_no_training_behind_and_reruns(tmp_path):
    """SIGKILL to compare while its training subprocess runs: the child dies with it (it
    would otherwise keep writing the run directory), and the same command then completes,
    reusing the run that was already finished."""
    import signal
    import time
    out_dir = str(tmp_path / "runs")
    flags = dict(TRAIN_FLAGS, panels=False)
    base = cli.resolve(dict(flags, out_dir=out_dir))
    compare.train_all(compare.plan(base, ["none"], 1, 0), jobs=1)
    finished = os.path.join(compare.run_dir(out_dir, "none", 0), "metrics.csv")
    finished_mtime = os.path.getmtime(finished)
    command = ([sys.executable, "-m", "experiments.compare", "--schemes=none,batch",
                f"--out_dir={out_dir}", "--jobs=2"]
               + cli.to_command_line(flags, list(flags)))
    parent = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    children = []
    try:
        deadline = time.time() + 120
        while not children and parent.poll() is None and time.time() < deadline:
            time.sleep(0.05)
            children = _living_children(parent.pid)
        assert children, "compare started no training subprocess"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while any(map(_is_alive, children)) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(map(_is_alive, children)), "a training outlived its compare"
    finally:
        parent.kill()
        parent.wait()
        for child in filter(_is_alive, children):
            os.kill(child, signal.SIGKILL)

    # The rerun, in this process (what main does after parsing the flags): the training
    # still in a subprocess.
    configs = compare.plan(base, ["none", "batch"], 1, 0)
    compare.train_all(configs, jobs=2)
    compare.write_outputs(base, configs)
    assert os.path.getmtime(finished) == finished_mtime
    assert records.read_status(compare.run_dir(out_dir, "batch", 0))["state"] == "complete"
    assert os.path.exists(os.path.join(out_dir, "summary.csv"))
