"""tfnorm.distributed: synchronized normalizations and the distributed step.

The equivalence tests need several logical CPU devices, which must be configured
before TensorFlow initializes: they run tests/distributed_worker.py in a subprocess.
The rest runs here, under the default strategy (one replica)."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tfnorm import distributed, norms
from tfnorm.run import records

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-10
BATCH_SCHEMES = ("batch", "meanonly", "noisybatch")  # those with running statistics


def _worker_results(*cases, devices):
    command = [sys.executable, os.path.join(HERE, "distributed_worker.py"),
               f"--devices={devices}"] + [f"--case={case}" for case in cases]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# The compiled steps (train_step / record_step, what training runs) for the other
# schemes with batch statistics and for one without.
COMPILED_CASE = "2/20/graph/batch,meanonly,layer/depth=2,size=16"


@pytest.fixture(scope="module")
def replica_results():
    # One process for both cases: TensorFlow's start-up is paid once.
    return _worker_results("2/20/eager/all/",
                           "3/20/graph/noisybatch/affine,noise,depth=2,size=16",
                           COMPILED_CASE, devices=3)


def _check_case(errors, schemes):
    assert sorted(errors) == sorted(schemes)
    for scheme, quantities in errors.items():
        quantities = dict(quantities)
        statistics = quantities.pop("statistics_count")
        for name, error in quantities.items():
            assert error <= TOLERANCE, f"{scheme}: {name} relative error {error:.3g}"
        expected = {"loss", "gradients", "step_loss", "accuracy", "layer_stats",
                    "nearzero_grad_frac", "update_freq", "histogram_summaries",
                    "histogram_totals", "magnitude_totals", "magnitude_tops", "weights"}
        assert expected <= set(quantities), f"{scheme}: compared only {sorted(quantities)}"
        if scheme in BATCH_SCHEMES:
            assert statistics > 0 and "running_statistics" in quantities, scheme


def test_two_replicas_of_ten_equal_one_replica_of_twenty_for_every_scheme(replica_results):
    errors = dict(replica_results["2/20/eager/all/"])
    errors.pop("cpu_seconds")
    _check_case(errors, tfnorm.SCHEMES)


def test_three_uneven_replicas_compiled_with_affine_and_noise(replica_results):
    # 20 rows over 3 replicas: 6, 7, 7. Compiled (tf.function), learnable gamma/beta,
    # and a second noise after each normalization.
    errors = dict(replica_results["3/20/graph/noisybatch/affine,noise,depth=2,size=16"])
    errors.pop("cpu_seconds")
    _check_case(errors, ["noisybatch"])


def test_two_replicas_compiled_for_batch_mean_only_and_layer_norm(replica_results):
    errors = dict(replica_results[COMPILED_CASE])
    errors.pop("cpu_seconds")
    _check_case(errors, ["batch", "meanonly", "layer"])


# ----------------------------------------------------------------------------
# In this process: the pure maths, the swap, and the checks.


def test_worker_comparison_cannot_pass_by_accident():
    sys.path.insert(0, HERE)
    try:
        import distributed_worker as worker
    finally:
        sys.path.remove(HERE)
    nan = float("nan")
    stats = np.array([[1.0, nan], [2.0, 3.0]])
    designed = np.array([[False, True], [False, False]])
    assert worker.relative_error(stats, stats, designed) == 0.0
    # NaN == NaN counts only where it is NaN by design...
    with pytest.raises(AssertionError, match="reference is not finite"):
        worker.relative_error([[1.0, nan], [2.0, nan]], [[1.0, nan], [2.0, nan]], designed)
    with pytest.raises(AssertionError, match="reference is not finite"):
        worker.relative_error([1.0, nan], [1.0, nan])
    assert worker.relative_error([1.0, nan], [1.0, 2.0]) == float("inf")
    assert worker.relative_error([1.0, np.inf], [1.0, 2.0]) == float("inf")
    # ... and there it must be NaN on both sides.
    assert worker.relative_error([[1.0, 0.5], [2.0, 3.0]], stats, designed) == float("inf")
    with pytest.raises(AssertionError, match="shape"):
        worker.relative_error([1.0, 2.0], [1.0, 2.0, 3.0])
    # Lists of gradients or statistics of different lengths are refused, not truncated.
    with pytest.raises(AssertionError, match="gradients: 2 against the reference's 3"):
        list(worker.paired("gradients", [1, 2], [1, 2, 3]))
    assert list(worker.paired("weights", [1], [2])) == [(1, 2)]


def _random(shape, seed):
    return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float64)


def _identity_sum(tensors):
    return list(tensors)


def test_sync_standardize_with_one_replica_is_the_local_maths():
    x, dxhat = _random([5, 3, 4, 6], 0), _random([5, 3, 4, 6], 1)
    axes = [0, 1, 2]
    xhat, cache = norms.standardize_forward(x, axes, 1e-5, reduce_sum=_identity_sum)
    expected_xhat, expected_cache = norms.standardize_forward(x, axes, 1e-5)
    np.testing.assert_allclose(xhat, expected_xhat, rtol=1e-12, atol=1e-13)
    for got, want in zip(cache[3:], expected_cache[3:]):  # mean, variance
        np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(norms.standardize_backward(dxhat, cache, _identity_sum),
                               norms.standardize_backward(dxhat, expected_cache),
                               rtol=1e-10, atol=1e-12)


def test_sync_center_with_one_replica_is_the_local_maths():
    x, dy = _random([4, 7], 2), _random([4, 7], 3)
    y, cache = norms.center_forward(x, [0], reduce_sum=_identity_sum)
    expected_y, expected_cache = norms.center_forward(x, [0])
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(norms.center_backward(dy, cache, _identity_sum),
                               norms.center_backward(dy, expected_cache), rtol=1e-12,
                               atol=1e-14)


def test_replica_bounds_cover_the_batch_in_order_with_sizes_one_apart():
    for count, replicas in ((20, 2), (20, 3), (7, 7), (5, 4)):
        bounds = [distributed.replica_bounds(count, r, replicas) for r in range(replicas)]
        assert bounds[0][0] == 0 and bounds[-1][1] == count
        assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))
        sizes = [end - start for start, end in bounds]
        assert max(sizes) - min(sizes) <= 1, (count, replicas, sizes)


def test_global_rows_place_a_replica_after_the_ones_before_it():
    counts = tf.constant([6.0, 7.0, 7.0], tf.float64)

    def summed_counts(tensors):
        # What the all-reduce of the three replicas' one-hot counts returns.
        (one_hot,) = tensors
        assert one_hot.shape == [3]
        return [counts]

    for replica, expected_offset in ((0, 0), (1, 6), (2, 13)):
        offset, total = distributed.global_rows(int(counts[replica]), replica, 3, summed_counts)
        assert (int(offset), int(total)) == (expected_offset, 20)


def test_synchronize_swaps_batch_statistics_and_keeps_the_variables():
    network = tfnorm.article_network("noisybatch", depth=3, affine=True)
    variables = [id(v) for v in network.trainable_variables + network.statistics]
    distributed.synchronize(network)
    assert [id(v) for v in network.trainable_variables + network.statistics] == variables
    for block in network.blocks[:-1]:
        parts = block.normalization.parts
        assert [type(p) for p in parts] == [norms.BatchNorm, norms.DistributionNoise]
        assert all(p.synchronization is distributed.CROSS_REPLICA for p in parts)
        assert parts[0].running_mean is block.statistics[0]
        assert parts[0].gamma is block.normalization.trainable_variables[0]
    assert distributed.synchronize(network) is network  # idempotent
    assert network.blocks[0].normalization.parts[0].synchronization is distributed.CROSS_REPLICA

    meanonly = distributed.synchronize(tfnorm.article_network("meanonly", depth=2))
    assert meanonly.blocks[0].normalization.synchronization is distributed.CROSS_REPLICA
    layer = tfnorm.article_network("layer", depth=2)
    before = layer.blocks[0].normalization
    assert distributed.synchronize(layer).blocks[0].normalization is before


def test_synchronized_network_without_a_strategy_computes_what_the_plain_one_does():
    images = tf.random.stateless_uniform([6, 16, 16, 3], [1, 2], dtype=tf.float64)
    labels = tf.constant([0, 1, 2, 3, 4, 5])
    for scheme in BATCH_SCHEMES:
        plain = tfnorm.article_network(scheme, depth=3, dtype=tf.float64)
        synced = distributed.synchronize(tfnorm.article_network(scheme, depth=3,
                                                                dtype=tf.float64))
        loss, grads = plain.gradients(images, labels)
        synced_loss, synced_grads = synced.gradients(images, labels)
        np.testing.assert_allclose(synced_loss, loss, rtol=1e-12)
        for got, want in zip(synced_grads, grads):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-14)


def test_synchronized_batch_statistics_on_one_replica_refuse_a_batch_of_one():
    for local in (norms.BatchNorm(3, tf.float64), norms.MeanOnlyBatchNorm(3, tf.float64)):
        with pytest.raises(ValueError, match="batch of at least 2 examples"):
            local.synchronize(distributed.CROSS_REPLICA).forward(tf.ones([1, 3], tf.float64),
                                                                 training=True)


@pytest.mark.parametrize("text, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "not valid JSON"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "no cluster.worker"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "list of 'host:port'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "task.index 2"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task.type"),
])
def test_bad_tf_config_is_refused_with_one_line(text, message):
    with pytest.raises(ValueError, match=message) as error:
        distributed.check_tf_config(text)
    assert "\n" not in str(error.value)


def test_good_tf_config_is_accepted():
    config = distributed.check_tf_config(
        '{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, '
        '"task": {"type": "worker", "index": 1}}')
    assert config["task"]["index"] == 1


def test_make_strategy_refuses_bad_names_and_flags():
    with pytest.raises(ValueError, match="unknown strategy 'tpu'"):
        distributed.make_strategy("tpu")
    with pytest.raises(ValueError, match="--cpu_devices applies to --strategy=mirrored"):
        distributed.make_strategy("none", cpu_devices=2)
    with pytest.raises(ValueError, match="--cpu_devices must be 0 or more"):
        distributed.make_strategy("mirrored", cpu_devices=-1)
    assert distributed.make_strategy("none").num_replicas_in_sync == 1


def test_trainer_refuses_a_network_built_outside_the_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    network = tfnorm.article_network("batch", depth=2)
    with distributed.scope(strategy):
        optimizer = tfnorm.make_optimizer("sgd", 0.1)
    with pytest.raises(ValueError, match="not created under distributed.scope"):
        distributed.DistributedTrainer(network, optimizer, strategy)
    with distributed.scope(strategy):
        network = distributed.synchronize(tfnorm.article_network("batch", depth=2))
        assert network.trainable_variables[0].aggregation == \
            tf.VariableAggregation.ONLY_FIRST_REPLICA
        trainer = distributed.DistributedTrainer(network, optimizer, strategy)
    assert trainer.num_replicas == 1


def test_a_global_batch_smaller_than_the_replicas_is_refused():
    distributed.check_global_batch(2, 2)
    with pytest.raises(ValueError, match="--batch_size=1: the global batch is smaller than "
                                         "the 2 replicas"):
        distributed.check_global_batch(1, 2)


# ----------------------------------------------------------------------------
# experiments.article.train --strategy=multiworker: two local workers against one process.

ROOT = os.path.dirname(HERE)
TINY_RUN = ["--scheme=batch", "--epochs=1", "--image_size=16", "--train_limit=100",
            "--test_limit=50", "--nopanels", "--noprogress"]
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
# The per-layer measures a driver adds: continuous (to float32 rounding) and fractions of
# entries, which the all-reduce's other order of sums may move by an entry at a threshold.
LAYER_METRICS = tuple(f"{name}_{layer}" for name in ("weight_movement", "update_norm")
                      for layer in range(1, 7))
LAYER_FRACTIONS = tuple(f"{name}_{layer}" for name in ("nonzero_grad_frac",
                                                        "nearzero_grad_frac", "update_freq")
                        for layer in range(1, 7))


def _free_loopback_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _train(out_dir, *flags, tf_config=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.article.train", f"--out_dir={out_dir}", *TINY_RUN, *flags],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _metrics(out_dir):
    return records.read_metrics(str(out_dir))


def _finish(processes, deadline):
    """Wait for every process until the test's one deadline; kill what is left then.
    Returns each one's output."""
    outputs = {}
    try:
        for name, process in processes.items():
            outputs[name], _ = process.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def test_two_workers_and_two_cpu_replicas_end_with_the_metrics_of_one_process(tmp_path):
    """The command lines a user runs: --strategy=multiworker as two processes on
    127.0.0.1, --strategy=mirrored on two logical CPU devices, and one plain process.
    At most two TensorFlow processes at a time (2 cores), one deadline for the whole
    test, and the workers' ports taken again if another process bound one first."""
    deadline = time.monotonic() + 600
    started = {"single": _train(tmp_path / "single"),
               "mirrored": _train(tmp_path / "mirrored", "--strategy=mirrored",
                                  "--cpu_devices=2")}
    outputs = _finish(started, deadline)
    for _ in range(3):
        # The ports are free when chosen, but released before TensorFlow binds them:
        # another process may take one in between; then both workers start again.
        cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_loopback_ports(2)]}
        workers = {f"worker{index}": _train(
            tmp_path / f"worker{index}", "--strategy=multiworker", "--overwrite",
            tf_config={"cluster": cluster, "task": {"type": "worker", "index": index}})
            for index in range(2)}
        worker_outputs = _finish(workers, deadline)
        if not any("ddress already in use" in text for text in worker_outputs.values()):
            break
    outputs.update(worker_outputs)
    started.update(workers)
    for name, process in started.items():
        assert process.returncode == 0, f"{name}:\n{outputs.get(name, '')[-3000:]}"

    single = _metrics(tmp_path / "single")
    assert len(single) == 1
    for index in range(2):
        worker = _metrics(tmp_path / f"worker{index}")
        assert [row["epoch"] for row in worker] == [1]
        for key in METRICS + LAYER_METRICS:
            # float32, and the all-reduce adds the replicas' sums in another order.
            assert worker[0][key] == pytest.approx(single[0][key], rel=1e-5), key
        for key in LAYER_FRACTIONS:
            assert worker[0][key] == pytest.approx(single[0][key], abs=1e-3), key
        stored = records.read_config(str(tmp_path / f"worker{index}"))
        assert stored["strategy"] == "multiworker"
    mirrored = _metrics(tmp_path / "mirrored")
    assert [row["epoch"] for row in mirrored] == [1]
    for key in METRICS + LAYER_METRICS:
        assert mirrored[0][key] == pytest.approx(single[0][key], rel=1e-5), key
    for key in LAYER_FRACTIONS:  # 5 steps of >= 432 entries: one entry is >= 1/2160
        assert mirrored[0][key] == pytest.approx(single[0][key], abs=1e-3), key
    stored = records.read_config(str(tmp_path / "mirrored"))
    assert (stored["strategy"], stored["cpu_devices"]) == ("mirrored", 2)
    # Both workers hold the same all-reduced numbers.
    assert ([_metrics(tmp_path / "worker0")[0][k] for k in METRICS]
            == [_metrics(tmp_path / "worker1")[0][k] for k in METRICS])


def test_train_refuses_bad_strategy_flags_with_one_line(monkeypatch):
    from experiments import cli
    from experiments.article import train

    monkeypatch.delenv("TF_CONFIG", raising=False)
    tf.constant(0)  # TensorFlow's devices are initialized from here on
    for args, message in (
            (("none", 2, 20), "--cpu_devices applies to --strategy=mirrored only"),
            (("multiworker", 0, 20), "--strategy=multiworker needs the TF_CONFIG"),
            # This process has long initialized TensorFlow: too late for logical devices.
            (("mirrored", 2, 20), "--cpu_devices: TensorFlow's devices are already "
                                  "initialized")):
        with pytest.raises(cli.ConfigError, match=message) as error:
            train.make_strategy(*args)
        assert "\n" not in str(error.value)
    assert train.make_strategy("none", 0, 20) is None
