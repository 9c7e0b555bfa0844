"""Damaged run directories are detected, never trusted: each case either recovers to the
uninterrupted result or is refused with one line naming the file; resource failures and
interrupts are one line with their own exit code (tfnorm.errors).

The reference is one finished run (``finished``), copied and damaged per test; runs are
in-process through ``runner.run`` unless the command line is what is tested."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import cli
from experiments.article import panels
from runs import checked_config, exit_of_main
from test_bad_input import run_train
from test_resume import assert_same_run, without_seconds
from tfnorm import errors, loop
from tfnorm.run import atomic, records, rundir, runid, runner, stopping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = dict(scheme="batch", epochs=3, image_size=16, train_limit=60, test_limit=20,
             batch_size=20, record_every=1, progress=False, panels=True)


def config_for(out_dir, **overrides):
    return checked_config(FLAGS, out_dir, **overrides)


# The runs of this module share their traced steps, as compare's seeds do (runner.Builds:
# bit-identical to each run alone, tests/test_compare.py): each rerun costs its epochs,
# not another tracing.
BUILDS = runner.Builds()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("finished") / "run"
    runner.run(config_for(out_dir), builds=BUILDS)
    return str(out_dir)


@pytest.fixture
def copy(finished, tmp_path):
    target = str(tmp_path / "run")
    shutil.copytree(finished, target, ignore=shutil.ignore_patterns("run.lock"))
    return target


def rerun(run_dir, **overrides):
    return runner.run(config_for(run_dir, **overrides), builds=BUILDS)


def assert_recovered(run_dir, reference):
    assert_same_run(run_dir, reference)
    assert records.read_status(run_dir)["state"] == "complete"
    assert rundir.audit(run_dir, config_for(run_dir)).repairs == []


@pytest.mark.parametrize("damage", ["cut to one row", "emptied", "deleted", "garbage"])
def test_damaged_metrics_are_retrained_not_trusted(copy, finished, damage):
    path = os.path.join(copy, records.METRICS_FILE)
    if damage == "cut to one row":
        with open(path) as f:
            head = f.readlines()[:2]
        with open(path, "w") as f:
            f.writelines(head)
    elif damage == "emptied":
        open(path, "w").close()
    elif damage == "deleted":
        os.remove(path)
    else:
        with open(path, "wb") as f:
            f.write(b"\xff\x00not,a,csv\n1,2\n")
    found = rundir.audit(copy, config_for(copy))
    assert not found.complete and found.resume_epoch < 3 and found.repairs
    assert not rundir.is_finished(copy, config_for(copy))  # compare would retrain it
    rerun(copy, panels=False)  # panels are not the subject here (drawing them is slow)
    assert_recovered(copy, finished)


@pytest.mark.parametrize("damage", ["deleted", "random bytes", "truncated"])
def test_a_damaged_record_is_retrained_and_its_stale_panel_redrawn(copy, finished, damage):
    path = records.record_path(copy, 1)
    panel = os.path.join(copy, records.PANELS_DIR, "layer1_epoch0001.png")
    with open(panel, "wb") as f:
        f.write(b"stale")  # must not go on into the GIF
    if damage == "deleted":
        os.remove(path)
    elif damage == "random bytes":
        with open(path, "wb") as f:
            f.write(np.random.default_rng(0).bytes(500))
    else:
        with open(path, "r+b") as f:
            f.truncate(300)
    assert rundir.audit(copy, config_for(copy)).resume_epoch == 0
    rerun(copy)
    assert_recovered(copy, finished)
    assert rundir.image_readable(panel)
    assert rundir.image_readable(os.path.join(copy, records.PANELS_DIR, "layer1.gif"))


def test_a_damaged_panel_of_a_finished_run_is_redrawn_and_it_stays_complete(copy, finished):
    panel = os.path.join(copy, records.PANELS_DIR, "layer3_epoch0002.png")
    with open(panel, "wb") as f:
        f.write(np.random.default_rng(1).bytes(2000))
    rows = rerun(copy)
    assert without_seconds(rows) == without_seconds(records.read_metrics(finished))
    assert rundir.image_readable(panel)
    assert records.read_status(copy)["state"] == "complete"


def test_garbage_status_is_rederived(copy, finished):
    with open(os.path.join(copy, records.STATUS_FILE), "wb") as f:
        f.write(b"\x89\xff{{ not json")
    assert records.read_status(copy) is None
    assert rundir.is_finished(copy, config_for(copy))
    rerun(copy)
    assert_recovered(copy, finished)


def test_killed_at_epoch_5_of_8_with_metrics_cut_to_2_rows_resumes_to_rows_1_to_8(
        tmp_path, monkeypatch):
    reference, damaged = str(tmp_path / "reference"), str(tmp_path / "damaged")
    runner.run(config_for(reference, epochs=8, panels=False), builds=BUILDS)
    # Stopped (as by a kill between epochs) at the start of epoch 6.
    monkeypatch.setattr(stopping, "requested",
                        lambda: len(records.read_metrics(damaged)) >= 5)
    with pytest.raises(errors.Interrupted):
        runner.run(config_for(damaged, epochs=8, panels=False), builds=BUILDS)
    monkeypatch.undo()
    path = os.path.join(damaged, records.METRICS_FILE)
    with open(path) as f:
        head = f.readlines()[:3]
    with open(path, "w") as f:
        f.writelines(head)
    found = rundir.audit(damaged, config_for(damaged, epochs=8, panels=False))
    assert (found.checkpoint_epoch, found.resume_epoch) == (5, 0)  # ckpt-2 is long gone
    rows = runner.run(config_for(damaged, epochs=8, panels=False), builds=BUILDS)
    assert [row["epoch"] for row in rows] == list(range(1, 9))
    assert_same_run(damaged, reference)


def train_argv(out_dir, **overrides):
    return cli.to_command_line(dict(FLAGS, out_dir=str(out_dir), **overrides),
                               list(FLAGS) + ["out_dir"] + list(overrides))


@pytest.mark.parametrize("content", ['{"flags": 3}', "\x00\x01garbage", "[1, 2]"])
def test_a_damaged_config_is_refused_with_one_line_naming_it(copy, content, monkeypatch,
                                                             capsys):
    path = os.path.join(copy, records.CONFIG_FILE)
    with open(path, "w") as f:
        f.write(content)
    code, lines = run_train(train_argv(copy), monkeypatch, capsys)
    assert code == errors.DamagedFile.exit_code == 6
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: damaged"), lines
    assert "--overwrite" in lines[0]


def test_a_damaged_record_makes_panels_name_the_file(copy, monkeypatch, capsys):
    path = records.record_path(copy, 2)
    with open(path, "r+b") as f:
        f.truncate(200)
    code = exit_of_main(panels, [f"--run_dir={copy}"], monkeypatch)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 6
    assert lines == [f"error: {path}: damaged, not a record (BadZipFile)"]


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_out_of_range_is_one_line_before_the_out_dir_exists(tmp_path, seed,
                                                                  monkeypatch, capsys):
    out_dir = tmp_path / "run"
    code, lines = run_train(train_argv(out_dir) + [f"--seed={seed}"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0] == f"error: --seed={seed}: must be between 0 and 4294967295"
    assert not out_dir.exists()


def test_an_image_size_that_cannot_fit_in_memory_is_refused_before_any_work(
        tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "run"
    code, lines = run_train(train_argv(out_dir, image_size=5000, train_limit=0, test_limit=0),
                            monkeypatch, capsys)
    assert code == errors.OutOfMemory.exit_code == 5 and len(lines) == 1, lines
    assert lines[0].startswith("error: --image_size=5000 with --batch_size=20: needs about ")
    assert not out_dir.exists()
    assert cli.memory_needed(cli.resolve(dict(FLAGS, image_size=5000, train_limit=0,
                                              test_limit=0))) > 100 * 2 ** 30


def test_a_full_disk_is_one_line_status_says_so_and_the_rerun_matches(
        finished, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "run"
    real_write = atomic.write_bytes
    writes = []

    def full_after_epoch_1(path, data):
        writes.append(path)
        if path.endswith(records.METRICS_FILE) and len(records.read_metrics(str(out_dir))):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_write(path, data)

    monkeypatch.setattr(atomic, "write_bytes", full_after_epoch_1)
    monkeypatch.setattr(atomic, "write_text",
                        lambda path, text: full_after_epoch_1(path, text.encode()))
    code, lines = run_train(train_argv(out_dir), monkeypatch, capsys)
    assert code == errors.NoSpace.exit_code == 4
    assert lines == [f"error: no space left on the device writing {out_dir}/metrics.csv; "
                     "free some space and rerun the same command to resume"]
    assert records.read_status(str(out_dir))["state"] == "no space"
    monkeypatch.undo()
    runner.run(config_for(out_dir), builds=BUILDS)
    assert_recovered(str(out_dir), finished)


def test_a_finite_loss_past_the_bound_is_a_divergence(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "LOSS_BOUND", 0.5)  # below a uniform guess: step 1 passes it
    with pytest.raises(errors.Divergence, match=r"diverged at epoch 1, step 1 of 3, layer "
                       r"(\d): loss 2\.\d+ above the bound 1\.15\d* \(layer \1's outputs "
                       r"reach \d"):
        runner.run(config_for(tmp_path / "run"))
    status = records.read_status(str(tmp_path / "run"))
    assert status["state"] == "diverged" and 1 <= status["layer"] <= 6


def test_a_nan_test_loss_is_a_divergence_and_keeps_the_epochs_before(tmp_path, monkeypatch):
    real_evaluate = loop.evaluate

    def nan_in_epoch_2(trainer, batches, count):
        loss, accuracy = real_evaluate(trainer, batches, count)
        return (float("nan") if records.read_metrics(str(tmp_path / "run")) else loss,
                accuracy)

    monkeypatch.setattr(loop, "evaluate", nan_in_epoch_2)
    with pytest.raises(errors.Divergence, match="diverged at epoch 2, the test pass: test "
                       "loss nan"):
        runner.run(config_for(tmp_path / "run"))
    assert [row["epoch"] for row in records.read_metrics(str(tmp_path / "run"))] == [1]


def _wait_for(path, process, deadline=240):
    end = time.time() + deadline
    while not os.path.exists(path) and process.poll() is None and time.time() < end:
        time.sleep(0.05)
    assert os.path.exists(path), "the run never got there"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_train_at_a_safe_point_with_one_line_and_130(tmp_path, finished,
                                                                  signum):
    out_dir = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.article.train"] + train_argv(out_dir, epochs=40)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    _wait_for(os.path.join(out_dir, "checkpoints", "ckpt-1.index"), process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted at epoch ") and last.endswith(
        "; rerun the same command to resume"), last
    found = rundir.audit(str(out_dir), config_for(out_dir, epochs=40))
    assert found.repairs == [] and found.resume_epoch >= 1
    assert records.read_status(str(out_dir))["state"] == "interrupted"


def test_torture_random_signals_at_random_moments_then_resume(finished, tmp_path):
    """A short run hit six times by SIGINT, SIGTERM or SIGKILL at random moments
    (seeded: the same moments every time the test runs), resumed after each by the same
    command: it ends with the metrics and records of the uninterrupted run. The moments
    spread over start-up, training and writing, so some kills land inside epochs, some
    between them, some before the first checkpoint."""
    rng = np.random.default_rng(7)
    out_dir = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.article.train"] + train_argv(out_dir)
    outcomes = []
    for _ in range(6):
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, 8.0))
        signum = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL][rng.integers(3)]
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=300)
        outcomes.append((signum, process.returncode))
        # 130: stopped at a safe point; -signum: a kill (SIGKILL, or SIGINT/SIGTERM in the
        # instant after the run ended, when the interpreter, shutting down, has put back
        # the default handlers).
        assert process.returncode in (0, 130, -signal.SIGKILL, -signal.SIGINT,
                                      -signal.SIGTERM), stderr
        assert "Traceback" not in stderr, stderr
        if process.returncode == 0:
            break
    final = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert_recovered(str(out_dir), finished)
    # The kills were real: at least one stopped the run before it was complete.
    assert any(code != 0 for _, code in outcomes), outcomes


# ----------------------------------------------------------------------------
# A run is its configuration: every file that holds its results carries the run's
# identity and is checked against it; what does not belong is refused or retrained.


def rewound(copy, epoch):
    """``copy`` as a run interrupted after ``epoch`` (its later rows, records, checkpoints
    gone), as a kill between epochs leaves it."""
    rundir.rewind(copy, epoch)
    records.truncate_to_epoch(copy, epoch, 6)
    return copy


def test_a_run_without_its_config_is_refused_never_adopted(copy, monkeypatch, capsys):
    """config.json deleted from an interrupted run, rerun with another learning rate: the
    run's identity cannot be checked, so it is refused (never resumed at 0.01 on epochs
    trained at 0.001), and nothing in it changes."""
    rewound(copy, 2)
    os.remove(os.path.join(copy, records.CONFIG_FILE))
    before = open(os.path.join(copy, records.METRICS_FILE)).read()
    code, lines = run_train(train_argv(copy, learning_rate=0.01), monkeypatch, capsys)
    assert code == errors.DamagedFile.exit_code == 6, lines
    assert lines == [f"error: {copy}/config.json: missing, but {copy} holds a run's "
                     "metrics.csv and records/ and checkpoints/: whose run they are cannot be "
                     "checked; pass --overwrite to start the run again"]
    assert open(os.path.join(copy, records.METRICS_FILE)).read() == before
    assert not os.path.exists(os.path.join(copy, records.CONFIG_FILE))


def test_a_config_edited_to_another_scheme_is_caught_by_the_checkpoint(copy, monkeypatch,
                                                                       capsys):
    """config.json says layer norm, the checkpoint holds batch norm's run: refused in one
    line before anything is restored (no TensorFlow warnings about unmatched values)."""
    rewound(copy, 2)
    path = os.path.join(copy, records.CONFIG_FILE)
    stored = atomic.read_json(path)
    stored["flags"]["scheme"] = "layer"
    atomic.write_json(path, stored)
    code, lines = run_train(train_argv(copy, scheme="layer"), monkeypatch, capsys)
    assert code == 6 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: checkpoint {copy}/checkpoints/ckpt-2 is not of this "
                               "run: it belongs to another run (scheme batch, seed 0, ")
    assert "not to this one (scheme layer, seed 0, " in lines[0]


def test_a_checkpoint_of_another_seed_is_refused(copy, tmp_path, monkeypatch, capsys):
    """The checkpoints of seed 1's run copied into seed 0's: refused in one line, never
    taken for seed 0's (deadlogits would measure seed 1's network as seed 0)."""
    other = str(tmp_path / "seed_1")
    runner.run(config_for(other, seed=1, panels=False), builds=BUILDS)
    folder = os.path.join(copy, records.CHECKPOINT_DIR)
    shutil.rmtree(folder)
    shutil.copytree(os.path.join(other, records.CHECKPOINT_DIR), folder)
    code, lines = run_train(train_argv(copy), monkeypatch, capsys)
    assert code == 6 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: checkpoint {folder}/ckpt-3 is not of this run: it "
                               "belongs to another run (scheme batch, seed 1, "), lines


def test_a_record_of_another_run_is_retrained_not_trusted(copy, finished):
    """records/epoch_0002.npz replaced by a record another run wrote (another scheme, and
    another step inside it): the audit names it and the run retrains from the last
    checkpoint before it (the start: the checkpoints kept are those of epochs 2 and 3)."""
    record = records.load_record(records.record_path(copy, 2))
    foreign = runid.run_identity(cli.resolve(dict(FLAGS, out_dir=copy, scheme="layer")))
    records.save_record(copy, 2, 99, foreign, dict(record._asdict()))
    found = rundir.audit(copy, config_for(copy))
    assert found.resume_epoch == 0 and "not a record of this run" in found.repairs[0]
    rerun(copy, panels=False)
    assert_recovered(copy, finished)
    kept = records.load_record(records.record_path(copy, 2))
    assert (kept.scheme, kept.step) == (record.scheme, record.step)  # not the other run's


def _edit_metrics(path, edit):
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(edit(lines)) + "\n")


def _set(line, header, column, value):
    fields = line.split(",")
    fields[header.split(",").index(column)] = value
    return ",".join(fields)


@pytest.mark.parametrize("damage, resume", [
    ("NaN test_acc in the last row", 2), ("test_loss deleted", 0), ("a column added", 0),
    ("a blank line, a row past the checkpoint", 2)])
def test_every_value_read_back_is_checked(copy, finished, damage, resume):
    """Values as written or the run goes back to the last epoch that has them: a NaN
    test accuracy (the run must not stay complete), a deleted or an added column, and a
    blank line: the audit and the rewind count rows the same way (CSV rows, not lines),
    so the row after it is neither lost nor doubled."""
    path = os.path.join(copy, records.METRICS_FILE)
    if damage.startswith("NaN"):
        _edit_metrics(path, lambda lines: lines[:-1] + [_set(lines[-1], lines[0], "test_acc",
                                                             "nan")])
    elif damage == "test_loss deleted":
        def without_test_loss(lines):
            index = lines[0].split(",").index("test_loss")
            return [",".join(f for i, f in enumerate(line.split(",")) if i != index)
                    for line in lines]
        _edit_metrics(path, without_test_loss)
    elif damage == "a column added":
        _edit_metrics(path, lambda lines: [lines[0] + ",extra"] + [line + ",1.0"
                                                                   for line in lines[1:]])
    else:  # killed after epoch 3's metrics, before its checkpoint; a blank line edited in
        rundir.rewind(copy, 2)
        with open(os.path.join(finished, records.METRICS_FILE)) as f:
            lines = f.read().splitlines()
        with open(path, "w") as f:
            f.write("\n".join(lines[:2] + [""] + lines[2:]) + "\n")
    found = rundir.audit(copy, config_for(copy))
    assert not found.complete and found.resume_epoch == resume
    rerun(copy, panels=False)
    assert_recovered(copy, finished)


@pytest.mark.parametrize("name, kind", [("records", "file"), ("checkpoints", "file"),
                                        ("metrics.csv", "folder"), ("status.json", "folder")])
def test_a_file_where_a_folder_belongs_or_the_reverse_is_one_line(copy, name, kind,
                                                                  monkeypatch, capsys):
    path = os.path.join(copy, name)
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    if kind == "file":
        with open(path, "w") as f:
            f.write("not a folder")
    else:
        os.makedirs(path)
    code, lines = run_train(train_argv(copy), monkeypatch, capsys)
    assert code == 6, lines
    where = "a file where the run keeps a folder" if kind == "file" else \
        "a folder where the run keeps a file"
    assert lines == [f"error: {path}: {where}; pass --overwrite to start the run again (it "
                     "removes it)"]
    records.clear_run(copy)  # what --overwrite does first
    assert not os.path.lexists(path)
