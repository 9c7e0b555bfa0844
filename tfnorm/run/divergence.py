"""Where a run diverged: on the failing step's batch, replayed from the last checkpoint
(runs are deterministic), the first layer whose values are not finite, or whose outputs
are past the loss bound. Eager, on the weights before the step; changes nothing.
"""

import tensorflow as tf

from tfnorm import data


def _all_finite(tensors):
    return all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in tensors if t is not None)


def locate_divergence(network, images, labels, finite_after_step):
    """Where the first non-finite value of a step appears, as (layer, what): the first
    block whose forward output is not finite (or whose in-graph check fails); else the
    loss; else, going backward from the top, the first block whose weight gradients are
    not finite; else the first layer whose weights are not finite after the update
    (``finite_after_step``: the step's ``finite`` flags). Runs eagerly on the weights
    before the step and changes nothing."""

    images = x = data.to_unit_range(images, network.trainable_variables[0].dtype)
    for index, block in enumerate(network.blocks):
        try:
            x, _, _ = block.forward(x, training=True)
        except tf.errors.InvalidArgumentError as error:
            return index + 1, f"forward check failed: {error.message.splitlines()[0]}"
        if not _all_finite([x]):
            return index + 1, "output not finite in the forward pass"
    result = network.backprop(images, labels)
    if not _all_finite([result.loss]):
        return len(network.blocks), "loss not finite"
    for index in reversed(range(len(network.blocks))):
        start = sum(len(b.trainable_variables) for b in network.blocks[:index])
        grads = result.grads[start:start + len(network.blocks[index].trainable_variables)]
        if not _all_finite(grads):
            return index + 1, "gradient not finite in the backward pass"
    if finite_after_step is not None and not finite_after_step[1:].all():
        return int(finite_after_step[1:].argmin()) + 1, "weights not finite after the update"
    return len(network.blocks), "loss not finite"


def locate_bound(network, images, bound):
    """Where a loss past ``bound`` comes from, as (layer, its largest output magnitude):
    the first block whose forward output is larger than ``bound`` in magnitude (values
    that size make such a loss, and do not come back), else the last (the logits). Runs
    eagerly on the weights before the step and changes nothing."""
    x = data.to_unit_range(images, network.trainable_variables[0].dtype)
    for index, block in enumerate(network.blocks):
        x, _, _ = block.forward(x, training=True)
        size = float(tf.reduce_max(tf.abs(x)))
        if size > bound or index == len(network.blocks) - 1:
            return index + 1, size
