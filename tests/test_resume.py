"""A run killed at any moment resumes to exactly the same metrics.csv; a kill
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

import numpy as np
import pytest

from experiments import cli
from runs import checked_config
from tfnorm import errors, measures
from tfnorm.run import atomic, records, runid, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# meanonly: weight normalization (with its data-dependent init, which a resume must not
# redo), a running mean, Adam's slots; 5 steps per epoch (the kills are placed exactly).
FLAGS = dict(scheme="meanonly", epochs=3, image_size=16, train_limit=100, test_limit=40,
             batch_size=20, record_every=2, progress=False, panels=False)


def config_for(out_dir):
    return checked_config(FLAGS, out_dir)


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def assert_same_run(run_dir, reference_dir):
    assert without_seconds(records.read_metrics(run_dir)) == \
        without_seconds(records.read_metrics(reference_dir))
    assert records.record_epochs(run_dir) == records.record_epochs(reference_dir)
    for epoch in records.record_epochs(reference_dir):
        got = records.load_record(records.record_path(run_dir, epoch))
        want = records.load_record(records.record_path(reference_dir, epoch))
        for field in records.Record._fields[3:]:  # every array
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def command(out_dir):
    return [sys.executable, "-m", "experiments.article.train", f"--out_dir={out_dir}"] + \
        cli.to_command_line(FLAGS, list(FLAGS))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, in this process."""
    out_dir = str(tmp_path_factory.mktemp("reference"))
    runner.run(config_for(out_dir))
    return out_dir


def killed_at(out_dir, fault):
    """Run the command with TFNORM_FAULT=fault (tfnorm.faults): it must die by SIGKILL."""
    process = subprocess.run(command(out_dir), cwd=ROOT, capture_output=True, text=True,
                             env=dict(os.environ, TFNORM_FAULT=fault), timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr


def checkpoint_files(out_dir):
    return sorted(os.listdir(os.path.join(out_dir, "checkpoints")))


# (fault, rows and records the directory must hold after the kill, checkpoint files)
KILLS = {
    # Before step 3 of epoch 2 (of 5 steps): epoch 1 is done, epoch 2 half-way.
    "mid-epoch": ("step:2:3", [1], ["checkpoint", "ckpt-0.data-00000-of-00001",
                                     "ckpt-0.index", "ckpt-1.data-00000-of-00001",
                                     "ckpt-1.index"]),
    # Epoch 2's checkpoint files written, its state file still naming epoch 1: the
    # records and metrics of epoch 2 are there and must be dropped, not trusted.
    "inside epoch 2's save": ("checkpoint:2", [1, 2], ["checkpoint",
                                                       "ckpt-0.data-00000-of-00001",
                                                       "ckpt-0.index",
                                                       "ckpt-1.data-00000-of-00001",
                                                       "ckpt-1.index",
                                                       "ckpt-2.data-00000-of-00001",
                                                       "ckpt-2.index"]),
    # The first save of all (the initial state), before its state file: no checkpoint.
    "inside the first save": ("checkpoint:0", [], ["ckpt-0.data-00000-of-00001",
                                                   "ckpt-0.index"]),
}


@pytest.mark.parametrize("where", sorted(KILLS))
def test_a_kill_then_the_same_command_gives_the_same_run(reference, tmp_path, where):
    fault, rows, files = KILLS[where]
    out_dir = str(tmp_path / "killed")
    killed_at(out_dir, fault)
    # What the directory holds before the resume: exactly what the kill left.
    assert [row["epoch"] for row in records.read_metrics(out_dir)] == rows
    assert records.record_epochs(out_dir) == rows  # epochs 1-3 are all recorded
    assert checkpoint_files(out_dir) == files
    status = records.read_status(out_dir)
    if where == "inside the first save":
        assert status is None  # written only once the initial state is saved
    else:
        assert status["state"] == "running"

    rerun = subprocess.run(command(out_dir), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert ("resuming" in rerun.stderr) == (where != "inside the first save")
    assert_same_run(out_dir, reference)
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
    from tfnorm.run import four_panels
    run_dir = str(tmp_path)
    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.1 * e, "test_loss": 1.0,
             "test_acc": 0.5, "seconds": 1.0} for e in (1, 2, 3)]
    records.write_metrics(run_dir, rows, num_layers=0)
    os.makedirs(os.path.join(run_dir, "panels"))
    for epoch in (1, 3):
        records.save_record(run_dir, epoch, epoch, runid.RunIdentity("none", 0, ""), dict(
            counts=np.zeros((1, 4, 2)), ranges=np.zeros((1, 4, 2)),
            summaries=np.zeros((1, 4, len(measures.SUMMARY_STATS))),
            layer_stats=np.zeros((1, len(measures.LAYER_STATS))),
            magnitude_counts=np.zeros((1, 4, 2)), magnitude_ranges=np.zeros((1, 4, 2))))
        with open(four_panels.panel_path(run_dir, 1, epoch), "wb") as f:
            f.write(b"png")
    records.truncate_to_epoch(run_dir, 2, num_layers=0)
    assert [row["epoch"] for row in records.read_metrics(run_dir)] == [1, 2]
    assert records.record_epochs(run_dir) == [1]
    assert sorted(os.listdir(os.path.join(run_dir, "panels"))) == ["layer1_epoch0001.png"]


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from tfnorm.run import atomic  # imports no TensorFlow
    for version in range(1, 10):
        atomic.write_bytes(sys.argv[2], bytes([version]) * 8_000_000)
        print(version, flush=True)
""")


@pytest.mark.parametrize("killed_write", [1, 2, 5])
def test_a_kill_during_a_write_leaves_the_previous_complete_file(tmp_path, killed_write):
    """tfnorm.run.atomic (which every output goes through) in a process killed (tfnorm.faults)
    inside its ``killed_write``-th rewrite of an 8 MB file, the temporary whole and not yet
    renamed: the file is the previous whole version (none before the first), and the
    temporary the kill interrupted is there, so the kill did land inside a write."""
    target = tmp_path / "metrics.csv"
    process = subprocess.run([sys.executable, "-c", WRITER, ROOT, str(target)],
                             env=dict(os.environ, TFNORM_FAULT=f"write:metrics.csv@"
                                                               f"{killed_write}"),
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert process.stdout.split() == [str(v) for v in range(1, killed_write)]
    if killed_write == 1:
        assert not target.exists()
    else:
        content = target.read_bytes()
        assert content == bytes([killed_write - 1]) * 8_000_000
    temporaries = [p.name for p in tmp_path.iterdir() if p.name != "metrics.csv"]
    assert len(temporaries) == 1 and temporaries[0].startswith(".metrics.csv."), temporaries
    assert (tmp_path / temporaries[0]).read_bytes() == bytes([killed_write]) * 8_000_000
    atomic.remove_temporary_files(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == (["metrics.csv"] if killed_write > 1
                                                     else [])


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
    with pytest.raises(errors.Divergence) as error:
        runner.run(config_for(run_dir))
    message = str(error.value)
    assert message.startswith("scheme meanonly diverged at epoch 3, step 1 of 5, layer 4: "
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


def test_a_divergent_boxcox_run_exits_non_zero_with_one_line(tmp_path):
    """Box-Cox with lambda 1e10 overflows in the forward pass of the first step; the
    failed forward check's C++ log (TensorFlow's, two lines) stays off the terminal: the
    command prints its one line."""
    out_dir = tmp_path / "boxcox"
    # As a user runs it: TensorFlow's warnings on (the tests' conftest turns them off).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.article.train", "--scheme=boxcox", "--boxcox_lambda=1e10",
         "--epochs=2", "--image_size=16", "--train_limit=40", "--test_limit=20",
         "--noprogress", "--nopanels", f"--out_dir={out_dir}"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == cli.EXIT_DIVERGED
    lines = [line for line in result.stderr.splitlines() if not line.startswith("I")]
    assert len(lines) == 1, result.stderr
    assert lines[-1].startswith("error: scheme boxcox diverged at epoch 1, step 1 of 2, "
                                "layer ")
    assert "not finite" in lines[-1] and "no epoch was completed" in lines[-1]
    assert records.read_status(str(out_dir))["state"] == "diverged"


def test_a_run_removes_what_interrupted_writes_left(tmp_path):
    """tfnorm.run.atomic's temporary files of writes killed halfway (".<name>.<random>.tmp") go
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
