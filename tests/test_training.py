"""tfnorm.training.Trainer: one compiled step is the hand-written gradient plus the update
(against tf.GradientTape), its per-layer statistics are what they say (against numpy on
the same gradients, weights and updates), the recording step's histograms hold every entry,
and raw uint8 images scaled inside the step train exactly as images scaled beforehand."""

import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tfnorm import data, loop, optimizers, training

LEARNING_RATE = 0.05


def near_zero(x):
    """numpy's own: the fraction of entries with |x| <= tau * sqrt(mean(x^2))."""
    x = np.asarray(x, np.float64)
    return np.mean(np.abs(x) <= training.NEARZERO_TAU * np.sqrt(np.mean(x * x)))


def make_batch(dtype=np.uint8, batch=4, side=32, seed=0):
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (batch, side, side, 3)).astype(np.uint8)
    labels = generator.integers(0, 10, batch).astype(np.int32)
    return tf.constant(images), tf.constant(labels)


def make_trainer(scheme, dtype=tf.float64, optimizer="sgd"):
    network = tfnorm.article_network(scheme, dtype=dtype, seed=2)
    return training.Trainer(network, optimizers.make_optimizer(optimizer, LEARNING_RATE),
                            bins=16)


@pytest.mark.parametrize("scheme", ["none", "batch", "boxcox", "noisybatch"])
def test_a_step_applies_the_tape_gradient(scheme):
    images, labels = make_batch()
    trainer = make_trainer(scheme)
    network = trainer.network
    before = [v.numpy() for v in network.trainable_variables]
    scaled = data.to_unit_range(images, tf.float64)
    with tf.GradientTape() as tape:
        loss = network.loss(scaled, labels)
    tape_grads = tape.gradient(loss, network.trainable_variables)
    out = trainer.train_step(images, labels)
    np.testing.assert_allclose(out["loss"].numpy(), loss.numpy(), rtol=1e-12)
    for var, old, grad in zip(network.trainable_variables, before, tape_grads):
        expected = old - LEARNING_RATE * grad.numpy()
        scale = max(np.abs(LEARNING_RATE * grad.numpy()).max(), 1e-300)
        assert np.abs(var.numpy() - expected).max() / scale <= 1e-8, var.name
    assert out["finite"].numpy().all() and out["finite"].shape == (len(network.blocks) + 1,)


@pytest.mark.parametrize("scheme", ["batch", "weight"])
def test_layer_statistics_are_those_of_the_gradient_weights_and_update(scheme):
    """Every per-step statistic and summary against numpy on the same tensors. (The
    near-zero fraction checked failing with the threshold tau x ||g|| instead of tau x RMS,
    the update frequency with the gradient in place of the update.)"""
    images, labels = make_batch(seed=1)
    trainer = make_trainer(scheme, optimizer="adam")
    network = trainer.network
    trainer.train_step(images, labels)  # Adam's second step: updates are not -lr * sign
    scaled = data.to_unit_range(images, tf.float64)
    result = network.backprop(scaled, labels, first_passed_gradient=True)
    weights = [w.numpy() for w in network.layer_weights]
    out = trainer.record_step(images, labels)
    stats = out["layer_stats"].numpy()
    assert stats.shape == (len(network.blocks), len(training.LAYER_STATS))
    column = {name: i for i, name in enumerate(training.LAYER_STATS)}
    summary = {name: i for i, name in enumerate(training.SUMMARY_STATS)}
    near_zero_fractions = []
    for index, layer in enumerate(result.layers):
        gradient = layer.weight_gradient.numpy()
        update = network.layer_weights[index].numpy() - weights[index]
        row = stats[index]
        np.testing.assert_allclose(row[column["nonzero_grad_frac"]],
                                   np.count_nonzero(gradient) / gradient.size, rtol=1e-15)
        np.testing.assert_allclose(row[column["weight_grad_norm"]], np.linalg.norm(gradient),
                                   rtol=1e-10)
        np.testing.assert_allclose(row[column["passed_grad_norm"]],
                                   np.linalg.norm(layer.passed_gradient.numpy()), rtol=1e-10)
        np.testing.assert_allclose(row[column["weights_norm"]], np.linalg.norm(weights[index]),
                                   rtol=1e-12)
        np.testing.assert_allclose(row[column["update_norm"]], np.linalg.norm(update),
                                   rtol=1e-6)
        # The near-zero fraction of the gradient, and the update frequency: 1 - the
        # update's near-zero fraction (numpy, on the update read off the weights).
        # (A tolerance far below one entry's 1/2304.)
        assert row[column["nearzero_grad_frac"]] == pytest.approx(near_zero(gradient), rel=1e-12)
        assert row[column["update_freq"]] == pytest.approx(1.0 - near_zero(update), rel=1e-12)
        near_zero_fractions += [near_zero(gradient), near_zero(update)]
        quantities = [gradient, layer.passed_gradient.numpy(), weights[index], update]
        np.testing.assert_allclose(
            out["summaries"].numpy()[index, :, summary["nearzero_frac"]],
            [near_zero(q) for q in quantities], rtol=1e-12)
        # The magnitude histograms count every non-zero entry, over [min, max] of log10|x|.
        np.testing.assert_array_equal(out["magnitude_counts"].numpy()[index].sum(axis=1),
                                      [np.count_nonzero(q) for q in quantities])
        magnitudes = np.log10(np.abs(gradient[gradient != 0]))
        lowest = max(magnitudes.min(), magnitudes.max() - training.MAGNITUDE_DECADES)
        np.testing.assert_allclose(out["magnitude_ranges"].numpy()[index, 0],
                                   [lowest, magnitudes.max()], rtol=1e-12)
        # The histograms count every entry of each quantity, over [min, max].
        sizes = [gradient.size, layer.passed_gradient.numpy().size, weights[index].size,
                 update.size]
        np.testing.assert_array_equal(out["counts"].numpy()[index].sum(axis=1), sizes)
        np.testing.assert_allclose(out["ranges"].numpy()[index, 2],
                                   [weights[index].min(), weights[index].max()], rtol=1e-12)
    # The comparisons above decide something: fractions strictly between 0 and 1.
    assert 0 < min(near_zero_fractions) and max(near_zero_fractions) < 1


@pytest.mark.parametrize("values", [
    [0.0, 3e-3, -2.0, 5e-2, 0.0, 7e-5, -7e-5],   # zeros in with the rest
    [0.0, 1e-3, -1e-3, 0.0],                      # one magnitude: half a decade each side
    [0.0, 0.0, 0.0],                              # all zero: no counts
    list(np.logspace(-20, 0, 41)) + [0.0] * 3,   # past the 12 decades: the first bin
])
def test_magnitude_histogram_counts_the_non_zero_entries_by_decade(values):
    """Against numpy's histogram of log10 |x| over the non-zero entries. (Checked failing
    with the zeros left in the last bin.)"""
    bins = 7  # odd: a value in the middle of the range is not on a bin's edge
    counts, edges = (t.numpy() for t in training.magnitude_histogram(
        tf.constant(values, tf.float64), bins))
    x = np.abs(np.array(values))
    if not x.any():
        np.testing.assert_array_equal(counts, 0)
        return
    logs = np.log10(x[x > 0])
    high = logs.max()
    low = max(logs.min(), high - training.MAGNITUDE_DECADES)
    if low == high:
        low, high = low - 0.5, high + 0.5
    np.testing.assert_allclose(edges, [low, high], rtol=1e-12)
    expected, _ = np.histogram(np.clip(logs, low, high), bins, (low, high))
    np.testing.assert_array_equal(counts, expected)


def test_with_plain_sgd_the_update_frequency_is_the_gradients_share_above_tau():
    """The update -lr g is the gradient scaled: its share above tau x its RMS is the
    gradient's, 1 - the near-zero fraction (float64: no entry rounds across). (Checked
    failing with the update measured against the weights' RMS.)"""
    stats = make_trainer("instance").train_step(*make_batch(seed=4))["layer_stats"].numpy()
    column = {name: i for i, name in enumerate(training.LAYER_STATS)}
    np.testing.assert_allclose(stats[:, column["update_freq"]],
                               1.0 - stats[:, column["nearzero_grad_frac"]], rtol=1e-12)
    assert (stats[:, column["nearzero_grad_frac"]] > 0).all()


def test_effective_weights_are_the_kernels_the_layers_apply():
    """Under weight norm g v/||v|| (numpy, the norm over each output channel's kernel); the
    plain kernel otherwise. (Checked failing when the layer's v was returned instead.)"""
    trainer = make_trainer("weight", optimizer="adam")
    network = trainer.network
    network.blocks[1].layer.g.assign(tf.range(1.0, 17.0, dtype=tf.float64))
    trainer.train_step(*make_batch())
    for block, kernel in zip(network.blocks, loop.effective_weights(network)):
        v, g = block.layer.v.numpy(), block.layer.g.numpy()
        np.testing.assert_allclose(kernel, g * v / np.sqrt((v * v).sum(axis=(0, 1, 2))),
                                   rtol=1e-12)
    plain = make_trainer("batch").network
    for variable, kernel in zip(plain.layer_weights, loop.effective_weights(plain)):
        np.testing.assert_array_equal(kernel, variable.numpy())


def test_the_plain_step_leaves_out_only_the_first_layers_passed_gradient():
    images, labels = make_batch()
    stats = make_trainer("layer").train_step(images, labels)["layer_stats"].numpy()
    passed = stats[:, training.LAYER_STATS.index("passed_grad_norm")]
    assert np.isnan(passed[0]) and np.isfinite(passed[1:]).all()


@pytest.mark.parametrize("scheme", ["batch", "group"])
def test_raw_images_train_exactly_as_images_scaled_beforehand(scheme):
    images, labels = make_batch(seed=3)
    raw, scaled = make_trainer(scheme, tf.float32), make_trainer(scheme, tf.float32)
    scaled_images = tf.constant(images.numpy() / np.float32(255))
    for _ in range(2):
        raw_out = raw.train_step(images, labels)
        scaled_out = scaled.train_step(scaled_images, labels)
        assert raw_out["loss"].numpy() == scaled_out["loss"].numpy()
    for a, b in zip(raw.network.trainable_variables + raw.network.statistics,
                    scaled.network.trainable_variables + scaled.network.statistics):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    raw_eval = [t.numpy() for t in raw.eval_step(images, labels)]
    scaled_eval = [t.numpy() for t in scaled.eval_step(scaled_images, labels)]
    assert raw_eval == scaled_eval


def test_a_non_finite_weight_is_flagged_at_its_layer():
    images, labels = make_batch()
    trainer = make_trainer("none")
    trainer.network.layer_weights[2].assign(
        tf.tensor_scatter_nd_update(trainer.network.layer_weights[2], [[0, 0, 0, 0]],
                                    [np.inf]))
    finite = trainer.train_step(images, labels)["finite"].numpy()
    assert not finite[0]  # the loss
    assert not finite[3]  # layer 3's weights (and gradients)


def test_steps_from_an_iterator_take_one_batch_each_and_equal_the_steps_on_it():
    batches = [make_batch(seed=seed) for seed in (3, 4, 5)]
    fed, fetched = make_trainer("batch"), make_trainer("batch")
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.stack([b[0] for b in batches]), tf.stack([b[1] for b in batches])))
    iterator = iter(dataset)
    for index, (images, labels) in enumerate(batches):
        last = index == len(batches) - 1
        expected = (fed.record_step if last else fed.train_step)(images, labels)
        got = (fetched.record_step_from if last else fetched.train_step_from)(iterator)
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy(), err_msg=key)
    for a, b in zip(fed.network.trainable_variables + fed.network.statistics,
                    fetched.network.trainable_variables + fetched.network.statistics):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(tf.errors.OutOfRangeError):  # all three batches were taken
        fetched.train_step_from(iterator)
