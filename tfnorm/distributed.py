"""Data-parallel training on tf.distribute, with the hand-written gradients.

Each replica takes a contiguous slice of the global batch, in replica order
(``tfnorm.replicas``). Everything that couples the examples of a batch is summed
across replicas with ``ReplicaContext.all_reduce``, so a step on R replicas gives the
loss, gradients, update and running statistics of one replica on the whole batch:

- the loss is the mean over the global batch: replica r, holding n_r of the N
  examples, starts its backward from dloss = n_r / N;
- the weight gradients of the replicas are summed (one packed all-reduce);
- batch norm, mean-only batch norm and the noise of noisy batch norm are
  *synchronized* (:func:`synchronize`): their maths (``tfnorm.norms``) is given the
  cross-replica sum, so their means over the batch span every replica, and the noise is
  drawn for the global batch and sliced by replica; none of them depends on the number
  of replicas;
- per-sample schemes (layer, instance, group, Box-Cox, weight) need nothing:
  their parameter gradients are summed with the weight gradients.

Every variable created under :func:`scope` is a mirrored variable with
aggregation ONLY_FIRST_REPLICA: the hand-written optimizer and the running
statistics are applied in replica context, after the all-reduce, where every
replica computes the same value; the first replica's value is written to every
copy, so the copies can never drift apart.

Usage::

    strategy = distributed.make_strategy("mirrored", cpu_devices=2)
    with distributed.scope(strategy):
        net = distributed.synchronize(tfnorm.article_network("batch"))
        optimizer = tfnorm.make_optimizer("adam", 1e-3)
        trainer = distributed.DistributedTrainer(net, optimizer, strategy)
    out = trainer.train_step(global_images, global_labels)

Outside a strategy (or under the default one) the synchronized schemes compute
exactly what the local ones do. The article notebook's per-position running statistics
(``per_position_running_stats``) are refused here: a replica sees only its rows.
"""

import functools

import tensorflow as tf

from tfnorm import data, losses, training
from tfnorm.replicas import (CROSS_REPLICA, STRATEGIES, check_global_batch,  # noqa: F401
                             check_tf_config, global_rows, make_strategy, replica_bounds,
                             replica_concat, replica_slice, replica_sum, scope)


def _correct(logits, labels):
    """How many rows' arg-max equals their label (in the logits' dtype)."""
    predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), logits.dtype))


def synchronize(network):
    """Give, in place, every normalization of ``network`` the cross-replica sum (the
    schemes without batch statistics ignore it; the registry's ``synchronized`` column
    says which use it). The variables stay the same, so a checkpoint or an optimizer
    built before still applies. Returns the network."""
    for block in network.blocks:
        if getattr(block.normalization, "positions", 0):
            raise ValueError("per_position_running_stats is not supported under a "
                             "distribution strategy (a replica sees only its rows of the "
                             "batch); train on one device")
        block.normalization.synchronize(CROSS_REPLICA)
    return network


class ReplicaBatch:
    """How a replica's step sees its rows of the global batch (the distributed twin of
    ``training.WholeBatch``): accuracy and the norms of tensors split by rows are summed
    over the replicas, and the histograms gather every replica's rows."""

    def __init__(self, labels, start, global_count, num_replicas):
        self.labels, self.start, self.global_count = labels, start, global_count
        self.num_replicas = num_replicas

    def accuracy(self, logits):
        (correct,) = replica_sum([_correct(logits, self.labels)])
        return correct / tf.cast(self.global_count, logits.dtype)

    norm = staticmethod(training.norm)

    def row_norms(self, tensors):
        """The norm of each tensor over every replica's rows (float64); NaN for None."""
        squares = replica_sum([tf.reduce_sum(tf.square(tf.cast(t, tf.float64)))
                               if t is not None else tf.zeros([], tf.float64)
                               for t in tensors])
        return [tf.sqrt(s) if t is not None else tf.constant(float("nan"), tf.float64)
                for s, t in zip(squares, tensors)]

    def rows(self, tensors):
        if self.num_replicas == 1:
            return tensors
        return replica_concat(tensors, self.start, self.global_count)


class DistributedTrainer:
    """The compiled steps of ``training.Trainer`` run under a tf.distribute strategy,
    with the same outputs: ``train_step(images, labels)`` -> dict(loss, accuracy,
    layer_stats[L, len(LAYER_STATS)], finite[L + 1]); ``record_step`` adds the histograms;
    ``eval_step`` -> (sum of losses, number correct). Also ``gradients(images, labels)``
    -> (loss, grads) with no update.

    Arguments are the GLOBAL batch (every worker of a multi-worker run passes the same
    one); each replica takes its rows (``replica_bounds``). The network and optimizer
    must have been built under ``scope(strategy)`` and the network synchronized."""

    def __init__(self, network, optimizer, strategy, bins=training.DEFAULT_BINS):
        self.network, self.optimizer, self.strategy = network, optimizer, strategy
        self.bins = int(bins)
        strangers = [v.name for v in network.trainable_variables + network.statistics
                     if not strategy.extended.variable_created_in_scope(v)]
        if strangers:
            raise ValueError(f"the network's variable {strangers[0]} was not created under "
                             "distributed.scope(strategy); build the network there")
        with scope(strategy):
            optimizer.build(network.trainable_variables)
        # No tensor-dependent Python control flow here: autograph would only add seconds
        # of tracing per function (it converts every layer's source).
        compiled = functools.partial(tf.function, autograph=False)
        self.train_step = compiled(functools.partial(self._run, self._replica_step,
                                                     record=False))
        self.record_step = compiled(functools.partial(self._run, self._replica_step,
                                                      record=True))
        # Evaluation takes any batch: a small last one leaves some replicas no rows.
        self.eval_step = compiled(functools.partial(self._run, self._replica_eval,
                                                    every_replica_has_rows=False))
        self.gradients = compiled(functools.partial(self._run, self._replica_gradients))

    def train_step_from(self, iterator):
        """``train_step`` on the iterator's next global batch (as ``Trainer``'s)."""
        return self.train_step(*next(iterator))

    def record_step_from(self, iterator):
        return self.record_step(*next(iterator))

    @property
    def num_replicas(self):
        return self.strategy.num_replicas_in_sync

    def _run(self, replica_fn, images, labels, every_replica_has_rows=True, **kwargs):
        if every_replica_has_rows and images.shape[0] is not None:
            check_global_batch(images.shape[0], self.num_replicas)
        images = data.to_unit_range(images, self.network.trainable_variables[0].dtype)
        per_replica = self.strategy.run(functools.partial(replica_fn, **kwargs),
                                        args=(images, labels))
        # Every replica holds the same (all-reduced) values: the first local one speaks.
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0],
                                     per_replica)

    def _replica_backprop(self, images, labels, first_passed_gradient=False):
        """This replica's rows, and the hand-written backward of the global batch's mean
        loss from them (``Network.backprop`` with this replica's share)."""
        local_images, local_labels, start, _, global_count = replica_slice(images, labels)
        dtype = self.network.trainable_variables[0].dtype
        share = tf.cast(tf.shape(local_labels)[0], dtype) / tf.cast(global_count, dtype)
        result = self.network.backprop(local_images, local_labels, first_passed_gradient,
                                       loss_share=share, reduce_sum=replica_sum)
        return result, ReplicaBatch(local_labels, start, global_count, self.num_replicas)

    def _replica_gradients(self, images, labels):
        result, _ = self._replica_backprop(images, labels)
        return result.loss, result.grads

    def _replica_step(self, images, labels, record):
        result, batch = self._replica_backprop(images, labels, first_passed_gradient=record)
        return training.apply_step(self.network, self.optimizer, result, batch, self.bins,
                                   record)

    def _replica_eval(self, images, labels):
        """(sum of losses, number correct) over the global batch, in evaluation mode. A
        replica may get no rows of a small last batch: it adds zeros."""
        _, _, start, end, global_count = replica_slice(images, labels)
        has_rows = end > start
        # A replica without rows evaluates the batch's last row and adds zeros for it:
        # oneDNN's float32 convolution of an empty batch returns a wrongly shaped tensor.
        first = tf.where(has_rows, start, global_count - 1)
        last = tf.where(has_rows, end, global_count)
        logits, _, _ = self.network.forward(images[first:last], training=False)
        loss, _ = losses.softmax_cross_entropy_forward(logits, labels[first:last])
        count = tf.cast(last - first, loss.dtype)
        zero = tf.zeros_like(loss)
        return tuple(replica_sum([tf.where(has_rows, loss * count, zero),
                                  tf.where(has_rows, _correct(logits, labels[first:last]),
                                           zero)]))
