"""Every bad input is refused before any work with one line on
stderr naming the flag or file, a non-zero exit code, and no traceback.

The cases run train's ``main`` in this process on a private FlagValues (the code path of
the command line after absl's parsing); one real subprocess proves the whole command."""

import os
import subprocess
import sys

import pytest
from absl import flags

import stl10_fixture
from experiments import cli
from experiments.article import train
from tfnorm import data, errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--image_size=16", "--train_limit=40", "--test_limit=20", "--epochs=1",
        "--noprogress", "--nopanels"]


def run_train(argv, monkeypatch, capsys):
    """(exit code, stderr lines) of ``experiments.article.train`` with ``argv``."""
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    monkeypatch.setattr(train, "FLAGS", flag_values)
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_flags_or_fail(["train"] + argv, flag_values)
        train.main(["train"])
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def assert_refused(argv, expected, monkeypatch, capsys, code=cli.EXIT_BAD_INPUT):
    """One line naming ``expected``, exit ``code`` (2 for bad input, 6 for a damaged file
    of the run directory)."""
    exit_code, lines = run_train(argv, monkeypatch, capsys)
    assert exit_code == code
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["--epochs=0"], "--epochs=0: must be a positive integer"),
    (["--epochs=-3"], "--epochs=-3: must be a positive integer"),
    (["--batch_size=0"], "--batch_size=0: must be a positive integer"),
    (["--learning_rate=0"], "--learning_rate=0.0: must be a positive finite number"),
    (["--learning_rate=-0.01"], "--learning_rate=-0.01: must be a positive"),
    (["--scheme=batchnorm"], "flag --scheme=batchnorm: value should be one of <none|batch|"),
    (["--dataset=cifar10"], "flag --dataset=cifar10: value should be one of <digits|stl10>"),
    (["--optimizer=rmsprop"], "--optimizer=rmsprop: unknown optimizer"),
    (["--scheme=group", "--groups=3"], "--groups=3: does not divide the network width 16"),
    (["--groups=0"], "--groups=0: does not divide"),
    (["--epochs=ten"], "flag --epochs=ten"),
    (["--record_every=0"], "--record_every=0: must be a positive integer"),
])
def test_bad_flag_values_are_refused_before_any_work(argv, expected, tmp_path, monkeypatch,
                                                     capsys):
    out_dir = tmp_path / "run"
    assert_refused(argv + [f"--out_dir={out_dir}"], expected, monkeypatch, capsys)
    assert not out_dir.exists()  # nothing was done


def test_missing_out_dir(monkeypatch, capsys):
    assert_refused([], "--out_dir: required", monkeypatch, capsys)


def test_unwritable_out_dir(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert_refused([f"--out_dir={blocker}/run"], f"--out_dir {blocker}/run: cannot be written",
                   monkeypatch, capsys)


def test_missing_stl10_archive(tmp_path, monkeypatch, capsys):
    archive = tmp_path / "stl10_binary.tar.gz"
    assert_refused(["--dataset=stl10", f"--stl10_archive={archive}",
                    f"--out_dir={tmp_path}/run"], f"--stl10_archive {archive}: no such file",
                   monkeypatch, capsys)


def test_truncated_stl10_archive(tmp_path, monkeypatch, capsys):
    archive = stl10_fixture.write_stl10_archive(tmp_path / "stl10_binary.tar.gz")
    line = assert_refused(["--dataset=stl10", f"--stl10_archive={archive}",
                           f"--out_dir={tmp_path}/run"], f"--stl10_archive {archive}: ",
                          monkeypatch, capsys)
    assert "truncated" in line


def test_wrongly_named_stl10_archive(tmp_path, monkeypatch, capsys):
    archive = tmp_path / "stl10.zip"
    archive.write_bytes(b"PK")
    line = assert_refused(["--dataset=stl10", f"--stl10_archive={archive}",
                           f"--out_dir={tmp_path}/run"], f"--stl10_archive {archive}: ",
                          monkeypatch, capsys)
    assert data.STL10_ARCHIVE_NAME in line


def test_stl10_unavailable_says_how_to_get_it_and_never_falls_back(tmp_path, monkeypatch,
                                                                     capsys):
    with stl10_fixture.no_network():
        line = assert_refused(["--dataset=stl10", f"--data_dir={tmp_path}/tfds",
                               f"--out_dir={tmp_path}/run"] + TINY[:-2],
                              "STL-10", monkeypatch, capsys)
    assert "--stl10_archive" in line
    assert not os.path.exists(os.path.join(tmp_path, "run", "metrics.csv"))


def test_batch_larger_than_the_training_set(tmp_path, monkeypatch, capsys):
    assert_refused(TINY + ["--batch_size=50", f"--out_dir={tmp_path}/run"],
                   "--batch_size=50: larger than the 40 training images of digits",
                   monkeypatch, capsys)


TINY_VALUES = {"image_size": 16, "train_limit": 40, "test_limit": 20, "epochs": 1}


def write_run_dir(run_dir, **changes):
    """A run directory whose config.json says the tiny run was started with ``changes``."""
    from tfnorm.run import records
    values = dict(TINY_VALUES, out_dir=str(run_dir), **changes)
    records.write_config(str(run_dir), cli.resolve(values), {})


def test_out_dir_with_a_different_run_is_refused_and_overwrite_replaces_it(
        tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    write_run_dir(run_dir, learning_rate=0.5)
    line = assert_refused(TINY + [f"--out_dir={run_dir}"],
                          f"--out_dir {run_dir} holds a run with a different configuration "
                          "(--learning_rate=0.5 there, 0.001 here); pass --overwrite",
                          monkeypatch, capsys)
    assert line
    config = cli.resolve({"image_size": 16, "train_limit": 40, "test_limit": 20,
                             "epochs": 1, "out_dir": str(run_dir), "overwrite": True})
    cli.validate(config)  # accepted: the run will be replaced


def make_checkpoint(run_dir):
    """A checkpoint of the tiny run (its identity, as runner.build's checkpoints hold it)."""
    import tensorflow as tf

    from tfnorm.run import rundir, runid
    run = runid.run_identity(cli.resolve(dict(TINY_VALUES, out_dir=str(run_dir))))
    checkpoint = tf.train.Checkpoint(epoch=tf.Variable(1, dtype=tf.int64),
                                     weights=tf.Variable(tf.ones([1000])),
                                     run=tf.Variable(rundir.identity_text(run)))
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"), 2)
    return manager.save(checkpoint_number=1)


def test_corrupt_checkpoint_data_names_the_file_and_the_way_out(tmp_path, monkeypatch,
                                                                capsys):
    run_dir = tmp_path / "run"
    write_run_dir(run_dir)
    prefix = make_checkpoint(str(run_dir))
    data_file = prefix + ".data-00000-of-00001"
    with open(data_file, "r+b") as f:
        f.truncate(100)
    line = assert_refused(TINY + [f"--out_dir={run_dir}"],
                          f"checkpoint {data_file} is corrupt or unreadable", monkeypatch,
                          capsys, code=errors.DamagedFile.exit_code)
    assert f"delete {run_dir}/checkpoints" in line and "--overwrite" in line


def test_corrupt_checkpoint_state_file(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    write_run_dir(run_dir)
    make_checkpoint(str(run_dir))
    state = run_dir / "checkpoints" / "checkpoint"
    state.write_bytes(b"\x00\xff garbage {{{")
    assert_refused(TINY + [f"--out_dir={run_dir}"], f"checkpoint file {state} is corrupt",
                   monkeypatch, capsys, code=errors.DamagedFile.exit_code)


# What a kill during the first checkpoint save leaves (no 'checkpoint' state file yet):
# while TF writes the shards; after it merged them, while it writes the state file.
INTERRUPTED_FIRST_SAVES = {
    "shards": ["ckpt-0_temp/part-00000-of-00001.index",
               "ckpt-0_temp/part-00000-of-00001.data-00000-of-00001"],
    "state file": ["ckpt-0.index", "ckpt-0.data-00000-of-00001", "checkpoint.tmp0123abcd"],
}


def write_files(folder, names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")


@pytest.mark.parametrize("layout", sorted(INTERRUPTED_FIRST_SAVES))
def test_a_run_killed_during_its_first_checkpoint_save_starts_again(layout, tmp_path,
                                                                    monkeypatch):
    """The rerun of the same command: accepted, the leftovers removed, the run trained."""
    from tfnorm.run import records
    run_dir = tmp_path / "run"
    write_run_dir(run_dir)
    write_files(run_dir / "checkpoints", INTERRUPTED_FIRST_SAVES[layout])
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values(["train"] + TINY + [f"--out_dir={run_dir}"])
    monkeypatch.setattr(train, "FLAGS", flag_values)
    train.main(["train"])
    assert [row["epoch"] for row in records.read_metrics(str(run_dir))] == [1]
    assert records.read_status(str(run_dir))["state"] == "complete"
    left = os.listdir(run_dir / "checkpoints")
    assert not [name for name in left if "_temp" in name or ".tmp" in name], left


def test_checkpoint_files_without_a_state_file_are_refused(tmp_path, monkeypatch, capsys):
    """Only a first save's leftovers are no checkpoint: a later checkpoint that lost its
    state file is refused, not silently restarted."""
    run_dir = tmp_path / "run"
    write_run_dir(run_dir)
    make_checkpoint(str(run_dir))
    os.remove(run_dir / "checkpoints" / "checkpoint")
    line = assert_refused(TINY + [f"--out_dir={run_dir}"],
                          f"checkpoint folder {run_dir}/checkpoints has no readable "
                          "'checkpoint' state file", monkeypatch, capsys,
                          code=errors.DamagedFile.exit_code)
    assert f"delete {run_dir}/checkpoints" in line and "--overwrite" in line


def test_the_command_line_prints_one_line_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.article.train", "--scheme=group",
                             "--groups=5", f"--out_dir={tmp_path}/run"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == cli.EXIT_BAD_INPUT
    assert result.stderr.splitlines() == [
        "error: --groups=5: does not divide the network width 16 (use 1, 2, 4, 8 or 16)"]


def test_a_relative_out_dir_with_a_sound_checkpoint_is_accepted(tmp_path, monkeypatch):
    """Regression: tf returns the checkpoint path already under the (relative) folder."""
    monkeypatch.chdir(tmp_path)
    write_run_dir("runs/run")
    make_checkpoint("runs/run")
    config = cli.resolve({"image_size": 16, "train_limit": 40, "test_limit": 20,
                             "epochs": 1, "out_dir": "runs/run"})
    cli.validate(config)


LOCK_HOLDER = """
import fcntl, os, sys, time
with open(sys.argv[1], "a+") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    lock.truncate(0)
    lock.write(f"{os.getpid()}\\n")
    lock.flush()
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_run_dir_locked_by_another_live_process_is_refused(tmp_path, monkeypatch,
                                                             capsys):
    """Another process training into --out_dir (here: one holding its lock) must not be
    joined by a second one writing the same files."""
    from tfnorm.run import records
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER,
                               str(run_dir / records.LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_refused(TINY + [f"--out_dir={run_dir}"],
                       f"--out_dir {run_dir}: in use by another process (pid {holder.pid})",
                       monkeypatch, capsys)
    finally:
        holder.kill()
        holder.wait()
    assert not (run_dir / "metrics.csv").exists()
