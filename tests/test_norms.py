"""tfnorm.norms: every scheme's hand backward (input and parameters) against
tf.GradientTape (relative <= 1e-9) and finite differences (<= 1e-8) in float64, also at the
edges (variance below epsilon, dead channels, x + 1e3, Box-Cox near -1) and in float32;
forwards against Keras and scipy; Box-Cox at and near lambda 0; noisy BN seeding;
bad input named before any work. Relative error as defined in tests/gradcheck.py."""

import keras
import numpy as np
import pytest
import scipy.special
import tensorflow as tf

import gradcheck
import tfnorm
import tfnorm.schemes
from tfnorm import norms

TAPE_TOLERANCE = 1e-9
FD_TOLERANCE = gradcheck.FD_TOLERANCE  # 1e-8: see the measurements there
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


# ----------------------------------------------------------------------------
# Gradients at the edges: variance below epsilon, dead channels, a large offset,
# Box-Cox near x = -1 and across its series / closed-form switch; float32 too.
#
# Finite-difference steps (x; the parameters keep gradcheck.FD_STEP), measured in float64
# on these inputs (worst relative error over the schemes, with the step chosen):
# * well-conditioned (every statistic's variance >> epsilon): 2^-18, worst 4.8e-10;
# * NEAR_EPSILON (a variance at or below epsilon 1e-8: 1/sqrt(var + eps) ~ 1e4 and its
#   third derivative ~ 1e4/eps, so truncation ~ step^2/eps): at 2^-18 the error is up to
#   4.5e-5, at 2^-26 (1.5e-8, ~1e-4 sqrt(eps)) the worst is 1.9e-9 (batch norm, constant
#   channel), at 2^-28 3.6e-9 (rounding takes over);
# * x + 1e3: the projected sum carries ~1e3 sqrt(n) of rounding, divided by the step:
#   the identity, mean-only BN and Box-Cox at lambda 2 (degree <= 2: central differences
#   have no truncation) take 2^-10 (worst 3.2e-10, 7.5e-8 at 2^-18); the standardizing
#   schemes 2^-14 (worst 1.3e-9, 5.7e-9 at 2^-16, 2.6e-8 at 2^-10).
# * Box-Cox's lambda on 1e-5-scaled input: dy/dlambda ~ (ln u)^2 ~ 1e-10, so its step
#   is 2^-8 (worst 1.3e-9; 6.9e-7 at 2^-18, all rounding).
# The tolerance stays gradcheck.FD_TOLERANCE (1e-8): a margin of 5 over the worst 1.9e-9.
# The tape comparison is not weakened anywhere (1e-9; measured <= 2e-14, with x + 1e3).

EDGE_KINDS = ("tiny", "constant_channel", "zero_channel", "constant_sample", "offset")
# (kind, scheme) whose normalization statistics include a variance <= epsilon.
NEAR_EPSILON = {(kind, scheme) for kind, schemes_ in (
    ("tiny", ("batch", "layer", "instance", "group", "noisybatch")),
    ("constant_channel", ("batch", "instance", "noisybatch")),
    ("zero_channel", ("batch", "instance", "noisybatch")),
    ("constant_sample", ("layer", "instance", "group"))) for scheme in schemes_}
LINEAR_OR_QUADRATIC = ("none", "weight", "meanonly", "boxcox")  # at boxcox's init lambda 2


def edge_step(kind, scheme):
    """(step for x, step for the parameters): see the measurements above."""
    if (kind, scheme) in NEAR_EPSILON:
        return 2.0 ** -26, gradcheck.FD_STEP
    if kind == "offset":
        return (2.0 ** -10 if scheme in LINEAR_OR_QUADRATIC else 2.0 ** -14), gradcheck.FD_STEP
    if kind == "tiny" and scheme == "boxcox":
        return gradcheck.FD_STEP, 2.0 ** -8
    return gradcheck.FD_STEP, gradcheck.FD_STEP


def edge_input(kind, scheme, seed=40):
    """[2, 3, 5, 6] float64 numpy: N(0, 1) (Box-Cox: U(-0.7, 2)), then the edge."""
    generator = gradcheck.rng(seed)
    x = (generator.uniform(-0.7, 2.0, SHAPE) if scheme == "boxcox"
         else generator.standard_normal(SHAPE))
    if kind == "tiny":  # variance ~1e-10, below epsilon
        x = 1e-5 * x
    elif kind == "constant_channel":  # zero variance over (N, H, W) and (H, W)
        x[..., 1] = 0.7
    elif kind == "zero_channel":  # a dead ReLU channel
        x[..., 2] = 0.0
    elif kind == "constant_sample":  # zero variance over (H, W, C) and every group
        x[0] = 0.3
    elif kind == "offset":
        x = x + 1e3
    return x


def edge_normalization(scheme, dtype):
    """The scheme's normalization with every parameter it has (affine, 3 groups, seed),
    randomized by the same generator whatever the dtype."""
    hyper = tfnorm.schemes.REGISTRY[scheme].hyperparameters
    options = {key: value for key, value in (("affine", True), ("groups", 3), ("seed", 3))
               if key in hyper}
    norm = norms.make_normalization(scheme, SHAPE[-1], dtype, **options)
    randomize_parameters(norm, gradcheck.rng(5))
    return norm


def edge_errors(scheme, kind):
    norm = edge_normalization(scheme, tf.float64)
    return gradcheck.check_module(lambda x: norm.forward(x, True), norm.backward,
                                  tf.constant(edge_input(kind, scheme)),
                                  norm.trainable_variables, delta=edge_step(kind, scheme))


@pytest.mark.parametrize("kind", EDGE_KINDS)
@pytest.mark.parametrize("scheme", tfnorm.SCHEMES)
def test_edge_gradients_float64(scheme, kind):
    tape_error, fd_error = edge_errors(scheme, kind)
    assert tape_error <= TAPE_TOLERANCE, f"hand vs GradientTape: relative error {tape_error:.3g}"
    assert fd_error <= FD_TOLERANCE, f"hand vs finite differences: relative error {fd_error:.3g}"


def test_near_epsilon_table_is_where_a_variance_is_below_epsilon():
    # The smaller step is for exactly the inputs whose statistics reach epsilon.
    axes = {"batch": (0, 1, 2), "noisybatch": (0, 1, 2), "layer": (1, 2, 3),
            "instance": (1, 2)}
    for kind in EDGE_KINDS:
        for scheme in tfnorm.SCHEMES:
            x = edge_input(kind, scheme)
            if scheme == "group":
                variances = x.reshape(SHAPE[:3] + [3, 2]).var(axis=(1, 2, 4))
            elif scheme in axes:
                variances = x.var(axis=axes[scheme])
            else:
                variances = np.array([1.0])  # no variance in the maths
            assert ((kind, scheme) in NEAR_EPSILON) == (variances.min() <= norms.DEFAULT_EPSILON), \
                (kind, scheme)


# float32: hand and tape both round; they differ by a few ulps amplified by the
# backward's cancellations (the means subtracted in standardize_backward). Measured
# hand32 vs tape32 on these inputs: <= 1.1e-6 (~9 eps32, Box-Cox with a constant sample)
# for all but the offset: tolerance 64 eps32 = 7.6e-6, a margin of 7. With x + 1e3 the
# input itself is rounded at 1e3 eps32 against a spread of 1 (condition number ~1e3):
# measured <= 1.0e-5, tolerance 1e3 eps32 = 1.2e-4, a margin of 12.
FLOAT32_EPS = float(np.finfo(np.float32).eps)
FLOAT32_TAPE_TOLERANCE = {kind: 64 * FLOAT32_EPS for kind in EDGE_KINDS}
FLOAT32_TAPE_TOLERANCE["offset"] = 1e3 * FLOAT32_EPS


@pytest.mark.parametrize("kind", EDGE_KINDS)
@pytest.mark.parametrize("scheme", tfnorm.SCHEMES)
def test_edge_gradients_float32_tape(scheme, kind):
    norm = edge_normalization(scheme, tf.float32)
    x = tf.constant(edge_input(kind, scheme), tf.float32)
    error = gradcheck.module_tape_error(lambda x: norm.forward(x, True), norm.backward, x,
                                        norm.trainable_variables)
    assert error <= FLOAT32_TAPE_TOLERANCE[kind], f"float32 hand vs tape: {error:.3g}"


# Box-Cox with u = x + 1 in [1e-3, 0.1]. Step per lambda, measured: dy/du = u^(lam - 1),
# truncation ~ step^2 (lam - 1)(lam - 2)/u^2, none at lam = 2; rounding ~ |f|/step.
# lam 2: 6.1e-10 at 2^-18 (4e-8 at 2^-24); lam 0.5: 3.7e-10 at 2^-24 (9.6e-7 at 2^-18);
# lam -0.7: 7.6e-11 at 2^-28 (1.1e-5 at 2^-18).
NEAR_MINUS_ONE_STEP = {2.0: 2.0 ** -18, 0.5: 2.0 ** -24, -0.7: 2.0 ** -28}


def near_minus_one_input():
    generator = gradcheck.rng(50)
    u = np.geomspace(1e-3, 0.1, 30)
    generator.shuffle(u)
    return (u - 1).reshape([1, 1, 5, 6])


@pytest.mark.parametrize("lam", sorted(NEAR_MINUS_ONE_STEP))
def test_boxcox_gradients_near_minus_one(lam):
    norm = norms.BoxCox(SHAPE[-1], tf.float64, init_lambda=lam)
    x = tf.constant(near_minus_one_input())
    tape_error, fd_error = gradcheck.check_module(
        lambda x: norm.forward(x, True), norm.backward, x, norm.trainable_variables,
        delta=(NEAR_MINUS_ONE_STEP[lam], gradcheck.FD_STEP))
    # The tape differentiates ln u * expm1(z)/z term by term: at lam 2 two terms ~1/(z u)
    # ~ 70 cancel to u ~ 1e-3 (measured 7.6e-14 in float64), while the hand
    # du = u^(lam - 1) does not cancel; still far inside 1e-9.
    assert tape_error <= TAPE_TOLERANCE and fd_error <= FD_TOLERANCE, (tape_error, fd_error)


@pytest.mark.parametrize("lam", sorted(NEAR_MINUS_ONE_STEP))
def test_boxcox_float32_gradients_near_minus_one(lam):
    # The float32 tape inherits that cancellation (4.5e-5 at lam 2), so the float32 hand
    # backward is compared with the float64 tape on the same rounded input instead:
    # a float32 evaluation of u^(lam - 1) and (ln u)^2 h(z), a few ulps (measured below).
    x32 = tf.constant(near_minus_one_input(), tf.float32)
    hand32 = norms.BoxCox(SHAPE[-1], tf.float32, init_lambda=lam)
    norm64 = norms.BoxCox(SHAPE[-1], tf.float64, init_lambda=float(np.float32(lam)))
    dy = tf.constant(gradcheck.rng(51).standard_normal([1, 1, 5, 6]), tf.float32)
    y, cache = hand32.forward(x32)
    dx, (dlam,) = hand32.backward(dy, cache)
    x64 = tf.cast(x32, tf.float64)
    reference = gradcheck.tape_gradients(lambda: norm64.forward(x64)[0], [x64, norm64.lam],
                                         tf.cast(dy, tf.float64))
    error = gradcheck.max_relative_error([dx, dlam], reference)
    assert error <= 64 * FLOAT32_EPS, f"float32 hand vs float64 tape: {error:.3g}"


@pytest.mark.parametrize("dtype,lam", [(tf.float64, 0.1), (tf.float32, 1.0)])
def test_boxcox_gradients_across_the_series_switch(dtype, lam):
    # z = lam ln u spans +-1.6 times the series limit: both branches in one input.
    limit = (norms.BOXCOX_SERIES_LIMIT if dtype == tf.float64
             else norms.BOXCOX_SERIES_LIMIT_FLOAT32)
    z = np.linspace(-1.6 * limit, 1.6 * limit, 30)
    x = tf.constant((np.exp(z / lam) - 1).reshape([1, 1, 5, 6]), dtype)
    norm = norms.BoxCox(SHAPE[-1], dtype, init_lambda=lam)
    _, cache = norm.forward(x)
    small = cache[2].numpy()
    assert small.any() and not small.all(), "the input must straddle the switch"
    if dtype == tf.float64:
        # Measured: tape 2.7e-16, finite differences 4.6e-10 (2^-18).
        assert_module_gradients(norm, x, training=True)
    else:
        error = gradcheck.module_tape_error(lambda x: norm.forward(x, True), norm.backward, x,
                                            norm.trainable_variables)
        assert error <= 64 * FLOAT32_EPS, f"float32 hand vs tape: {error:.3g}"  # 7.6e-8


def test_boxcox_branches_agree_at_the_switch():
    # Just below and just above |z| = BOXCOX_SERIES_LIMIT (lambda moved by 1e-12 relative,
    # so y, dy/du and dy/dlambda move by ~1e-12): series and closed form must agree there.
    for log_u in (2.0, -0.5):
        u = tf.constant([np.exp(log_u)], tf.float64)
        values = []
        for side in (1 - 1e-12, 1 + 1e-12):
            lam = tf.constant(norms.BOXCOX_SERIES_LIMIT * side / abs(log_u), tf.float64)
            y, cache = norms.boxcox_forward(u, lam)
            du, dlam = norms.boxcox_backward(tf.ones_like(u), cache)
            values.append(np.array([y.numpy()[0], du.numpy()[0], dlam.numpy()]))
            assert bool(cache[2].numpy()[0]) == (side < 1)
        np.testing.assert_allclose(values[0], values[1], rtol=1e-11)


@pytest.mark.parametrize("kind", ["tiny", "offset"])
def test_weight_norm_edges(kind):
    # ||v|| ~ 1e-5 (the step scales with v: 2^-35 ~ 3e-11, measured 1.9e-10; 4e-3 at
    # 2^-18) and v + 1e3 (nearly parallel columns; 2^-10 rounding-bound, measured 5.6e-10,
    # 1.6e-7 at 2^-18). float32 tape: measured 6.6e-8 and 5.5e-8.
    generator = gradcheck.rng(52)
    v = generator.standard_normal([3, 3, 2, 4])
    v, step = (1e-5 * v, 2.0 ** -35) if kind == "tiny" else (v + 1e3, 2.0 ** -10)
    g = generator.standard_normal([4])
    axes = [0, 1, 2]

    def forward(v, g):
        return norms.weight_norm_forward(v, g, axes)

    def backward(dw, cache):
        return list(norms.weight_norm_backward(dw, cache))

    tape_error, fd_error = gradcheck.check_function(forward, backward, [v, g],
                                                    delta=[step, gradcheck.FD_STEP])
    assert tape_error <= TAPE_TOLERANCE and fd_error <= FD_TOLERANCE, (tape_error, fd_error)
    error32 = gradcheck.function_tape_error(forward, backward, [tf.constant(v, tf.float32),
                                                                tf.constant(g, tf.float32)])
    assert error32 <= 64 * FLOAT32_EPS, error32


# The edge checks fail on a backward that drops epsilon (inv_std recomputed as
# 1/sqrt(var)): on N(0, 1) inputs that is a 1e-8 relative slip, at variance <= epsilon a
# factor of 10 or more.
def _standardize_backward_without_epsilon(dxhat, cache):
    xhat, _, axes, _, variance = cache
    inv_std = tf.math.rsqrt(variance)
    mean_dxhat = tf.reduce_mean(dxhat, axis=axes, keepdims=True)
    mean_dxhat_xhat = tf.reduce_mean(dxhat * xhat, axis=axes, keepdims=True)
    return inv_std * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


@pytest.mark.parametrize("kind,axes", [("tiny", [0, 1, 2]), ("tiny", [1, 2, 3])])
def test_edge_checks_catch_a_backward_without_epsilon(kind, axes):
    x = edge_input(kind, "batch")
    step = 2.0 ** -26
    tape_error, fd_error = gradcheck.check_function(
        lambda x: norms.standardize_forward(x, axes),
        lambda dxhat, cache: [_standardize_backward_without_epsilon(dxhat, cache)], [x],
        delta=step)
    assert tape_error > 1.0 and fd_error > 1.0, (tape_error, fd_error)
    # ... while the real backward passes the same check.
    tape_error, fd_error = gradcheck.check_function(
        lambda x: norms.standardize_forward(x, axes),
        lambda dxhat, cache: [norms.standardize_backward(dxhat, cache)], [x], delta=step)
    assert tape_error <= TAPE_TOLERANCE and fd_error <= FD_TOLERANCE, (tape_error, fd_error)


# ----------------------------------------------------------------------------
# Independent numpy references for the forwards the tape cannot check (the tape
# differentiates whatever the forward computes, right or wrong).


def weight_norm_reference_error(forward, v, g, axes):
    """max |w - g v/||v|||, numpy, elementwise (not just the norm of w)."""
    w, _ = forward(tf.constant(v), tf.constant(g), axes)
    expected = g * v / np.sqrt(np.sum(v * v, axis=tuple(axes)))
    return float(np.max(np.abs(w.numpy() - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("v_shape,axes", [([3, 3, 2, 5], [0, 1, 2]), ([4, 5], [0])])
def test_weight_norm_forward_is_g_v_over_norm_elementwise(v_shape, axes):
    generator = gradcheck.rng(60)
    v, g = generator.standard_normal(v_shape), generator.standard_normal([5])
    assert weight_norm_reference_error(norms.weight_norm_forward, v, g, axes) <= 1e-14

    # A flipped direction or a column permutation keeps ||w|| == |g| (the old check) but
    # fails here.
    def flipped(v, g, axes):
        w, cache = norms.weight_norm_forward(v, g, axes)
        return -w, cache

    def permuted(v, g, axes):
        w, cache = norms.weight_norm_forward(v, g, axes)
        return tf.roll(w, 1, axis=len(v_shape) - 1) * tf.abs(g) / tf.roll(tf.abs(g), 1, 0), cache

    for broken in (flipped, permuted):
        w, _ = broken(tf.constant(v), tf.constant(g), axes)
        np.testing.assert_allclose(np.sqrt(np.sum(w.numpy() ** 2, axis=tuple(axes))),
                                   np.abs(g), rtol=1e-12)
        assert weight_norm_reference_error(broken, v, g, axes) > 0.1


def mean_only_reference(x, beta, running_mean, momentum, training):
    """numpy: (y, new running mean)."""
    axes = tuple(range(x.ndim - 1))
    if training:
        mean = x.mean(axis=axes)
        return x - mean + beta, momentum * running_mean + (1 - momentum) * mean
    return x - running_mean + beta, running_mean


@pytest.mark.parametrize("rank,affine", [(4, False), (4, True), (2, True)])
def test_mean_only_batch_norm_matches_numpy(rank, affine):
    generator = gradcheck.rng(61)
    shape = SHAPE if rank == 4 else [5, SHAPE[-1]]
    norm = norms.MeanOnlyBatchNorm(SHAPE[-1], tf.float64, momentum=0.9, affine=affine)
    beta = generator.standard_normal(SHAPE[-1]) if affine else np.zeros(SHAPE[-1])
    if affine:
        norm.beta.assign(beta)
    running = np.zeros(SHAPE[-1])
    for step in range(3):
        x = 2.0 + generator.standard_normal(shape)
        y, cache = norm.forward(tf.constant(x), training=True)
        expected, running = mean_only_reference(x, beta, running, 0.9, True)
        np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-13)
        norm.update_statistics(cache)
        np.testing.assert_allclose(norm.running_mean, running, rtol=1e-13)
    x = generator.standard_normal(shape)
    y, cache = norm.forward(tf.constant(x), training=False)
    np.testing.assert_allclose(y, mean_only_reference(x, beta, running, 0.9, False)[0],
                               rtol=1e-13, atol=1e-13)
    assert norm.update_statistics(cache) == []
    np.testing.assert_allclose(norm.running_mean, running, rtol=1e-13)


def test_mean_only_reference_catches_a_wrong_forward():
    # The reference is not vacuous: x - mean / (x - mean)/2 and a missing beta differ.
    generator = gradcheck.rng(62)
    x, beta = generator.standard_normal(SHAPE), generator.standard_normal(SHAPE[-1])
    expected, _ = mean_only_reference(x, beta, np.zeros(SHAPE[-1]), 0.9, True)
    y_right, _ = norms.center_forward(tf.constant(x), [0, 1, 2])
    np.testing.assert_allclose(y_right.numpy() + beta, expected, rtol=1e-13, atol=1e-13)
    for wrong in (x - x.mean() + beta, y_right.numpy(), x - x.mean(axis=(1, 2, 3),
                                                                  keepdims=True) + beta):
        assert np.max(np.abs(wrong - expected)) > 0.1


def noise_affine_error(noise, x):
    """The forward against s x + m in numpy, with (s, m) drawn by the same seed and step."""
    y, _ = noise.forward(tf.constant(x), training=True)
    s, m = norms.santurkar_noise([x.shape[0], x.shape[-1]],
                                 tf.constant([int(noise.seed.numpy()),
                                              int(noise.step.numpy())], tf.int64),
                                 tf.float64)
    expand = [x.shape[0]] + [1] * (x.ndim - 2) + [x.shape[-1]]
    expected = s.numpy().reshape(expand) * x + m.numpy().reshape(expand)
    return float(np.max(np.abs(y.numpy() - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("rank", [4, 2])
def test_noise_forward_is_s_x_plus_m_elementwise(rank):
    generator = gradcheck.rng(63)
    shape = SHAPE if rank == 4 else [5, SHAPE[-1]]
    noise = norms.DistributionNoise(SHAPE[-1], tf.float64, seed=11)
    for _ in range(2):  # this step and the next
        x = generator.standard_normal(shape)
        assert noise_affine_error(noise, x) <= 1e-15
        _, cache = noise.forward(tf.constant(x), training=True)
        noise.update_statistics(cache)


def test_noise_reference_catches_swapped_scale_and_shift(monkeypatch):
    noise = norms.DistributionNoise(SHAPE[-1], tf.float64, seed=11)
    x = gradcheck.rng(64).standard_normal(SHAPE)
    real_draw = noise.draw
    monkeypatch.setattr(noise, "draw", lambda batch, dtype=None: real_draw(batch, dtype)[::-1])
    assert noise_affine_error(noise, x) > 0.1


def santurkar_violations(s, m):
    """What in (s, m), each (samples, channels) of one step, contradicts Santurkar et al.:
    per channel mu ~ U(-0.5, 0.5), sigma ~ U(1, 1.25); m ~ U(mu - 0.1, mu + 0.1),
    s ~ N(sigma, 0.1). Rough bounds for 4000 samples and 40 channels (standard errors:
    a per-channel mean of s 0.0016, its std 0.0011, a uniform's std 0.0009)."""
    problems = []
    low, high = m.min(axis=0), m.max(axis=0)
    centre = (low + high) / 2  # mu, to ~1e-4
    if not np.all((high - low <= 0.2) & (high - low > 0.199)):
        problems.append("m's range per channel is not 0.2 wide")
    if not np.allclose(m.std(axis=0), 0.2 / np.sqrt(12), rtol=0.05):
        problems.append("m is not uniform within its channel")
    if not (np.all(np.abs(centre) <= 0.5) and centre.min() < -0.3 and centre.max() > 0.3):
        problems.append("mu does not spread over U(-0.5, 0.5)")
    if not np.allclose(m.mean(axis=0), centre, atol=0.01):
        problems.append("m is not centred on mu")
    sigma = s.mean(axis=0)
    if not (np.all((sigma > 1 - 0.01) & (sigma < 1.25 + 0.01)) and np.ptp(sigma) > 0.15):
        problems.append("sigma does not spread over U(1, 1.25)")
    if not np.allclose(s.std(axis=0), 0.1, rtol=0.1):
        problems.append("s's spread around sigma is not 0.1")
    standardized = (s - sigma) / s.std(axis=0)
    # A normal's skewness and excess kurtosis are 0, standard errors 0.04 and 0.08 here
    # (a uniform's kurtosis is -1.2).
    if not np.all(np.abs(np.mean(standardized ** 3, axis=0)) < 0.25):
        problems.append("s is not symmetric around sigma")
    if not np.all(np.abs(np.mean(standardized ** 4, axis=0) - 3) < 0.4):
        problems.append("s is not normal around sigma")
    return problems


def test_noise_follows_santurkar_distribution_per_channel():
    draws = [norms.santurkar_noise([4000, 40], tf.constant([3, step], tf.int64), tf.float64)
             for step in (0, 1)]
    (s, m), (s_next, m_next) = [(s.numpy(), m.numpy()) for s, m in draws]
    assert santurkar_violations(s, m) == []
    assert santurkar_violations(s_next, m_next) == []
    # mu and sigma are drawn again every step.
    assert np.max(np.abs(m.mean(0) - m_next.mean(0))) > 0.1
    assert np.max(np.abs(s.mean(0) - s_next.mean(0))) > 0.03
    # The checker is not vacuous: swapped, or with a shared mu, or a uniform s, it objects.
    assert santurkar_violations(m, s)
    assert santurkar_violations(s, m - m.mean(0) + 0.2 * (np.arange(40) % 2))
    uniform_s = s.mean(0) + np.sqrt(3) * 0.1 * (2 * np.random.default_rng(0).random(s.shape) - 1)
    assert santurkar_violations(uniform_s, m) == ["s is not normal around sigma"]
