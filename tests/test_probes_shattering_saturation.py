"""The shattering and saturation measurements, each on a case where its value is known,
and the input gradients of the probe against tf.GradientTape."""

import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tfnorm.probes import saturation, shattering


def _dense_net(scheme, depth, width=16, seed=0, bias_std=1.0, residual_beta=None):
    network = tfnorm.mlp_network(scheme, in_dim=1, out_dim=1, width=width, depth=depth,
                                 residual_beta=residual_beta, seed=seed, dtype=tf.float64)
    for index, block in enumerate(network.blocks):
        block.layer.bias.assign(bias_std * tf.random.stateless_normal(
            block.layer.bias.shape, [seed, index], dtype=tf.float64))
    return network


# ----------------------------------------------------------------------------
# Shattering


def test_one_layer_relu_net_has_neighbour_correlation_near_one():
    # One hidden ReLU layer: df/dx = sum_i v_i w_i [w_i x + b_i > 0] changes only where
    # one of its 200 units switches, so neighbours on a 256-point line mostly agree.
    network = _dense_net("none", depth=1, width=200)
    _, gradients, _ = shattering.input_gradients(network, shattering.line_inputs(256))
    correlation = shattering.neighbour_correlation(gradients.numpy().reshape(-1))
    assert 0.9 < correlation <= 1.0


def test_one_layer_gradient_is_the_closed_form():
    network = _dense_net("none", depth=1, width=7)
    x = shattering.line_inputs(64)
    _, gradients, _ = shattering.input_gradients(network, x)
    w = network.blocks[0].layer.kernel.numpy()[0]
    b = network.blocks[0].layer.bias.numpy()
    v = network.blocks[1].layer.kernel.numpy()[:, 0]
    active = (x.numpy() * w + b) > 0
    np.testing.assert_allclose(gradients.numpy()[:, 0], active @ (v * w), rtol=1e-12)


def test_deep_batch_norm_net_shatters():
    shallow = shattering.input_gradients(_dense_net("batch", 2, width=64),
                                         shattering.line_inputs(256))[1]
    deep = shattering.input_gradients(_dense_net("batch", 24, width=64),
                                      shattering.line_inputs(256))[1]
    assert (shattering.neighbour_correlation(deep.numpy().ravel())
            < shattering.neighbour_correlation(shallow.numpy().ravel()) - 0.3)


@pytest.mark.parametrize("scheme,beta", [("none", None), ("batch", None), ("batch", 0.5)])
def test_line_statistics_gradient_is_the_per_point_derivative(scheme, beta):
    network = _dense_net(scheme, depth=3, width=8, residual_beta=beta)
    x = shattering.line_inputs(20)
    outputs, gradients, _ = shattering.input_gradients(network, x, "line_statistics")
    with tf.GradientTape() as tape:
        tape.watch(x)
        # Evaluation mode with the frozen statistics: each output depends on its own input.
        frozen, _, _ = network.forward(x, training=False)
    np.testing.assert_allclose(gradients.numpy(), tape.gradient(frozen, x).numpy(), rtol=1e-10,
                               atol=1e-12)
    trained, _, _ = network.forward(x, training=True)
    np.testing.assert_allclose(outputs.numpy(), trained.numpy()[:, 0], rtol=1e-10, atol=1e-12)


def test_train_mode_gradient_is_that_of_the_summed_outputs():
    network = _dense_net("batch", depth=2, width=8)
    x = shattering.line_inputs(10)
    _, gradients, _ = shattering.input_gradients(network, x, "train")
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(network.forward(x, training=True)[0])
    np.testing.assert_allclose(gradients.numpy(), tape.gradient(total, x).numpy(), rtol=1e-10,
                               atol=1e-12)


def test_conv_line_gradient_matches_tape():
    network = tfnorm.article_network("batch", num_classes=1, depth=3, width=4, strides=[2, 1, 1],
                                     placement="before", final_activation="linear",
                                     dtype=tf.float64, init_std=0.3)
    rng = np.random.default_rng(0)
    image_a, image_b = rng.normal(size=(8, 8, 3)), rng.normal(size=(8, 8, 3))
    images, t, direction = shattering.image_line(image_a, image_b, num_points=5)
    np.testing.assert_allclose(t, [-2, -1, 0, 1, 2])
    np.testing.assert_allclose(images[1], image_a, atol=1e-12)  # x(-1) = a
    np.testing.assert_allclose(images[3], image_b, atol=1e-12)  # x(1) = b
    _, gradients, _ = shattering.input_gradients(network, images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        frozen = network.forward(images, training=False)[0]
    np.testing.assert_allclose(gradients.numpy(), tape.gradient(frozen, images).numpy(),
                               rtol=1e-9, atol=1e-12)


def test_autocorrelation_known_sequences():
    alternating = np.array([1.0, -1.0] * 50)
    acf = shattering.autocorrelation(alternating, 2)
    np.testing.assert_allclose(acf, [1.0, -99 / 100, 98 / 100])
    assert shattering.neighbour_correlation(np.arange(1000.0)) > 0.99
    white = np.random.default_rng(1).normal(size=20000)
    assert abs(shattering.neighbour_correlation(white)) < 0.03
    assert np.all(np.isnan(shattering.autocorrelation(np.ones(10), 3)))
    with pytest.raises(ValueError, match="max_lag"):
        shattering.autocorrelation(np.ones(4), 4)


def test_coactivation_of_independent_symmetric_preactivations_is_one_quarter():
    pre_activations = np.random.default_rng(2).standard_normal((600, 400))
    active = pre_activations > 0
    assert shattering.coactivation_rate(active, "inputs") == pytest.approx(0.25, abs=0.005)
    assert shattering.coactivation_rate(active, "units") == pytest.approx(0.25, abs=0.005)


def test_coactivation_exact_small_cases():
    assert shattering.coactivation_rate(np.ones((5, 3), bool)) == 1.0
    # Unit 0 on for every input, unit 1 never: pairs of inputs share one unit of two.
    assert shattering.coactivation_rate(np.array([[1, 0]] * 4, bool)) == 0.5
    # Unit on for 2 of 3 inputs: 1 of the 3 pairs of inputs has it on for both.
    assert shattering.coactivation_rate(np.array([[1], [1], [0]], bool)) == pytest.approx(1 / 3)
    # Two units on for disjoint inputs are never co-active as a pair of units.
    assert shattering.coactivation_rate(np.array([[1, 0], [0, 1]], bool), "units") == 0.0
    with pytest.raises(ValueError, match="over"):
        shattering.coactivation_rate(np.ones((3, 3), bool), "pairs")


def test_coactivation_of_neighbours_exact_cases():
    # Unit 0 on for the first 3 of 5 inputs: 2 of the 4 neighbour pairs have it on twice;
    # unit 1 alternates: never on at two neighbours.
    active = np.array([[1, 1], [1, 0], [1, 1], [0, 0], [0, 1]], bool)
    assert shattering.coactivation_rate(active, "neighbours") == pytest.approx(2 / 8)
    assert shattering.coactivation_rate(np.ones((4, 3), bool), "neighbours") == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        shattering.coactivation_rate(np.ones((1, 3), bool), "neighbours")


def test_zero_bias_one_layer_units_switch_once_on_the_line():
    # Without biases every first-layer unit switches at x = 0 only: on a symmetric line of
    # 24 points each unit is on for 12 consecutive points, so for 11 of the 23 neighbour
    # pairs, and on at n + 1 given on at n with probability 22/23.
    network = _dense_net("none", depth=1, width=10, bias_std=0.0)
    _, _, records = shattering.input_gradients(network, shattering.line_inputs(24))
    active = shattering.activity(records[:-1])[0]
    assert shattering.coactivation_rate(active, "neighbours") == pytest.approx(11 / 23)
    assert shattering.coactivation_rate(active, "neighbours") / active.mean() == \
        pytest.approx(22 / 23)


def test_ensemble_autocorrelation_hand_computed():
    g = np.array([[1.0, 2.0, 3.0], [1.0, -1.0, 1.0]])
    # lag 1: pairs (0, 1) and (1, 2) across the two networks, uncentred.
    lag1 = np.mean([(1 * 2 + 1 * -1) / np.sqrt((1 + 1) * (4 + 1)),
                    (2 * 3 + -1 * 1) / np.sqrt((4 + 1) * (9 + 1))])
    lag2 = (1 * 3 + 1 * 1) / np.sqrt((1 + 1) * (9 + 1))
    np.testing.assert_allclose(shattering.ensemble_autocorrelation(g, 2), [1.0, lag1, lag2])
    # Networks whose gradient is one value along the line: every pair correlates fully,
    # whatever the per-network autocorrelation (NaN for a constant sequence) says.
    constant = np.outer(np.random.default_rng(0).normal(size=8), np.ones(10))
    np.testing.assert_allclose(shattering.ensemble_autocorrelation(constant, 3), 1.0)
    # Independent draws at every point: about 0 beyond lag 0.
    white = np.random.default_rng(1).normal(size=(4000, 6))
    assert np.all(np.abs(shattering.ensemble_autocorrelation(white, 5)[1:]) < 0.05)
    with pytest.raises(ValueError, match="networks >= 2"):
        shattering.ensemble_autocorrelation(np.ones((1, 5)), 1)
    with pytest.raises(ValueError, match="max_lag"):
        shattering.ensemble_autocorrelation(np.ones((2, 5)), 5)


def test_batch_norm_line_keeps_coactivation_near_one_quarter():
    network = _dense_net("batch", depth=6, width=128)
    _, _, records = shattering.input_gradients(network, shattering.line_inputs(256))
    rates = [shattering.coactivation_rate(a) for a in shattering.activity(records[:-1])]
    assert np.all(np.abs(np.array(rates[1:]) - 0.25) < 0.05)


def test_line_inputs_refuses_bad_lines():
    with pytest.raises(ValueError, match="at least 2"):
        shattering.line_inputs(1)
    with pytest.raises(ValueError, match="low < high"):
        shattering.line_inputs(10, 1.0, -1.0)


# ----------------------------------------------------------------------------
# Saturation


def test_saturated_fraction_on_hand_made_activations():
    activations = np.tanh([0.0, 0.5, 3.0, -3.0, 10.0])  # |tanh(3)| = 0.9951
    assert saturation.saturated_fraction(activations) == pytest.approx(0.6)
    assert saturation.saturated_fraction(activations, threshold=0.999) == pytest.approx(0.2)
    assert saturation.saturated_fraction(np.zeros(7)) == 0.0


def test_near_zero_fraction_is_relative_to_the_tensor_scale():
    gradient = np.array([1.0, -1.0, 1.0, 1e-5])
    assert saturation.near_zero_fraction(gradient) == pytest.approx(0.25)
    assert saturation.near_zero_fraction(gradient * 1e-20) == pytest.approx(0.25)
    assert saturation.near_zero_fraction(np.zeros(3)) == 1.0
    assert saturation.near_zero_fraction(gradient, relative=2.0) == 1.0


@pytest.mark.parametrize("scheme", ["none", "batch", "layer"])
def test_probe_tensors_are_the_networks(scheme):
    network = tfnorm.article_network(scheme, depth=3, width=4, activation="tanh",
                                     placement="before", final_activation="linear",
                                     dtype=tf.float64, init_std=0.5)
    rng = np.random.default_rng(3)
    images = tf.constant(rng.uniform(size=(6, 32, 32, 3)))
    labels = tf.constant(rng.integers(0, 10, size=6), tf.int32)
    loss, per_layer = saturation.probe(network, images, labels, training=True)
    np.testing.assert_allclose(loss.numpy(), network.loss(images, labels).numpy())
    for block, layer in zip(network.blocks[:-1], per_layer[:-1]):
        np.testing.assert_allclose(layer.activation.numpy(),
                                   np.tanh(layer.activation_input.numpy()), rtol=1e-12)
    # The gradient at the activation's input, taken back through the normalization and
    # the convolution, must give the layer's weight gradient and passed gradient.
    _, grads = network.gradients(images, labels)
    block_caches = network.forward(images)[1][0]
    for index, (block, layer, cache) in enumerate(zip(network.blocks, per_layer, block_caches)):
        dpre, _ = block.normalization.backward(layer.activation_input_gradient, cache[2])
        dx, dkernel, _ = tfnorm.layers.conv2d_backward(dpre, cache[0][0])
        np.testing.assert_allclose(dkernel.numpy(), grads[network.weight_indices[index]].numpy(),
                                   rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(dx.numpy(), layer.passed_gradient.numpy(), rtol=1e-9,
                                   atol=1e-14)


def test_layer_statistics_columns():
    layer = saturation.LayerSaturation(
        activation_input=np.array([0.0, 5.0]), activation=np.tanh([0.0, 5.0]),
        activation_input_gradient=np.array([1.0, 0.0]), passed_gradient=np.array([2.0, 2.0]))
    stats = saturation.layer_statistics(layer)
    assert stats["saturated_frac"] == 0.5
    assert stats["near_zero_input_grad_frac"] == 0.5
    assert stats["near_zero_passed_grad_frac"] == 0.0
    assert stats["mean_tanh_derivative"] == pytest.approx((1 + 1 - np.tanh(5.0) ** 2) / 2)
    assert stats["activation_input_abs_max"] == 5.0


# ----------------------------------------------------------------------------
# The residual nets whose branch ends in a linear map (tfnorm.preactivation)


@pytest.mark.parametrize("kind, scheme", [("dense", "none"), ("dense", "batch"),
                                          ("conv", "batch")])
def test_preactivation_resnet_backward_equals_autodiff(kind, scheme):
    """y = x + beta W ReLU(norm(x)): the hand-written input and weight gradients of a
    weighted sum of outputs (training-mode BN couples the batch) against tf.GradientTape."""
    from tfnorm import preactivation
    network = preactivation.preactivation_resnet(
        scheme, kind=kind, in_channels=1 if kind == "dense" else 3, width=8, depth=3,
        residual_beta=0.5, dtype=tf.float64, first_stride=2 if kind == "conv" else 1)
    shape = [6, 1] if kind == "dense" else [6, 8, 8, 3]
    x = tf.random.stateless_normal(shape, [1, 2], dtype=tf.float64)
    weights = tf.range(1, 7, dtype=tf.float64)[:, None]
    out, caches, records = network.forward(x, training=True)
    dx, grads, _ = network.backward(weights * tf.ones_like(out), caches, need_input_grad=True)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(network.forward(x, training=True)[0] * weights)
    expected = tape.gradient(loss, [x] + network.trainable_variables)
    for mine, theirs in zip([dx] + grads, expected):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-9, atol=1e-12)
    # The branch's last operation is the weight layer: the residual stream can decrease.
    assert records[1]["output"].shape == records[0]["output"].shape
    assert isinstance(network.blocks[1], preactivation.PreActivationBlock)
