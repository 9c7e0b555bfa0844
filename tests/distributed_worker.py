"""Run by tests/test_distributed.py in a fresh process (logical CPU devices must be set
before TensorFlow initializes): R replicas against one replica on the whole batch.

    python tests/distributed_worker.py --devices=3 --case=2/20/eager/all/ \
        --case=3/20/graph/noisybatch/affine,noise,depth=2,size=16

A case is replicas/global batch/eager or graph/schemes (comma-separated, or all)/
options (affine, noise, depth=D, size=S: the network's depth and the image side). For
each scheme: a plain network (one replica, the whole batch) and a synchronized copy
under MirroredStrategy over the first R logical CPU devices, same seed, float64. It
compares the loss and gradients of the batch, then a training step and a recorded
step (momentum): loss, accuracy, layer statistics, histogram summaries, and after
them every variable and running statistic on every replica. Prints one JSON object:
{case: {scheme: {quantity: largest relative error}, 'cpu_seconds': ...}}.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("devices", 2, "logical CPU devices to create")
flags.DEFINE_multi_string("case", [], "replicas/batch/eager|graph/schemes/options")
FLAGS = flags.FLAGS


def relative_error(actual, expected, nan_by_design=None):
    """max |actual - expected| / max |expected|.

    The reference must be finite, except where ``nan_by_design`` (a boolean mask) is True:
    there both sides must be NaN (train_step's passed-gradient norm of layer 1, which it
    does not compute). Anywhere else a NaN or inf on either side fails: the reference
    raises, the compared side gives an infinite error. Shapes must be equal."""
    import numpy as np

    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} against the reference's {expected.shape}")
    mask = (np.zeros(expected.shape, bool) if nan_by_design is None
            else np.broadcast_to(np.asarray(nan_by_design, bool), expected.shape))
    if not np.all(np.isfinite(expected[~mask])):
        raise AssertionError("the reference is not finite")
    if not (np.all(np.isnan(expected[mask])) and np.all(np.isnan(actual[mask]))):
        return float("inf")  # a NaN by design that is not NaN on one side
    if not np.all(np.isfinite(actual[~mask])):
        return float("inf")
    actual, expected = np.where(mask, 0, actual), np.where(mask, 0, expected)
    scale = np.abs(expected).max() if expected.size else 0.0
    difference = np.abs(actual - expected).max() if expected.size else 0.0
    if scale == 0:
        return float(difference)
    return float(difference / scale)


def paired(what, actual, expected):
    """zip that refuses lists of different lengths (a missing gradient or statistic)."""
    actual, expected = list(actual), list(expected)
    if len(actual) != len(expected):
        raise AssertionError(f"{what}: {len(actual)} against the reference's {len(expected)}")
    return zip(actual, expected)


def compare_scheme(scheme, strategy, images, labels, affine, noise, depth):
    import numpy as np
    import tensorflow as tf

    import tfnorm
    from tfnorm import distributed, training

    options = dict(dtype=tf.float64, seed=7, affine=affine, noise=noise, depth=depth)
    reference = tfnorm.article_network(scheme, **options)
    reference_trainer = training.Trainer(reference, tfnorm.make_optimizer("momentum", 0.05))
    with distributed.scope(strategy):
        network = distributed.synchronize(tfnorm.article_network(scheme, **options))
        trainer = distributed.DistributedTrainer(
            network, tfnorm.make_optimizer("momentum", 0.05), strategy)

    errors = {}

    def note(name, actual, expected, nan_by_design=None):
        errors[name] = max(errors.get(name, 0.0),
                           relative_error(actual, expected, nan_by_design))

    def pairs(name, actual, expected):
        return paired(f"{scheme} {name}", actual, expected)

    loss, grads = tf.function(reference.gradients, autograph=False)(images, labels)
    distributed_loss, distributed_grads = trainer.gradients(images, labels)
    note("loss", distributed_loss, loss)
    for got, want in pairs("gradients", distributed_grads, grads):
        note("gradients", got, want)

    # The reference is always the plain recorded step (Network.backprop, then the update):
    # its outputs are train_step's plus layer 1's passed gradient and the histograms.
    passed_column = training.LAYER_STATS.index("passed_grad_norm")
    for step in ("train_step", "record_step"):
        expected = reference_trainer.record_step(images, labels)
        actual = getattr(trainer, step)(images, labels)
        note("step_loss", actual["loss"], expected["loss"])
        note("accuracy", actual["accuracy"], expected["accuracy"])
        expected_stats = expected["layer_stats"].numpy()
        nan_by_design = np.zeros(expected_stats.shape, bool)
        if step == "train_step":
            # train_step does not compute layer 1's passed gradient: its norm is NaN.
            expected_stats[0, passed_column] = float("nan")
            nan_by_design[0, passed_column] = True
        note("layer_stats", actual["layer_stats"], expected_stats, nan_by_design)
        # The fractions by name too: the near-zero fraction of the (summed) weight
        # gradient and the update frequency are the one device's.
        for name in ("nonzero_grad_frac", "nearzero_grad_frac", "update_freq"):
            column = training.LAYER_STATS.index(name)
            note(name, actual["layer_stats"][:, column], expected_stats[:, column])
        if step == "record_step":
            note("histogram_summaries", actual["summaries"], expected["summaries"])
            note("histogram_totals", tf.reduce_sum(actual["counts"], -1),
                 tf.reduce_sum(expected["counts"], -1))
            # As for the histograms: their totals (here the non-zero entries), and the top
            # of the range. Its bottom, the smallest non-zero entry of a gradient summed over
            # replicas, is a cancellation's residue, whose relative error has no bound
            # (3.6e-9 for instance norm).
            note("magnitude_totals", tf.reduce_sum(actual["magnitude_counts"], -1),
                 tf.reduce_sum(expected["magnitude_counts"], -1))
            note("magnitude_tops", actual["magnitude_ranges"][..., 1],
                 expected["magnitude_ranges"][..., 1])

    for name, mine, theirs in (("weights", network.trainable_variables,
                                reference.trainable_variables),
                               ("running_statistics", network.statistics, reference.statistics)):
        for variable, expected in pairs(name, mine, theirs):
            copies = strategy.experimental_local_results(variable)
            if len(copies) != strategy.num_replicas_in_sync:
                raise AssertionError(f"{variable.name}: {len(copies)} copies for "
                                     f"{strategy.num_replicas_in_sync} replicas")
            for copy in copies:
                note(name, copy, expected)
    errors["statistics_count"] = len(network.statistics)
    return errors


def run_case(case, devices, cross_device_ops=None):
    import numpy as np
    import tensorflow as tf

    import tfnorm

    replicas, batch, mode, schemes, options = case.split("/")
    replicas, batch, options = int(replicas), int(batch), options.split(",")
    option_values = dict(o.split("=") for o in options if "=" in o)
    if mode not in ("eager", "graph"):
        raise ValueError(f"case {case}: mode must be eager or graph")
    # Eager runs the same code as the compiled step, minus tracing: cheap enough for
    # every scheme (the replica functions are traced per replica, slowly).
    tf.config.run_functions_eagerly(mode == "eager")
    strategy = tf.distribute.MirroredStrategy(devices[:replicas], cross_device_ops)
    if strategy.num_replicas_in_sync != replicas:
        raise AssertionError(f"{strategy.num_replicas_in_sync} replicas, wanted {replicas}")
    rng = np.random.default_rng(0)
    size = int(option_values.get("size", 32))
    images = tf.constant(rng.uniform(0.0, 1.0, [batch, size, size, 3]), tf.float64)
    labels = tf.constant(rng.integers(0, 10, batch), tf.int32)
    schemes = list(tfnorm.SCHEMES) if schemes == "all" else schemes.split(",")
    depth = int(option_values.get("depth", 6))
    return {scheme: compare_scheme(scheme, strategy, images, labels, "affine" in options,
                                   "noise" in options, depth)
            for scheme in schemes}


def main(argv):
    del argv
    from tfnorm import distributed

    distributed.make_strategy("mirrored", cpu_devices=FLAGS.devices)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    tf.get_logger().setLevel("ERROR")
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    # Collective group keys are numbered per strategy: a second strategy over other
    # devices with collectives would clash with the first, so later cases reduce
    # through one device instead.
    results = {}
    for index, case in enumerate(FLAGS.case):
        start = time.process_time()
        results[case] = run_case(case, devices,
                                 None if index == 0 else tf.distribute.ReductionToOneDevice())
        results[case]["cpu_seconds"] = time.process_time() - start
    print(json.dumps(results))


if __name__ == "__main__":
    app.run(main)
