"""Santurkar et al.'s distributional noise as a normalization, and noisy batch norm
(batch norm, then the noise)."""

import tensorflow as tf

from tfnorm.norms.maths import (DEFAULT_EPSILON, DEFAULT_MOMENTUM, santurkar_noise,
                                scale_shift_backward, scale_shift_forward)
from tfnorm.norms.normalizations import BatchNorm, Normalization, Sequence

__all__ = ["DistributionNoise", "noisy_batch_norm"]


class DistributionNoise(Normalization):
    """Santurkar et al.'s noise, a <- s * a + m per sample and channel, in training only.

    Seedable and repeatable: the noise of step t is drawn from the stateless
    generator at (seed, t); t moves on in ``update_statistics``, so a loss and its
    gradients at one step see the same noise. The seed is a variable, not a constant of
    the traced step, so that one compiled step serves every seed (``runner.Builds``). Synchronized, the noise is drawn for the
    global batch and sliced by replica, so example i of the global batch gets the same
    noise on any number of replicas."""

    name = "noise"

    def __init__(self, channels, dtype=tf.float32, seed=0):
        super().__init__(channels, dtype)
        self.seed = tf.Variable(int(seed), dtype=tf.int64, trainable=False, name="noise_seed")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="noise_step")
        self.statistics = [self.step, self.seed]

    def draw(self, batch, dtype=None):
        """This step's noise (s, m) for this replica's rows, each (batch, C)."""
        dtype = dtype or self.dtype
        # Read by conversion, which Keras's variables (tfnorm.keras) support too.
        seed = tf.stack([tf.convert_to_tensor(self.seed), tf.convert_to_tensor(self.step)])
        if not self._batch_is_split():
            return santurkar_noise([batch, self.channels], seed, dtype)
        offset, global_count = self.synchronization.rows(batch, dtype)
        s, m = santurkar_noise([global_count, self.channels], seed, dtype)
        return s[offset:offset + batch], m[offset:offset + batch]

    def forward(self, x, training=True):
        self.check(x, training)
        if not training:
            return x, None
        s, m = self.draw(tf.shape(x)[0], x.dtype)
        expand = [-1] + [1] * (x.shape.rank - 2) + [self.channels]
        return scale_shift_forward(x, tf.reshape(s, expand), tf.reshape(m, expand))

    def backward(self, dy, cache):
        return (dy if cache is None else scale_shift_backward(dy, cache)), []

    def update_statistics(self, cache):
        return [self.step.assign_add(1)] if cache is not None else []


def noisy_batch_norm(channels, dtype=tf.float32, epsilon=DEFAULT_EPSILON,
                     momentum=DEFAULT_MOMENTUM, affine=False, seed=0):
    """Batch norm, then Santurkar et al.'s noise."""
    return Sequence([BatchNorm(channels, dtype, epsilon, momentum, affine),
                     DistributionNoise(channels, dtype, seed)], "noisybatch")
