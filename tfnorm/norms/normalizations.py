"""The thin classes around the maths: learnable gamma/beta/lambda, running
statistics, noise counters, and the cross-replica sum of a synchronized scheme.

All schemes share one interface (:class:`Normalization`): ``forward(x, training)``
returns ``(y, cache)``, ``backward(dy, cache)`` returns ``(dx, grads)`` with
``grads`` aligned with ``trainable_variables``, and ``update_statistics(cache)``
moves running statistics after a training step (kept apart from the forward so
that evaluating a loss, e.g. along a line in the landscape study, never changes
the model). Inputs are (N, H, W, C) or, where the scheme allows it, (N, C).
"""

import collections

import tensorflow as tf

from tfnorm import checks, schemes
from tfnorm.norms.maths import (DEFAULT_EPSILON, DEFAULT_MOMENTUM, StandardizeCache,
                                affine_backward, affine_forward, boxcox_backward,
                                boxcox_forward, center_backward, center_forward,
                                standardize_backward, standardize_forward)
from tfnorm.norms.per_position import PerPositionRunningStatistics

__all__ = ["Synchronization", "BatchStatisticsCache", "Normalization", "BatchNorm",
           "LayerNorm", "InstanceNorm", "GroupNorm", "MeanOnlyBatchNorm", "Sequence",
           "BoxCox", "boxcox"]

Synchronization = collections.namedtuple("Synchronization", ["reduce_sum", "rows", "is_split"])
Synchronization.__doc__ = """How a batch split over replicas is seen whole (given by
``tfnorm.distributed``): ``reduce_sum(list of tensors)`` -> their sums over every replica;
``rows(local_count, dtype)`` -> (offset of this replica's rows in the global batch, global
count); ``is_split()`` -> whether, where it is called, the batch is split over several
replicas."""

BatchStatisticsCache = collections.namedtuple("BatchStatisticsCache", ["training", "statistics"])
BatchStatisticsCache.__doc__ = """Of a scheme with running statistics: the mode, and the
cache of its maths (a ``StandardizeCache`` or ``CenterCache``; in evaluation what the
backward needs)."""


def _all_but_last(rank):
    return list(range(rank - 1))


class Normalization:
    """Base class: the identity, i.e. the scheme 'none'."""

    name = "none"
    supported_ranks = (2, 4)

    def __init__(self, channels, dtype=tf.float32):
        self.channels = int(channels)
        self.dtype = tf.as_dtype(dtype)
        self.trainable_variables = []
        self.statistics = []  # non-trainable state, checkpointed
        self.synchronization = None

    def check(self, x, training):
        checks.require_rank(x, self.supported_ranks, f"{self.name} normalization input")
        if x.shape[-1] is not None and x.shape[-1] != self.channels:
            raise ValueError(f"{self.name} normalization was built for {self.channels} channels, "
                             f"got input of shape {x.shape}")
        return []

    def forward(self, x, training=True):
        self.check(x, training)
        return x, None

    def backward(self, dy, cache):
        return dy, []

    def batch_statistics(self, cache):
        """Pairs (running statistic, its value on the batch of ``cache``); none outside
        training."""
        return []

    def update_statistics(self, cache):
        """Move running statistics after a training step. Returns a list of ops."""
        return []

    def freeze_statistics(self, cache):
        """Set every running statistic to its value on the batch of ``cache``, so that
        evaluation mode reproduces that training-mode forward. Returns a list of ops."""
        if self.statistics and not self.batch_statistics(cache):
            raise ValueError(f"cannot freeze the statistics of {self.name!r} normalization "
                             f"at their value on one batch (they are not a function of it)")
        return [variable.assign(value) for variable, value in self.batch_statistics(cache)]

    def synchronize(self, synchronization):
        """From now on see the batch whole when it is split over replicas (only the
        schemes with batch statistics or batch-wide noise use it). Returns self."""
        self.synchronization = synchronization
        return self

    @property
    def _reduce_sum(self):
        return self.synchronization.reduce_sum if self.synchronization else None

    def _batch_is_split(self):
        return self.synchronization is not None and self.synchronization.is_split()


class _RunningStatistics(Normalization):
    """Batch statistics in training, running ones (momentum * old + (1 - momentum) * batch)
    at evaluation."""

    def __init__(self, channels, dtype, momentum):
        super().__init__(channels, dtype)
        self.momentum = float(momentum)

    def check(self, x, training):
        super().check(x, training)
        # Split over replicas, a replica may hold one example: the global batch still has
        # one per replica (``distributed.check_global_batch``), so two at least.
        if training and not self._batch_is_split():
            return checks.require_batch_above_one(x, self.description)
        return []

    def update_statistics(self, cache):
        keep = self.momentum
        return [variable.assign(keep * variable + (1 - keep) * value)
                for variable, value in self.batch_statistics(cache)]


class _Affine:
    """Optional learnable gamma/beta per channel after standardization."""

    def _make_affine(self, affine):
        self.affine = bool(affine)
        if self.affine:
            self.gamma = tf.Variable(tf.ones([self.channels], self.dtype), name="gamma")
            self.beta = tf.Variable(tf.zeros([self.channels], self.dtype), name="beta")
            self.trainable_variables = [self.gamma, self.beta]

    def _affine_forward(self, xhat):
        return affine_forward(xhat, self.gamma, self.beta) if self.affine else xhat

    def _affine_backward(self, dy, xhat):
        if not self.affine:
            return dy, []
        dxhat, dgamma, dbeta = affine_backward(dy, xhat, self.gamma)
        return dxhat, [dgamma, dbeta]


class BatchNorm(_RunningStatistics, _Affine):
    """Batch statistics (over N, H, W per channel) in training, running ones at evaluation."""

    name = "batch"
    description = "batch normalization"

    def __init__(self, channels, dtype=tf.float32, epsilon=DEFAULT_EPSILON,
                 momentum=DEFAULT_MOMENTUM, affine=False):
        super().__init__(channels, dtype, momentum)
        self.epsilon = float(epsilon)
        self._make_affine(affine)
        self.running_mean = tf.Variable(tf.zeros([channels], self.dtype), trainable=False,
                                        name="running_mean")
        self.running_variance = tf.Variable(tf.ones([channels], self.dtype), trainable=False,
                                            name="running_variance")
        self.statistics = [self.running_mean, self.running_variance]

    def forward(self, x, training=True):
        asserts = self.check(x, training)
        with tf.control_dependencies(asserts):
            if training:
                xhat, cache = standardize_forward(x, _all_but_last(x.shape.rank), self.epsilon,
                                                  self._reduce_sum)
            else:
                inv_std = tf.math.rsqrt(self.running_variance + self.epsilon)
                xhat = (x - self.running_mean) * inv_std
                cache = StandardizeCache(xhat, inv_std, None, None, None)
        return self._affine_forward(xhat), BatchStatisticsCache(training, cache)

    def backward(self, dy, cache):
        training, std_cache = cache
        dxhat, grads = self._affine_backward(dy, std_cache.xhat)
        if training:
            return standardize_backward(dxhat, std_cache, self._reduce_sum), grads
        return dxhat * std_cache.inv_std, grads

    def batch_statistics(self, cache):
        training, std_cache = cache
        if not training:
            return []
        return [(self.running_mean, tf.reshape(std_cache.mean, [-1])),
                (self.running_variance, tf.reshape(std_cache.variance, [-1]))]


class _PerSampleNorm(Normalization, _Affine):
    """Statistics per sample, the same in training and evaluation (no running statistics:
    the article's running averages for layer/instance norm were a bug; layer and instance
    norm can reproduce them, ``tfnorm.norms.per_position``)."""

    def __init__(self, channels, dtype=tf.float32, epsilon=DEFAULT_EPSILON, affine=False):
        super().__init__(channels, dtype)
        self.epsilon = float(epsilon)
        self._make_affine(affine)

    def axes(self, rank):
        raise NotImplementedError

    def forward(self, x, training=True):
        self.check(x, training)
        xhat, cache = standardize_forward(x, self.axes(x.shape.rank), self.epsilon)
        return self._affine_forward(xhat), cache

    def backward(self, dy, cache):
        dxhat, grads = self._affine_backward(dy, cache.xhat)
        return standardize_backward(dxhat, cache), grads


class LayerNorm(PerPositionRunningStatistics, _PerSampleNorm):
    """Per sample over (H, W, C), or over C for (N, C) input. ``per_position_running_stats=N``:
    evaluate with the article notebook's running statistics per batch position."""

    name = "layer"

    def axes(self, rank):
        return list(range(1, rank))


class InstanceNorm(PerPositionRunningStatistics, _PerSampleNorm):
    """Per sample and channel over (H, W). ``per_position_running_stats=N``: evaluate with
    the article notebook's running statistics per batch position."""

    name = "instance"
    supported_ranks = (4,)

    def axes(self, rank):
        return list(range(1, rank - 1))


class GroupNorm(_PerSampleNorm):
    """Per sample and group of C/G channels over (H, W, C/G). G=1 is layer norm, G=C instance."""

    name = "group"
    supported_ranks = (4,)

    def __init__(self, channels, dtype=tf.float32, epsilon=DEFAULT_EPSILON, affine=False,
                 groups=None):
        groups = schemes.default("group", "groups") if groups is None else groups
        checks.require_divides(int(groups), int(channels), "group normalization")
        super().__init__(channels, dtype, epsilon, affine)
        self.groups = int(groups)

    def forward(self, x, training=True):
        self.check(x, training)
        shape = tf.shape(x)
        grouped = tf.reshape(x, tf.concat([shape[:-1], [self.groups, self.channels // self.groups]], 0))
        xhat_grouped, cache = standardize_forward(grouped, [1, 2, 4], self.epsilon)
        xhat = tf.reshape(xhat_grouped, shape)
        return self._affine_forward(xhat), (xhat, cache)

    def backward(self, dy, cache):
        xhat, grouped_cache = cache
        dxhat, grads = self._affine_backward(dy, xhat)
        dgrouped = standardize_backward(tf.reshape(dxhat, tf.shape(grouped_cache.xhat)),
                                        grouped_cache)
        return tf.reshape(dgrouped, tf.shape(dy)), grads


class MeanOnlyBatchNorm(_RunningStatistics):
    """Salimans & Kingma: t - mean_batch(t) (+ b if affine), running mean at evaluation."""

    name = "meanonly"
    description = "mean-only batch normalization"

    def __init__(self, channels, dtype=tf.float32, momentum=DEFAULT_MOMENTUM, affine=False):
        super().__init__(channels, dtype, momentum)
        self.affine = bool(affine)
        if self.affine:
            self.beta = tf.Variable(tf.zeros([channels], self.dtype), name="beta")
            self.trainable_variables = [self.beta]
        self.running_mean = tf.Variable(tf.zeros([channels], self.dtype), trainable=False,
                                        name="running_mean")
        self.statistics = [self.running_mean]

    def forward(self, x, training=True):
        asserts = self.check(x, training)
        with tf.control_dependencies(asserts):
            if training:
                y, cache = center_forward(x, _all_but_last(x.shape.rank), self._reduce_sum)
            else:
                y, cache = x - self.running_mean, None
        if self.affine:
            y = y + self.beta
        return y, BatchStatisticsCache(training, cache)

    def backward(self, dy, cache):
        training, center_cache = cache
        grads = [tf.reduce_sum(dy, axis=_all_but_last(dy.shape.rank))] if self.affine else []
        if not training:
            return dy, grads
        return center_backward(dy, center_cache, self._reduce_sum), grads

    def batch_statistics(self, cache):
        training, center_cache = cache
        return [(self.running_mean, tf.reshape(center_cache.mean, [-1]))] if training else []


class Sequence(Normalization):
    """Several normalizations one after the other (noisy batch norm = batch norm, then noise)."""

    def __init__(self, parts, name):
        super().__init__(parts[0].channels, parts[0].dtype)
        self.parts = list(parts)
        self.name = name
        self.trainable_variables = [v for p in self.parts for v in p.trainable_variables]
        self.statistics = [v for p in self.parts for v in p.statistics]

    def forward(self, x, training=True):
        caches = []
        for part in self.parts:
            x, cache = part.forward(x, training)
            caches.append(cache)
        return x, caches

    def backward(self, dy, cache):
        grads = []
        for part, part_cache in reversed(list(zip(self.parts, cache))):
            dy, part_grads = part.backward(dy, part_cache)
            grads = part_grads + grads
        return dy, grads

    def update_statistics(self, cache):
        return [op for part, c in zip(self.parts, cache) for op in part.update_statistics(c)]

    def freeze_statistics(self, cache):
        return [op for part, c in zip(self.parts, cache) for op in part.freeze_statistics(c)]

    def synchronize(self, synchronization):
        for part in self.parts:
            part.synchronize(synchronization)
        return super().synchronize(synchronization)


class BoxCox(Normalization):
    """y = ((x + shift)^lambda - 1)/lambda with a learnable scalar lambda, exactly
    ln(x + shift) at lambda = 0. The input must stay above -shift. Defaults: the
    registry's (``tfnorm.schemes``: the article's lambda and shift)."""

    name = "boxcox"

    def __init__(self, channels, dtype=tf.float32, init_lambda=None, shift=None):
        init_lambda = schemes.default("boxcox", "boxcox_lambda") if init_lambda is None \
            else init_lambda
        shift = schemes.default("boxcox", "boxcox_shift") if shift is None else shift
        super().__init__(channels, dtype)
        self.shift = float(shift)
        self.lam = tf.Variable(tf.constant(init_lambda, self.dtype), name="boxcox_lambda")
        self.trainable_variables = [self.lam]

    def forward(self, x, training=True):
        self.check(x, training)
        u = x + self.shift
        positive = tf.debugging.assert_positive(
            u, message=f"Box-Cox input must be above {-self.shift:g} (x + {self.shift:g} > 0); "
                       f"got a value at or below it")
        with tf.control_dependencies([positive]):
            return boxcox_forward(u, self.lam)

    def backward(self, dy, cache):
        du, dlam = boxcox_backward(dy, cache)
        return du, [dlam]


# ----------------------------------------------------------------------------
# Factories the registry (``tfnorm.schemes``) names, where a class alone does not fit


def boxcox(channels, dtype=tf.float32, boxcox_lambda=None, boxcox_shift=None):
    return BoxCox(channels, dtype, boxcox_lambda, boxcox_shift)
