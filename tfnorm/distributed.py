"""Data-parallel training on tf.distribute, with the hand-written gradients.

Each replica (a GPU, a logical CPU device, or a worker of a multi-worker cluster)
takes a contiguous slice of the global batch, in replica order. Everything that
couples the examples of a batch is summed across replicas with
``ReplicaContext.all_reduce``, so a step on R replicas gives the loss, gradients,
update and running statistics of one replica on the whole batch:

- the loss is the mean over the global batch: replica r, holding n_r of the N
  examples, starts its backward from dloss = n_r / N;
- the weight gradients of the replicas are summed (one packed all-reduce);
- batch norm, mean-only batch norm and the noise of noisy batch norm are
  *synchronized*: their forward all-reduces the per-replica sums (sum x and the
  count, then sum (x - mean)^2), their backward all-reduces its two sums
  (sum dxhat and sum dxhat * xhat), and the noise is drawn for the global batch
  and sliced by replica, so none of them depends on the number of replicas;
- per-sample schemes (layer, instance, group, Box-Cox, weight) need nothing:
  their parameter gradients are summed with the weight gradients.

Design, the least invasive one found: the network is built as usual, under
:func:`scope`, then :func:`synchronize` swaps its batch-statistics
normalizations for synchronized subclasses that take over the same variables.
``tfnorm.network`` and ``tfnorm.norms`` are untouched; the synchronized maths
lives here as pure functions taking a ``reduce_sum`` callable (which sums a list
of tensors across replicas), beside the local ones in ``tfnorm.norms``.

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
exactly what the local ones do.
"""

import contextlib
import functools
import json
import os

import tensorflow as tf

from tfnorm import data, losses, norms, training
from tfnorm.network import Backprop, LayerGradients

STRATEGIES = ("none", "mirrored", "multiworker")

# ----------------------------------------------------------------------------
# Strategies


def check_tf_config(text):
    """Check a TF_CONFIG for a multi-worker run; return it parsed.

    Raises ValueError with one line naming the problem."""
    if not text:
        raise ValueError("--strategy=multiworker needs the TF_CONFIG environment variable "
                         '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}})')
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster.get("worker"):
        raise ValueError("TF_CONFIG has no cluster.worker list of host:port addresses")
    workers = cluster["worker"]
    if not isinstance(workers, list) or not all(
            isinstance(w, str) and w.rpartition(":")[2].isdigit() for w in workers):
        raise ValueError(f"TF_CONFIG cluster.worker must be a list of 'host:port', got {workers!r}")
    if not isinstance(task, dict) or task.get("type") not in ("worker", "chief"):
        raise ValueError("TF_CONFIG needs task.type 'worker' (or 'chief') and task.index")
    members = cluster.get(task["type"]) or []
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(members):
        raise ValueError(f"TF_CONFIG task.index {index!r} is not an index into "
                         f"cluster.{task['type']} ({len(members)} entries)")
    return config


def make_strategy(name, cpu_devices=0):
    """The tf.distribute strategy called ``name`` (one of STRATEGIES).

    'none': the default strategy (one replica, no all-reduce). 'mirrored': one
    replica per local GPU, or with ``cpu_devices`` = N > 1 one per logical CPU
    device (N of them, created here: this must run before TensorFlow has
    initialized its devices). 'multiworker': MultiWorkerMirroredStrategy over the
    cluster described by TF_CONFIG, each worker with its local GPUs or its CPU."""
    cpu_devices = int(cpu_devices or 0)
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    if cpu_devices < 0:
        raise ValueError(f"--cpu_devices must be 0 or more, got {cpu_devices}")
    if cpu_devices and name != "mirrored":
        raise ValueError(f"--cpu_devices applies to --strategy=mirrored only, not {name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = None
    if cpu_devices:
        physical = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                physical, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        except RuntimeError:
            raise ValueError("--cpu_devices: TensorFlow's devices are already initialized; "
                             "the strategy must be made before any TensorFlow work") from None
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def _first_replica_aggregation(next_creator, **kwargs):
    kwargs["aggregation"] = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return next_creator(**kwargs)


@contextlib.contextmanager
def scope(strategy):
    """``strategy.scope()`` in which every new variable is mirrored with aggregation
    ONLY_FIRST_REPLICA (so the hand-written updates can be assigned in replica
    context). Build the network, the optimizer and the trainer inside it."""
    with strategy.scope(), tf.variable_creator_scope(_first_replica_aggregation):
        yield strategy


def replica_sum(tensors):
    """Sum a list of tensors over all replicas in sync. In cross-replica context (or
    with no strategy) the tensors already cover the whole batch: returned as they are."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(tensors)
    return context.all_reduce(tf.distribute.ReduceOp.SUM, list(tensors))


def check_global_batch(batch_size, num_replicas):
    """Training needs an example on every replica: refuse smaller global batches."""
    if batch_size < num_replicas:
        raise ValueError(f"--batch_size={batch_size}: the global batch is smaller than the "
                         f"{num_replicas} replicas; use at least {num_replicas}")


def replica_bounds(global_count, replica_id, num_replicas):
    """Rows [start, end) of the global batch that replica ``replica_id`` takes: contiguous
    slices in replica order whose sizes differ by at most one."""
    start = global_count * replica_id // num_replicas
    end = global_count * (replica_id + 1) // num_replicas
    return start, end


# ----------------------------------------------------------------------------
# Pure maths of the synchronized normalizations. ``reduce_sum``: a callable taking a
# list of tensors and returning their sums over every replica (``replica_sum``).


def _local_count(x, axes, dtype):
    """Number of elements of x in one statistic over ``axes`` (as ``dtype``)."""
    return tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), dtype)


def sync_moments(x, axes, reduce_sum):
    """Mean and biased variance over ``axes`` of x on every replica together, in two
    passes (sum x and the count, then sum (x - mean)^2) as tf.nn.moments does.

    x: (N_r, ...). Returns (mean, variance) with ``axes`` kept as size 1."""
    total, count = reduce_sum([tf.reduce_sum(x, axis=axes, keepdims=True),
                               _local_count(x, axes, x.dtype)])
    mean = total / count
    (squares,) = reduce_sum([tf.reduce_sum(tf.math.squared_difference(x, mean), axis=axes,
                                           keepdims=True)])
    return mean, squares / count


def sync_standardize_forward(x, axes, eps, reduce_sum):
    """xhat = (x - mean) / sqrt(var + eps) with the statistics over ``axes`` of every
    replica's x. Returns (xhat, cache), the cache laid out as
    ``norms.standardize_forward``'s: (xhat, inv_std, axes, mean, variance)."""
    mean, variance = sync_moments(x, axes, reduce_sum)
    inv_std = tf.math.rsqrt(variance + eps)
    xhat = (x - mean) * inv_std
    return xhat, (xhat, inv_std, tuple(axes), mean, variance)


def sync_standardize_backward(dxhat, cache, reduce_sum):
    """dx = inv_std * (dxhat - mean_S dxhat - xhat * mean_S(dxhat * xhat)), the set S
    spanning every replica: the two sums (and the count) in one all-reduce.
    dxhat: the gradient of the global loss w.r.t. this replica's xhat."""
    xhat, inv_std, axes, _, _ = cache
    sum_dxhat, sum_dxhat_xhat, count = reduce_sum([
        tf.reduce_sum(dxhat, axis=axes, keepdims=True),
        tf.reduce_sum(dxhat * xhat, axis=axes, keepdims=True),
        _local_count(dxhat, axes, dxhat.dtype)])
    return inv_std * (dxhat - sum_dxhat / count - xhat * (sum_dxhat_xhat / count))


def sync_center_forward(x, axes, reduce_sum):
    """Mean-only normalization over every replica: y = x - mean. Cache as
    ``norms.center_forward``'s: (axes, mean)."""
    total, count = reduce_sum([tf.reduce_sum(x, axis=axes, keepdims=True),
                               _local_count(x, axes, x.dtype)])
    mean = total / count
    return x - mean, (tuple(axes), mean)


def sync_center_backward(dy, cache, reduce_sum):
    """dx = dy - mean_S dy, S spanning every replica."""
    axes, _ = cache
    total, count = reduce_sum([tf.reduce_sum(dy, axis=axes, keepdims=True),
                               _local_count(dy, axes, dy.dtype)])
    return dy - total / count


def global_rows(local_count, replica_id, num_replicas, reduce_sum, dtype=tf.float64):
    """Where this replica's rows sit in the global batch, whatever the split: the
    replicas' counts are summed as one-hot vectors. Returns (offset, global_count), int32."""
    one_hot = tf.one_hot(replica_id, num_replicas, dtype=dtype) * tf.cast(local_count, dtype)
    (counts,) = reduce_sum([one_hot])
    counts = tf.cast(tf.round(counts), tf.int32)
    return tf.reduce_sum(counts[:replica_id]), tf.reduce_sum(counts)


# ----------------------------------------------------------------------------
# Synchronized normalizations: subclasses of the local ones that take over their state


def _one_replica():
    context = tf.distribute.get_replica_context()
    return context is None or context.num_replicas_in_sync == 1


class _Adopting:
    @classmethod
    def adopt(cls, local):
        """The synchronized twin of ``local``: same configuration, same variables."""
        synced = object.__new__(cls)
        synced.__dict__.update(local.__dict__)
        return synced

    def check(self, x, training):
        """On one replica, the local checks (a batch of two at least). On several, a
        replica may hold a single example: the global batch still has one per replica
        (``check_global_batch``), so two at least."""
        if _one_replica():
            return super().check(x, training)
        return norms.Normalization.check(self, x, training)


class SyncBatchNorm(_Adopting, norms.BatchNorm):
    """Batch norm whose statistics cover the global batch of every replica."""

    def forward(self, x, training=True):
        if not training:
            return super().forward(x, training)
        with tf.control_dependencies(self.check(x, training)):
            xhat, cache = sync_standardize_forward(x, list(range(x.shape.rank - 1)),
                                                   self.epsilon, replica_sum)
        return self._affine_forward(xhat), (training, cache)

    def backward(self, dy, cache):
        training, std_cache = cache
        if not training:
            return super().backward(dy, cache)
        dxhat, grads = self._affine_backward(dy, std_cache[0])
        return sync_standardize_backward(dxhat, std_cache, replica_sum), grads


class SyncMeanOnlyBatchNorm(_Adopting, norms.MeanOnlyBatchNorm):
    """Mean-only batch norm whose mean covers the global batch of every replica."""

    def forward(self, x, training=True):
        if not training:
            return super().forward(x, training)
        with tf.control_dependencies(self.check(x, training)):
            y, cache = sync_center_forward(x, list(range(x.shape.rank - 1)), replica_sum)
        if self.affine:
            y = y + self.beta
        return y, (training, cache)

    def backward(self, dy, cache):
        training, center_cache = cache
        if not training:
            return super().backward(dy, cache)
        grads = [tf.reduce_sum(dy, axis=list(range(dy.shape.rank - 1)))] if self.affine else []
        return sync_center_backward(dy, center_cache, replica_sum), grads


class SyncDistributionNoise(_Adopting, norms.DistributionNoise):
    """Santurkar et al.'s noise drawn for the global batch and sliced by replica, so
    example i of the global batch gets the same noise on any number of replicas."""

    def draw(self, batch, dtype=None):
        """This replica's rows of the global batch's noise (s, m), each (batch, C)."""
        if _one_replica():
            return super().draw(batch, dtype)
        context = tf.distribute.get_replica_context()
        offset, global_count = global_rows(batch, context.replica_id_in_sync_group,
                                           context.num_replicas_in_sync, replica_sum,
                                           dtype or self.dtype)
        s, m = super().draw(global_count, dtype)
        return s[offset:offset + batch], m[offset:offset + batch]


_SYNCHRONIZED = ((norms.BatchNorm, SyncBatchNorm),
                 (norms.MeanOnlyBatchNorm, SyncMeanOnlyBatchNorm),
                 (norms.DistributionNoise, SyncDistributionNoise))


def synchronized(normalization):
    """The synchronized version of a normalization (sharing its variables); schemes
    without batch statistics are returned as they are."""
    if isinstance(normalization, norms.Sequence):
        normalization.parts = [synchronized(part) for part in normalization.parts]
        return normalization
    for local_class, synced_class in _SYNCHRONIZED:
        if type(normalization) is local_class:
            return synced_class.adopt(normalization)
    return normalization


def synchronize(network):
    """Swap, in place, every batch-statistics normalization of ``network`` for its
    synchronized twin (same variables, so a checkpoint or an optimizer built before
    still applies). Returns the network."""
    for block in network.blocks:
        block.normalization = synchronized(block.normalization)
    return network


# ----------------------------------------------------------------------------
# The distributed step


def _replica_slice(images, labels):
    """This replica's rows [start, end) of the global batch (in replica context).
    Returns (images, labels, start, end, global count), the last three int32 scalars."""
    context = tf.distribute.get_replica_context()
    global_count = tf.shape(labels)[0]
    start, end = replica_bounds(global_count, context.replica_id_in_sync_group,
                                context.num_replicas_in_sync)
    return images[start:end], labels[start:end], start, end, global_count


def replica_concat(tensors, start, global_count):
    """Each tensor's rows of every replica, concatenated in replica order: this
    replica's rows are padded with zeros to their place in the global batch and the
    padded tensors summed (adding zeros is exact). Unlike ``all_gather`` this also
    runs eagerly; it moves R times the data, so it is for the rare recording steps."""
    padded = []
    for tensor in tensors:
        after = global_count - start - tf.shape(tensor)[0]
        padding = [[start, after]] + [[0, 0]] * (tensor.shape.rank - 1)
        padded.append(tf.pad(tensor, padding))
    return replica_sum(padded)


def replica_backprop(network, images, labels, global_count, first_passed_gradient=False):
    """Forward and hand-written backward of one replica's slice, for the loss averaged
    over the global batch. Returns a ``Backprop`` whose loss and grads are global
    (summed over replicas, identical everywhere); logits, layers' passed gradients
    and records are this replica's slice."""
    logits, caches, records = network.forward(images, training=True)
    loss, loss_cache = losses.softmax_cross_entropy_forward(logits, labels)
    local_count = tf.cast(tf.shape(labels)[0], loss.dtype)
    share = local_count / tf.cast(global_count, loss.dtype)
    dlogits = losses.softmax_cross_entropy_backward(share, loss_cache)
    _, local_grads, passed = network.backward(dlogits, caches,
                                              need_input_grad=first_passed_gradient)
    grads = replica_sum(local_grads)
    (global_loss,) = replica_sum([share * loss])
    per_layer = [LayerGradients(grads[i], p, b.layer.weights, r["pre_activation"],
                                r["activation"], r["output"])
                 for b, i, p, r in zip(network.blocks, network.weight_indices, passed, records)]
    return Backprop(global_loss, logits, grads, per_layer, caches)


def _norm(x):
    return tf.cast(tf.norm(tf.reshape(x, [-1])), tf.float64)


class DistributedTrainer:
    """The compiled steps of ``training.Trainer`` run under a tf.distribute strategy,
    with the same outputs: ``train_step(images, labels)`` -> dict(loss, accuracy,
    layer_stats[L, 5], finite[L + 1]); ``record_step`` adds counts, ranges, summaries;
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
        self.eval_step = compiled(functools.partial(self._run, self._replica_eval))
        self.gradients = compiled(functools.partial(self._run, self._replica_gradients))

    def train_step_from(self, iterator):
        """``train_step`` on the iterator's next global batch (as ``Trainer``'s)."""
        return self.train_step(*next(iterator))

    def record_step_from(self, iterator):
        return self.record_step(*next(iterator))

    @property
    def num_replicas(self):
        return self.strategy.num_replicas_in_sync

    def _run(self, replica_fn, images, labels, **kwargs):
        if images.shape[0] is not None and replica_fn is not self._replica_eval:
            check_global_batch(images.shape[0], self.num_replicas)
        images = data.to_unit_range(images, self.network.trainable_variables[0].dtype)
        per_replica = self.strategy.run(functools.partial(replica_fn, **kwargs),
                                        args=(images, labels))
        # Every replica holds the same (all-reduced) values: the first local one speaks.
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0],
                                     per_replica)

    def _replica_gradients(self, images, labels):
        local_images, local_labels, _, _, global_count = _replica_slice(images, labels)
        result = replica_backprop(self.network, local_images, local_labels, global_count)
        return result.loss, result.grads

    def _replica_step(self, images, labels, record):
        net = self.network
        local_images, local_labels, start, _, global_count = _replica_slice(images, labels)
        dtype = net.trainable_variables[0].dtype
        result = replica_backprop(net, local_images, local_labels, global_count,
                                  first_passed_gradient=record)
        # The weights the gradient was taken at, read before the update (as in Trainer).
        old_weights = [tf.identity(w) for w in net.layer_weights]
        with tf.control_dependencies(net.update_statistics(result.caches) + old_weights):
            updates = self.optimizer.apply(net.trainable_variables, result.grads)
        layer_updates = [updates[i] for i in net.weight_indices]

        # The passed gradient is split by rows over the replicas: its norm and (when
        # recording) its histogram need every replica's part.
        passed_squares = [tf.reduce_sum(tf.square(layer.passed_gradient))
                          if layer.passed_gradient is not None else tf.zeros([], dtype)
                          for layer in result.layers]
        correct = tf.reduce_sum(tf.cast(tf.equal(
            tf.argmax(result.logits, axis=1, output_type=tf.int32),
            tf.cast(local_labels, tf.int32)), dtype))
        global_correct, *passed_squares = replica_sum([correct] + passed_squares)

        stats, finite = [], [tf.reduce_all(tf.math.is_finite(result.loss))]
        block_vars = 0
        for block, layer, old, update, squares in zip(net.blocks, result.layers, old_weights,
                                                      layer_updates, passed_squares):
            n = len(block.trainable_variables)
            grads = result.grads[block_vars:block_vars + n]
            block_vars += n
            finite.append(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]
                                        + [tf.reduce_all(tf.math.is_finite(v))
                                           for v in block.trainable_variables]))
            passed = (tf.sqrt(tf.cast(squares, tf.float64)) if layer.passed_gradient is not None
                      else tf.constant(float("nan"), tf.float64))
            stats.append(tf.stack([
                tf.cast(training.nonzero_fraction(layer.weight_gradient), tf.float64),
                _norm(layer.weight_gradient), passed, _norm(old), _norm(update)]))
        out = {"loss": result.loss,
               "accuracy": global_correct / tf.cast(global_count, dtype),
               "layer_stats": tf.stack(stats),
               "finite": tf.stack(finite)}
        if record:
            passed_gradients = [layer.passed_gradient for layer in result.layers]
            if self.num_replicas > 1:
                passed_gradients = replica_concat(passed_gradients, start, global_count)
            counts, ranges, summaries = [], [], []
            for layer, old, update, passed in zip(result.layers, old_weights, layer_updates,
                                                  passed_gradients):
                per_quantity = [layer.weight_gradient, passed, old, update]
                hists = [training.histogram(q, self.bins) for q in per_quantity]
                counts.append(tf.stack([h[0] for h in hists]))
                ranges.append(tf.stack([h[1] for h in hists]))
                summaries.append(tf.stack([training.summary(q) for q in per_quantity]))
            out.update(counts=tf.stack(counts), ranges=tf.stack(ranges),
                       summaries=tf.stack(summaries))
        return out

    def _replica_eval(self, images, labels):
        """(sum of losses, number correct) over the global batch, in evaluation mode. A
        replica may get no rows of a small last batch: it adds zeros."""
        local_images, local_labels, start, end, _ = _replica_slice(images, labels)
        local_count = end - start
        logits, _, _ = self.network.forward(local_images, training=False)
        loss, _ = losses.softmax_cross_entropy_forward(logits, local_labels)
        count = tf.cast(local_count, loss.dtype)
        loss_sum = tf.where(local_count > 0, loss * count, tf.zeros_like(loss))
        correct = tf.reduce_sum(tf.cast(tf.equal(
            tf.argmax(logits, axis=1, output_type=tf.int32), tf.cast(local_labels, tf.int32)),
            loss.dtype))
        loss_sum, correct = replica_sum([loss_sum, correct])
        return loss_sum, correct
