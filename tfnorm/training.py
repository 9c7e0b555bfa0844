"""The compiled training step: forward, hand-written backward, optimizer update,
running statistics, and what the records need, all in one tf.function.

Per-layer statistics come out of every step as one small tensor (so an epoch's
means cost no extra pass); the four histograms per layer are computed in-graph
only by the recording step.
"""

import functools

import tensorflow as tf

from tfnorm import data, losses
from tfnorm.measures import (DEFAULT_BINS, LAYER_STATS, MAGNITUDE_DECADES,  # noqa: F401
                             NEARZERO_TAU, QUANTITIES, SUMMARY_STATS)


def nonzero_fraction(x):
    """Fraction of entries that are exactly non-zero (the article's count)."""
    return tf.math.count_nonzero(x, dtype=tf.int64) / tf.size(x, out_type=tf.int64)


def nearzero_fraction(x, norm, tau=NEARZERO_TAU):
    """Fraction of entries with |x| <= tau * RMS(x), RMS(x) = ||x|| / sqrt(size(x)), as
    float64 (``measures.NEARZERO_TAU`` says why tau). ``norm``: ||x|| (float64), which the
    step has already computed: this adds one comparison and one count. An all-zero x is
    all near zero."""
    size = tf.cast(tf.size(x), tf.float64)
    threshold = tf.cast(tau * norm / tf.sqrt(size), x.dtype)
    near = tf.reduce_sum(tf.cast(tf.abs(x) <= threshold, tf.float64))
    return near / size


def histogram(x, bins):
    """Fixed-bin histogram of x over [min, max]: (counts[bins] int64, range[2])."""
    x = tf.reshape(tf.cast(x, tf.float64), [-1])
    low, high = tf.reduce_min(x), tf.reduce_max(x)
    # A constant tensor still gets a non-empty range, centred on its value.
    pad = tf.where(high > low, tf.zeros([], tf.float64), 0.5 * tf.maximum(tf.abs(low), 1e-12))
    low, high = low - pad, high + pad
    counts = tf.histogram_fixed_width(x, tf.stack([low, high]), nbins=bins, dtype=tf.int64)
    return counts, tf.stack([low, high])


_LN10 = 2.302585092994046


def magnitude_histogram(x, bins, decades=MAGNITUDE_DECADES):
    """Fixed-bin histogram of log10 |x| over the non-zero entries of x: (counts[bins]
    int64, range[2]). The range runs from the smallest non-zero |x| to the largest, but
    at most ``decades`` below the largest (smaller entries are counted in the first bin).
    All zero: no counts, range [0, 1]."""
    x = tf.abs(tf.reshape(tf.cast(x, tf.float64), [-1]))
    largest = tf.reduce_max(x)
    some, nonzero = largest > 0, x > 0
    # Static shapes (a boolean mask made the recording step's tracing 1.5x slower): the
    # zeros stand in as the largest entry for the range, above it for the counts (the
    # last bin), and are taken out of the last bin.
    logs = tf.math.log(tf.where(nonzero, x, tf.where(some, largest, 1.0))) / _LN10
    high = tf.reduce_max(logs)
    low = tf.maximum(tf.reduce_min(logs), high - decades)
    # Entries of one magnitude still get a range, half a decade each side.
    pad = tf.where(high > low, tf.zeros([], tf.float64), tf.constant(0.5, tf.float64))
    low, high = low - pad, high + pad
    counts = tf.histogram_fixed_width(tf.where(nonzero, logs, high + 1.0),
                                      tf.stack([low, high]), nbins=bins, dtype=tf.int64)
    zeros = tf.size(x, out_type=tf.int64) - tf.math.count_nonzero(x, dtype=tf.int64)
    counts -= tf.one_hot(bins - 1, bins, on_value=zeros, off_value=tf.zeros([], tf.int64),
                         dtype=tf.int64)
    # All zero: no counts, range [0, 1].
    return (tf.where(some, counts, tf.zeros_like(counts)),
            tf.where(some, tf.stack([low, high]), tf.constant([0.0, 1.0], tf.float64)))


def summary(x):
    """SUMMARY_STATS of x (float64)."""
    x = tf.reshape(tf.cast(x, tf.float64), [-1])
    mean, variance = tf.nn.moments(x, axes=[0])
    length = tf.norm(x)
    return tf.stack([mean, tf.sqrt(variance), tf.reduce_min(x), tf.reduce_max(x),
                     length, tf.cast(nonzero_fraction(x), tf.float64),
                     nearzero_fraction(x, length)])


def norm(x, jit_compile=False):
    """||x|| over all entries, as float64."""
    if jit_compile:
        # XLA has no EuclideanNorm; it fuses the square into the sum.
        return tf.cast(tf.sqrt(tf.reduce_sum(tf.square(x))), tf.float64)
    # One reduction; tf.norm first writes the squares to a temporary as large as x.
    return tf.cast(tf.math.reduce_euclidean_norm(x), tf.float64)


def all_finite(tensors):
    """One check over all of ``tensors`` (small: a block's variables and their gradients)."""
    return tf.reduce_all(tf.math.is_finite(tf.concat([tf.reshape(t, [-1]) for t in tensors], 0)))


_NAN = float("nan")


class WholeBatch:
    """How a step sees a batch it holds whole (one process, one replica). The distributed
    step gives the same three answers for a batch split over replicas
    (``distributed.ReplicaBatch``)."""

    def __init__(self, labels, jit_compile=False):
        self.labels, self.jit_compile = labels, jit_compile

    def accuracy(self, logits):
        return losses.accuracy(logits, self.labels)

    def norm(self, x):
        """The norm of a tensor every replica holds whole (weights, their gradients)."""
        return norm(x, self.jit_compile)

    def row_norms(self, tensors):
        """The norm of each tensor whose rows are the batch's (float64); NaN for None."""
        return [self.norm(t) if t is not None else tf.constant(_NAN, tf.float64)
                for t in tensors]

    def rows(self, tensors):
        """The tensors with every row of the batch (for their histograms)."""
        return tensors


def apply_step(network, optimizer, result, batch, bins, record):
    """The body of every training step, after its forward and backward: the optimizer
    update, the running statistics, and what the records need.

    result: the step's ``Backprop`` (loss and grads of the whole batch); batch: how the
    step sees its batch (``WholeBatch``, or a replica's view of it). Returns the step's
    output dict (see ``Trainer``)."""
    # The weights the gradient was taken at (the panels' and the metrics' "weights"),
    # read before the update moves them.
    old_weights = [tf.identity(w) for w in network.layer_weights]
    with tf.control_dependencies(network.update_statistics(result.caches) + old_weights):
        updates = optimizer.apply(network.trainable_variables, result.grads)
    layer_updates = [updates[i] for i in network.weight_indices]
    passed_norms = batch.row_norms([layer.passed_gradient for layer in result.layers])
    stats, finite = [], [tf.reduce_all(tf.math.is_finite(result.loss))]
    for block, grads, layer, old, update, passed in zip(
            network.blocks, network.split_by_block(result.grads), result.layers, old_weights,
            layer_updates, passed_norms):
        finite.append(all_finite(grads + block.trainable_variables))
        gradient_norm, update_norm = batch.norm(layer.weight_gradient), batch.norm(update)
        values = {
            "nonzero_grad_frac": tf.cast(nonzero_fraction(layer.weight_gradient), tf.float64),
            "nearzero_grad_frac": nearzero_fraction(layer.weight_gradient, gradient_norm),
            "weight_grad_norm": gradient_norm, "passed_grad_norm": passed,
            "weights_norm": batch.norm(old), "update_norm": update_norm,
            "update_freq": 1.0 - nearzero_fraction(update, update_norm)}
        stats.append(tf.stack([values[name] for name in LAYER_STATS]))
    out = {"loss": result.loss,
           "accuracy": batch.accuracy(result.logits),
           "layer_stats": tf.stack(stats),
           "finite": tf.stack(finite)}
    if record:
        passed_gradients = batch.rows([layer.passed_gradient for layer in result.layers])
        out.update(histograms(
            [[layer.weight_gradient, passed, old, update] for layer, old, update, passed
             in zip(result.layers, old_weights, layer_updates, passed_gradients)], bins))
    return out


def histograms(layers, bins):
    """What a record holds of each layer's four QUANTITIES: ``layers`` is, per layer, the
    list [weight gradient, passed gradient, weights, update]. Returns dict(counts[L, 4,
    bins], ranges[L, 4, 2], summaries[L, 4, len(SUMMARY_STATS)], magnitude_counts[L, 4,
    bins], magnitude_ranges[L, 4, 2] (of log10 |x|))."""
    recorded = {name: [] for name in ("counts", "ranges", "summaries",
                                      "magnitude_counts", "magnitude_ranges")}
    for per_quantity in layers:
        for prefix, make in (("", histogram), ("magnitude_", magnitude_histogram)):
            hists = [make(q, bins) for q in per_quantity]
            recorded[prefix + "counts"].append(tf.stack([h[0] for h in hists]))
            recorded[prefix + "ranges"].append(tf.stack([h[1] for h in hists]))
        recorded["summaries"].append(tf.stack([summary(q) for q in per_quantity]))
    return {name: tf.stack(values) for name, values in recorded.items()}


class Trainer:
    """Owns the compiled steps for one network and optimizer. Every step takes images as
    uint8 (scaled by 1/255 inside the step, see ``data.to_unit_range``) or already scaled.

    ``train_step(images, labels)`` -> dict(loss, accuracy, layer_stats[L, len(LAYER_STATS)],
    finite[L + 1]); ``record_step`` also returns histograms over QUANTITIES: counts[L, 4,
    bins], ranges[L, 4, 2], summaries[L, 4, len(SUMMARY_STATS)], magnitude_counts[L, 4,
    bins], magnitude_ranges[L, 4, 2] (of log10 |x|), and computes layer 1's passed gradient.
    ``finite``: the loss, then per layer whether its gradients and weights are finite
    after the step (a divergence check that costs one reduction per variable).
    ``train_step_from(iterator)`` / ``record_step_from(iterator)``: the same steps on the
    next batch of a tf.data iterator, fetched inside the graph."""

    def __init__(self, network, optimizer, bins=DEFAULT_BINS, jit_compile=False):
        self.network, self.optimizer, self.bins = network, optimizer, int(bins)
        self.jit_compile = bool(jit_compile)
        optimizer.build(network.trainable_variables)
        # No autograph: the steps have no tensor-dependent Python control flow, and
        # converting every layer's source took 2-5x longer to trace (the first call of
        # train_step_from on 2 cores: 4-21 s with it, 2-4 s without, batch norm).
        compiled = functools.partial(tf.function, autograph=False)
        self.train_step = compiled(lambda x, y: self._step(x, y, record=False),
                                   jit_compile=jit_compile)
        self.record_step = compiled(lambda x, y: self._step(x, y, record=True),
                                    jit_compile=False)
        self.eval_step = compiled(self._eval, jit_compile=jit_compile)
        # The same steps taking their batch from a tf.data iterator inside the graph:
        # fetching it in Python costs ~0.7 ms a step on 2 cores (~5% of an article step).
        self.train_step_from = compiled(lambda it: self.train_step(*next(it)))
        self.record_step_from = compiled(lambda it: self.record_step(*next(it)))

    def _step(self, images, labels, record):
        net = self.network
        images = data.to_unit_range(images, net.trainable_variables[0].dtype)
        result = net.backprop(images, labels, first_passed_gradient=record)
        # The recording step is never compiled with XLA.
        batch = WholeBatch(labels, jit_compile=self.jit_compile and not record)
        return apply_step(net, self.optimizer, result, batch, self.bins, record)

    def _eval(self, images, labels):
        """Returns (sum of losses, number correct) on a batch, in evaluation mode."""
        images = data.to_unit_range(images, self.network.trainable_variables[0].dtype)
        logits, _, _ = self.network.forward(images, training=False)
        loss, _ = losses.softmax_cross_entropy_forward(logits, labels)
        batch = tf.cast(tf.shape(labels)[0], loss.dtype)
        return loss * batch, losses.accuracy(logits, labels) * batch
