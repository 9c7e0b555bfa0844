"""The ICS and landscape probes on cases whose answers are known."""

import numpy as np
import tensorflow as tf

import tfnorm
from tfnorm import optimizers, training
from tfnorm.probes import ics, landscape


def tiny_network(scheme, seed=3):
    """Three 3x3 convs 3-4-4-5 on 8x8 images, float64: big enough to have earlier layers."""
    return tfnorm.article_network(scheme, num_classes=5, dtype=tf.float64, seed=seed, width=4,
                                  depth=3, init_std=0.3)


def tiny_batch(seed=0, batch=6):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(0, 1, (batch, 8, 8, 3)))
    labels = tf.constant(rng.integers(0, 5, batch), tf.int32)
    return images, labels


def all_state(network, optimizer):
    return ([v.numpy() for v in network.trainable_variables]
            + [v.numpy() for v in network.statistics]
            + [v.numpy() for v in optimizer.slot_variables()] + [optimizer.iterations.numpy()])


class FrozenPrefixSGD(optimizers.SGD):
    """SGD that leaves the first ``frozen`` variables where they are."""

    def __init__(self, learning_rate, frozen_variables):
        super().__init__(learning_rate)
        self.frozen = {v.ref() for v in frozen_variables}

    def update(self, var, grad):
        if var.ref() in self.frozen:
            return tf.zeros_like(grad)
        return super().update(var, grad)


class GradientShiftTest(tf.test.TestCase):

    def test_known_values(self):
        distance, cosine = ics.gradient_shift(tf.constant([3.0, 0.0]), tf.constant([0.0, 4.0]))
        self.assertAllClose([distance, cosine], [5.0, 0.0])
        distance, cosine = ics.gradient_shift(tf.constant([1.0, 2.0]), tf.constant([-2.0, -4.0]))
        self.assertAllClose([distance, cosine], [np.sqrt(45.0), -1.0])


class ICSTest(tf.test.TestCase):

    def test_first_layer_has_no_shift(self):
        # Layer 1 has no earlier layers: G' is G, batch statistics and noise included.
        net = tiny_network("noisybatch")
        probe = ics.ICSTrainer(net, optimizers.make_optimizer("adam", 0.05), [0, 2])
        images, labels = tiny_batch()
        for _ in range(2):
            out = probe.measure_step(images, labels)
        self.assertEqual(float(out["distance"][0]), 0.0)
        self.assertAllClose(out["cosine"][0], 1.0, rtol=0, atol=1e-12)
        self.assertGreater(float(out["distance"][1]), 0.0)

    def test_frozen_earlier_layers_give_no_shift(self):
        net = tiny_network("batch")
        frozen = net.trainable_variables[:2]  # blocks 1 and 2 (one kernel each)
        probe = ics.ICSTrainer(net, FrozenPrefixSGD(0.5, frozen), [1, 2])
        out = probe.measure_step(*tiny_batch())
        self.assertEqual(float(out["distance"][0]), 0.0)
        self.assertEqual(float(out["distance"][1]), 0.0)
        self.assertGreater(float(out["gradient_norm"][1]), 0.0)

    def test_shift_equals_definition_computed_with_autodiff(self):
        # Definition 2.1 by hand: SGD moves layer 1 only, then layer 2's gradient again.
        learning_rate = 0.5
        images, labels = tiny_batch(1)
        net = tiny_network("layer")
        out = ics.ICSTrainer(net, optimizers.make_optimizer("sgd", learning_rate),
                             [1]).measure_step(images, labels)
        twin = tiny_network("layer")
        with tf.GradientTape() as tape:
            loss = twin.loss(images, labels)
        grads = tape.gradient(loss, twin.trainable_variables)
        twin.trainable_variables[0].assign_sub(learning_rate * grads[0])
        with tf.GradientTape() as tape:
            loss = twin.loss(images, labels)
        shifted = tape.gradient(loss, twin.trainable_variables)[1]
        expected_distance = np.linalg.norm(grads[1].numpy() - shifted.numpy())
        expected_cosine = (np.sum(grads[1].numpy() * shifted.numpy())
                           / np.linalg.norm(grads[1].numpy()) / np.linalg.norm(shifted.numpy()))
        self.assertGreater(expected_distance, 1e-6)
        self.assertAllClose(out["distance"][0], expected_distance, rtol=1e-9)
        self.assertAllClose(out["cosine"][0], expected_cosine, rtol=1e-9)

    def test_measured_step_is_the_training_step(self):
        # The optimizer moves once, running statistics and noise once: same state as Trainer.
        images, labels = tiny_batch(2)
        probed_net, plain_net = tiny_network("noisybatch"), tiny_network("noisybatch")
        probed_opt = optimizers.make_optimizer("adam", 0.01)
        plain_opt = optimizers.make_optimizer("adam", 0.01)
        probe = ics.ICSTrainer(probed_net, probed_opt, [1, 2])
        trainer = training.Trainer(plain_net, plain_opt)
        for _ in range(2):
            probe.measure_step(images, labels)
            trainer.train_step(images, labels)
        for probed, plain in zip(all_state(probed_net, probed_opt), all_state(plain_net, plain_opt)):
            self.assertAllClose(probed, plain, rtol=1e-12, atol=0)
        self.assertEqual(int(probed_opt.iterations.numpy()), 2)

    def test_bad_layer_index(self):
        with self.assertRaisesRegex(ValueError, "outside the network's 3 layers"):
            ics.ICSTrainer(tiny_network("none"), optimizers.make_optimizer("sgd", 0.1), [3])


class LandscapeQuadraticTest(tf.test.TestCase):
    """f(w) = 0.5 w^T A w: grad = A w, so along x - eta g the gradient changes by eta A g."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        basis, _ = np.linalg.qr(rng.normal(size=(5, 5)))
        self.eigenvalues = np.array([7.0, 3.0, 1.0, 0.5, 0.1])
        self.basis = basis
        self.matrix = basis @ np.diag(self.eigenvalues) @ basis.T
        matrix = tf.constant(self.matrix)

        def loss_and_gradient(point):
            (w,) = point
            gradient = tf.linalg.matvec(matrix, w)
            return 0.5 * tf.reduce_sum(w * gradient), [gradient]

        self.loss_and_gradient = loss_and_gradient

    def test_step_sizes_span_half_to_four_times_the_learning_rate(self):
        sizes = landscape.step_sizes(0.1, 8)
        self.assertAllClose([sizes[0], sizes[-1]], [0.05, 0.4])
        self.assertLen(sizes, 8)

    def test_eigenvector_gives_its_eigenvalue_exactly(self):
        w = tf.constant(2.0 * self.basis[:, 1])  # eigenvalue 3
        sizes = landscape.step_sizes(0.1, 6)
        line = landscape.landscape_along_gradient(self.loss_and_gradient, [w], sizes)
        self.assertAllClose(landscape.effective_smoothness(line), 3.0, rtol=1e-12)
        gradient_norm = 3.0 * 2.0
        self.assertAllClose(line.gradient_distances, sizes * 3.0 * gradient_norm, rtol=1e-12)
        # Along an eigenvector the loss is 0.5 * 3 * (2 (1 - 3 eta))^2.
        self.assertAllClose(line.losses, 0.5 * 3.0 * (2.0 * (1 - 3.0 * sizes)) ** 2, rtol=1e-12)
        self.assertAllClose(landscape.loss_range(line), (line.losses.min(), line.losses.max()))

    def test_general_point_is_bounded_by_the_top_eigenvalue(self):
        w = tf.constant(np.random.default_rng(1).normal(size=5))
        sizes = landscape.step_sizes(0.05, 5)
        line = landscape.landscape_along_gradient(self.loss_and_gradient, [w], sizes)
        gradient = self.matrix @ w.numpy()
        curvature = np.linalg.norm(self.matrix @ gradient) / np.linalg.norm(gradient)
        self.assertAllClose(landscape.effective_smoothness(line), curvature, rtol=1e-12)
        self.assertLess(landscape.effective_smoothness(line), self.eigenvalues.max())
        low, high = landscape.predictiveness_range(line)
        self.assertAllClose([low, high], [sizes[0] * np.linalg.norm(self.matrix @ gradient),
                                          sizes[-1] * np.linalg.norm(self.matrix @ gradient)],
                            rtol=1e-12)
        moved = w.numpy()[None, :] - sizes[:, None] * gradient[None, :]
        expected = 0.5 * np.einsum("ki,ij,kj->k", moved, self.matrix, moved)
        self.assertAllClose(line.losses, expected, rtol=1e-12)


class NetworkLandscapeTest(tf.test.TestCase):

    def test_probe_leaves_the_network_unchanged_and_matches_its_loss(self):
        net = tiny_network("noisybatch")
        images, labels = tiny_batch(3)
        before = [v.numpy() for v in net.trainable_variables + net.statistics]
        sizes = landscape.step_sizes(0.2, 3)
        line = landscape.NetworkLandscape(net).probe(images, labels, sizes)
        after = [v.numpy() for v in net.trainable_variables + net.statistics]
        for old, new in zip(before, after):
            self.assertAllEqual(old, new)
        loss, grads = net.gradients(images, labels)
        self.assertAllClose(line.loss, loss, rtol=1e-12)
        start = [v.numpy() for v in net.trainable_variables]
        for k, eta in enumerate(sizes):
            for variable, value, gradient in zip(net.trainable_variables, start, grads):
                variable.assign(value - eta * gradient)
            self.assertAllClose(line.losses[k], net.loss(images, labels), rtol=1e-10)
