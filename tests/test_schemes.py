"""tfnorm.schemes, the registry: every row builds what it says, and a new scheme needs
nothing but its row, its maths and its tests.

The toy scheme below (per-sample centering, y = x - mean over (H, W, C), no
hyperparameter) is registered for one test only, by monkeypatching the registry and
``tfnorm.norms`` (where its class would live): the article network builds with it, its
hand-written gradients equal GradientTape's, and the compiled training step runs on it."""

import collections
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import gradcheck
import tfnorm
from tfnorm import norms, optimizers, schemes, training


def test_importing_the_registry_loads_no_tensorflow():
    code = "import sys, tfnorm.schemes; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("scheme", tfnorm.SCHEMES)
def test_every_row_builds_a_normalization_that_does_what_the_row_says(scheme):
    row = schemes.get(scheme)
    norm = schemes.build(scheme, 6, tf.float64, epsilon=1e-5, momentum=0.9, affine=True,
                         groups=3, boxcox_lambda=1.5, boxcox_shift=1.0, seed=2)
    assert isinstance(norm, norms.Normalization)
    assert bool(norm.statistics) == row.uses_batch_statistics
    assert schemes.min_batch_size(scheme) == (2 if row.uses_batch_statistics else 1)
    # synchronized: the training forward sums over the batch through the given sum.
    calls = collections.Counter()

    def counting_sum(tensors):
        calls["sum"] += 1
        return list(tensors)

    norm.synchronize(norms.Synchronization(counting_sum, rows=None, is_split=lambda: False))
    x = tf.constant(gradcheck.rng(0).uniform(0.1, 1.0, [4, 3, 3, 6]))
    norm.forward(x, training=True)
    assert (calls["sum"] > 0) == row.synchronized
    network = tfnorm.article_network(scheme, depth=2)
    assert network.blocks[0].layer.weight_norm == row.reparameterizes_weights


def test_unknown_schemes_and_hyperparameters_are_named():
    with pytest.raises(ValueError, match="unknown scheme 'bn'; expected one of none, batch"):
        schemes.build("bn", 6, tf.float64)
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        schemes.build("batch", 6, tf.float64, gamma=2.0)


class PerSampleCentering(norms.Normalization):
    """y = x - mean over every axis but the batch's."""

    name = "toy"

    def forward(self, x, training=True):
        self.check(x, training)
        return norms.center_forward(x, list(range(1, x.shape.rank)))

    def backward(self, dy, cache):
        return norms.center_backward(dy, cache), []


@pytest.fixture
def toy_scheme(monkeypatch):
    monkeypatch.setattr(norms, "PerSampleCentering", PerSampleCentering, raising=False)
    monkeypatch.setitem(schemes.REGISTRY, "toy", schemes.Scheme(
        "toy", "norms:PerSampleCentering", False, False, {}, False, "any",
        "per-sample centering"))
    return "toy"


def test_a_new_scheme_needs_only_its_row_and_its_maths(toy_scheme):
    images = tf.constant(gradcheck.rng(1).random([3, 16, 16, 3]))
    labels = tf.constant([1, 4, 7])
    network = tfnorm.article_network(toy_scheme, dtype=tf.float64, depth=4, seed=1)
    assert [type(b.normalization) for b in network.blocks[:-1]] == [PerSampleCentering] * 3

    loss, grads = network.gradients(images, labels)
    with tf.GradientTape() as tape:
        tape_loss = network.loss(images, labels)
    tape_grads = tape.gradient(tape_loss, network.trainable_variables)
    np.testing.assert_allclose(loss, tape_loss, rtol=1e-12)
    error, skipped = gradcheck.gradients_relative_error(grads, tape_grads, tf.float64)
    assert error <= 1e-8 and skipped == [], (error, skipped)

    trainer = training.Trainer(network, optimizers.make_optimizer("adam", 0.01))
    losses = [float(trainer.train_step(images, labels)["loss"]) for _ in range(5)]
    recorded = trainer.record_step(images, labels)
    assert bool(tf.reduce_all(recorded["finite"]))
    assert losses[-1] < losses[0]
    assert tfnorm.mlp_network(toy_scheme, depth=2).blocks[0].normalization.name == "toy"
