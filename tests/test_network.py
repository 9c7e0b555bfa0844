"""tfnorm.network: ``Network.gradients`` (the hand-written backward alone) against
tf.GradientTape on ``Network.loss``, for the whole article network under every scheme
(float64 relative <= 1e-8, float32 <= 1e-4; relative error as in tests/gradcheck.py,
worst over the variables), eagerly and inside tf.function, 32x32 and 33x35 inputs,
affine on/off, placement after/before, residual blocks; also ``mlp_network``, the
per-layer records, data-dependent init, noisy-BN seeding and bad input.

``PYTHONPATH=. python tests/test_network.py`` prints the largest error per scheme over a grid of
variants (the table the README quotes)."""

import numpy as np
import pytest
import tensorflow as tf

import gradcheck
import tfnorm
from tfnorm import losses

TOLERANCE = {tf.float64: 1e-8, tf.float32: 1e-4}
BATCH = 3


def make_batch(height, width, dtype, seed=0, channels=3, classes=10, batch=BATCH):
    generator = gradcheck.rng(seed)
    images = tf.constant(generator.random([batch, height, width, channels]), dtype)
    labels = tf.constant(generator.integers(0, classes, batch), tf.int32)
    return images, labels


def build(scheme, dtype, images, **options):
    network = tfnorm.article_network(scheme, dtype=dtype, seed=1, **options)
    if scheme in ("weight", "meanonly"):
        network.initialize_from_batch(images)
    return network


# The variables whose exact gradient is 0, so that the relative comparison is replaced
# by "zero to rounding on both sides" (gradcheck.gradients_relative_error), per
# (network, scheme, placement), in float64 and float32 alike: the bias of a layer whose
# output goes straight into a batch-mean subtraction (normalization before the
# activation). The article network's convs have a bias only under weight norm
# (weight, meanonly); the MLP's dense layers always have one. Everything else: none.
SKIPPED = {
    ("article", "meanonly", "before"): [f"conv{i}/bias" for i in range(1, 6)],
    ("mlp", "batch", "before"): [f"dense{i}/bias" for i in range(1, 4)],
    ("mlp", "meanonly", "before"): [f"dense{i}/bias" for i in range(1, 4)],
}


def skipped_for(kind, scheme, placement="after"):
    return SKIPPED.get((kind, scheme, placement), [])


def gradient_error(network, images, labels, compiled=False, expected_skipped=()):
    """Relative error of Network.gradients against GradientTape on Network.loss,
    worst over the trainable variables (those whose exact gradient is 0, a bias before
    batch-mean subtraction, must be zero to rounding instead: see gradcheck); also
    checks the two losses agree, and that the variables skipped from the relative
    comparison are exactly ``expected_skipped`` (names without ':0', in order)."""

    def both():
        loss, grads = network.gradients(images, labels)
        with tf.GradientTape() as tape:
            tape_loss = network.loss(images, labels)
        return loss, grads, tape_loss, tape.gradient(tape_loss, network.trainable_variables)

    if compiled:
        both = tf.function(both)
    loss, grads, tape_loss, tape_grads = both()
    assert len(grads) == len(network.trainable_variables)
    for grad, var in zip(grads, network.trainable_variables):
        assert grad.shape == var.shape and grad.dtype == var.dtype, var.name
    np.testing.assert_allclose(loss, tape_loss, rtol=1e-12 if loss.dtype == tf.float64 else 1e-6)
    error, skipped = gradcheck.gradients_relative_error(
        grads, tape_grads, grads[0].dtype, [v.name for v in network.trainable_variables])
    skipped = [name.split(":")[0] for name in skipped]
    if skipped != list(expected_skipped):
        raise AssertionError(f"skipped as zero to rounding: {skipped}, expected "
                             f"{list(expected_skipped)}")
    return error


# ----------------------------------------------------------------------------
# The article network, every scheme


@pytest.mark.parametrize("dtype", [tf.float64, tf.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("scheme", tfnorm.SCHEMES)
def test_article_network_gradients_eager(scheme, affine, dtype):
    images, labels = make_batch(32, 32, dtype)
    network = build(scheme, dtype, images, affine=affine)
    assert gradient_error(network, images, labels) <= TOLERANCE[dtype]


@pytest.mark.parametrize("scheme", tfnorm.SCHEMES)
def test_article_network_gradients_before_activation_odd_size(scheme):
    images, labels = make_batch(33, 35, tf.float64, seed=2)
    network = build(scheme, tf.float64, images, affine=True, placement="before")
    assert gradient_error(network, images, labels, expected_skipped=skipped_for(
        "article", scheme, "before")) <= TOLERANCE[tf.float64]


@pytest.mark.parametrize("scheme", tfnorm.SCHEMES)
def test_article_network_gradients_in_tf_function(scheme):
    # Alternate the placement so both orders are also checked compiled.
    placement = "before" if tfnorm.SCHEMES.index(scheme) % 2 else "after"
    images, labels = make_batch(33, 35, tf.float64, seed=3)
    network = build(scheme, tf.float64, images, affine=True, placement=placement)
    assert gradient_error(network, images, labels, compiled=True, expected_skipped=skipped_for(
        "article", scheme, placement)) <= TOLERANCE[tf.float64]


@pytest.mark.parametrize("scheme", ["batch", "boxcox"])
def test_article_network_gradients_in_tf_function_float32(scheme):
    images, labels = make_batch(32, 32, tf.float32, seed=4)
    network = build(scheme, tf.float32, images)
    assert gradient_error(network, images, labels, compiled=True) <= TOLERANCE[tf.float32]


@pytest.mark.parametrize("scheme,dtype", [("none", tf.float64), ("batch", tf.float64),
                                          ("boxcox", tf.float64), ("layer", tf.float32)])
def test_residual_article_network_gradients(scheme, dtype):
    # depth 8: the blocks after the four stride-2 ones are residual, y = x + 0.5 F(x).
    images, labels = make_batch(33, 35, dtype, seed=5)
    network = build(scheme, dtype, images, depth=8, residual=True, residual_beta=0.5)
    residual_blocks = [b for b in network.blocks if b.residual_beta is not None]
    assert len(residual_blocks) == 3
    assert gradient_error(network, images, labels) <= TOLERANCE[dtype]


@pytest.mark.parametrize("activation", ["tanh", "elu", "leaky_relu"])
def test_other_activations_and_group_count(activation):
    images, labels = make_batch(32, 32, tf.float64, seed=6)
    network = build("group", tf.float64, images, activation=activation, groups=8, width=24)
    assert gradient_error(network, images, labels) <= TOLERANCE[tf.float64]


def test_variables_do_not_depend_on_input_size():
    network = tfnorm.article_network("batch", dtype=tf.float64)
    shapes = [v.shape for v in network.trainable_variables]
    for height, width in ((32, 32), (33, 35), (96, 96)):
        loss, grads = network.gradients(*make_batch(height, width, tf.float64, batch=2))
        assert [g.shape for g in grads] == shapes and np.isfinite(loss.numpy())


# The article's kernels, 3x3 over channels 3-16-16-16-16-16-10, and what each scheme adds.
ARTICLE_KERNELS = [9 * 3 * 16] + [9 * 16 * 16] * 4 + [9 * 16 * 10]
OUT_CHANNELS = [16] * 5 + [10]


@pytest.mark.parametrize("scheme", tfnorm.SCHEMES)
def test_parameter_counts_are_the_articles_kernels_plus_what_the_scheme_learns(scheme):
    """Counted by hand: Box-Cox learns one lambda after each of layers 1-5; weight norm (and
    mean-only BN, which runs on it) a g and a bias per output channel of every layer; with
    affine=True the normalizations after layers 1-5 a gamma and a beta per channel.
    (Checked failing when only the layers' variables were counted.)"""
    extra = {"boxcox": [1] * 5 + [0],
             "weight": [2 * c for c in OUT_CHANNELS],
             "meanonly": [2 * c for c in OUT_CHANNELS]}.get(scheme, [0] * 6)
    counts = tfnorm.article_network(scheme).parameter_counts()
    assert counts == [k + e for k, e in zip(ARTICLE_KERNELS, extra)]
    if scheme in ("batch", "layer", "instance", "group"):
        affine = tfnorm.article_network(scheme, affine=True).parameter_counts()
        assert affine == [k + 2 * 16 for k in ARTICLE_KERNELS[:5]] + [ARTICLE_KERNELS[5]]


def test_a_variable_skipped_unexpectedly_fails_the_check():
    # meanonly before the activation skips its five conv biases: expecting none fails...
    images, labels = make_batch(33, 35, tf.float64, seed=2)
    network = build("meanonly", tf.float64, images, placement="before")
    with pytest.raises(AssertionError, match="skipped as zero to rounding: .'conv1/bias'"):
        gradient_error(network, images, labels)
    # ... and one more zero-gradient variable than the table names fails too.
    grads = [np.ones(3), np.zeros(2), np.zeros(2)]
    error, skipped = gradcheck.gradients_relative_error(
        grads, [g.copy() for g in grads], tf.float64, ["kernel", "bias", "extra"])
    assert skipped == ["bias", "extra"] and error == 0.0


# ----------------------------------------------------------------------------
# mlp_network


@pytest.mark.parametrize("scheme,placement,residual_beta", [
    ("none", "before", None), ("batch", "before", 0.5), ("layer", "before", None),
    ("boxcox", "after", None), ("weight", "before", None), ("meanonly", "before", 0.5),
    ("noisybatch", "after", None)])
def test_mlp_network_gradients(scheme, placement, residual_beta):
    generator = gradcheck.rng(7)
    inputs = tf.constant(generator.standard_normal([5, 3]), tf.float64)
    labels = tf.constant(generator.integers(0, 4, 5), tf.int32)
    network = tfnorm.mlp_network(scheme, in_dim=3, out_dim=4, width=7, depth=3,
                                 activation="tanh", placement=placement,
                                 residual_beta=residual_beta, dtype=tf.float64)
    if scheme in ("weight", "meanonly"):
        network.initialize_from_batch(inputs)
    assert gradient_error(network, inputs, labels, expected_skipped=skipped_for(
        "mlp", scheme, placement)) <= TOLERANCE[tf.float64]


# ----------------------------------------------------------------------------
# What the plots get: per-layer weight gradients, passed gradients, activations


@pytest.mark.parametrize("scheme,options", [("batch", {}), ("boxcox", {}),
                                            ("none", {"depth": 7, "residual": True})])
def test_passed_gradients_match_tape(scheme, options):
    images, labels = make_batch(33, 35, tf.float64, seed=8)
    network = build(scheme, tf.float64, images, **options)
    result = network.backprop(images, labels, first_passed_gradient=True)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits, _, records = network.forward(images, training=True)
        loss, _ = losses.softmax_cross_entropy_forward(logits, labels)
    block_inputs = [images] + [r["output"] for r in records[:-1]]
    reference = tape.gradient(loss, block_inputs)
    passed = [layer.passed_gradient for layer in result.layers]
    assert gradcheck.max_relative_error(passed, reference) <= TOLERANCE[tf.float64]
    for layer, index, weights in zip(result.layers, network.weight_indices,
                                     network.layer_weights):
        assert layer.weight_gradient is result.grads[index]
        assert layer.weights is weights
    np.testing.assert_allclose(result.layers[-1].output, records[-1]["output"], rtol=1e-14)
    # Without asking, the first block's passed gradient is not computed.
    assert network.backprop(images, labels).layers[0].passed_gradient is None


# ----------------------------------------------------------------------------
# Data-dependent initialization (weight normalization, mean-only BN)


@pytest.mark.parametrize("scheme", ["weight", "meanonly"])
def test_initialize_from_batch_standardizes_layer_outputs(scheme):
    images, _ = make_batch(32, 32, tf.float64, seed=9, batch=4)
    network = tfnorm.article_network(scheme, dtype=tf.float64)

    def pre_activation_moments():
        _, _, records = network.forward(images, training=True)
        per_block = []
        for record in records:
            pre = record["pre_activation"].numpy()
            per_block.append((pre.mean(axis=(0, 1, 2)), pre.std(axis=(0, 1, 2))))
        return per_block

    # N(0, 0.05) weights: before the init no layer's output has unit spread.
    assert all(np.all(std < 0.5) for _, std in pre_activation_moments())
    network.initialize_from_batch(images)
    for mean, std in pre_activation_moments():
        np.testing.assert_allclose(mean, 0.0, atol=1e-10)
        np.testing.assert_allclose(std, 1.0, rtol=1e-8)


def test_initialize_from_batch_is_a_no_op_without_weight_norm():
    images, _ = make_batch(32, 32, tf.float64, batch=2)
    network = tfnorm.article_network("batch", dtype=tf.float64)
    before = [v.numpy() for v in network.trainable_variables]
    network.initialize_from_batch(images)
    for old, var in zip(before, network.trainable_variables):
        np.testing.assert_array_equal(old, var.numpy())


# ----------------------------------------------------------------------------
# Noisy batch norm inside the network


def test_noisy_network_loss_and_gradients_share_the_step_noise():
    images, labels = make_batch(32, 32, tf.float64, seed=10)
    network = tfnorm.article_network("noisybatch", dtype=tf.float64, seed=2)
    twin = tfnorm.article_network("noisybatch", dtype=tf.float64, seed=2)
    loss = network.loss(images, labels)
    result = network.backprop(images, labels)
    # Same step, same noise: the loss, the hand backward's loss, and a twin built with
    # the same seed all agree exactly; asking again does not move the noise on.
    assert float(result.loss) == float(loss) == float(twin.loss(images, labels))
    assert float(network.loss(images, labels)) == float(loss)
    network.update_statistics(result.caches)
    steps = [int(v.numpy()) for v in network.statistics if "noise_step" in v.name]
    assert steps == [1] * 5
    assert float(network.loss(images, labels)) != float(loss)  # the next step's noise
    other_seed = tfnorm.article_network("noisybatch", dtype=tf.float64, seed=3)
    for mine, theirs in zip(other_seed.trainable_variables, twin.trainable_variables):
        mine.assign(theirs)
    assert float(other_seed.loss(images, labels)) != float(twin.loss(images, labels))


def test_noisy_network_noise_only_in_training():
    images, labels = make_batch(32, 32, tf.float64, seed=11)
    noisy = tfnorm.article_network("noisybatch", dtype=tf.float64, seed=2)
    plain = tfnorm.article_network("batch", dtype=tf.float64, seed=2)
    np.testing.assert_allclose(noisy.loss(images, labels, training=False),
                               plain.loss(images, labels, training=False), rtol=1e-14)
    assert float(noisy.loss(images, labels)) != float(plain.loss(images, labels))


# ----------------------------------------------------------------------------
# Bad input: a clear error naming the problem, before any work


@pytest.mark.parametrize("call,message", [
    (lambda: tfnorm.article_network("batchnorm"), "unknown scheme 'batchnorm'"),
    (lambda: tfnorm.mlp_network("groupnorm"), "unknown scheme 'groupnorm'"),
    (lambda: tfnorm.article_network("none", activation="swish"), "unknown activation 'swish'"),
    (lambda: tfnorm.article_network("group", groups=5),
     "the group count 5 does not divide the 16 channels"),
    (lambda: tfnorm.article_network("batch", placement="middle"),
     "placement must be 'after' or 'before'"),
    (lambda: tfnorm.article_network("batch", depth=3, strides=[2, 2]),
     "strides has 2 entries for a depth of 3"),
])
def test_bad_configuration_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_network_input_is_named():
    network = tfnorm.article_network("batch", dtype=tf.float64)
    images, labels = make_batch(32, 32, tf.float64)
    with pytest.raises(ValueError, match="network input must have rank 4"):
        network.gradients(images[0], labels)
    with pytest.raises(ValueError, match="network input must have 3 channels"):
        network.gradients(tf.concat([images, images], axis=-1), labels)
    with pytest.raises(ValueError, match="batch normalization in training needs a batch of "
                                         "at least 2 examples, got a batch of 1"):
        network.gradients(images[:1], labels[:1])
    with pytest.raises(ValueError, match="labels must have rank 1"):
        network.gradients(images, labels[:, None])
    with pytest.raises(ValueError, match="instance normalization input must have rank 4"):
        tfnorm.mlp_network("instance", dtype=tf.float64).loss(
            tf.zeros([2, 1], tf.float64), tf.zeros([2], tf.int32))


# ----------------------------------------------------------------------------
# The closing note's table: ``PYTHONPATH=. python tests/test_network.py``


def largest_errors(scheme, dtype):
    """Worst relative error over: affine off/on x placement after/before x 32x32 and
    33x35, eager; the residual variant; and two variants inside tf.function."""
    worst = 0.0
    variants = [dict(affine=a, placement=p, size=s, compiled=False)
                for a in (False, True) for p in ("after", "before")
                for s in ((32, 32), (33, 35))]
    variants += [dict(affine=True, placement="after", size=(33, 35), compiled=False,
                      depth=8, residual=True),
                 dict(affine=True, placement="after", size=(33, 35), compiled=True),
                 dict(affine=False, placement="before", size=(32, 32), compiled=True)]
    for index, variant in enumerate(variants):
        variant = dict(variant)
        size, compiled = variant.pop("size"), variant.pop("compiled")
        images, labels = make_batch(*size, dtype, seed=100 + index)
        network = build(scheme, dtype, images, **variant)
        worst = max(worst, gradient_error(network, images, labels, compiled, skipped_for(
            "article", scheme, variant["placement"])))
    return worst


if __name__ == "__main__":
    print(f"{'scheme':<12}{'float64':>12}{'float32':>12}")
    for name in tfnorm.SCHEMES:
        errors = [largest_errors(name, dtype) for dtype in (tf.float64, tf.float32)]
        print(f"{name:<12}{errors[0]:>12.2e}{errors[1]:>12.2e}", flush=True)
