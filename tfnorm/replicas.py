"""tf.distribute set-up (strategies, TF_CONFIG, the variable scope) and the sums
across replicas that the distributed step and the synchronized normalizations use.

Each replica (a GPU, a logical CPU device, or a worker of a multi-worker cluster)
takes a contiguous slice of the global batch, in replica order (``replica_bounds``).
"""

import contextlib
import json
import os

import tensorflow as tf

from tfnorm import norms

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


def _batch_is_split():
    """Whether, where this runs, the batch is split over several replicas."""
    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync > 1


def replica_sum(tensors):
    """Sum a list of tensors over all replicas in sync. In cross-replica context (or
    with no strategy) the tensors already cover the whole batch: returned as they are."""
    if not _batch_is_split():
        return list(tensors)
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                          list(tensors))


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


def global_rows(local_count, replica_id, num_replicas, reduce_sum, dtype=tf.float64):
    """Where this replica's rows sit in the global batch, whatever the split: the
    replicas' counts are summed as one-hot vectors. Returns (offset, global_count), int32."""
    one_hot = tf.one_hot(replica_id, num_replicas, dtype=dtype) * tf.cast(local_count, dtype)
    (counts,) = reduce_sum([one_hot])
    counts = tf.cast(tf.round(counts), tf.int32)
    return tf.reduce_sum(counts[:replica_id]), tf.reduce_sum(counts)


def replica_slice(images, labels):
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


def replica_rows(local_count, dtype):
    """(offset of this replica's rows in the global batch, global count), in replica
    context."""
    context = tf.distribute.get_replica_context()
    return global_rows(local_count, context.replica_id_in_sync_group,
                       context.num_replicas_in_sync, replica_sum, dtype)


CROSS_REPLICA = norms.Synchronization(reduce_sum=replica_sum, rows=replica_rows,
                                      is_split=_batch_is_split)
