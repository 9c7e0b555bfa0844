"""Issue 4: a run killed at any moment resumes to exactly the same metrics.csv; a kill
during a write leaves the previous complete file; a divergent run stops naming the epoch,
step, layer and scheme and keeps its earlier epochs.

metrics.csv is compared on every column but ``seconds``: that one is the epoch's
wall-clock time, which no two runs share."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from experiments import cli, train
from tfnorm import records, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# meanonly: weight normalization (with its data-dependent init, which a resume must not
# redo), a running mean, Adam's slots; 20 steps per epoch so a kill lands inside one.
FLAGS = dict(scheme="meanonly", epochs=3, image_size=16, train_limit=400, test_limit=40,
             batch_size=20, record_every=2, progress=False, panels=False)


def config_for(out_dir):
    config = cli.resolve(dict(FLAGS, out_dir=str(out_dir)))
    cli.validate(config)
    return config


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def assert_same_run(run_dir, reference_dir):
    assert without_seconds(records.read_metrics(run_dir)) == \
        without_seconds(records.read_metrics(reference_dir))
    assert records.record_epochs(run_dir) == records.record_epochs(reference_dir)
    for epoch in records.record_epochs(reference_dir):
        got = records.load_record(records.record_path(run_dir, epoch))
        want = records.load_record(records.record_path(reference_dir, epoch))
        for field in ("counts", "ranges", "summaries", "layer_stats"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def command(out_dir):
    return [sys.executable, "-m", "experiments.train", f"--out_dir={out_dir}"] + \
        cli.to_command_line(FLAGS, list(FLAGS))


@pytest.fixture(scope="module")
def reference_process(tmp_path_factory):
    """An uninterrupted run in a subprocess, started first so that it trains while the
    run to be killed does (2 cores)."""
    out_dir = str(tmp_path_factory.mktemp("reference"))
    process = subprocess.Popen(command(out_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    yield out_dir, process
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def reference(reference_process):
    out_dir, process = reference_process
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return out_dir


def test_sigkill_mid_epoch_then_rerun_gives_the_same_metrics(reference_process, tmp_path):
    out_dir = str(tmp_path / "killed")
    first_checkpoint = os.path.join(out_dir, "checkpoints", "ckpt-1.index")
    process = subprocess.Popen(command(out_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not os.path.exists(first_checkpoint) and time.time() < deadline:
            time.sleep(0.02)
        # Epoch 2 runs 20 steps of a few ms each: a kill now lands inside it.
        time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    status = records.read_status(out_dir)
    assert status["state"] == "running", "the kill came too late to test a resume"

    rerun = subprocess.run(command(out_dir), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr
    reference_dir, reference_run = reference_process
    reference_run.communicate(timeout=600)
    assert_same_run(out_dir, reference_dir)
    assert records.read_status(out_dir)["state"] == "complete"


def rewind_checkpoint(run_dir, epoch):
    """Make ``run_dir`` look killed after writing epoch ``epoch + 1``'s records and metrics
    but before its checkpoint: drop the newer checkpoint, point the state file back."""
    import tensorflow as tf
    folder = os.path.join(run_dir, "checkpoints")
    for name in os.listdir(folder):
        if name.startswith(f"ckpt-{epoch + 1}."):
            os.remove(os.path.join(folder, name))
    tf.compat.v1.train.update_checkpoint_state(folder, os.path.join(folder, f"ckpt-{epoch}"))


def test_a_resume_drops_what_epochs_after_the_checkpoint_wrote(tmp_path):
    """A kill after an epoch's records and metrics but before its checkpoint: the resume
    trusts the checkpoint's epoch and forgets the later rows, records and panels (they
    are computed again, see the SIGKILL test)."""
    from tfnorm import plots
    run_dir = str(tmp_path)
    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.1 * e, "test_loss": 1.0,
             "test_acc": 0.5, "seconds": 1.0} for e in (1, 2, 3)]
    records.write_metrics(run_dir, rows, num_layers=0)
    os.makedirs(os.path.join(run_dir, "panels"))
    for epoch in (1, 3):
        records.save_record(run_dir, epoch, epoch, "none", dict(
            counts=np.zeros((1, 4, 2)), ranges=np.zeros((1, 4, 2)),
            summaries=np.zeros((1, 4, 6)), layer_stats=np.zeros((1, 5))))
        with open(plots.panel_path(run_dir, 1, epoch), "wb") as f:
            f.write(b"png")
    records.truncate_to_epoch(run_dir, 2, num_layers=0)
    assert [row["epoch"] for row in records.read_metrics(run_dir)] == [1, 2]
    assert records.record_epochs(run_dir) == [1]
    assert sorted(os.listdir(os.path.join(run_dir, "panels"))) == ["layer1_epoch0001.png"]


WRITER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("tfnorm_io", sys.argv[1])
    io = importlib.util.module_from_spec(spec); spec.loader.exec_module(io)
    version = 0
    while True:
        version = version % 250 + 1
        io.write_bytes(sys.argv[2], bytes([version]) * 8_000_000)
        print(version, flush=True)
""")


def test_a_kill_during_a_write_leaves_the_previous_complete_file(tmp_path):
    """tfnorm.io (which every output goes through) in a process killed while it keeps
    rewriting an 8 MB file: the file is always one whole version, never a mix or a
    truncation. io.py is loaded by path so the writer starts without TensorFlow."""
    target = str(tmp_path / "metrics.csv")
    io_path = os.path.join(ROOT, "tfnorm", "io.py")
    for delay in (0.05, 0.13, 0.31):
        process = subprocess.Popen([sys.executable, "-c", WRITER, io_path, target],
                                   stdout=subprocess.PIPE, text=True)
        process.stdout.readline()  # one complete version exists
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        with open(target, "rb") as f:
            content = f.read()
        assert len(content) == 8_000_000
        assert content == bytes([content[0]]) * len(content)


def poison_weights(run_dir, epoch, layer):
    """Put NaN into ``layer``'s weights in the checkpoint of ``epoch``."""
    import tensorflow as tf
    config = config_for(run_dir)
    network, _, checkpoint, _ = runner.build(config)
    prefix = os.path.join(run_dir, "checkpoints", f"ckpt-{epoch}")
    checkpoint.restore(prefix).assert_existing_objects_matched()
    weights = network.layer_weights[layer - 1]
    weights.assign(tf.fill(weights.shape, float("nan")))
    checkpoint.write(prefix)


def test_nan_in_the_weights_stops_at_once_naming_epoch_step_layer_scheme(reference,
                                                                         tmp_path):
    """Kill-free divergence: the checkpoint of epoch 2 gets NaN weights in layer 4, so
    epoch 3 stops at its first step; epochs 1-2 stay as they were."""
    run_dir = str(tmp_path / "poisoned")
    shutil.copytree(reference, run_dir)
    rewind_checkpoint(run_dir, 2)
    poison_weights(run_dir, 2, layer=4)
    with pytest.raises(runner.Divergence) as error:
        runner.run(config_for(run_dir))
    message = str(error.value)
    assert message.startswith("scheme meanonly diverged at epoch 3, step 1 of 20, layer 4: "
                              "output not finite in the forward pass")
    assert "epochs 1-2 are kept" in message
    # The earlier epochs stay readable and unchanged.
    assert without_seconds(records.read_metrics(run_dir)) == \
        without_seconds(records.read_metrics(reference))[:2]
    assert records.record_epochs(run_dir) == [1, 2]
    records.load_record(records.record_path(run_dir, 2))
    status = records.read_status(run_dir)
    assert (status["state"], status["epoch"], status["step"], status["layer"]) == \
        ("diverged", 3, 1, 4)


def test_a_divergent_boxcox_run_exits_non_zero_with_one_line(tmp_path, monkeypatch, capsys):
    """Box-Cox with a large lambda overflows in the forward pass of the first step
    (train's main in this process: the same code path as the command line)."""
    from absl import flags
    out_dir = tmp_path / "boxcox"
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values(["train", "--scheme=boxcox", "--boxcox_lambda=20", "--epochs=2",
                 "--image_size=16", "--train_limit=40", "--test_limit=20", "--noprogress",
                 "--nopanels", f"--out_dir={out_dir}"])
    monkeypatch.setattr(train, "FLAGS", flag_values)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["train"])
    assert exit_info.value.code == cli.EXIT_DIVERGED
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[-1].startswith("error: scheme boxcox diverged at epoch 1, step 1 of 2, "
                                "layer ")
    assert "not finite" in lines[-1] and "no epoch was completed" in lines[-1]
    assert records.read_status(str(out_dir))["state"] == "diverged"


def test_a_run_removes_what_interrupted_writes_left(tmp_path):
    """tfnorm.io's temporary files of writes killed halfway (".<name>.<random>.tmp") go
    when the run starts again; anything else in the directory stays."""
    run_dir = tmp_path / "run"
    leftovers = [run_dir / ".metrics.csv.k3j_x9a2.tmp", run_dir / ".status.json.abcdefgh.tmp",
                 run_dir / "records" / ".epoch_0001.npz.0a1b2c3d.tmp",
                 run_dir / "panels" / ".layer1_epoch0001.png.zzzzzzzz.tmp"]
    kept = [run_dir / "notes.tmp", run_dir / ".hidden.tmp", run_dir / "records" / "mine.txt"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    runner.run(cli.resolve(dict(FLAGS, epochs=1, train_limit=40, test_limit=20,
                                  out_dir=str(run_dir))))
    assert [path for path in leftovers if path.exists()] == []
    assert all(path.exists() for path in kept)


def test_a_resumed_run_shows_each_epoch_once_in_tensorboard(tmp_path):
    """A kill after epoch 2 wrote its TensorBoard values, before its checkpoint: the resume
    redoes epoch 2, and TensorBoard (rebuilt from metrics.csv and the records) holds it
    once, like every other epoch."""
    import collections

    import tensorflow as tf
    run_dir = str(tmp_path / "run")
    config = cli.resolve(dict(FLAGS, epochs=2, train_limit=40, test_limit=20,
                                 tensorboard=True, out_dir=run_dir))
    runner.run(config)
    rewind_checkpoint(run_dir, 1)
    runner.run(config)
    folder = os.path.join(run_dir, "tensorboard")
    written = collections.Counter()
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                written[value.tag, event.step] += 1
    tags = {tag for tag, _ in written}
    assert {"train_acc", "layer1/nonzero_grad_frac", "layer6/update"} <= tags
    # Both epochs are recorded (the first and the last): every tag at each, once.
    assert set(written) == {(tag, step) for tag in tags for step in (1, 2)}
    assert set(written.values()) == {1}, [key for key, n in written.items() if n > 1][:5]


def test_status_follows_every_epoch_while_the_run_is_in_progress(tmp_path, monkeypatch):
    """What status.json says while an epoch writes its metrics: the epoch before it."""
    run_dir = str(tmp_path / "run")
    seen = []
    write_metrics = records.write_metrics

    def spy(run_dir, rows, num_layers):
        status = records.read_status(run_dir)
        seen.append((status["state"], status["epoch"]))
        write_metrics(run_dir, rows, num_layers)

    monkeypatch.setattr(records, "write_metrics", spy)
    runner.run(cli.resolve(dict(FLAGS, epochs=3, train_limit=40, test_limit=20,
                                  out_dir=run_dir)))
    assert seen == [("running", 0), ("running", 1), ("running", 2)]
    assert records.read_status(run_dir) == {"state": "complete", "epoch": 3}
