"""tfnorm.keras: the registry's schemes as Keras 3 layers with the hand-written gradients.

In float64, ten steps of ``model.fit`` (plain SGD, each step on its own batch of digits)
of the article's network built by ``tfnorm.keras.article_model``:

- with ``tfnorm.keras.Normalization`` equal Keras's own BatchNormalization (no center or
  scale, the same epsilon and momentum), LayerNormalization over (H, W, C) and
  GroupNormalization (G = 4, and G = C for instance norm): the loss of every step, the
  weights, the running statistics and the inference-mode predictions;
- for the schemes Keras lacks, equal ``tfnorm.Network`` trained by ``tfnorm.training.Trainer``
  with the same SGD: the same initial weights (``StatelessNormal``), the same data-dependent
  init of weight norm, the same noise stream of noisy BN (its seed per layer, seed * 1000 + i,
  and its step counter).

Keras updates the moving variance with the biased batch variance (``ops.moments``), as
tfnorm's running variance: moving = momentum * moving + (1 - momentum) * batch.

The learning rate is 1e-3: at 1e-2 some channels of layers 4-5 (2x2 maps, batch 4, after a
ReLU) reach a batch variance near 0, where 1/sqrt(var + 1e-8) amplifies rounding, and two
correct implementations drift apart step by step (Keras's BN against ours: 2e-16 at step 1,
1e-8 at step 10, measured). Every weight is also compared by its displacement
(final - initial), so a wrong gradient cannot hide behind a small learning rate.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradcheck
import tfnorm
import tfnorm.keras as tk
from test_schemes import toy_scheme  # noqa: F401  (a fixture)
from tfnorm import data, optimizers, schemes, training

STEPS, BATCH, SIZE, LEARNING_RATE = 10, 4, 32, 3e-4
TOLERANCE = 1e-9


@pytest.fixture
def float64():
    """Keras's default float type float64 for the test (the loss Keras reports is kept in
    it), restored after."""
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(previous)


@pytest.fixture(scope="module")
def digits():
    dataset = data.load("digits", image_size=SIZE)
    count = STEPS * BATCH
    return (dataset.train_images[:count].astype(np.float64) / 255.0,
            dataset.train_labels[:count].astype(np.int32))


def relative(actual, expected):
    return gradcheck.relative_error(np.asarray(actual, np.float64),
                                    np.asarray(expected, np.float64))


def fit(model, images, labels):
    """Losses of STEPS steps of model.fit, step k on batch k (an epoch of one step each:
    Keras reports an epoch's mean loss)."""
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)
    history = model.fit(batches, epochs=STEPS, steps_per_epoch=1, verbose=0, shuffle=False)
    return np.array(history.history["loss"])


def compare_states(pairs, initial, trainable):
    """Worst relative error of (actual, expected) pairs, and of their displacements from
    ``initial`` (the values before training); and the indices of trainable ones that
    training did not move (none should be left)."""
    worst = worst_move = 0.0
    still = []
    for index, ((actual, expected), start, learned) in enumerate(zip(pairs, initial,
                                                                     trainable)):
        actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
        worst = max(worst, relative(actual, expected))
        if np.any(expected != start):
            worst_move = max(worst_move, relative(actual - start, expected - start))
        elif learned:
            still.append(index)
    return worst, worst_move, still


# ----------------------------------------------------------------------------
# Against Keras's own layers

# At the article network's five normalization sites (maps 16, 8, 4, 2, 2 pixels wide at
# 32 px): Keras's layer for each, and ours.
KERAS_OWN = {
    "norm1": ("batch", lambda: keras.layers.BatchNormalization(
        center=False, scale=False, epsilon=1e-8, momentum=0.9, dtype="float64")),
    "norm2": ("layer", lambda: keras.layers.LayerNormalization(
        axis=[1, 2, 3], center=False, scale=False, epsilon=1e-8, dtype="float64")),
    "norm3": ("instance", lambda: keras.layers.GroupNormalization(
        groups=-1, center=False, scale=False, epsilon=1e-8, dtype="float64")),
    "norm4": ("group", lambda: keras.layers.GroupNormalization(
        groups=4, center=False, scale=False, epsilon=1e-8, dtype="float64")),
    "norm5": ("batch", lambda: keras.layers.BatchNormalization(
        center=False, scale=False, epsilon=1e-8, momentum=0.9, dtype="float64")),
}


def _clone(model, replace):
    """A copy of ``model`` (new layers, no shared variable) with each tfnorm normalization
    replaced by ``replace(its name)``."""
    return keras.models.clone_model(model, clone_function=lambda layer: (
        replace(layer.name) if isinstance(layer, tk.Normalization)
        else layer.__class__.from_config(layer.get_config())))


def test_equals_keras_own_layers_under_fit(float64, digits):
    images, labels = digits
    article = tk.article_model("batch", image_size=SIZE, dtype="float64", seed=3)
    ours = _clone(article, lambda name: tk.Normalization(
        KERAS_OWN[name][0], name=name, epsilon=1e-8,
        **({"momentum": 0.9} if KERAS_OWN[name][0] == "batch" else {}),
        **({"groups": 4} if KERAS_OWN[name][0] == "group" else {})))
    theirs = _clone(article, lambda name: KERAS_OWN[name][1]())
    assert [layer.scheme for layer in ours.layers if isinstance(layer, tk.Normalization)] == [
        "batch", "layer", "instance", "group", "batch"]
    for ours_kernel, their_kernel in zip(tk.panels.kernel_layers(ours),
                                         tk.panels.kernel_layers(theirs)):  # StatelessNormal
        np.testing.assert_array_equal(ours_kernel.kernel, their_kernel.kernel)
    initial = ours.get_weights()

    losses, reference = fit(ours, images, labels), fit(theirs, images, labels)
    assert relative(losses, reference) <= TOLERANCE, (losses, reference)
    # Weights and running statistics (moving mean and variance), in the same order in both.
    names = [v.name for v in ours.weights]
    assert names.count("running_variance") == 2 and len(ours.weights) == len(theirs.weights)
    error, move_error, still = compare_states(zip(ours.get_weights(), theirs.get_weights()),
                                              initial, [v.trainable for v in ours.weights])
    assert error <= TOLERANCE and move_error <= TOLERANCE, (error, move_error)
    assert not still, f"not moved by training: {still}"
    for variable in ours.non_trainable_weights:  # the running statistics moved
        assert not np.array_equal(variable.numpy(), initial[names.index(variable.name)])
    # Inference: batch norm with its running statistics, the others with the sample's own.
    assert relative(ours.predict(images, verbose=0),
                    theirs.predict(images, verbose=0)) <= TOLERANCE


# ----------------------------------------------------------------------------
# Against tfnorm.Network, for the schemes Keras lacks


def _states(model, network):
    """(Keras variable, tfnorm variable) pairs: per block the layer's variables (kernel; or
    v, g, bias), then its normalization's trainable variables and statistics."""
    layers = tk.panels.kernel_layers(model)
    norms = [layer for layer in model.layers if isinstance(layer, tk.Normalization)]
    pairs = []
    for index, block in enumerate(network.blocks):
        layer = layers[index]
        if isinstance(layer, tk.WeightNormalization):
            bias = [v for v in layer.layer.trainable_variables if v.name == "bias"][0]
            ours = [layer.kernel, layer.g, bias]
        else:
            ours = [layer.kernel]
        theirs = list(block.layer.trainable_variables)
        if index < len(norms):
            inner = norms[index].normalization
            ours += list(inner.trainable_variables) + list(inner.statistics)
            theirs += list(block.normalization.trainable_variables) + list(
                block.normalization.statistics)
        assert len(ours) == len(theirs)
        pairs += list(zip(ours, theirs))
    return pairs


def tfnorm_steps(network, images, labels):
    """STEPS SGD steps of tfnorm's own training step body (``training.apply_step``, which
    the compiled Trainer runs), eagerly (no tracing to pay); their losses."""
    optimizer = optimizers.SGD(LEARNING_RATE)
    losses = []
    for k in range(STEPS):
        rows = slice(k * BATCH, (k + 1) * BATCH)
        result = network.backprop(tf.constant(images[rows]), tf.constant(labels[rows]))
        out = training.apply_step(network, optimizer, result,
                                  training.WholeBatch(tf.constant(labels[rows])), 8, False)
        losses.append(float(out["loss"]))
    return losses


@pytest.mark.parametrize("scheme", ["boxcox", "weight", "meanonly", "noisybatch"])
def test_equals_tfnorm_network_under_fit(scheme, float64, digits):
    images, labels = digits
    network = tfnorm.article_network(scheme, dtype=tf.float64, seed=3)
    model = tk.article_model(scheme, image_size=SIZE, dtype="float64", seed=3)
    if schemes.get(scheme).reparameterizes_weights:
        network.initialize_from_batch(tf.constant(images[:BATCH]))
        tk.initialize_from_batch(model, images[:BATCH])
    pairs = _states(model, network)
    for ours, theirs in pairs:  # the same start: StatelessNormal, the data-dependent init
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    initial = [np.array(b.numpy()) for _, b in pairs]

    reference = tfnorm_steps(network, images, labels)
    losses = fit(model, images, labels)
    assert relative(losses, reference) <= TOLERANCE, (losses, reference)
    error, move_error, still = compare_states([(a.numpy(), b.numpy()) for a, b in pairs],
                                              initial, [b.trainable for _, b in pairs])
    assert error <= TOLERANCE and move_error <= TOLERANCE, (error, move_error)
    assert not still, f"not moved by training: {still}"
    if scheme == "noisybatch":  # the noise counter moved once a step in both
        counters = [a for a, b in pairs if b.name.startswith("noise_step")]
        assert len(counters) == 5 and all(int(c.numpy()) == STEPS for c in counters)


# ----------------------------------------------------------------------------
# Saving and loading


def test_save_and_load_give_identical_predictions(float64, digits, tmp_path):
    images, labels = digits
    keras.utils.set_random_seed(1)  # Keras's own initializers draw from it
    inputs = keras.Input((SIZE, SIZE, 3), dtype="float64")
    x = tk.WeightNormalization(keras.layers.Conv2D(8, 3, strides=2, padding="same"))(inputs)
    x = keras.layers.ReLU()(x)
    x = tk.Normalization("noisybatch", affine=True, seed=7, momentum=0.8)(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = tk.Normalization("meanonly", affine=True)(x)
    x = keras.layers.ReLU()(x)
    x = tk.Normalization("boxcox", boxcox_lambda=1.5)(x)
    x = tk.Normalization("group", groups=2, affine=True)(x)
    x = tk.Normalization("layer", per_position_running_stats=BATCH)(x)
    x = keras.layers.GlobalAveragePooling2D()(tk.Normalization("batch", epsilon=1e-5)(x))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    tk.initialize_from_batch(model, images[:BATCH])
    model.compile(optimizer="adam", run_eagerly=True,  # no tracing: a few small steps
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[:4 * BATCH], labels[:4 * BATCH], batch_size=BATCH, verbose=0)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [json.loads(json.dumps(layer.get_config())) for layer in loaded.layers] == [
        json.loads(json.dumps(layer.get_config())) for layer in model.layers]
    for ours, theirs in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(loaded(images, training=False),
                                  model(images, training=False))
    # Training goes on alike (the noise counter, the running statistics, the optimizer),
    # the original compiled (tf.function), the loaded copy eagerly: both paths of the hook.
    model.run_eagerly, loaded.run_eagerly = False, True
    more = [images[4 * BATCH:6 * BATCH], labels[4 * BATCH:6 * BATCH]]
    compiled = model.fit(*more, batch_size=BATCH, verbose=0, shuffle=False).history["loss"]
    eager = loaded.fit(*more, batch_size=BATCH, verbose=0, shuffle=False).history["loss"]
    assert relative(eager, compiled) <= 1e-12
    assert relative(loaded(images, training=False), model(images, training=False)) <= 1e-12


# ----------------------------------------------------------------------------
# The layer's gradient against finite differences

HYPERPARAMETERS = {"batch": dict(affine=True), "layer": dict(affine=True),
                   "instance": dict(affine=True), "group": dict(affine=True, groups=2),
                   "boxcox": dict(boxcox_lambda=0.7), "meanonly": dict(affine=True),
                   "noisybatch": dict(affine=True, seed=3)}


def finite_difference_error(layer, x, training, seed=0):
    """The layer's gradient (w.r.t. x and its trainable variables) through its hook against
    central differences, on the output projected on a random direction. Run in a
    StatelessScope: running statistics and the noise counter stay put between the
    evaluations."""
    variables = list(layer.trainable_variables)
    projection = tf.constant(np.random.default_rng([seed, 1]).standard_normal(
        layer.compute_output_shape(x.shape)), tf.float64)

    # Traced once: the differences evaluate it twice per entry of every input.
    @tf.function(autograph=False)
    def projected(x, *values):
        with keras.StatelessScope(list(zip(variables, values))):
            return tf.reduce_sum(layer(x, training=training) * projection)

    inputs = [x] + [tf.constant(v.numpy()) for v in variables]
    theoretical, numerical = tf.test.compute_gradient(projected, inputs,
                                                      delta=gradcheck.FD_STEP)
    return gradcheck.max_relative_error(theoretical, numerical)


@pytest.mark.parametrize("scheme", tfnorm.SCHEMES)
def test_layer_gradient_against_finite_differences(scheme, float64):
    layer = tk.Normalization(scheme, **HYPERPARAMETERS.get(scheme, {}))
    generator = gradcheck.rng(5)
    x = tf.constant(generator.uniform(0.1, 2.0, [2, 3, 5, 4]))
    layer.build(x.shape)
    for variable in layer.trainable_variables:  # away from the initial ones and zeros
        variable.assign(variable + generator.uniform(0.2, 0.5, variable.shape))
    modes = (True, False) if scheme == "batch" else (True,)  # inference: running statistics
    for training_mode in modes:
        error = finite_difference_error(layer, x, training_mode)
        assert error <= gradcheck.FD_TOLERANCE, (scheme, training_mode, error)


def test_weight_normalization_gradient_against_finite_differences(float64):
    layer = tk.WeightNormalization(keras.layers.Conv2D(3, 3, strides=2, padding="same"))
    generator = gradcheck.rng(6)
    x = gradcheck.normal(generator, [2, 5, 5, 3])
    layer.build(x.shape)
    layer.g.assign(generator.uniform(0.5, 1.5, layer.g.shape))
    assert len(layer.trainable_variables) == 3  # v (the kernel), bias, g
    assert finite_difference_error(layer, x, training=True) <= gradcheck.FD_TOLERANCE


def test_a_broken_backward_fails_the_finite_differences(float64, monkeypatch):
    # The check can fail: batch norm's backward with epsilon dropped from 1/sqrt(var + eps).
    layer = tk.Normalization("batch", epsilon=0.5)
    x = tf.constant(gradcheck.rng(7).uniform(0.1, 2.0, [2, 3, 5, 4]))
    layer.build(x.shape)
    real = tfnorm.norms.normalizations.standardize_backward

    def without_epsilon(dxhat, cache, reduce_sum=None):
        variance = cache.variance
        broken = cache._replace(inv_std=tf.math.rsqrt(variance))
        return real(dxhat, broken, reduce_sum)

    monkeypatch.setattr(tfnorm.norms.normalizations, "standardize_backward", without_epsilon)
    assert finite_difference_error(layer, x, training=True) > 1e-2


# ----------------------------------------------------------------------------
# The registry decides


def test_a_new_scheme_appears_as_a_layer_with_no_edit(toy_scheme, float64):  # noqa: F811
    layer = tk.Normalization(toy_scheme)
    x = tf.constant(gradcheck.rng(8).standard_normal([2, 3, 3, 4]))
    y = layer(x, training=True)
    np.testing.assert_allclose(y, x - tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True),
                               rtol=0, atol=1e-15)
    assert finite_difference_error(layer, x, training=True) <= gradcheck.FD_TOLERANCE
    assert tk.Normalization.from_config(layer.get_config()).scheme == toy_scheme


def test_hyperparameters_a_scheme_does_not_take_are_refused():
    with pytest.raises(ValueError, match="scheme 'batch' takes no groups"):
        tk.Normalization("batch", groups=2)
    with pytest.raises(ValueError, match="unknown scheme 'bn'"):
        tk.Normalization("bn")
    with pytest.raises(ValueError, match="mixed precision"):
        tk.Normalization("batch", dtype="mixed_float16").build((2, 3, 3, 4))


def test_weight_layer_asks_the_registry():
    for scheme in tfnorm.SCHEMES:
        wrapped = tk.weight_layer(scheme, keras.layers.Dense(3))
        assert isinstance(wrapped, tk.WeightNormalization) == (
            schemes.get(scheme).reparameterizes_weights)


def test_importing_tfnorm_loads_neither_keras_nor_tensorflow():
    code = ("import sys, tfnorm; assert 'keras' not in sys.modules "
            "and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
