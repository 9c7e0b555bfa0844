"""experiments.compare: the grid of schemes x seeds trained in one process (traced steps
shared across seeds), in worker processes (--jobs=2) and by shards (--shard, then
--summarize), all with the same runs; the summary's intervals and verdicts agree with
the runs' own metrics; complete runs are reused; a killed compare leaves nothing behind."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags

from experiments import cli, compare, summary
from test_resume import assert_same_run
from tfnorm import io, records, stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMES = ("none", "batch")
SEEDS = 2
TRAIN_FLAGS = dict(epochs=2, image_size=16, train_limit=60, test_limit=40, progress=False)


def command(out_dir, *extra, **flags_):
    values = dict(TRAIN_FLAGS, **flags_)
    return ([sys.executable, "-m", "experiments.compare", f"--schemes={','.join(SCHEMES)}",
             f"--seeds={SEEDS}", f"--out_dir={out_dir}"] + list(extra)
            + cli.to_command_line(values, list(values)))


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The command line with --jobs=2 (two worker processes), and the same grid in this
    process with --jobs=1."""
    root = tmp_path_factory.mktemp("compare")
    out_dir, results_dir = str(root / "runs"), str(root / "results")
    result = subprocess.run(command(out_dir, f"--results_dir={results_dir}", "--jobs=2"),
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    base = cli.resolve(dict(TRAIN_FLAGS, out_dir=str(root / "in_process")))
    configs = compare.plan(base, list(SCHEMES), SEEDS, 0)
    compare.train_all(configs, jobs=1)
    summary.write(base, configs, "none")
    return out_dir, results_dir, base["out_dir"], configs, result.stderr


def test_figures_summaries_and_progress_are_written(compared):
    out_dir, results_dir, _, _, stderr = compared
    for name in ("accuracy.png", "nonzero.png", "runs.csv", "summary.csv", "summary.md"):
        assert os.path.getsize(os.path.join(out_dir, name)) > 0
        with open(os.path.join(out_dir, name), "rb") as a, \
                open(os.path.join(results_dir, name), "rb") as b:
            assert a.read() == b.read()
    assert sorted(os.listdir(os.path.join(results_dir, "panels"))) == sorted(
        f"{scheme}_layer{layer}.png" for scheme in SCHEMES for layer in range(1, 7))
    # Panels for the first seed only (--panel_seeds=1), records for every seed.
    for scheme in SCHEMES:
        assert os.listdir(os.path.join(compare.run_dir(out_dir, scheme, 0), "panels"))
        assert not os.path.exists(os.path.join(compare.run_dir(out_dir, scheme, 1), "panels"))
        assert records.record_epochs(compare.run_dir(out_dir, scheme, 1)) == [1, 2]
    progress = [line for line in stderr.splitlines() if "] [" in line and "/4] " in line]
    assert len(progress) == 4 and "about" in progress[-1], stderr
    markdown = open(os.path.join(out_dir, "summary.md")).read()
    assert "| final_test_acc: batch > none |" in markdown
    assert "| nearzero_3: batch < none |" in markdown
    assert "| movement_2: batch > none |" in markdown
    assert "| batch | 11088 |" in markdown
    assert "Student t" in markdown


def test_the_summary_agrees_with_each_runs_metrics_and_the_stats_module(compared):
    out_dir, _, _, configs, _ = compared
    runs = {(r["scheme"], int(r["seed"])): r for r in io.read_csv(
        os.path.join(out_dir, "runs.csv"))}
    final = {}
    for scheme in SCHEMES:
        for seed in range(SEEDS):
            metrics = records.read_metrics(compare.run_dir(out_dir, scheme, seed))
            row = runs[(scheme, seed)]
            assert float(row["final_test_acc"]) == metrics[-1]["test_acc"]
            assert float(row["best_test_acc"]) == max(m["test_acc"] for m in metrics)
            assert float(row["final_train_acc"]) == metrics[-1]["train_acc"]
            for name, column in summary.LAYER_MEANS.items():
                assert float(row[f"{name}_6"]) == pytest.approx(
                    np.mean([m[f"{column}_6"] for m in metrics])), name
            assert int(row["parameters"]) == 11088  # no scheme here learns more
            final[scheme, seed] = metrics[-1]["test_acc"]
    # The interval and the paired difference, computed here from the metrics by hand.
    cells = {(r["kind"], r["scheme"], r["metric"]): r
             for r in io.read_csv(os.path.join(out_dir, "summary.csv"))}
    batch = [final["batch", s] for s in range(SEEDS)]
    diffs = [final["batch", s] - final["none", s] for s in range(SEEDS)]
    cell = cells["scheme", "batch", "final_test_acc"]
    assert float(cell["mean"]) == pytest.approx(np.mean(batch))
    half = 12.706205 * np.std(batch, ddof=1) / np.sqrt(2)  # t_{0.975, 1}
    assert float(cell["high"]) == pytest.approx(np.mean(batch) + half)
    pair = cells["paired_difference", "batch", "final_test_acc"]
    assert float(pair["mean"]) == pytest.approx(np.mean(diffs))
    assert pair["verdict"] == stats.verdict(stats.paired_difference(batch, [
        final["none", s] for s in range(SEEDS)]))


def test_jobs_2_gives_the_same_runs_as_jobs_1(compared):
    """The two workers share the cores, so their thread pools did not spin (tfnorm.cores);
    this process's did: the runs are the same bits either way."""
    out_dir, _, in_process_dir, _, _ = compared
    for index in (1, 2):
        with open(os.path.join(out_dir, f"shard_{index}_of_2.log")) as log:
            assert "thread pools do not spin" in log.read()
    for scheme in SCHEMES:
        for seed in range(SEEDS):
            assert_same_run(compare.run_dir(out_dir, scheme, seed),
                            compare.run_dir(in_process_dir, scheme, seed))


def test_a_seed_trained_after_another_in_one_process_equals_it_trained_alone(compared,
                                                                             tmp_path):
    """Seed 1 of batch norm reused the steps traced for seed 0 (runner.Builds); the same
    run trained alone, by experiments.train in a fresh process, is bit-identical."""
    _, _, in_process_dir, _, _ = compared
    alone = str(tmp_path / "alone")
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--scheme=batch", "--seed=1",
         f"--out_dir={alone}", "--nopanels"]
        + cli.to_command_line(TRAIN_FLAGS, list(TRAIN_FLAGS)),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_run(alone, compare.run_dir(in_process_dir, "batch", 1))


def test_complete_runs_are_reused(compared):
    _, _, in_process_dir, configs, _ = compared
    metrics = [os.path.join(c["out_dir"], "metrics.csv") for c in configs]
    before = [os.path.getmtime(m) for m in metrics]
    compare.train_all(configs, jobs=1)
    assert [os.path.getmtime(m) for m in metrics] == before


def run_main(*argv):
    flag_values = flags.FlagValues()
    compare.define_flags(flag_values)
    flag_values(["compare"] + list(argv))
    original = compare.FLAGS
    compare.FLAGS = flag_values
    try:
        return compare.main(["compare"])
    finally:
        compare.FLAGS = original


def test_shards_then_summarize_give_the_same_summary(compared, tmp_path, capsys):
    out_dir = compared[0]
    sharded = str(tmp_path / "sharded")
    argv = command(sharded)[3:]
    with pytest.raises(SystemExit) as refused:
        run_main(*argv, "--summarize")
    assert refused.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: --summarize: 4 of 4 runs are not finished (none seed 0")
    for shard in ("--shard=1/2", "--shard=2/2"):
        run_main(*argv, shard)
    assert not os.path.exists(os.path.join(sharded, "summary.csv"))
    run_main(*argv, "--summarize")
    columns = ("kind", "scheme", "metric", "mean", "low", "high", "n", "verdict")
    assert [{k: r[k] for k in columns} for r in io.read_csv(os.path.join(sharded,
                                                                         "summary.csv"))] == \
        [{k: r[k] for k in columns} for r in io.read_csv(os.path.join(out_dir, "summary.csv"))]


@pytest.mark.parametrize("argv, message", [
    (["--seeds=0"], "--seeds=0: must be a positive integer"),
    (["--shard=3/2"], "--shard=3/2: K must be between 1 and N"),
    (["--shard=x"], "--shard=x: expected K/N"),
    (["--shard=1/2", "--summarize"], "--shard and --summarize"),
    (["--baseline=bn"], "--baseline: unknown scheme 'bn'"),
    (["--seed=4294967295", "--seeds=2"], "--seed=4294967295: must be between 0 and "
                                         "4294967294 (with 2 seeds)"),
])
def test_bad_grid_flags_are_one_line_before_any_work(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as refused:
        run_main(f"--out_dir={tmp_path}/runs", *argv)
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert not os.path.exists(tmp_path / "runs")


def test_summary_censors_never_and_leaves_a_diverged_run_out(tmp_path):
    """epoch_to_95 of a seed that never reached it is epochs + 1 ('never'); a diverged
    run's accuracies are undefined, counted, not averaged in."""
    rows = [dict(scheme="none", seed=s, state="complete", final_test_acc=0.5 + s / 10,
                 best_test_acc=0.6, final_train_acc=0.7, epoch_to_90=np.nan,
                 epoch_to_95=np.nan, nonzero_1=0.5) for s in range(3)]
    rows += [dict(scheme="batch", seed=s, state="complete", final_test_acc=0.9,
                  best_test_acc=0.9, final_train_acc=0.99, epoch_to_90=2.0, epoch_to_95=3.0,
                  nonzero_1=1.0) for s in range(2)]
    rows.append(dict(scheme="batch", seed=2, state="diverged", final_test_acc=np.nan,
                     best_test_acc=np.nan, final_train_acc=np.nan, epoch_to_90=np.nan,
                     epoch_to_95=np.nan, nonzero_1=np.nan))
    result = summary.summarize(rows, "none", epochs=10)
    none, batch = result.per_scheme["none"], result.per_scheme["batch"]
    assert (none["epoch_to_95"].mean, none["epoch_to_95"].censored) == (11.0, 3)
    assert (batch["final_test_acc"].n, batch["final_test_acc"].missing) == (2, 1)
    speed = [c for c in result.comparisons if c.metric == "epoch_to_95"][0]
    assert speed.direction == -1 and speed.difference.n == 3  # the diverged seed: 11 - 11


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc: Linux")
def test_a_killed_compare_leaves_no_training_behind_and_reruns(tmp_path):
    """SIGKILL to compare while its worker processes train: they die with it (they would
    otherwise keep writing the run directories), and the same command then completes,
    reusing the runs that were already finished."""
    out_dir = str(tmp_path / "runs")
    flags_ = dict(TRAIN_FLAGS, panels=False)
    base = cli.resolve(dict(flags_, out_dir=out_dir))
    compare.train_all(compare.plan(base, ["none"], 1, 0), jobs=1)
    finished = os.path.join(compare.run_dir(out_dir, "none", 0), "metrics.csv")
    finished_mtime = os.path.getmtime(finished)
    # Three runs left to train: two worker processes.
    parent = subprocess.Popen(command(out_dir, "--jobs=2", panels=False), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = []
    try:
        deadline = time.time() + 120
        while not children and parent.poll() is None and time.time() < deadline:
            time.sleep(0.05)
            children = _living_children(parent.pid)
        assert children, "compare started no worker"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while any(map(_is_alive, children)) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(map(_is_alive, children)), "a worker outlived its compare"
    finally:
        parent.kill()
        parent.wait()
        for child in filter(_is_alive, children):
            os.kill(child, signal.SIGKILL)
    configs = compare.plan(base, list(SCHEMES), SEEDS, 0)
    compare.train_all(configs, jobs=1)
    summary.write(base, configs, "none")
    assert os.path.getmtime(finished) == finished_mtime
    assert records.read_status(compare.run_dir(out_dir, "batch", 0))["state"] == "complete"
    assert os.path.exists(os.path.join(out_dir, "summary.csv"))


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


def test_seeds_sharing_traced_steps_never_retrace_and_noisy_bn_draws_its_own_noise(
        tmp_path):
    """The noise's seed is state, not a constant of the traced step: seed 1 of noisy BN
    trained after seed 0 on the same compiled steps equals seed 1 built afresh (a seed
    baked into the graph would give it seed 0's noise)."""
    from tfnorm import runner
    flags_ = dict(TRAIN_FLAGS, scheme="noisybatch", panels=False)
    builds = runner.Builds()
    for seed in (0, 1):
        runner.run(cli.resolve(dict(flags_, seed=seed, out_dir=str(tmp_path / f"s{seed}"))),
                   builds=builds)
    # Two seeds of two epochs each (a new tf.data iterator every epoch): every compiled
    # function was traced once, for the first seed's first epoch, and never again.
    trainer = builds.build(cli.resolve(dict(flags_, seed=0, out_dir="unused")))[1]
    for name in ("train_step_from", "record_step_from", "eval_step", "train_step",
                 "record_step"):
        assert getattr(trainer, name).experimental_get_tracing_count() == 1, name
    runner.run(cli.resolve(dict(flags_, seed=1, out_dir=str(tmp_path / "alone"))))
    assert_same_run(str(tmp_path / "s1"), str(tmp_path / "alone"))
    assert records.read_metrics(str(tmp_path / "s0")) != records.read_metrics(
        str(tmp_path / "s1"))
