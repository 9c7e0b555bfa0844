"""experiments.article.train end to end (in-process, through ``runner.run``): on tiny digits and on
the tiny STL-10 prepared by the real tfds builder. Every output of a run directory
(tfnorm/run/records.py) exists and is consistent with the others."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import stl10_fixture
from experiments import cli
from experiments.article import panels, train
from runs import checked_config
from tfnorm import config as run_config, measures
from tfnorm.measures import EPOCH_STATS
from tfnorm.run import records, runner
from tfnorm.training import LAYER_STATS, QUANTITIES, SUMMARY_STATS

LAYERS = 6
# 16x16 images: the four stride-2 layers bring them to 1x1. 60 training images in
# batches of 20: 3 steps per epoch; 40 test images.
TINY = dict(image_size=16, train_limit=60, test_limit=40, epochs=2, record_every=1,
            progress=False)


def tiny_config(out_dir, **overrides):
    return checked_config(TINY, out_dir, **overrides)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("digits_run"), scheme="batch",
                         tensorboard=True)
    rows = runner.run(config)
    return config, rows


def test_config_json_holds_every_flag_versions_and_seed(digits_run):
    config, _ = digits_run
    with open(os.path.join(config["out_dir"], "config.json")) as f:
        stored = json.load(f)
    assert set(stored["flags"]) == set(run_config.names())
    assert stored["flags"]["scheme"] == "batch" and stored["flags"]["epochs"] == 2
    assert stored["seed"] == 0
    assert any(name.startswith("tensorflow") for name in stored["versions"])


def test_metrics_csv_columns_and_values(digits_run):
    config, rows = digits_run
    with open(os.path.join(config["out_dir"], "metrics.csv")) as f:
        header = f.readline().strip().split(",")
    assert header[:6] == ["epoch", "train_loss", "train_acc", "test_loss", "test_acc",
                          "seconds"]
    per_layer = LAYER_STATS + EPOCH_STATS
    assert header[6:6 + len(per_layer)] == [f"{stat}_1" for stat in per_layer]
    assert len(header) == 6 + len(per_layer) * LAYERS
    stored = records.read_metrics(config["out_dir"])
    assert [row["epoch"] for row in stored] == [1, 2]
    for row, returned in zip(stored, rows):
        assert row == pytest.approx(returned, rel=0, abs=0)
        # Train accuracy is the mean of three batch accuracies k/20: a multiple of 1/60.
        assert row["train_acc"] * 60 == pytest.approx(round(row["train_acc"] * 60), abs=1e-4)
        assert row["test_acc"] * 40 == pytest.approx(round(row["test_acc"] * 40), abs=1e-9)
        for layer in range(1, LAYERS + 1):
            assert 0 < row[f"nonzero_grad_frac_{layer}"] <= 1
            for stat in per_layer[1:]:
                assert np.isfinite(row[f"{stat}_{layer}"]) and row[f"{stat}_{layer}"] > 0


def test_layer1_passed_gradient_comes_from_the_recording_step(digits_run):
    config, rows = digits_run
    record = records.load_record(records.record_path(config["out_dir"], 2))
    passed = LAYER_STATS.index("passed_grad_norm")
    assert rows[-1]["passed_grad_norm_1"] == record.layer_stats[0, passed]
    # ... whose histogram and summary describe the same tensor.
    norm = SUMMARY_STATS.index("norm")
    assert record.summaries[0, QUANTITIES.index("passed_gradient"), norm] == \
        pytest.approx(record.layer_stats[0, passed], rel=1e-6)


def test_records_hold_full_histograms_of_every_quantity(digits_run):
    config, _ = digits_run
    assert records.record_epochs(config["out_dir"]) == [1, 2]
    record = records.load_record(records.record_path(config["out_dir"], 2))
    assert (record.epoch, record.step, record.scheme) == (2, 6, "batch")
    assert record.counts.shape == (LAYERS, 4, 50)
    kernel_sizes = [3 * 3 * 3 * 16] + [3 * 3 * 16 * 16] * 4 + [3 * 3 * 16 * 10]
    # Inputs of each layer: 20 images at 16, 8, 4, 2, 1, 1 pixels a side.
    passed_sizes = [20 * 16 * 16 * 3] + [20 * s * s * 16 for s in (8, 4, 2, 1, 1)]
    for layer in range(LAYERS):
        totals = record.counts[layer].sum(axis=1)
        assert list(totals) == [kernel_sizes[layer], passed_sizes[layer],
                                kernel_sizes[layer], kernel_sizes[layer]]
        low, high = record.ranges[layer, :, 0], record.ranges[layer, :, 1]
        minimum = record.summaries[layer, :, SUMMARY_STATS.index("min")]
        maximum = record.summaries[layer, :, SUMMARY_STATS.index("max")]
        assert np.all(low <= minimum) and np.all(maximum <= high)


def test_checkpoint_holds_epoch_statistics_and_optimizer(digits_run):
    import tensorflow as tf
    config, _ = digits_run
    folder = os.path.join(config["out_dir"], "checkpoints")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(folder))
    names = reader.get_variable_to_shape_map()
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert reader.get_tensor("optimizer_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 6
    # Batch norm: a running mean and variance per normalized layer.
    assert sum(n.startswith("network_statistics/") for n in names) == 2 * 5
    assert sum(n.startswith("optimizer_slots/") for n in names) == 2 * LAYERS


def _checkpointed_kernels(out_dir, epoch, indices):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(os.path.join(out_dir, "checkpoints", f"ckpt-{epoch}"))
    return [reader.get_tensor(f"network_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
            for i in indices]


def near_zero(x):
    """numpy's own: the fraction of entries with |x| <= tau * sqrt(mean(x^2))."""
    x = np.asarray(x, np.float64)
    return np.mean(np.abs(x) <= measures.NEARZERO_TAU * np.sqrt(np.mean(x * x)))


def test_weight_movement_is_that_of_the_checkpointed_weights(digits_run):
    """||W_e - W_(e-1)|| / ||W_(e-1)|| in numpy on the kernels of the checkpoints of epochs
    1 and 2 and of the seed's initial network. (Checked failing with ||W_e|| in the
    denominator, and with one snapshot before the first epoch only.)"""
    import tfnorm
    config, rows = digits_run
    network = tfnorm.article_network("batch", seed=config["seed"])
    kernels = {0: [w.numpy() for w in network.layer_weights]}
    for epoch in (1, 2):
        kernels[epoch] = _checkpointed_kernels(config["out_dir"], epoch, network.weight_indices)
    for epoch in (1, 2):
        for layer in range(LAYERS):
            before = kernels[epoch - 1][layer].astype(np.float64)
            after = kernels[epoch][layer].astype(np.float64)
            expected = np.linalg.norm(after - before) / np.linalg.norm(before)
            assert rows[epoch - 1][f"weight_movement_{layer + 1}"] == \
                pytest.approx(expected, rel=1e-12), (epoch, layer)
    assert 0 < min(rows[1][f"weight_movement_{i}"] for i in range(1, LAYERS + 1))


def test_epoch_means_of_near_zero_and_update_frequency_replay_from_the_checkpoint(digits_run):
    """Epoch 2 replayed from the checkpoint of epoch 1, step by step: numpy's near-zero
    fraction of each hand-written weight gradient and of each update read off the
    weights, averaged over the epoch's steps, are metrics.csv's row. The float32 updates
    read off the weights are rounded: up to two entries of a layer may fall on the other
    side of the threshold. (Checked failing with tau doubled in the step, and with
    update_freq taken from the gradient instead of the update.)"""
    import tensorflow as tf
    from tfnorm import data, loop
    config, rows = digits_run
    network, trainer, checkpoint, _ = runner.build(config)
    checkpoint.restore(os.path.join(config["out_dir"], "checkpoints", "ckpt-1"))
    dataset = runner.load_data(config)
    near, frequency = [], []
    for images, labels in loop.train_batches(dataset, config["batch_size"], 2, config["seed"],
                                             shuffle=config["shuffle"]):
        result = network.backprop(data.to_unit_range(images, tf.float32), labels)
        before = [w.numpy() for w in network.layer_weights]
        trainer.train_step(images, labels)
        near.append([near_zero(layer.weight_gradient.numpy()) for layer in result.layers])
        frequency.append([1.0 - near_zero(w.numpy() - b)
                          for w, b in zip(network.layer_weights, before)])
    steps = len(near)
    assert steps == 3
    for layer in range(LAYERS):
        tolerance = 2.0 / (steps * network.layer_weights[layer].shape.num_elements())
        assert rows[1][f"nearzero_grad_frac_{layer + 1}"] == \
            pytest.approx(np.mean([n[layer] for n in near]), abs=tolerance), layer
        assert rows[1][f"update_freq_{layer + 1}"] == \
            pytest.approx(np.mean([f[layer] for f in frequency]), abs=tolerance), layer
    assert 0 < min(min(n) for n in near) and max(max(f) for f in frequency) < 1


def test_config_json_counts_the_checkpointed_parameters(digits_run):
    """The parameter count config.json gives is the number of trainable entries the
    checkpoint holds (numpy on its tensors). (Checked failing with the running statistics
    counted too.)"""
    import tensorflow as tf
    config, _ = digits_run
    reader = tf.train.load_checkpoint(os.path.join(config["out_dir"], "checkpoints", "ckpt-2"))
    stored = sum(reader.get_tensor(name).size for name in reader.get_variable_to_shape_map()
                 if name.startswith("network_variables/"))
    assert records.read_parameter_count(config["out_dir"]) == stored == 11088


def test_panels_and_gifs_exist_and_redraw_identically_from_records(digits_run):
    config, _ = digits_run
    out_dir = config["out_dir"]
    folder = os.path.join(out_dir, "panels")
    expected = {f"layer{layer}_epoch{epoch:04d}.png" for layer in range(1, LAYERS + 1)
                for epoch in (1, 2)} | {f"layer{layer}.gif" for layer in range(1, LAYERS + 1)}
    assert set(os.listdir(folder)) == expected
    with Image.open(os.path.join(folder, "layer3.gif")) as gif:
        assert gif.n_frames == 2
    drawn = {name: open(os.path.join(folder, name), "rb").read() for name in expected}
    shutil.rmtree(folder)
    panels.redraw(out_dir)
    for name, content in drawn.items():
        assert open(os.path.join(folder, name), "rb").read() == content, name


def test_tensorboard_scalars_and_histograms(digits_run):
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator
    config, _ = digits_run
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(config["out_dir"], "tensorboard"), size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    assert {"train_acc", "test_acc", "layer1/nonzero_grad_frac", "layer6/update_norm",
            "layer3/nearzero_grad_frac", "layer2/update_freq", "layer4/weight_movement",
            "layer1/weight_gradient", "layer6/update"} <= tags
    histogram = accumulator.Tensors("layer2/weights")[-1]
    buckets = tf.make_ndarray(histogram.tensor_proto)
    assert buckets.shape == (50, 3) and buckets[:, 2].sum() == 3 * 3 * 16 * 16


def test_a_complete_run_is_not_trained_again(digits_run):
    config, rows = digits_run
    before = os.path.getmtime(os.path.join(config["out_dir"], "metrics.csv"))
    assert runner.run(config) == rows
    assert os.path.getmtime(os.path.join(config["out_dir"], "metrics.csv")) == before
    assert records.read_status(config["out_dir"])["state"] == "complete"


def test_stl10_defaults_are_the_articles():
    config = cli.resolve({"dataset": "stl10"})
    assert (config["epochs"], config["batch_size"], config["learning_rate"],
            config["optimizer"], config["shuffle"], config["image_size"],
            config["bins"]) == (200, 20, 0.0008, "article_adam", False, 96, 50)


def test_end_to_end_on_tiny_stl10_through_the_real_tfds_builder(tmp_path):
    with stl10_fixture.fake_stl10(tmp_path, n_train=8, n_test=6) as data_dir:
        config = tiny_config(tmp_path / "run", dataset="stl10", data_dir=data_dir,
                             scheme="layer", batch_size=4, epochs=1, image_size=None,
                             train_limit=0, test_limit=0)
        rows = runner.run(config)
    assert config["optimizer"] == "article_adam" and config["image_size"] == 96
    assert len(rows) == 1 and rows[0]["test_acc"] * 6 == pytest.approx(
        round(rows[0]["test_acc"] * 6))
    record = records.load_record(records.record_path(config["out_dir"], 1))
    # Layer 1's passed gradient: the last batch of 4 images at 96x96x3.
    assert record.counts[0, 1].sum() == 4 * 96 * 96 * 3
    assert record.step == 2
    assert len([n for n in os.listdir(os.path.join(config["out_dir"], "panels"))
                if n.endswith(".png")]) == LAYERS
    assert records.read_status(config["out_dir"])["state"] == "complete"
