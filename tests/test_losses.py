"""tfnorm.losses: softmax cross-entropy (mean over the batch, integer labels) against
tf.nn, its hand backward against tf.GradientTape (<= 1e-9) and finite differences
(<= 1e-6), numerical stability, accuracy, bad input."""

import numpy as np
import pytest
import tensorflow as tf

import gradcheck
from tfnorm import losses


def make_logits(batch, classes, seed, scale=1.0):
    generator = gradcheck.rng(seed)
    logits = gradcheck.normal(generator, [batch, classes], scale=scale)
    labels = tf.constant(generator.integers(0, classes, batch), tf.int32)
    return logits, labels


@pytest.mark.parametrize("batch,classes", [(1, 3), (5, 7), (4, 10)])
def test_cross_entropy_matches_tf(batch, classes):
    logits, labels = make_logits(batch, classes, seed=batch)
    loss, _ = losses.softmax_cross_entropy_forward(logits, labels)
    reference = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    np.testing.assert_allclose(loss, reference, rtol=1e-14)


@pytest.mark.parametrize("batch,classes,scale", [(1, 3, 1.0), (5, 7, 1.0), (4, 10, 30.0)])
def test_cross_entropy_backward(batch, classes, scale):
    logits, labels = make_logits(batch, classes, seed=10 + batch, scale=scale)
    tape_error, fd_error = gradcheck.check_function(
        lambda logits: losses.softmax_cross_entropy_forward(logits, labels),
        lambda dloss, cache: [losses.softmax_cross_entropy_backward(dloss, cache)], [logits])
    assert tape_error <= 1e-9, tape_error
    assert fd_error <= 1e-6, fd_error


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_batch():
    logits, labels = make_logits(4, 5, seed=20)
    _, cache = losses.softmax_cross_entropy_forward(logits, labels)
    dlogits = losses.softmax_cross_entropy_backward(tf.constant(1.0, tf.float64), cache)
    expected = (tf.nn.softmax(logits) - tf.one_hot(labels, 5, dtype=tf.float64)) / 4
    np.testing.assert_allclose(dlogits, expected, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    # A naive exp() overflows at ~89 (float32) / ~710 (float64).
    logits = tf.constant([[1000.0, 0.0, -1000.0], [-5000.0, 5000.0, 4990.0]], dtype)
    labels = tf.constant([0, 2], tf.int32)
    loss, cache = losses.softmax_cross_entropy_forward(logits, labels)
    # Row 1: the label wins, loss ~0; row 2: 10 below the max, loss = 10 + log(1 + e^-10).
    np.testing.assert_allclose(loss, (0.0 + 10.0 + np.log1p(np.exp(-10.0))) / 2, rtol=1e-6)
    dlogits = losses.softmax_cross_entropy_backward(tf.constant(1.0, dtype), cache)
    assert np.all(np.isfinite(dlogits.numpy()))
    np.testing.assert_allclose(tf.reduce_sum(dlogits, axis=1), 0.0, atol=1e-6)


def test_accuracy():
    logits = tf.constant([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], tf.float64)
    labels = tf.constant([1, 0, 0, 1])
    assert float(losses.accuracy(logits, labels)) == 0.5


@pytest.mark.parametrize("logits,labels,message", [
    (tf.zeros([2, 3, 4]), tf.zeros([2], tf.int32), "logits must have rank 2"),
    (tf.zeros([2, 3]), tf.zeros([2, 1], tf.int32), "labels must have rank 1"),
])
def test_bad_input_is_named(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        losses.softmax_cross_entropy_forward(logits, labels)
