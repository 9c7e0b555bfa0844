"""tfnorm.layers: every hand backward against tf.GradientTape (relative <= 1e-9) and
against finite differences through tests/gradcheck.py (<= 1e-8), float64, seeded
small shapes with odd H and W, batch 1 where it is allowed, stride 2, channel
counts that are not powers of two. Relative error as defined in gradcheck."""

import numpy as np
import pytest
import tensorflow as tf

import gradcheck
from tfnorm import layers

TAPE_TOLERANCE = 1e-9
FD_TOLERANCE = gradcheck.FD_TOLERANCE  # 1e-8: see the measurements there


def assert_gradients_match(forward, backward, inputs, seed=0):
    tape_error, fd_error = gradcheck.check_function(forward, backward, inputs, seed)
    assert tape_error <= TAPE_TOLERANCE, f"hand vs GradientTape: relative error {tape_error:.3g}"
    assert fd_error <= FD_TOLERANCE, f"hand vs finite differences: relative error {fd_error:.3g}"


# ----------------------------------------------------------------------------
# Convolution and dense


@pytest.mark.parametrize("batch,height,width,stride,padding,kernel,use_bias", [
    (1, 5, 7, 1, "SAME", 3, True),
    (2, 5, 7, 2, "SAME", 3, False),
    (2, 7, 5, 2, "VALID", 3, True),
    (1, 6, 7, 3, "SAME", 2, True),
    (2, 5, 5, 1, "VALID", 2, False),
])
def test_conv2d_backward(batch, height, width, stride, padding, kernel, use_bias):
    generator = gradcheck.rng(stride * 10 + kernel)
    x = gradcheck.normal(generator, [batch, height, width, 3])
    w = gradcheck.normal(generator, [kernel, kernel, 3, 5])
    inputs = [x, w]
    if use_bias:
        inputs.append(gradcheck.normal(generator, [5]))

    def forward(x, w, b=None):
        return layers.conv2d_forward(x, w, b, stride, padding)

    def backward(dout, cache):
        dx, dw, db = layers.conv2d_backward(dout, cache)
        assert (db is None) == (not use_bias)
        return [dx, dw] + ([db] if use_bias else [])

    assert_gradients_match(forward, backward, inputs)


def test_conv2d_output_and_skipped_input_gradient():
    generator = gradcheck.rng(1)
    x = gradcheck.normal(generator, [2, 7, 5, 3])
    w = gradcheck.normal(generator, [3, 3, 3, 6])
    out, cache = layers.conv2d_forward(x, w, None, 2, "SAME")
    assert out.shape == (2, 4, 3, 6)
    np.testing.assert_allclose(out, tf.nn.conv2d(x, w, 2, "SAME"), rtol=1e-12)
    dx, dw, db = layers.conv2d_backward(tf.ones_like(out), cache, need_input_grad=False)
    assert dx is None and db is None and dw.shape == w.shape


def test_dense_backward():
    generator = gradcheck.rng(2)
    inputs = [gradcheck.normal(generator, [3, 5]), gradcheck.normal(generator, [5, 6]),
              gradcheck.normal(generator, [6])]
    assert_gradients_match(layers.dense_forward,
                           lambda dout, cache: list(layers.dense_backward(dout, cache)), inputs)


def test_dense_without_bias_backward():
    generator = gradcheck.rng(3)
    inputs = [gradcheck.normal(generator, [1, 5]), gradcheck.normal(generator, [5, 3])]
    assert_gradients_match(lambda x, w: layers.dense_forward(x, w),
                           lambda dout, cache: list(layers.dense_backward(dout, cache)[:2]),
                           inputs)


# ----------------------------------------------------------------------------
# Reshaping and pooling


def test_flatten_backward():
    x = gradcheck.normal(gradcheck.rng(4), [2, 3, 5, 3])
    out, _ = layers.flatten_forward(x)
    assert out.shape == (2, 45)
    assert_gradients_match(layers.flatten_forward,
                           lambda dout, cache: [layers.flatten_backward(dout, cache)], [x])


@pytest.mark.parametrize("batch", [1, 2])
def test_global_avg_pool_backward(batch):
    x = gradcheck.normal(gradcheck.rng(5), [batch, 5, 7, 3])
    out, _ = layers.global_avg_pool_forward(x)
    np.testing.assert_allclose(out, np.mean(x.numpy(), axis=(1, 2)), rtol=1e-12)
    assert_gradients_match(layers.global_avg_pool_forward,
                           lambda dout, cache: [layers.global_avg_pool_backward(dout, cache)], [x])


@pytest.mark.parametrize("size,stride,padding", [(2, 2, "VALID"), (3, 2, "SAME"), (2, 2, "SAME"),
                                                 (3, 1, "VALID")])
def test_max_pool_backward(size, stride, padding):
    # Distinct, well-separated values: each window has one clear winner, so the
    # finite-difference step never crosses a kink.
    x = gradcheck.distinct(gradcheck.rng(6), [2, 5, 7, 3])
    out, _ = layers.max_pool_forward(x, size, stride, padding)
    np.testing.assert_array_equal(out, tf.nn.max_pool2d(x, size, stride, padding))
    assert_gradients_match(lambda x: layers.max_pool_forward(x, size, stride, padding),
                           lambda dout, cache: [layers.max_pool_backward(dout, cache)], [x])


@pytest.mark.parametrize("size,stride,padding", [(2, 2, "VALID"), (2, 2, "SAME"), (3, 2, "SAME"),
                                                 (3, 2, "VALID"), (3, 1, "SAME")])
def test_avg_pool_backward(size, stride, padding):
    x = gradcheck.normal(gradcheck.rng(7), [1, 5, 7, 3])
    out, _ = layers.avg_pool_forward(x, size, stride, padding)
    np.testing.assert_allclose(out, tf.nn.avg_pool2d(x, size, stride, padding), rtol=1e-12)
    assert_gradients_match(lambda x: layers.avg_pool_forward(x, size, stride, padding),
                           lambda dout, cache: [layers.avg_pool_backward(dout, cache)], [x])


def test_avg_pool_same_excludes_padding():
    # A constant input stays constant under SAME average pooling only if the
    # padded positions are left out of each window's count.
    x = tf.fill([1, 5, 5, 2], tf.constant(3.0, tf.float64))
    out, _ = layers.avg_pool_forward(x, 3, 2, "SAME")
    np.testing.assert_allclose(out, 3.0, rtol=1e-15)


# ----------------------------------------------------------------------------
# Activations


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "tanh", "sigmoid", "linear"])
def test_activation_backward(name):
    forward, backward = layers.activation_pair(name)
    # Kept 0.2 away from 0, the kink of relu, leaky relu and elu.
    x = gradcheck.away_from_zero(gradcheck.rng(8), [2, 3, 5, 3])
    assert_gradients_match(forward, lambda dout, cache: [backward(dout, cache)], [x])


@pytest.mark.parametrize("name,reference", [
    ("relu", tf.nn.relu), ("elu", tf.nn.elu), ("tanh", tf.tanh), ("sigmoid", tf.sigmoid),
    ("leaky_relu", lambda x: tf.where(x > 0, x, 0.2 * x))])
def test_activation_forward(name, reference):
    x = gradcheck.away_from_zero(gradcheck.rng(9), [4, 6])
    out, _ = layers.activation_pair(name)[0](x)
    np.testing.assert_allclose(out, reference(x), rtol=1e-14)


def test_leaky_relu_slope_is_used():
    x = gradcheck.away_from_zero(gradcheck.rng(10), [3, 5])
    assert_gradients_match(lambda x: layers.leaky_relu_forward(x, alpha=0.05),
                           lambda dout, cache: [layers.leaky_relu_backward(dout, cache)], [x])
    dx = layers.leaky_relu_backward(tf.ones_like(x), (x, 0.05))
    np.testing.assert_allclose(dx, np.where(x.numpy() > 0, 1.0, 0.05))


# ----------------------------------------------------------------------------
# Bad input: a clear error naming the problem, before any work


@pytest.mark.parametrize("call,message", [
    (lambda: layers.conv2d_forward(tf.zeros([5, 7, 3]), tf.zeros([3, 3, 3, 4])),
     "conv2d input must have rank 4"),
    (lambda: layers.conv2d_forward(tf.zeros([1, 5, 7, 3]), tf.zeros([3, 3, 4])),
     "conv2d kernel must have rank 4"),
    (lambda: layers.conv2d_forward(tf.zeros([1, 5, 7, 3]), tf.zeros([3, 3, 2, 4])),
     "input has 3 channels but the kernel expects 2"),
    (lambda: layers.conv2d_forward(tf.zeros([1, 5, 7, 3]), tf.zeros([3, 3, 3, 4]), padding="FULL"),
     "padding must be 'SAME' or 'VALID'"),
    (lambda: layers.dense_forward(tf.zeros([2, 3, 4]), tf.zeros([4, 2])),
     "dense input must have rank 2"),
    (lambda: layers.max_pool_forward(tf.zeros([5, 5, 3])), "max pool input must have rank 4"),
    (lambda: layers.avg_pool_forward(tf.zeros([5, 5])), "average pool input must have rank 4"),
    (lambda: layers.global_avg_pool_forward(tf.zeros([2, 5])),
     "global average pool input must have rank 4"),
    (lambda: layers.activation_pair("swish"), "unknown activation 'swish'"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------
# The checkers themselves can fail


def test_checkers_catch_a_wrong_backward():
    x = gradcheck.away_from_zero(gradcheck.rng(30), [2, 3, 3, 2])

    def wrong_backward(dout, out):  # sigmoid' written as out (1 + out): a plausible slip
        return [dout * out * (1 + out)]

    tape_error, fd_error = gradcheck.check_function(layers.sigmoid_forward, wrong_backward, [x])
    assert tape_error > 0.1 and fd_error > 0.1


def test_zero_reference_gradients_need_zero_hand_gradients():
    noise = np.array([1e-18, -2e-18])
    reference = [np.array([1.0, 2.0]), noise]
    assert gradcheck.gradients_relative_error([np.array([1.0, 2.0]), -noise], reference,
                                              tf.float64, ["kernel", "bias"]) == (0.0, ["bias"])
    with pytest.raises(AssertionError, match="bias: reference gradient is zero to rounding"):
        gradcheck.gradients_relative_error([np.array([1.0, 2.0]), np.array([0.0, 1e-3])],
                                           reference, tf.float64, ["kernel", "bias"])
    assert gradcheck.relative_error([1.0, 2.5], [1.0, 2.0]) == 0.25
