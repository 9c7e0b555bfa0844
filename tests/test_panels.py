"""Four-panel figures and GIFs drawn from saved records alone (no training, no model):
experiments.article.panels redraws a run directory holding nothing but records."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tfnorm.run import four_panels, records, runid
from tfnorm.training import LAYER_STATS, QUANTITIES, SUMMARY_STATS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS, BINS = 2, 10


def synthetic_outputs(epoch):
    """What Trainer.record_step returns, made up: counts that differ per layer,
    quantity and epoch, so a panel drawing the wrong one is caught."""
    rng = np.random.default_rng(epoch)
    counts = rng.integers(0, 100, size=(LAYERS, 4, BINS))
    ranges = np.stack([np.full((LAYERS, 4), -1.0 * epoch), np.full((LAYERS, 4), 2.0)], -1)
    summaries = rng.uniform(0.1, 0.9, size=(LAYERS, 4, len(SUMMARY_STATS)))
    summaries[1, 0, SUMMARY_STATS.index("nonzero_frac")] = 0.25
    return dict(counts=counts, ranges=ranges, summaries=summaries,
                layer_stats=rng.uniform(size=(LAYERS, len(LAYER_STATS))),
                magnitude_counts=counts[..., ::-1], magnitude_ranges=ranges - 3.0)


@pytest.fixture()
def records_only_dir(tmp_path):
    outputs = {}
    for epoch in (1, 3):
        outputs[epoch] = synthetic_outputs(epoch)
        records.save_record(str(tmp_path), epoch, epoch * 10,
                            runid.RunIdentity("layer", 0, ""), outputs[epoch])
    return str(tmp_path), outputs


def test_records_round_trip(records_only_dir):
    run_dir, outputs = records_only_dir
    record = records.load_record(records.record_path(run_dir, 3))
    assert (record.epoch, record.step, record.scheme) == (3, 30, "layer")
    np.testing.assert_array_equal(record.counts, outputs[3]["counts"])
    np.testing.assert_array_equal(record.ranges, outputs[3]["ranges"])
    np.testing.assert_array_equal(record.layer_stats, outputs[3]["layer_stats"])
    np.testing.assert_array_equal(record.magnitude_counts, outputs[3]["magnitude_counts"])
    np.testing.assert_array_equal(record.magnitude_ranges, outputs[3]["magnitude_ranges"])


def test_four_panels_show_the_records_histograms_in_the_articles_order(records_only_dir):
    run_dir, outputs = records_only_dir
    record = records.load_record(records.record_path(run_dir, 3))
    fig = four_panels.four_panel_figure(record, 1)
    title = fig._suptitle.get_text()
    assert "layer" in title and "layer 2" in title and "epoch 3" in title and "25.0%" in title
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [four_panels.PANEL_TITLES[q] for q in QUANTITIES]
    for q, ax in enumerate(axes):
        (patch,) = ax.patches
        values, edges, _ = patch.get_data()
        np.testing.assert_array_equal(values, outputs[3]["counts"][1, q])
        assert edges[0] == -3.0 and edges[-1] == 2.0 and len(edges) == BINS + 1


def test_panels_command_redraws_everything_from_records(records_only_dir):
    run_dir, _ = records_only_dir
    result = subprocess.run([sys.executable, "-m", "experiments.article.panels", f"--run_dir={run_dir}"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    folder = os.path.join(run_dir, "panels")
    assert sorted(os.listdir(folder)) == sorted(
        [f"layer{layer}_epoch{epoch:04d}.png" for layer in (1, 2) for epoch in (1, 3)]
        + ["layer1.gif", "layer2.gif"])
    with Image.open(os.path.join(folder, "layer2.gif")) as gif:
        assert gif.n_frames == 2
    with Image.open(os.path.join(folder, "layer1_epoch0003.png")) as png:
        assert png.size == (640, 480)


def test_panels_command_refuses_a_directory_without_records(tmp_path, monkeypatch, capsys):
    from experiments.article import panels
    from runs import exit_of_main
    assert exit_of_main(panels, [f"--run_dir={tmp_path}"], monkeypatch) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --run_dir {tmp_path}: holds no records "
        f"({tmp_path}/records/epoch_NNNN.npz)"]
