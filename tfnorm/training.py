"""The compiled training step: forward, hand-written backward, optimizer update,
running statistics, and what the records need, all in one tf.function.

Per-layer statistics come out of every step as one small tensor (so an epoch's
means cost no extra pass); the four histograms per layer are computed in-graph
only by the recording step.
"""

import tensorflow as tf

from tfnorm import data, losses
from tfnorm.records import (DEFAULT_BINS, LAYER_STATS, QUANTITIES,  # noqa: F401
                            SUMMARY_STATS)


def nonzero_fraction(x):
    """Fraction of entries that are exactly non-zero (the article's count)."""
    return tf.math.count_nonzero(x, dtype=tf.int64) / tf.size(x, out_type=tf.int64)


def histogram(x, bins):
    """Fixed-bin histogram of x over [min, max]: (counts[bins] int64, range[2])."""
    x = tf.reshape(tf.cast(x, tf.float64), [-1])
    low, high = tf.reduce_min(x), tf.reduce_max(x)
    # A constant tensor still gets a non-empty range, centred on its value.
    pad = tf.where(high > low, tf.zeros([], tf.float64), 0.5 * tf.maximum(tf.abs(low), 1e-12))
    low, high = low - pad, high + pad
    counts = tf.histogram_fixed_width(x, tf.stack([low, high]), nbins=bins, dtype=tf.int64)
    return counts, tf.stack([low, high])


def summary(x):
    x = tf.reshape(tf.cast(x, tf.float64), [-1])
    mean, variance = tf.nn.moments(x, axes=[0])
    return tf.stack([mean, tf.sqrt(variance), tf.reduce_min(x), tf.reduce_max(x),
                     tf.norm(x), tf.cast(nonzero_fraction(x), tf.float64)])


def _norm(x):
    # One reduction; tf.norm first writes the squares to a temporary as large as x.
    return tf.cast(tf.math.reduce_euclidean_norm(x), tf.float64)


def _xla_norm(x):
    """``_norm`` under jit_compile (XLA has no EuclideanNorm; it fuses the square)."""
    return tf.cast(tf.sqrt(tf.reduce_sum(tf.square(x))), tf.float64)


def _all_finite(tensors):
    """One check over all of ``tensors`` (small: a block's variables and their gradients)."""
    return tf.reduce_all(tf.math.is_finite(tf.concat([tf.reshape(t, [-1]) for t in tensors], 0)))


class Trainer:
    """Owns the compiled steps for one network and optimizer. Every step takes images as
    uint8 (scaled by 1/255 inside the step, see ``data.to_unit_range``) or already scaled.

    ``train_step(images, labels)`` -> dict(loss, accuracy, layer_stats[L, 5], finite[L + 1]);
    ``record_step`` also returns histograms: counts[L, 4, bins], ranges[L, 4, 2],
    summaries[L, 4, 6] over QUANTITIES, and computes layer 1's passed gradient.
    ``finite``: the loss, then per layer whether its gradients and weights are finite
    after the step (a divergence check that costs one reduction per variable).
    ``train_step_from(iterator)`` / ``record_step_from(iterator)``: the same steps on the
    next batch of a tf.data iterator, fetched inside the graph."""

    def __init__(self, network, optimizer, bins=DEFAULT_BINS, jit_compile=False):
        self.network, self.optimizer, self.bins = network, optimizer, int(bins)
        self._norm = _xla_norm if jit_compile else _norm
        optimizer.build(network.trainable_variables)
        self.train_step = tf.function(lambda x, y: self._step(x, y, record=False),
                                      jit_compile=jit_compile)
        self.record_step = tf.function(lambda x, y: self._step(x, y, record=True),
                                       jit_compile=False)
        self.eval_step = tf.function(self._eval, jit_compile=jit_compile)
        # The same steps taking their batch from a tf.data iterator inside the graph:
        # fetching it in Python costs ~0.7 ms a step on 2 cores (~5% of an article step).
        self.train_step_from = tf.function(lambda it: self.train_step(*next(it)))
        self.record_step_from = tf.function(lambda it: self.record_step(*next(it)))

    def _step(self, images, labels, record):
        net = self.network
        images = data.to_unit_range(images, net.trainable_variables[0].dtype)
        result = net.backprop(images, labels, first_passed_gradient=record)
        # The weights the gradient was taken at (the panels' and the metrics' "weights"),
        # read before the update moves them.
        old_weights = [tf.identity(w) for w in net.layer_weights]
        with tf.control_dependencies(net.update_statistics(result.caches) + old_weights):
            updates = self.optimizer.apply(net.trainable_variables, result.grads)
        layer_updates = [updates[i] for i in net.weight_indices]
        stats, finite = [], [tf.reduce_all(tf.math.is_finite(result.loss))]
        # The recording step is never compiled with XLA.
        norm = _norm if record else self._norm
        block_vars = 0
        for block, layer, old, update in zip(net.blocks, result.layers, old_weights,
                                             layer_updates):
            n = len(block.trainable_variables)
            grads = result.grads[block_vars:block_vars + n]
            block_vars += n
            finite.append(_all_finite(grads + block.trainable_variables))
            passed = (norm(layer.passed_gradient) if layer.passed_gradient is not None
                      else tf.constant(float("nan"), tf.float64))
            stats.append(tf.stack([
                tf.cast(nonzero_fraction(layer.weight_gradient), tf.float64),
                norm(layer.weight_gradient), passed, norm(old), norm(update)]))
        out = {"loss": result.loss,
               "accuracy": losses.accuracy(result.logits, labels),
               "layer_stats": tf.stack(stats),
               "finite": tf.stack(finite)}
        if record:
            counts, ranges, summaries = [], [], []
            for layer, old, update in zip(result.layers, old_weights, layer_updates):
                per_quantity = [layer.weight_gradient, layer.passed_gradient, old, update]
                hists = [histogram(q, self.bins) for q in per_quantity]
                counts.append(tf.stack([h[0] for h in hists]))
                ranges.append(tf.stack([h[1] for h in hists]))
                summaries.append(tf.stack([summary(q) for q in per_quantity]))
            out.update(counts=tf.stack(counts), ranges=tf.stack(ranges),
                       summaries=tf.stack(summaries))
        return out

    def _eval(self, images, labels):
        """Returns (sum of losses, number correct) on a batch, in evaluation mode."""
        images = data.to_unit_range(images, self.network.trainable_variables[0].dtype)
        logits, _, _ = self.network.forward(images, training=False)
        loss, _ = losses.softmax_cross_entropy_forward(logits, labels)
        batch = tf.cast(tf.shape(labels)[0], loss.dtype)
        return loss * batch, losses.accuracy(logits, labels) * batch
