"""The loss landscape along the gradient, as Santurkar et al. (2018, section 3.1) measure it.

At a point x with gradient g, for step sizes eta_1..eta_K (the paper: [0.5, 4] x the
learning rate), the points x_k = x - eta_k g:
  - loss landscape: the losses L(x_k), of which the studies plot the range (min..max);
  - gradient predictiveness: ||grad L(x) - grad L(x_k)||_2 (small = the gradient here
    predicts the gradient a step away);
  - effective beta-smoothness: max_k ||grad L(x) - grad L(x_k)|| / ||x - x_k||.

:func:`landscape_along_gradient` takes the loss-and-gradient function as an argument,
so it can be checked on a function whose answers are known (a quadratic); the network
is reached through :class:`NetworkLandscape`, whose loss-and-gradient assigns the
weights and runs the hand-written backward, and which restores the weights afterwards.
It never touches running statistics: ``Network.backprop`` does not
(only ``Network.update_statistics`` moves them), so every point sees the same noise and
the same batch statistics behaviour as the training step it probes.
"""

import collections

import numpy as np
import tensorflow as tf

LineMeasurement = collections.namedtuple(
    "LineMeasurement", ["step_sizes", "loss", "losses", "gradient_distances", "distances",
                        "gradient_norm"])
LineMeasurement.__doc__ = """One probe along the gradient, as numpy float64 values:
step_sizes[K]; loss (at x); losses[K] (at x_k); gradient_distances[K]
= ||grad(x) - grad(x_k)||; distances[K] = ||x - x_k|| = eta_k ||g||; gradient_norm = ||g||."""


def step_sizes(learning_rate, num_points, low=0.5, high=4.0):
    """``num_points`` step sizes evenly spaced over [low, high] x learning_rate."""
    if num_points < 1:
        raise ValueError(f"the number of points along the line must be at least 1, got {num_points}")
    if num_points == 1:
        return np.array([low * learning_rate])
    return learning_rate * np.linspace(low, high, num_points)


def _flat(tensors):
    return tf.concat([tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors], axis=0)


def landscape_along_gradient(loss_and_gradient, point, sizes):
    """Probe the line x - eta g at every eta in ``sizes``.

    loss_and_gradient: callable(list of tensors) -> (scalar loss, list of gradients
    of the same shapes); point: list of tensors x. Returns a ``LineMeasurement``."""
    loss, gradient = loss_and_gradient(point)
    flat_gradient = _flat(gradient)
    losses, gradient_distances, distances = [], [], []
    for eta in sizes:
        moved = [x - tf.cast(eta, x.dtype) * g for x, g in zip(point, gradient)]
        moved_loss, moved_gradient = loss_and_gradient(moved)
        losses.append(float(moved_loss))
        gradient_distances.append(float(tf.norm(_flat(moved_gradient) - flat_gradient)))
        distances.append(float(tf.norm(_flat(point) - _flat(moved))))
    return LineMeasurement(np.asarray(sizes, np.float64), float(loss), np.array(losses),
                           np.array(gradient_distances), np.array(distances),
                           float(tf.norm(flat_gradient)))


def loss_range(measurement):
    """(min, max) of the loss along the line."""
    return float(np.min(measurement.losses)), float(np.max(measurement.losses))


def predictiveness_range(measurement):
    """(min, max) over the line of ||grad(x) - grad(x_k)||."""
    return (float(np.min(measurement.gradient_distances)),
            float(np.max(measurement.gradient_distances)))


def effective_smoothness(measurement):
    """max_k ||grad(x) - grad(x_k)|| / ||x - x_k|| (0 where the gradient is 0)."""
    distances = measurement.distances
    ratios = np.divide(measurement.gradient_distances, distances,
                       out=np.zeros_like(distances), where=distances > 0)
    return float(np.max(ratios))


class NetworkLandscape:
    """Probes the landscape of one network at its current weights, restoring them after.

    The backward pass is compiled once per instance (``probe`` may be called at every
    k-th step of a training run)."""

    def __init__(self, network):
        self.network = network
        self._gradients = tf.function(network.gradients)

    def probe(self, images, labels, sizes):
        """``LineMeasurement`` along the gradient of this batch at the current weights."""
        variables = self.network.trainable_variables
        start = [tf.identity(v) for v in variables]

        def loss_and_gradient(point):
            for variable, value in zip(variables, point):
                variable.assign(value)
            return self._gradients(images, labels)

        try:
            return landscape_along_gradient(loss_and_gradient, start, sizes)
        finally:
            for variable, value in zip(variables, start):
                variable.assign(value)
