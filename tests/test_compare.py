"""experiments.article.compare: the grid of schemes x seeds trained in one process (traced steps
shared across seeds), in worker processes (--jobs=2) and by shards (--shard, then
--summarize), all with the same runs; the summary's intervals and verdicts agree with
the runs' own metrics; complete runs are reused; a killed compare leaves nothing behind."""

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags

from experiments import cli
from experiments.article import compare, summary
from test_resume import assert_same_run
from tfnorm import errors
from tfnorm.analysis import compare_grid, stats
from tfnorm.run import atomic, records, runid, stopping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMES = ("none", "batch")
SEEDS = 2
TRAIN_FLAGS = dict(epochs=2, image_size=16, train_limit=60, test_limit=40, progress=False)


def command(out_dir, *extra, **flags_):
    values = dict(TRAIN_FLAGS, **flags_)
    return ([sys.executable, "-m", "experiments.article.compare", f"--schemes={','.join(SCHEMES)}",
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
        assert os.listdir(os.path.join(compare_grid.run_dir(out_dir, scheme, 0), "panels"))
        assert not os.path.exists(os.path.join(compare_grid.run_dir(out_dir, scheme, 1), "panels"))
        assert records.record_epochs(compare_grid.run_dir(out_dir, scheme, 1)) == [1, 2]
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
    runs = {(r["scheme"], int(r["seed"])): r for r in atomic.read_csv(
        os.path.join(out_dir, "runs.csv"))}
    final = {}
    for scheme in SCHEMES:
        for seed in range(SEEDS):
            metrics = records.read_metrics(compare_grid.run_dir(out_dir, scheme, seed))
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
             for r in atomic.read_csv(os.path.join(out_dir, "summary.csv"))}
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
    """The two workers share the cores, so their thread pools did not spin (tfnorm.run.shared_cores);
    this process's did: the runs are the same bits either way."""
    out_dir, _, in_process_dir, _, _ = compared
    for index in (1, 2):
        with open(os.path.join(out_dir, f"shard_{index}_of_2.log")) as log:
            assert "thread pools do not spin" in log.read()
    for scheme in SCHEMES:
        for seed in range(SEEDS):
            assert_same_run(compare_grid.run_dir(out_dir, scheme, seed),
                            compare_grid.run_dir(in_process_dir, scheme, seed))


def test_a_seed_trained_after_another_in_one_process_equals_it_trained_alone(compared,
                                                                             tmp_path):
    """Seed 1 of batch norm reused the steps traced for seed 0 (runner.Builds); the same
    run trained alone, by experiments.article.train in a fresh process, is bit-identical."""
    _, _, in_process_dir, _, _ = compared
    alone = str(tmp_path / "alone")
    result = subprocess.run(
        [sys.executable, "-m", "experiments.article.train", "--scheme=batch", "--seed=1",
         f"--out_dir={alone}", "--nopanels"]
        + cli.to_command_line(TRAIN_FLAGS, list(TRAIN_FLAGS)),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_run(alone, compare_grid.run_dir(in_process_dir, "batch", 1))


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
    assert [{k: r[k] for k in columns} for r in atomic.read_csv(os.path.join(sharded,
                                                                             "summary.csv"))] == \
        [{k: r[k] for k in columns} for r in atomic.read_csv(os.path.join(out_dir, "summary.csv"))]


@pytest.mark.parametrize("argv, message", [
    (["--seeds=0"], "--seeds=0: must be a positive integer"),
    (["--shard=3/2"], "--shard=3/2: K must be between 1 and N"),
    (["--shard=x"], "--shard=x: expected K/N"),
    (["--shard=1/2", "--summarize"], "--shard and --summarize"),
    (["--baseline=bn"], "--baseline: unknown scheme 'bn'"),
    (["--baseline=all"], "--baseline=all: name one scheme, the one every other is paired"),
    (["--baseline=none,batch"], "--baseline=none,batch: name one scheme"),
    (["--schemes=none,batch", "--baseline=layer"], "--baseline=layer: not among --schemes "
                                                   "(none, batch)"),
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
def test_torture_signals_to_compare_at_random_moments_then_the_same_command(compared,
                                                                          tmp_path):
    """compare --jobs=2 hit by SIGKILL, SIGINT and SIGTERM (each once, in a seeded order), each
    time followed by the same command: the last one ends with the runs.csv and summary.csv
    of the uninterrupted grid. The moments are seeded points of the grid's progress (the
    number of records written, 0 to 7 of 8: from start-up to the last epoch), plus a
    seeded fraction of a second, so that they land in the work on a fast machine and a
    loaded one alike. A SIGKILL takes the workers with it (they would otherwise keep
    writing the run directories); a SIGINT or SIGTERM ends in one line and 130, with the
    summary of what is complete, never a traceback."""
    rng = np.random.default_rng(24)
    out_dir = str(tmp_path / "runs")
    argv = command(out_dir, "--jobs=2", panels=False)
    signals = rng.permutation([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
    progress = sorted(rng.choice(len(SCHEMES) * SEEDS * TRAIN_FLAGS["epochs"], 3,
                                 replace=False))
    outcomes = []
    for signum, records_written in zip(signals, progress):
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        deadline, children = time.time() + 300, []
        while (process.poll() is None and time.time() < deadline
               and len(glob.glob(os.path.join(out_dir, "*", "seed_*", "records", "*.npz")))
               < records_written):
            time.sleep(0.02)
            children = _living_children(process.pid) or children
        time.sleep(rng.uniform(0.0, 0.5))
        children = _living_children(process.pid) or children
        process.send_signal(int(signum))
        _, stderr = process.communicate(timeout=300)
        outcomes.append((signal.Signals(signum).name, int(records_written),
                         process.returncode))
        assert "Traceback" not in stderr, stderr
        if signum == signal.SIGKILL:
            assert process.returncode in (0, -signal.SIGKILL), stderr
            end = time.time() + 10
            while any(map(_is_alive, children)) and time.time() < end:
                time.sleep(0.05)
            assert not any(map(_is_alive, children)), "a worker outlived its compare"
        else:  # after the work ended, the interpreter shutting down may die of it
            assert process.returncode in (0, 130, -signum), stderr
            if process.returncode == 130:
                assert stderr.strip().splitlines()[-1].startswith("error: interrupted "), stderr
    final = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    for name in (compare_grid.RUNS_CSV, compare_grid.SUMMARY_CSV):
        with open(os.path.join(out_dir, name)) as got, \
                open(os.path.join(compared[0], name)) as want:
            assert got.read() == want.read(), (name, outcomes)
    assert sum(code != 0 for _, _, code in outcomes) >= 2, outcomes  # the signals were felt


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
    from tfnorm.run import runner
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


# ----------------------------------------------------------------------------
# compare never mixes runs or drops one: each run is read through its audit, a run of
# another configuration is refused or retrained, and a partial grid is summarized.


def grid_copy(compared, root, schemes=SCHEMES, seeds=range(SEEDS)):
    """A copy of the in-process grid (its runs of ``schemes`` x ``seeds``), and the
    configurations of the whole grid there."""
    source = compared[2]
    for scheme in schemes:
        for seed in seeds:
            shutil.copytree(compare_grid.run_dir(source, scheme, seed),
                            compare_grid.run_dir(str(root), scheme, seed),
                            ignore=shutil.ignore_patterns("run.lock"))
    base = cli.resolve(dict(TRAIN_FLAGS, out_dir=str(root)))
    return base, compare.plan(base, list(SCHEMES), SEEDS, 0)


def reference(compared, name):
    with open(os.path.join(compared[2], name)) as f:
        return f.read()


def grid_argv(out_dir, *extra):
    return command(out_dir, "--jobs=1")[3:] + list(extra)


def append_row(run_dir, epoch):
    """A row of epoch ``epoch`` past the run's last, as an edit (or another run) adds it."""
    path = os.path.join(run_dir, records.METRICS_FILE)
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "a") as f:
        f.write(lines[-1].replace(lines[-1].split(",")[0], str(epoch), 1) + "\n")


def test_overwrite_with_another_configuration_retrains_never_relabels(compared, tmp_path,
                                                                      capsys):
    """The same grid at another learning rate in the same --out_dir: refused without
    --overwrite; with it every run is trained again at that rate, none reused under the
    new label."""
    grid_copy(compared, tmp_path, schemes=["none"], seeds=[0])
    argv = command(str(tmp_path), "--jobs=1", learning_rate=0.01)[3:]
    argv = [a for a in argv if not a.startswith("--schemes=") and not a.startswith("--seeds=")]
    argv += ["--schemes=none", "--seeds=1"]
    with pytest.raises(SystemExit) as refused:
        run_main(*argv)
    assert refused.value.code == 2
    assert "holds a run with a different configuration (--learning_rate=0.001 there, 0.01 " \
           "here)" in capsys.readouterr().err
    before = records.read_metrics(compare_grid.run_dir(compared[2], "none", 0))
    run_main(*argv, "--overwrite")
    run_dir = compare_grid.run_dir(str(tmp_path), "none", 0)
    config = cli.stored_config(run_dir)
    assert config["learning_rate"] == 0.01
    after = records.read_metrics(run_dir)
    assert [r["train_loss"] for r in after] != [r["train_loss"] for r in before]
    for epoch in records.record_epochs(run_dir):
        assert records.load_record(records.record_path(run_dir, epoch)).config_hash == \
            runid.config_hash(config)
    assert atomic.read_csv(os.path.join(str(tmp_path), "runs.csv"))[0]["final_test_acc"] == \
        repr(after[-1]["test_acc"])


def test_the_summary_reads_runs_from_their_audited_files_never_their_status(compared,
                                                                            tmp_path):
    """What a kill -9 during the rewrite of derived files leaves: a finished run whose
    status.json says running, one without it, one whose status says diverged, a GIF per
    layer missing. The summary is the uninterrupted one, and the rerun rewrites them."""
    base, configs = grid_copy(compared, tmp_path)
    none0, none1, batch0 = (compare_grid.run_dir(str(tmp_path), s, k)
                            for s, k in (("none", 0), ("none", 1), ("batch", 0)))
    records.write_status(none0, "running", epoch=1)
    os.remove(os.path.join(none1, records.STATUS_FILE))
    records.write_status(batch0, "diverged", epoch=2, message="edited")
    gifs = [os.path.join(none0, records.PANELS_DIR, f"layer{layer}.gif")
            for layer in range(3, 7)]
    for gif in gifs:
        os.remove(gif)
    summary.write(base, configs, "none")
    for name in (compare_grid.RUNS_CSV, compare_grid.SUMMARY_CSV):
        assert open(os.path.join(str(tmp_path), name)).read() == reference(compared, name)
    compare.train_all(configs, jobs=1)
    for run_dir in (none0, none1, batch0):
        assert records.read_status(run_dir) == {"state": "complete", "epoch": 2}
    assert all(map(os.path.exists, gifs))


def test_an_interrupted_compare_writes_the_summary_of_what_is_complete(compared, tmp_path,
                                                                       monkeypatch,
                                                                       capsys):
    """A Ctrl-C before batch norm's runs began: exit 130 with one line, and the summary of
    the two runs that are complete (the others listed as missing), no traceback."""
    grid_copy(compared, tmp_path, schemes=["none"])
    monkeypatch.setattr(stopping, "requested", lambda: True)
    with pytest.raises(SystemExit) as stopped:
        run_main(*grid_argv(str(tmp_path)))
    assert stopped.value.code == errors.Interrupted.exit_code == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: interrupted with 2 of 4 runs complete; rerun the same command to resume"]
    rows = atomic.read_csv(os.path.join(str(tmp_path), compare_grid.RUNS_CSV))
    wanted = atomic.read_csv(os.path.join(compared[2], compare_grid.RUNS_CSV))
    assert rows[:2] == wanted[:2]
    assert [(r["state"], r["final_test_acc"]) for r in rows[2:]] == [("missing", "nan")] * 2
    markdown = open(os.path.join(str(tmp_path), summary.SUMMARY_MD)).read()
    assert "- batch: seed 0 missing; seed 1 missing" in markdown


def test_a_nan_last_row_of_a_finished_run_is_retrained(compared, tmp_path):
    """A run whose last row says NaN is not complete (its final accuracy would be
    undefined, its best accuracy epoch 1's): compare trains that epoch again."""
    base, configs = grid_copy(compared, tmp_path)
    path = os.path.join(compare_grid.run_dir(str(tmp_path), "none", 1), records.METRICS_FILE)
    with open(path) as f:
        lines = f.read().splitlines()
    column = lines[0].split(",").index("test_acc")
    fields = lines[-1].split(",")
    fields[column] = "nan"
    with open(path, "w") as f:
        f.write("\n".join(lines[:-1] + [",".join(fields)]) + "\n")
    compare.train_all(configs, jobs=1)
    summary.write(base, configs, "none")
    assert open(os.path.join(str(tmp_path), compare_grid.RUNS_CSV)).read() == \
        reference(compared, compare_grid.RUNS_CSV)


def test_an_extra_row_or_column_in_a_finished_run_is_no_traceback(compared, tmp_path,
                                                                   capsys):
    """An extra row past the last epoch (ignored, then cut) and an extra column (the run
    retrained): compare ends as the uninterrupted grid did."""
    grid_copy(compared, tmp_path)
    append_row(compare_grid.run_dir(str(tmp_path), "none", 0), 3)
    path = os.path.join(compare_grid.run_dir(str(tmp_path), "batch", 1), records.METRICS_FILE)
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join([lines[0] + ",extra"] + [line + ",1" for line in lines[1:]]) + "\n")
    run_main(*grid_argv(str(tmp_path)))
    assert "Traceback" not in capsys.readouterr().err
    for name in (compare_grid.RUNS_CSV, compare_grid.SUMMARY_CSV):
        assert open(os.path.join(str(tmp_path), name)).read() == reference(compared, name)
    assert len(records.read_metrics(compare_grid.run_dir(str(tmp_path), "none", 0))) == 2


def test_nonzero_reads_no_row_past_the_checkpoint(compared, tmp_path, monkeypatch):
    """A row beyond what the checkpoint holds (a kill after metrics.csv, before the
    checkpoint) is no epoch of the run: experiments.article.nonzero does not plot it."""
    from experiments.article import nonzero
    grid_copy(compared, tmp_path)
    append_row(compare_grid.run_dir(str(tmp_path), "none", 0), 3)
    flag_values = flags.FlagValues()
    nonzero.define_flags(flag_values)
    flag_values(["nonzero", f"--run_dir={tmp_path}", f"--out_dir={tmp_path}/nz"])
    monkeypatch.setattr(nonzero, "FLAGS", flag_values)
    nonzero.main(["nonzero"])
    epochs = {int(r["epoch"]) for r in atomic.read_csv(str(tmp_path / "nz" / "nonzero.csv"))}
    assert epochs == {1, 2}


def test_a_killed_worker_is_named_with_its_signal_and_the_other_shards_error_shown(
        tmp_path):
    """Shard 1's worker killed by SIGKILL, shard 2's failed with its own one line among
    info lines: both are named, the real error first with its exit code."""
    killed, failed = tmp_path / "shard_1_of_2.log", tmp_path / "shard_2_of_2.log"
    killed.write_text("I1202 08:00:00.000000 1 runner.py:1] none epoch 1/2: train loss\n")
    failed.write_text("I1202 08:00:00.000000 1 runner.py:1] reusing x\nerror: no space left "
                      "on the device writing x/metrics.csv; free some space and rerun\n"
                      "I1202 08:00:01.000000 1 absl.py:1] an info line after it\n")
    error = __import__("experiments.workers", fromlist=["failure"]).failure(
        {"1/2": (-signal.SIGKILL, str(killed)), "2/2": (4, str(failed))})
    assert error.exit_code == 4
    assert str(error) == (f"shard 2/2 failed, exit 4: error: no space left on the device "
                          f"writing x/metrics.csv; free some space and rerun (log: {failed}); "
                          f"the worker of shard 1/2 was killed by SIGKILL (log: {killed})")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL of a worker")
def test_workers_killed_by_a_signal_end_compare_with_one_line_and_the_summary(tmp_path):
    """Both workers SIGKILLed at step 2 of their first epoch (tfnorm.faults): compare says
    so in one line naming the signal, exits 128 + 9, and still writes the summary."""
    out_dir = str(tmp_path / "runs")
    result = subprocess.run(command(out_dir, "--jobs=2", panels=False), cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TFNORM_FAULT="step:1:2"))
    assert result.returncode == 128 + signal.SIGKILL, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the worker of shard 1/2 was killed by SIGKILL (log: ")
    assert "; the worker of shard 2/2 was killed by SIGKILL" in last
    assert "Traceback" not in result.stderr
    rows = atomic.read_csv(os.path.join(out_dir, compare_grid.RUNS_CSV))
    # Each worker died in its first run (after its first checkpoint); its second never began.
    assert [r["state"] for r in rows] == ["incomplete", "missing"] * 2
