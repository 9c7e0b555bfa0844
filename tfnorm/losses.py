"""Softmax cross-entropy, mean over the batch, integer labels: forward and backward."""

import tensorflow as tf

from tfnorm import checks


def softmax_cross_entropy_forward(logits, labels):
    """logits: (N, K) float, labels: (N,) int in [0, K).

    Returns (loss, cache): loss the scalar mean of -log softmax(logits)[label],
    computed from max-shifted logits so large logits neither overflow nor underflow."""
    checks.require_rank(logits, 2, "logits")
    checks.require_rank(labels, 1, "labels")
    shifted = logits - tf.reduce_max(logits, axis=1, keepdims=True)
    log_norm = tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=1, keepdims=True))
    log_probs = shifted - log_norm
    labels = tf.cast(labels, tf.int32)
    picked = tf.gather(log_probs, labels, axis=1, batch_dims=1)
    loss = -tf.reduce_mean(picked)
    return loss, (log_probs, labels)


def softmax_cross_entropy_backward(dloss, cache):
    """dlogits = dloss * (softmax - onehot(labels)) / N."""
    log_probs, labels = cache
    batch = tf.cast(tf.shape(log_probs)[0], log_probs.dtype)
    onehot = tf.one_hot(labels, tf.shape(log_probs)[1], dtype=log_probs.dtype)
    return (tf.cast(dloss, log_probs.dtype) / batch) * (tf.exp(log_probs) - onehot)


def accuracy(logits, labels):
    """Fraction of rows whose arg-max equals the label."""
    predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), logits.dtype))
