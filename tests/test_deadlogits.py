"""experiments.article.deadlogits on a tiny finished compare grid: its test accuracy (network
forward from the last checkpoint) equals the accuracy the run's own evaluation step wrote
in metrics.csv, and its counts are consistent; --versus_dir pairs two grids by seed."""

import os

import pytest
from absl import flags

from experiments import cli
from experiments.article import compare, deadlogits
from tfnorm.analysis import compare_grid
from tfnorm.run import atomic, records

TINY = dict(epochs=1, image_size=16, train_limit=60, test_limit=40, progress=False,
            panels=False)


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    root = tmp_path_factory.mktemp("grids")
    for name, final in (("relu", "relu"), ("linear", "linear")):
        base = cli.resolve(dict(TINY, out_dir=str(root / name), final_activation=final))
        compare.train_all(compare.plan(base, ["none"], 2, 0), jobs=1)
    return root


def run_main(*argv):
    flag_values = flags.FlagValues()
    deadlogits.define_flags(flag_values)
    flag_values(["deadlogits"] + list(argv))
    original, deadlogits.FLAGS = deadlogits.FLAGS, flag_values
    try:
        deadlogits.main(["deadlogits"])
    finally:
        deadlogits.FLAGS = original


def test_measurements_agree_with_the_runs_own_evaluation(grids, tmp_path):
    run_main(f"--compare_dir={grids / 'relu'}", "--schemes=none",
             f"--versus_dir={grids / 'linear'}", f"--out_dir={tmp_path}")
    rows = atomic.read_csv(str(tmp_path / "deadlogits.csv"))
    assert [(r["scheme"], r["seed"]) for r in rows] == [
        ("none", "0"), ("none", "1"), ("none (versus)", "0"), ("none (versus)", "1")]
    for row in rows:
        grid = "relu" if row["final_activation"] == "relu" else "linear"
        metrics = records.read_metrics(compare_grid.run_dir(str(grids / grid), "none",
                                                       int(row["seed"])))
        assert float(row["test_acc"]) == pytest.approx(metrics[-1]["test_acc"], abs=1e-9)
        assert 0 <= int(row["dead_classes"]) <= 10
        assert float(row["dead_images"]) <= float(row["zero_logits"]) + 1e-12
    # A linear last layer has no ReLU zeros.
    assert all(float(r["zero_logits"]) == 0 for r in rows if r["final_activation"] == "linear")
    text = open(tmp_path / "deadlogits.md").read()
    assert "| test_acc: none (versus) > none |" in text


def test_a_directory_without_finished_runs_is_one_line(tmp_path, capsys):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SystemExit) as refused:
        run_main(f"--compare_dir={tmp_path / 'empty'}", "--schemes=none")
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --compare_dir {tmp_path / 'empty'}: no finished run of none"]


def test_a_truncated_checkpoint_is_one_line_with_exit_6(grids, tmp_path, capsys):
    import shutil

    from tfnorm.run import rundir
    grid = tmp_path / "grid"
    shutil.copytree(grids / "relu", grid)
    run_dir = compare_grid.run_dir(str(grid), "none", 1)
    epoch = rundir.latest_checkpoint_epoch(run_dir)
    data = os.path.join(run_dir, records.CHECKPOINT_DIR,
                        f"ckpt-{epoch}.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(100)
    with pytest.raises(SystemExit) as refused:
        run_main(f"--compare_dir={grid}", "--schemes=none", f"--out_dir={tmp_path}/out")
    assert refused.value.code == 6
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {data} is corrupt or "
                                                   "unreadable"), lines
