"""tfnorm.keras.PanelRecorder: the article's four panels for a Keras model, in a tfnorm run's
record format, drawn by tfnorm's panel code and read by experiments.article.panels and
experiments.article.crosspanels; and the documented example (docs/examples/keras_digits.py), which
trains a small Keras CNN with the callback."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

import gradcheck
import tfnorm
import tfnorm.keras as tk
from tfnorm import optimizers, training
from tfnorm.run import records
from tfnorm.measures import LAYER_STATS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, BATCH, STEPS, LEARNING_RATE = 16, 6, 3, 1e-2


@pytest.fixture
def float64():
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(previous)


def test_its_record_equals_a_tfnorm_record_step(float64, tmp_path):
    # Every step on the same batch, the callback's too: then the epoch's last step (the
    # one recorded), observed at its weights on its batch, is tfnorm's recording step on
    # the same network.
    generator = gradcheck.rng(11)
    images = generator.random((BATCH, SIZE, SIZE, 3))
    labels = generator.integers(0, 10, BATCH).astype(np.int32)
    model = tk.article_model("batch", image_size=SIZE, dtype="float64", seed=2)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    recorder = tk.PanelRecorder(str(tmp_path), batch=(images, labels), every=1, bins=20,
                                draw=False)
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat(STEPS)
    model.fit(batches, epochs=1, verbose=0, callbacks=[recorder])

    network = tfnorm.article_network("batch", dtype=tf.float64, seed=2)
    optimizer = optimizers.SGD(LEARNING_RATE)
    for step in range(STEPS):
        result = network.backprop(tf.constant(images), tf.constant(labels),
                                  first_passed_gradient=True)
        expected = training.apply_step(network, optimizer, result,
                                       training.WholeBatch(tf.constant(labels)), 20,
                                       record=step == STEPS - 1)
    record = records.load_record(records.record_path(str(tmp_path), 1))
    assert (record.epoch, record.step, record.scheme) == (1, STEPS, "batch")
    for name in ("summaries", "ranges", "layer_stats"):
        error = gradcheck.relative_error(getattr(record, name), expected[name])
        assert error <= 1e-9, (name, error)
    np.testing.assert_array_equal(record.counts, expected["counts"])
    # The model did not move while observed: its running statistics are those of the
    # three training steps alone.
    for ours, theirs in zip([w for w in model.non_trainable_weights], network.statistics):
        assert gradcheck.relative_error(ours.numpy(), theirs.numpy()) <= 1e-9
    # metrics.csv and config.json, through tfnorm's writers.
    (row,) = records.read_metrics(str(tmp_path), tk.panels.MAY_BE_NAN)
    assert row["epoch"] == 1 and np.isfinite(row["train_loss"]) and np.isnan(row["test_acc"])
    assert row["weight_grad_norm_6"] == record.layer_stats[5, LAYER_STATS.index("weight_grad_norm")]
    assert records.read_config(str(tmp_path))["layers"] == [f"conv{i}" for i in range(1, 7)]
    # A later fit from initial_epoch continues the directory.
    model.fit(batches, initial_epoch=1, epochs=2, verbose=0, callbacks=[recorder])
    assert records.record_epochs(str(tmp_path)) == [1, 2]
    rows = records.read_metrics(str(tmp_path), tk.panels.MAY_BE_NAN)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert records.load_record(records.record_path(str(tmp_path), 2)).step == 2 * STEPS


def _run_main(module, argv, monkeypatch):
    """``module.main`` on a private FlagValues parsed from ``argv`` (as the command line)."""
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    flag_values([module.__name__] + list(argv))
    monkeypatch.setattr(module, "FLAGS", flag_values)
    module.main([module.__name__])


def test_the_example_runs_and_the_panel_commands_read_its_output(tmp_path, monkeypatch):
    from experiments.article import crosspanels, panels

    out_dir = str(tmp_path / "example")
    result = subprocess.run([sys.executable, "-m", "docs.examples.keras_digits", out_dir],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert records.record_epochs(out_dir) == [1, 2, 3]
    rows = records.read_metrics(out_dir, tk.panels.MAY_BE_NAN)
    assert [row["epoch"] for row in rows] == [1, 2, 3] and rows[-1]["test_acc"] > 0.5
    drawn = sorted(os.listdir(os.path.join(out_dir, records.PANELS_DIR)))
    assert drawn == sorted([f"layer{layer}_epoch{epoch:04d}.png" for layer in range(1, 5)
                            for epoch in (1, 2, 3)] + [f"layer{i}.gif" for i in range(1, 5)])

    shutil.rmtree(os.path.join(out_dir, records.PANELS_DIR))
    _run_main(panels, [f"--run_dir={out_dir}"], monkeypatch)
    with Image.open(os.path.join(out_dir, records.PANELS_DIR, "layer2_epoch0003.png")) as png:
        assert png.size == (640, 480)

    compare_dir = tmp_path / "compare"
    shutil.copytree(out_dir, compare_dir / "batch" / "seed_0")
    out = str(tmp_path / "cross.png")
    _run_main(crosspanels, [f"--compare_dir={compare_dir}", "--layer=2", f"--out={out}"],
              monkeypatch)
    assert os.path.getsize(out) > 0
