"""The cross-scheme panel drawn from a tiny compare directory of synthetic records (no
training): experiments.article.crosspanels writes a valid PNG, refuses bad input with one line
and exit 2, and imports no TensorFlow."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tfnorm import SCHEMES, measures
from tfnorm.analysis import compare_grid, crosspanels
from tfnorm.run import records, runid
from tfnorm.measures import LAYER_STATS, QUANTITIES, SUMMARY_STATS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS, BINS, ENTRIES = 3, 50, 2000
# Spreads per scheme that differ by orders of magnitude, as the demo's gradients do.
SCALES = {"none": 2e-3, "batch": 1.0, "layer": 0.5, "group": 0.3, "weight": 0.05}


def synthetic_outputs(scheme, epoch, seed):
    """What Trainer.record_step returns, made from samples of a known distribution:
    histograms over [min, max] in BINS bins and their summary statistics."""
    rng = np.random.default_rng([seed, epoch, len(scheme)])
    counts = np.zeros((LAYERS, len(QUANTITIES), BINS), np.int64)
    ranges = np.zeros((LAYERS, len(QUANTITIES), 2))
    magnitude_counts, magnitude_ranges = np.zeros_like(counts), np.zeros_like(ranges)
    summaries = np.zeros((LAYERS, len(QUANTITIES), len(SUMMARY_STATS)))
    for layer in range(LAYERS):
        for q, quantity in enumerate(QUANTITIES):
            scale = 0.05 if quantity == "weights" else SCALES[scheme] * (layer + 1)
            values = rng.laplace(0, scale, ENTRIES)
            if quantity == "weight_gradient" and scheme == "none":
                values[: ENTRIES // 2] = 0.0  # half the entries dead, as in the demo
            counts[layer, q], edges = np.histogram(values, BINS, (values.min(), values.max()))
            ranges[layer, q] = edges[0], edges[-1]
            logs = np.log10(np.abs(values[values != 0]))
            magnitude_counts[layer, q], edges = np.histogram(logs, BINS,
                                                             (logs.min(), logs.max()))
            magnitude_ranges[layer, q] = edges[0], edges[-1]
            rms = np.sqrt(np.mean(values ** 2))
            summaries[layer, q] = (values.mean(), values.std(), values.min(), values.max(),
                                   np.linalg.norm(values), np.mean(values != 0),
                                   np.mean(np.abs(values) <= measures.NEARZERO_TAU * rms))
    return dict(counts=counts, ranges=ranges, summaries=summaries,
                layer_stats=np.ones((LAYERS, len(LAYER_STATS))),
                magnitude_counts=magnitude_counts, magnitude_ranges=magnitude_ranges)


def make_compare_dir(root, epochs_of=None, seeds=(0, 1)):
    """<root>/<scheme>/seed_<k>/records/epoch_NNNN.npz for SCALES' schemes."""
    epochs_of = epochs_of or {}
    for scheme in SCALES:
        for seed in seeds:
            for epoch in epochs_of.get(scheme, (1, 5, 10)):
                records.save_record(compare_grid.run_dir(root, scheme, seed), epoch, epoch * 63,
                                    runid.RunIdentity(scheme, seed, ""),
                                    synthetic_outputs(scheme, epoch, seed))
    return root


@pytest.fixture()
def compare_dir(tmp_path):
    # "layer" stops at epoch 5: the default epoch is then the last one all runs share.
    return make_compare_dir(str(tmp_path / "compare"), {"layer": (1, 5)})


def run_script(*args):
    return subprocess.run([sys.executable, "-m", "experiments.article.crosspanels", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_runs_are_found_in_registry_order_and_the_default_epoch_is_common(compare_dir):
    runs = crosspanels.find_runs(compare_dir, 0)
    assert list(runs) == [s for s in SCHEMES if s in SCALES]
    assert crosspanels.common_epochs(runs) == [1, 5]
    chosen = crosspanels.find_runs(compare_dir, 1, ["weight", "none"])
    assert list(chosen) == ["none", "weight"]


def test_figure_has_a_row_per_scheme_shared_columns_and_magnitudes_where_scales_differ(
        compare_dir):
    """(The area check fails when the magnitude heights are fractions of the non-zero
    entries instead of all of them.)"""
    runs = crosspanels.find_runs(compare_dir, 0)
    loaded = crosspanels.load_records(runs, 5)
    fig = crosspanels.cross_scheme_figure(loaded, layer=1, seed=0)
    axes = np.array(fig.axes).reshape(len(runs), len(QUANTITIES))
    assert [ax.get_ylabel() for ax in axes[:, 0]] == list(runs)
    assert [ax.get_title() for ax in axes[0]] == [crosspanels.COLUMN_TITLES[q]
                                                  for q in QUANTITIES]
    # Gradients span 2e-3 .. 1: magnitudes on a log axis; weights are all N(0, 0.05)-like:
    # linear, the article's histogram.
    assert axes[-1, 0].get_xscale() == "log" and axes[-1, 2].get_xscale() == "linear"
    assert axes[0, 0].get_xlim() == axes[-1, 0].get_xlim()
    # Each row shows its own scheme's histogram of layer 2: height x drawn bin width is
    # the bin's fraction of all entries (per decade on the log axis: the zeros, in no
    # bin, are what the areas leave out).
    row = list(runs).index("none")
    ax = axes[row, 0]
    values, edges, _ = [p for p in ax.patches if hasattr(p, "get_data")][0].get_data()
    expected = loaded["none"].magnitude_counts[1, 0]
    np.testing.assert_allclose(values * np.diff(np.log10(edges)),
                               expected / loaded["none"].counts[1, 0].sum())
    assert (values * np.diff(np.log10(edges))).sum() == pytest.approx(0.5)  # half are 0
    np.testing.assert_allclose(np.log10(edges[[0, -1]]), loaded["none"].magnitude_ranges[1, 0])
    linear = axes[row, 2]
    values, edges, _ = [p for p in linear.patches if hasattr(p, "get_data")][0].get_data()
    expected = loaded["none"].counts[1, 2]
    np.testing.assert_allclose(values * np.diff(edges), expected / expected.sum())
    np.testing.assert_allclose(edges, records.histogram_edges(loaded["none"], 1, 2))
    # The zero and near-zero shares are noted, and the near-zero threshold drawn at
    # tau x RMS (the summary's mean and std).
    summary = loaded["none"].summaries[1, 0]
    note = [t.get_text() for t in ax.texts][0]
    assert "zero 50%" in note and f"near-zero {summary[-1]:.0%}" in note
    rms = np.hypot(summary[SUMMARY_STATS.index("mean")], summary[SUMMARY_STATS.index("std")])
    assert [line.get_xdata()[0] for line in ax.lines] == \
        pytest.approx([measures.NEARZERO_TAU * rms])
    # ... and the histogram below it drawn again, dark, cut at the threshold.
    (values, _, _), (dark_values, dark_edges, _) = [
        p.get_data() for p in ax.patches if hasattr(p, "get_data")]
    assert dark_edges.max() == pytest.approx(measures.NEARZERO_TAU * rms)
    shown = np.diff(dark_edges) > 0
    np.testing.assert_array_equal(dark_values[shown], values[shown])
    # The typical magnitude shows: the tallest bin of "none" lies ~1000x closer to 0.
    def peak(name):
        ax = axes[list(runs).index(name), 1]
        values, edges, _ = [p for p in ax.patches if hasattr(p, "get_data")][0].get_data()
        return edges[np.argmax(values)]
    assert 100 < peak("batch") / peak("none") < 10000
    assert "layer 2, epoch 5, seed 0" in fig._suptitle.get_text()


def test_command_writes_a_valid_png_without_tensorflow(compare_dir, tmp_path):
    out = str(tmp_path / "figures" / "cross.png")
    result = run_script(f"--compare_dir={compare_dir}", "--layer=2", f"--out={out}")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 800 and image.height > 400
    probe = subprocess.run([sys.executable, "-c", "import sys; import experiments.article.crosspanels;"
                            " print('tensorflow' in sys.modules)"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"


def test_command_default_out_names_layer_epoch_and_seed(compare_dir):
    result = run_script(f"--compare_dir={compare_dir}", "--layer=1", "--seed=1",
                        "--schemes=none,batch", "--epoch=10")
    assert result.returncode == 0, result.stderr
    assert os.path.exists(os.path.join(compare_dir, "crosspanels", "layer1_epoch0010_seed1.png"))


@pytest.mark.parametrize("args, named", [
    (["--layer=9"], "--layer 9"),
    (["--layer=0"], "--layer 0"),
    (["--layer=1", "--epoch=10"], "--epoch 10"),
    (["--layer=1", "--schemes=batch,nosuch"], "--schemes"),
    (["--layer=1", "--seed=7"], "seed_7"),
    (["--layer=1", "--out=figure.jpg"], "--out"),
    (["--layer=x"], "--layer"),
])
def test_bad_input_is_one_line_and_exit_2(compare_dir, args, named):
    result = run_script(f"--compare_dir={compare_dir}", *args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines
    assert not os.path.exists(os.path.join(compare_dir, "crosspanels"))


def test_missing_compare_dir_is_named(tmp_path):
    result = run_script(f"--compare_dir={tmp_path / 'absent'}", "--layer=1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: --compare_dir {tmp_path / 'absent'}: "
                                          "no such directory"]
