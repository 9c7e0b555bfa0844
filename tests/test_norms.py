"""tfnorm.norms: every scheme's hand backward (input and parameters) against
tf.GradientTape (relative <= 1e-9) and finite differences (<= 1e-6) in float64;
forwards against Keras and scipy; Box-Cox at and near lambda 0; noisy BN seeding;
bad input named before any work. Relative error as defined in tests/gradcheck.py."""

import keras
import numpy as np
import pytest
import scipy.special
import tensorflow as tf

import gradcheck
from tfnorm import norms

TAPE_TOLERANCE = 1e-9
FD_TOLERANCE = 1e-6
SHAPE = [2, 3, 5, 6]  # odd H and W, 6 channels (3 groups of 2)


def randomize_parameters(norm, generator):
    """Non-trivial gamma/beta (and running statistics), so every term of the backward
    shows in the check."""
    for var in norm.trainable_variables:
        if "gamma" in var.name:
            var.assign(1.0 + 0.5 * generator.standard_normal(var.shape))
        elif "beta" in var.name:
            var.assign(generator.standard_normal(var.shape))
    for var in norm.statistics:
        if "running_mean" in var.name:
            var.assign(generator.standard_normal(var.shape))
        elif "running_variance" in var.name:
            var.assign(0.5 + generator.random(var.shape))


def assert_module_gradients(norm, x, training, seed=0):
    variables = norm.trainable_variables
    tape_error, fd_error = gradcheck.check_module(
        lambda x: norm.forward(x, training), norm.backward, x, variables, seed)
    assert tape_error <= TAPE_TOLERANCE, f"hand vs GradientTape: relative error {tape_error:.3g}"
    assert fd_error <= FD_TOLERANCE, f"hand vs finite differences: relative error {fd_error:.3g}"
    return tape_error, fd_error


# scheme, make_normalization options, batch, training, rank
MODULE_CASES = [
    ("none", {}, 1, True, 4),
    ("batch", {}, 2, True, 4),
    ("batch", {"affine": True}, 2, True, 4),
    ("batch", {"affine": True}, 3, True, 2),
    ("batch", {}, 1, False, 4),
    ("batch", {"affine": True}, 1, False, 4),
    ("layer", {}, 1, True, 4),
    ("layer", {"affine": True}, 2, True, 4),
    ("layer", {"affine": True}, 1, True, 2),
    ("instance", {}, 1, True, 4),
    ("instance", {"affine": True}, 2, True, 4),
    ("group", {"groups": 3}, 1, True, 4),
    ("group", {"groups": 3, "affine": True}, 2, True, 4),
    ("group", {"groups": 2, "affine": True}, 1, True, 4),
    ("meanonly", {}, 2, True, 4),
    ("meanonly", {"affine": True}, 2, True, 4),
    ("meanonly", {"affine": True}, 3, True, 2),
    ("meanonly", {"affine": True}, 1, False, 4),
    ("noisybatch", {"seed": 3}, 2, True, 4),
    ("noisybatch", {"seed": 3, "affine": True}, 2, True, 4),
    ("noisybatch", {"affine": True}, 1, False, 4),
    ("weight", {}, 1, True, 4),  # the identity here: the reparameterization is on the weights
]


@pytest.mark.parametrize("scheme,options,batch,training,rank", MODULE_CASES)
def test_normalization_backward(scheme, options, batch, training, rank):
    generator = gradcheck.rng(sum(map(ord, scheme)) + 10 * batch + rank)
    shape = [batch] + SHAPE[1:] if rank == 4 else [batch, SHAPE[-1]]
    norm = norms.make_normalization(scheme, SHAPE[-1], tf.float64, **options)
    randomize_parameters(norm, generator)
    assert_module_gradients(norm, gradcheck.normal(generator, shape), training)


@pytest.mark.parametrize("training", [True, False])
def test_noise_backward(training):
    generator = gradcheck.rng(12)
    noise = norms.DistributionNoise(SHAPE[-1], tf.float64, seed=5)
    assert_module_gradients(noise, gradcheck.normal(generator, SHAPE), training)


@pytest.mark.parametrize("lam", [2.0, 0.5, -0.7, 1e-3, 1e-7, 0.0])
def test_boxcox_backward(lam):
    # lam 1e-3 puts some |lam ln u| below the series limit and some above it.
    generator = gradcheck.rng(13)
    norm = norms.BoxCox(SHAPE[-1], tf.float64, init_lambda=lam)
    x = tf.constant(generator.uniform(-0.7, 2.0, [1, 3, 5, 6]), tf.float64)
    assert_module_gradients(norm, x, training=True)


def test_weight_norm_backward():
    generator = gradcheck.rng(14)
    for v_shape, axes in (([3, 3, 3, 5], [0, 1, 2]), ([4, 5], [0])):
        v = gradcheck.normal(generator, v_shape, scale=0.05)
        g = gradcheck.normal(generator, [5])
        tape_error, fd_error = gradcheck.check_function(
            lambda v, g: norms.weight_norm_forward(v, g, axes),
            lambda dw, cache: list(norms.weight_norm_backward(dw, cache)), [v, g])
        assert tape_error <= TAPE_TOLERANCE and fd_error <= FD_TOLERANCE, (tape_error, fd_error)
        w, _ = norms.weight_norm_forward(v, g, axes)
        np.testing.assert_allclose(np.sqrt(np.sum(w.numpy() ** 2, axis=tuple(axes))),
                                   np.abs(g.numpy()), rtol=1e-12)


@pytest.mark.parametrize("axes", [[0, 1, 2], [1, 2, 3], [1, 2]])
def test_standardize_pure_functions(axes):
    generator = gradcheck.rng(15)
    tape_error, fd_error = gradcheck.check_function(
        lambda x: norms.standardize_forward(x, axes, 1e-5),
        lambda dxhat, cache: [norms.standardize_backward(dxhat, cache)],
        [gradcheck.normal(generator, SHAPE)])
    assert tape_error <= TAPE_TOLERANCE and fd_error <= FD_TOLERANCE, (tape_error, fd_error)


# ----------------------------------------------------------------------------
# Forwards against Keras (same epsilon) and scipy


EPSILON = 1e-3  # large against the inputs' variance (~1e-4), so a wrong epsilon shows


def small_input(seed, shape=SHAPE):
    generator = gradcheck.rng(seed)
    return tf.constant(0.3 + 0.01 * generator.standard_normal(shape), tf.float64)


@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_matches_keras_with_running_statistics(affine):
    generator = gradcheck.rng(16)
    ours = norms.BatchNorm(SHAPE[-1], tf.float64, epsilon=EPSILON, momentum=0.8, affine=affine)
    theirs = keras.layers.BatchNormalization(momentum=0.8, epsilon=EPSILON, center=affine,
                                             scale=affine, dtype="float64")
    theirs.build(SHAPE)
    if affine:
        ours.gamma.assign(1.0 + 0.5 * generator.standard_normal(SHAPE[-1]))
        ours.beta.assign(generator.standard_normal(SHAPE[-1]))
        theirs.gamma.assign(ours.gamma.numpy())
        theirs.beta.assign(ours.beta.numpy())
    for step in range(3):
        x = small_input(100 + step)
        y, cache = ours.forward(x, training=True)
        np.testing.assert_allclose(y, theirs(x, training=True), rtol=1e-10, atol=1e-10)
        ours.update_statistics(cache)
        np.testing.assert_allclose(ours.running_mean, theirs.moving_mean, rtol=1e-12)
        np.testing.assert_allclose(ours.running_variance, theirs.moving_variance, rtol=1e-12)
    x = small_input(200)
    y, _ = ours.forward(x, training=False)
    np.testing.assert_allclose(y, theirs(x, training=False), rtol=1e-10, atol=1e-10)


def test_running_statistics_follow_the_momentum_formula():
    norm = norms.BatchNorm(SHAPE[-1], tf.float64, momentum=0.9)
    x = small_input(17)
    _, cache = norm.forward(x, training=True)
    norm.update_statistics(cache)
    mean, variance = np.mean(x.numpy(), (0, 1, 2)), np.var(x.numpy(), (0, 1, 2))
    np.testing.assert_allclose(norm.running_mean, 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(norm.running_variance, 0.9 + 0.1 * variance, rtol=1e-12)
    # Evaluation neither uses nor moves the batch statistics.
    _, eval_cache = norm.forward(x, training=False)
    assert norm.update_statistics(eval_cache) == []
    np.testing.assert_allclose(norm.running_mean, 0.1 * mean, rtol=1e-12)


def test_layer_norm_matches_keras():
    x = small_input(18)
    ours, _ = norms.LayerNorm(SHAPE[-1], tf.float64, epsilon=EPSILON).forward(x)
    theirs = keras.layers.LayerNormalization(axis=(1, 2, 3), epsilon=EPSILON, center=False,
                                             scale=False, dtype="float64")
    np.testing.assert_allclose(ours, theirs(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_norm_matches_keras(groups):
    x = small_input(19)
    ours, _ = norms.GroupNorm(SHAPE[-1], tf.float64, epsilon=EPSILON, groups=groups).forward(x)
    theirs = keras.layers.GroupNormalization(groups=groups, epsilon=EPSILON, center=False,
                                             scale=False, dtype="float64")
    np.testing.assert_allclose(ours, theirs(x), rtol=1e-10, atol=1e-10)


def test_instance_norm_matches_keras_group_norm_with_one_channel_per_group():
    x = small_input(20)
    ours, _ = norms.InstanceNorm(SHAPE[-1], tf.float64, epsilon=EPSILON).forward(x)
    theirs = keras.layers.GroupNormalization(groups=SHAPE[-1], epsilon=EPSILON, center=False,
                                             scale=False, dtype="float64")
    np.testing.assert_allclose(ours, theirs(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("groups,equivalent", [(1, norms.LayerNorm), (6, norms.InstanceNorm)])
@pytest.mark.parametrize("affine", [False, True])
def test_group_norm_extremes_equal_layer_and_instance(groups, equivalent, affine):
    generator = gradcheck.rng(21)
    group = norms.GroupNorm(SHAPE[-1], tf.float64, epsilon=1e-5, affine=affine, groups=groups)
    other = equivalent(SHAPE[-1], tf.float64, epsilon=1e-5, affine=affine)
    randomize_parameters(group, generator)
    for mine, theirs in zip(other.trainable_variables, group.trainable_variables):
        mine.assign(theirs)
    x = gradcheck.normal(generator, SHAPE)
    dy = gradcheck.normal(generator, SHAPE)
    y_group, cache_group = group.forward(x)
    y_other, cache_other = other.forward(x)
    np.testing.assert_allclose(y_group, y_other, rtol=1e-12, atol=1e-12)
    dx_group, grads_group = group.backward(dy, cache_group)
    dx_other, grads_other = other.backward(dy, cache_other)
    assert gradcheck.max_relative_error([dx_group] + grads_group,
                                        [dx_other] + grads_other) <= 1e-12


@pytest.mark.parametrize("lam", [2.0, 0.5, -0.7, 1e-3, 1e-6, 1e-12, 0.0])
def test_boxcox_matches_scipy(lam):
    generator = gradcheck.rng(22)
    x = generator.uniform(-0.9, 3.0, [2, 3, 5, 6])
    y, _ = norms.BoxCox(SHAPE[-1], tf.float64, init_lambda=lam).forward(tf.constant(x))
    np.testing.assert_allclose(y, scipy.special.boxcox(x + 1, lam), rtol=1e-13, atol=1e-15)


def test_boxcox_lambda_gradient_limit_at_zero():
    # dy/dlambda -> (ln u)^2 / 2 as lambda -> 0, and the hand value is continuous there.
    u = tf.constant(np.linspace(0.2, 4.0, 11), tf.float64)
    for lam in (0.0, 1e-9, -1e-9):
        _, cache = norms.boxcox_forward(u, tf.constant(lam, tf.float64))
        log_u = np.log(u.numpy())
        per_entry = [norms.boxcox_backward(tf.one_hot(i, 11, dtype=tf.float64), cache)[1]
                     for i in range(11)]
        np.testing.assert_allclose(per_entry, log_u ** 2 / 2 * (1 + 2 * lam * log_u / 3),
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("lam", [2.0, -0.5])
def test_boxcox_float32_lambda_gradient_is_accurate_for_small_z(lam):
    # Regression: with z = lam ln u in (1e-3, 0.05) the closed form of dy/dlambda
    # cancels (~2 eps/|z|), which left the float32 lambda gradient wrong by up to ~1e-4.
    for z in np.geomspace(1.5e-3, 0.04, 12):
        u = np.exp(np.array([z / lam]))
        per_dtype = []
        for dtype in (tf.float32, tf.float64):
            u_rounded = tf.cast(tf.constant(u, tf.float32), dtype)  # the same u for both
            _, cache = norms.boxcox_forward(u_rounded, tf.constant(lam, dtype))
            per_dtype.append(norms.boxcox_backward(tf.ones([1], dtype), cache)[1].numpy())
        assert gradcheck.relative_error(*per_dtype) <= 2e-6, f"z = {z:.3g}"


# ----------------------------------------------------------------------------
# Noisy batch norm: Santurkar et al.'s noise, seedable


def test_noise_is_seeded_and_moves_with_the_step():
    x = gradcheck.normal(gradcheck.rng(23), SHAPE)
    first = norms.DistributionNoise(SHAPE[-1], tf.float64, seed=7)
    twin = norms.DistributionNoise(SHAPE[-1], tf.float64, seed=7)
    other_seed = norms.DistributionNoise(SHAPE[-1], tf.float64, seed=8)
    y_first, cache = first.forward(x, training=True)
    np.testing.assert_array_equal(y_first, twin.forward(x, training=True)[0])
    np.testing.assert_array_equal(y_first, first.forward(x, training=True)[0])
    assert not np.allclose(y_first, other_seed.forward(x, training=True)[0])
    first.update_statistics(cache)
    assert int(first.step.numpy()) == 1
    y_next, _ = first.forward(x, training=True)
    assert not np.allclose(y_first, y_next)


def test_noise_only_in_training():
    x = gradcheck.normal(gradcheck.rng(24), SHAPE)
    noise = norms.DistributionNoise(SHAPE[-1], tf.float64, seed=7)
    y, cache = noise.forward(x, training=False)
    np.testing.assert_array_equal(y, x)
    assert noise.update_statistics(cache) == [] and int(noise.step.numpy()) == 0
    noisy = norms.make_normalization("noisybatch", SHAPE[-1], tf.float64)
    plain = norms.make_normalization("batch", SHAPE[-1], tf.float64)
    np.testing.assert_array_equal(noisy.forward(x, training=False)[0],
                                  plain.forward(x, training=False)[0])
    assert not np.allclose(noisy.forward(x, training=True)[0], plain.forward(x, training=True)[0])


def test_noise_follows_santurkar_distribution():
    samples, channels = 4000, 40
    s, m = norms.santurkar_noise([samples, channels], tf.constant([3, 0], tf.int64), tf.float64)
    s, m = s.numpy(), m.numpy()
    # m ~ U(mu - 0.1, mu + 0.1) with mu ~ U(-0.5, 0.5) per channel.
    spread = m.max(axis=0) - m.min(axis=0)
    assert np.all(spread <= 0.2) and np.all(spread > 0.19)
    centre = (m.max(axis=0) + m.min(axis=0)) / 2
    assert np.all(np.abs(centre) <= 0.5 + 1e-3) and centre.std() > 0.1
    # s ~ N(sigma, 0.1) with sigma ~ U(1, 1.25) per channel.
    np.testing.assert_allclose(s.std(axis=0), 0.1, rtol=0.1)
    assert np.all((s.mean(axis=0) > 1 - 0.01) & (s.mean(axis=0) < 1.25 + 0.01))


# ----------------------------------------------------------------------------
# Bad input: a clear error naming the problem, before any work


def test_wrong_rank_is_named():
    with pytest.raises(ValueError, match="batch normalization input must have rank 2 or 4"):
        norms.BatchNorm(6, tf.float64).forward(tf.zeros([2, 5, 6], tf.float64))
    with pytest.raises(ValueError, match="instance normalization input must have rank 4"):
        norms.InstanceNorm(6, tf.float64).forward(tf.zeros([2, 6], tf.float64))
    with pytest.raises(ValueError, match="built for 6 channels"):
        norms.LayerNorm(6, tf.float64).forward(tf.zeros([2, 3, 3, 5], tf.float64))


def test_group_count_must_divide_channels():
    with pytest.raises(ValueError, match="the group count 4 does not divide the 6 channels"):
        norms.GroupNorm(6, tf.float64, groups=4)
    with pytest.raises(ValueError, match="the group count 0 does not divide"):
        norms.make_normalization("group", 6, groups=0)


@pytest.mark.parametrize("scheme,what", [("batch", "batch normalization"),
                                         ("noisybatch", "batch normalization"),
                                         ("meanonly", "mean-only batch normalization")])
def test_batch_of_one_in_training_is_refused(scheme, what):
    norm = norms.make_normalization(scheme, 6, tf.float64)
    x = tf.ones([1, 3, 3, 6], tf.float64)
    with pytest.raises(ValueError, match=f"{what} in training needs a batch of at least 2 "
                                         "examples, got a batch of 1"):
        norm.forward(x, training=True)
    norm.forward(x, training=False)  # evaluation uses running statistics: fine


def test_batch_of_one_refused_when_the_batch_size_is_dynamic():
    norm = norms.BatchNorm(6, tf.float64)

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 3, 6], tf.float64)])
    def forward(x):
        return norm.forward(x, training=True)[0]

    forward(tf.ones([2, 3, 3, 6], tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="needs a batch of at least 2"):
        forward(tf.ones([1, 3, 3, 6], tf.float64))


@pytest.mark.parametrize("bad_value", [-1.0, -1.5])
def test_boxcox_input_at_or_below_minus_one_is_refused(bad_value):
    norm = norms.BoxCox(6, tf.float64)
    x = np.full([1, 3, 3, 6], 0.5)
    x[0, 1, 2, 3] = bad_value
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="Box-Cox input must be above -1 .x \\+ 1 > 0.; got a value at or below"):
        norm.forward(tf.constant(x), training=True)


def test_unknown_scheme_is_named():
    with pytest.raises(ValueError, match="unknown normalization scheme 'batchnorm'"):
        norms.make_normalization("batchnorm", 6)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_layer_norm_of_one_vector_in_a_graph_keeps_its_epsilon(dtype):
    # Regression: built on tf.nn.moments, this pattern on a (1, C) input with gamma/beta
    # was rewritten by oneDNN into a fused layer norm with epsilon 1e-3 (float32) or
    # failed to run (float64) inside tf.function.
    norm = norms.LayerNorm(6, dtype, epsilon=1e-8, affine=True)
    x = tf.constant(0.01 * gradcheck.rng(25).standard_normal([1, 6]), dtype)
    eager, _ = norm.forward(x)
    graph = tf.function(lambda x: norm.forward(x)[0])(x)
    np.testing.assert_allclose(graph, eager, rtol=1e-5 if dtype == tf.float32 else 1e-12)
    centered = x.numpy() - x.numpy().mean()
    np.testing.assert_allclose(eager, centered / np.sqrt(np.mean(centered ** 2) + 1e-8),
                               rtol=1e-4 if dtype == tf.float32 else 1e-12)
