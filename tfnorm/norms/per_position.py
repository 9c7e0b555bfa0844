"""The article notebook's evaluation of layer and instance norm, as an option: running
averages of the per-sample statistics, kept per batch position.

His notebook updated, after each training step, running = 0.9 * running + 0.1 * batch
with ``batch`` the per-sample statistics of the step's batch (layer norm: mean and
variance over (H, W, C), shape [N, 1, 1, 1]; instance norm: over (H, W), [N, 1, 1, C]),
so the running statistic of position i averages the statistics of whichever training
image sat at position i of its batch. At test time he standardized image i of a test
batch with running[i mod N] instead of its own statistics (N the training batch size).

``PerPositionRunningStatistics`` is that option for a per-sample scheme
(``per_position_running_stats=N``; 0, the default, is off and changes nothing). The
training-mode forward and backward are the scheme's own; the running statistics move in
``update_statistics`` only (never in the forward), and are used with ``training=False``.
An evaluation batch may have any size: its row i takes position i mod N.
"""

import collections

import tensorflow as tf

from tfnorm.norms.maths import DEFAULT_EPSILON, DEFAULT_MOMENTUM, StandardizeCache

__all__ = ["PerPositionCache", "PerPositionRunningStatistics"]

PerPositionCache = collections.namedtuple("PerPositionCache", ["training", "statistics"])
PerPositionCache.__doc__ = """Of a scheme with per-position running statistics: the mode and
the ``StandardizeCache`` (in evaluation: xhat and the running 1/sqrt(var + eps) per row)."""


class PerPositionRunningStatistics:
    """Mixin placed before a per-sample normalization class (``_PerSampleNorm``: it has
    ``axes(rank)``, ``epsilon``, ``_affine_forward``/``_affine_backward``)."""

    def __init__(self, channels, dtype=tf.float32, epsilon=DEFAULT_EPSILON, affine=False,
                 momentum=DEFAULT_MOMENTUM, per_position_running_stats=0):
        super().__init__(channels, dtype, epsilon, affine)
        self.momentum = float(momentum)
        self.positions = int(per_position_running_stats)
        if self.positions < 0:
            raise ValueError(f"per_position_running_stats must be 0 (off) or the training "
                             f"batch size, got {self.positions}")
        if not self.positions:
            return
        # One statistic per sample, or per sample and channel when the channels are not
        # reduced over (instance norm).
        self.statistic_width = 1 if 3 in self.axes(4) else self.channels
        shape = [self.positions, self.statistic_width]
        self.running_mean = tf.Variable(tf.zeros(shape, self.dtype), trainable=False,
                                        name="running_mean")
        self.running_variance = tf.Variable(tf.ones(shape, self.dtype), trainable=False,
                                            name="running_variance")
        self.statistics = [self.running_mean, self.running_variance]

    def _per_row(self, variable, rows, rank):
        """running[i mod N] for rows i = 0 .. rows - 1, shaped to broadcast against x."""
        picked = tf.gather(variable, tf.range(rows) % self.positions)
        return tf.reshape(picked, tf.concat([[rows], tf.ones([rank - 2], tf.int32),
                                             [self.statistic_width]], 0))

    def forward(self, x, training=True):
        if not self.positions:
            return super().forward(x, training)
        if training:
            y, cache = super().forward(x, True)
            return y, PerPositionCache(True, cache)
        self.check(x, training)
        rank, rows = x.shape.rank, tf.shape(x)[0]
        inv_std = tf.math.rsqrt(self._per_row(self.running_variance, rows, rank)
                                + self.epsilon)
        xhat = (x - self._per_row(self.running_mean, rows, rank)) * inv_std
        return (self._affine_forward(xhat),
                PerPositionCache(False, StandardizeCache(xhat, inv_std, None, None, None)))

    def backward(self, dy, cache):
        if not self.positions:
            return super().backward(dy, cache)
        training, std_cache = cache
        if training:
            return super().backward(dy, std_cache)
        dxhat, grads = self._affine_backward(dy, std_cache.xhat)
        return dxhat * std_cache.inv_std, grads

    def batch_statistics(self, cache):
        """(running statistic, the batch's per-sample value [N, width]) pairs; none outside
        training or with the option off."""
        if not self.positions or not cache.training:
            return []
        mean, variance = cache.statistics.mean, cache.statistics.variance
        rows = tf.shape(mean)[0]
        same = tf.debugging.assert_equal(
            rows, self.positions, message=f"{self.name} normalization keeps running statistics "
            f"for {self.positions} batch positions (per_position_running_stats): a training "
            "batch must have that many samples")
        with tf.control_dependencies([same]):
            return [(self.running_mean, tf.reshape(mean, [-1, self.statistic_width])),
                    (self.running_variance, tf.reshape(variance, [-1, self.statistic_width]))]

    def update_statistics(self, cache):
        """running = momentum * running + (1 - momentum) * batch, position by position."""
        keep = self.momentum
        return [variable.assign(keep * variable + (1 - keep) * value)
                for variable, value in self.batch_statistics(cache)]
