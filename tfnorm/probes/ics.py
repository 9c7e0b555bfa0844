"""Internal covariate shift, Definition 2.1 of Santurkar et al. (2018), on the
hand-written gradients.

For layer i at training step t, on the step's batch:
  G  = the gradient of layer i's weights with every layer at its step-t value;
  G' = the same gradient after layers 1..i-1 took their step-t update, layers i..L not.
ICS is reported as ||G - G'||_2 and cos(G, G').

:class:`ICSTrainer` measures it inside the real training step, so that the probe
costs the trajectory nothing: one forward and backward gives G for every layer, the
optimizer applies its update once (its state moves once), and each G' is one more
backward pass with the layers from i on set back to their step-t values, then
restored. Running statistics (and the noise counter of noisy schemes) move at the
end, from the first pass only, so every pass of the step sees the same noise and the
variables after the step are exactly those of ``tfnorm.training.Trainer``'s step.
"""

import tensorflow as tf

from tfnorm import losses, training


def gradient_shift(gradient, shifted_gradient):
    """(||G - G'||_2, cos(G, G')) over all entries, in float64; cos is 0 when either is 0.

    gradient, shifted_gradient: tensors of one shape."""
    before = tf.reshape(tf.cast(gradient, tf.float64), [-1])
    after = tf.reshape(tf.cast(shifted_gradient, tf.float64), [-1])
    distance = tf.norm(before - after)
    norms = tf.norm(before) * tf.norm(after)
    cosine = tf.math.divide_no_nan(tf.reduce_sum(before * after), norms)
    return distance, cosine


def block_variable_slices(network):
    """Per block, the slice of ``network.trainable_variables`` holding its variables."""
    slices, start = [], 0
    for block in network.blocks:
        slices.append(slice(start, start + len(block.trainable_variables)))
        start += len(block.trainable_variables)
    return slices


class ICSTrainer:
    """A training step that also measures ICS for the blocks in ``layers`` (0-based).

    ``measure_step(images, labels)`` -> dict(loss, accuracy, distance[P], cosine[P],
    gradient_norm[P], shifted_gradient_norm[P]) over the P probed layers, after one
    training step on the batch. ``train_step`` and ``eval_step`` are those of
    ``tfnorm.training.Trainer`` on the same network and optimizer, for the steps in
    between."""

    def __init__(self, network, optimizer, layers):
        count = len(network.blocks)
        for index in layers:
            if not 0 <= index < count:
                raise ValueError(f"layer index {index} is outside the network's {count} layers")
        self.network, self.optimizer, self.layers = network, optimizer, [int(i) for i in layers]
        self._slices = block_variable_slices(network)
        trainer = training.Trainer(network, optimizer)
        self.train_step, self.eval_step = trainer.train_step, trainer.eval_step
        self.measure_step = tf.function(self._measure_step)

    def _shifted_gradient(self, images, labels, layer, step_values, updated_values):
        """G' of ``layer``: blocks before it at their updated values (as they are when this
        is called), blocks from it on set back to ``step_values``, then restored."""
        variables = self.network.trainable_variables
        later = range(self._slices[layer].start, len(variables))
        for index in later:
            variables[index].assign(step_values[index])
        result = self.network.backprop(images, labels)
        shifted = tf.identity(result.grads[self._slices[layer].start])
        for index in later:
            variables[index].assign(updated_values[index])
        return shifted

    def _measure_step(self, images, labels):
        net = self.network
        variables = net.trainable_variables
        result = net.backprop(images, labels)
        step_values = [tf.identity(v) for v in variables]
        self.optimizer.apply(variables, result.grads)
        updated_values = [tf.identity(v) for v in variables]
        distances, cosines, gradient_norms, shifted_norms = [], [], [], []
        for layer in self.layers:
            gradient = result.grads[self._slices[layer].start]
            shifted = self._shifted_gradient(images, labels, layer, step_values, updated_values)
            distance, cosine = gradient_shift(gradient, shifted)
            distances.append(distance)
            cosines.append(cosine)
            gradient_norms.append(tf.norm(tf.cast(tf.reshape(gradient, [-1]), tf.float64)))
            shifted_norms.append(tf.norm(tf.cast(tf.reshape(shifted, [-1]), tf.float64)))
        # Last, so that the probe's passes saw this step's noise and no pass moved them.
        net.update_statistics(result.caches)
        return dict(loss=result.loss, accuracy=losses.accuracy(result.logits, labels),
                    distance=tf.stack(distances), cosine=tf.stack(cosines),
                    gradient_norm=tf.stack(gradient_norms),
                    shifted_gradient_norm=tf.stack(shifted_norms))
