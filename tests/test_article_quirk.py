"""The article notebook's evaluation quirk (``tfnorm.norms.per_position``): layer and
instance norm evaluated with running averages of the per-sample statistics kept per batch
position. Checked against numpy references: the running statistics follow 0.9 old + 0.1
batch position by position; evaluation standardizes row i with running[i mod N]; training
is unchanged by the option (forward, backward, whole-network gradients, a driver run's
train metrics); off, evaluation is per sample as before; the flag reaches the network
through cli.resolve and the runner. Each reference check is shown to fail on a broken
variant (``*_catches_*``)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import gradcheck
import tfnorm
from experiments import cli
from tfnorm import distributed, norms
from tfnorm.run import atomic, records, runner
from tfnorm.norms import per_position

EPSILON = norms.DEFAULT_EPSILON
SHAPE = [4, 3, 5, 6]  # N = 4 positions, odd H and W, 6 channels
AXES = {"layer": (1, 2, 3), "instance": (1, 2)}
SCHEMES = ("layer", "instance")


def make(scheme, positions=SHAPE[0], affine=False, dtype=tf.float64):
    return norms.make_normalization(scheme, SHAPE[-1], dtype, affine=affine,
                                    per_position_running_stats=positions)


def batches(steps, seed=0, shape=SHAPE):
    generator = gradcheck.rng(seed)
    return [1.5 * generator.standard_normal(shape) + generator.standard_normal(
        [shape[0], 1, 1, shape[-1]]) for _ in range(steps)]


def numpy_running(scheme, xs, momentum=0.9):
    """His update per position: running = 0.9 running + 0.1 (per-sample statistic)."""
    width = 1 if scheme == "layer" else SHAPE[-1]
    mean, var = np.zeros([SHAPE[0], width]), np.ones([SHAPE[0], width])
    for x in xs:
        mean = momentum * mean + (1 - momentum) * x.mean(AXES[scheme]).reshape(SHAPE[0], width)
        var = momentum * var + (1 - momentum) * x.var(AXES[scheme]).reshape(SHAPE[0], width)
    return mean, var


def running_error(scheme, steps=3):
    """Largest |ours - numpy| of the running statistics after ``steps`` training steps."""
    norm, xs = make(scheme), batches(steps)
    for x in xs:
        _, cache = norm.forward(tf.constant(x), training=True)
        norm.update_statistics(cache)
    mean, var = numpy_running(scheme, xs)
    return max(np.abs(norm.running_mean.numpy() - mean).max(),
               np.abs(norm.running_variance.numpy() - var).max())


def numpy_evaluation(scheme, x, mean, var, gamma=None, beta=None):
    """Row i standardized with position i mod N of the running statistics."""
    index = np.arange(x.shape[0]) % mean.shape[0]
    shape = [x.shape[0], 1, 1, mean.shape[1]]
    xhat = (x - mean[index].reshape(shape)) / np.sqrt(var[index].reshape(shape) + EPSILON)
    return xhat if gamma is None else xhat * gamma + beta


def evaluation_error(scheme, rows=7, affine=True):
    """Largest |ours - numpy| of an evaluation batch of ``rows`` (any size) after setting
    random running statistics and gamma/beta."""
    norm, generator = make(scheme, affine=affine), gradcheck.rng(3)
    norm.running_mean.assign(generator.standard_normal(norm.running_mean.shape))
    norm.running_variance.assign(0.2 + generator.random(norm.running_variance.shape))
    if affine:
        norm.gamma.assign(1 + 0.5 * generator.standard_normal(SHAPE[-1]))
        norm.beta.assign(generator.standard_normal(SHAPE[-1]))
    x = batches(1, seed=4, shape=[rows] + SHAPE[1:])[0]
    y, _ = norm.forward(tf.constant(x), training=False)
    expected = numpy_evaluation(scheme, x, norm.running_mean.numpy(),
                                norm.running_variance.numpy(),
                                *((norm.gamma.numpy(), norm.beta.numpy()) if affine else ()))
    return np.abs(y.numpy() - expected).max()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_running_statistics_follow_point_nine_old_plus_point_one_batch_per_position(scheme):
    assert running_error(scheme) <= 1e-12


def test_running_reference_catches_swapped_momentum(monkeypatch):
    def swapped(self, cache):
        return [v.assign(0.1 * v + 0.9 * value) for v, value in self.batch_statistics(cache)]
    monkeypatch.setattr(per_position.PerPositionRunningStatistics, "update_statistics", swapped)
    assert running_error("instance") > 1e-2


@pytest.mark.parametrize("rows", [1, 4, 7, 9])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_evaluation_uses_running_statistics_of_position_i_mod_n(scheme, rows):
    assert evaluation_error(scheme, rows) <= 1e-12


def test_evaluation_reference_catches_position_not_mod_n(monkeypatch):
    def first_position(self, variable, rows, rank):  # every row takes position 0
        picked = tf.gather(variable, tf.zeros([rows], tf.int32))
        return tf.reshape(picked, [rows] + [1] * (rank - 2) + [self.statistic_width])
    monkeypatch.setattr(per_position.PerPositionRunningStatistics, "_per_row", first_position)
    assert evaluation_error("instance", rows=7) > 1e-2


@pytest.mark.parametrize("scheme", SCHEMES)
def test_forward_never_moves_the_running_statistics(scheme):
    norm = make(scheme)
    before = [v.numpy().copy() for v in norm.statistics]
    for training in (True, False):
        norm.forward(tf.constant(batches(1)[0]), training=training)
    for variable, value in zip(norm.statistics, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def training_outputs(norm, x, dy):
    y, cache = norm.forward(x, training=True)
    dx, grads = norm.backward(dy, cache)
    return [y, dx] + list(grads)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_training_forward_and_backward_are_unchanged_by_the_option(scheme, affine):
    x, dy = (tf.constant(b) for b in batches(2, seed=7))
    on, off = make(scheme, affine=affine), make(scheme, 0, affine=affine)
    for a, b in zip(on.trainable_variables, off.trainable_variables):
        b.assign(a + 0.3)
        a.assign(b)
    assert not off.statistics and len(on.statistics) == 2
    for a, b in zip(training_outputs(on, x, dy), training_outputs(off, x, dy), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_unchanged_check_catches_the_option_leaking_into_training(monkeypatch):
    original = per_position.PerPositionRunningStatistics.forward

    def leaky(self, x, training=True):  # evaluation statistics also in training
        y, cache = original(self, x, False if self.positions else training)
        return y, cache._replace(training=True) if self.positions else cache
    monkeypatch.setattr(per_position.PerPositionRunningStatistics, "forward", leaky)
    x, dy = (tf.constant(b) for b in batches(2, seed=7))
    on, off = make("layer"), make("layer", 0)
    differs = [not np.array_equal(a.numpy(), b.numpy()) for a, b in
               zip(training_outputs(on, x, dy), training_outputs(off, x, dy))]
    assert any(differs)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_whole_network_gradients_are_unchanged_by_the_option(scheme):
    images = tf.constant(gradcheck.rng(1).random([4, 16, 16, 3]))
    labels = tf.constant([0, 3, 7, 9])
    on = tfnorm.article_network(scheme, dtype=tf.float64, seed=2, per_position_running_stats=4)
    off = tfnorm.article_network(scheme, dtype=tf.float64, seed=2)
    (loss_on, grads_on), (loss_off, grads_off) = on.gradients(images, labels), off.gradients(
        images, labels)
    assert float(loss_on) == float(loss_off)
    for a, b in zip(grads_on, grads_off, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The running statistics are the network's (checkpointed): 5 normalized layers x 2.
    width = 1 if scheme == "layer" else 16
    assert [v.shape.as_list() for v in on.statistics] == [[4, width]] * 10
    assert off.statistics == [] and on.config["per_position_running_stats"] == 4


@pytest.mark.parametrize("scheme", SCHEMES)
def test_evaluation_backward_is_the_derivative_of_the_evaluation_forward(scheme):
    norm = make(scheme, affine=True)
    norm.running_mean.assign(gradcheck.rng(2).standard_normal(norm.running_mean.shape))
    x = gradcheck.normal(gradcheck.rng(9), [6] + SHAPE[1:])
    tape, fd = gradcheck.check_module(lambda x: norm.forward(x, False), norm.backward, x,
                                      norm.trainable_variables)
    assert tape <= 1e-9 and fd <= gradcheck.FD_TOLERANCE


@pytest.mark.parametrize("scheme", SCHEMES)
def test_option_off_evaluates_with_each_samples_own_statistics(scheme):
    norm, x = make(scheme, 0), batches(1, seed=5, shape=[7] + SHAPE[1:])[0]
    assert norm.statistics == [] and norm.update_statistics(None) == []
    y, _ = norm.forward(tf.constant(x), training=False)
    expected = (x - x.mean(AXES[scheme], keepdims=True)) / np.sqrt(
        x.var(AXES[scheme], keepdims=True) + EPSILON)
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-12)


def test_a_training_batch_of_another_size_is_refused():
    norm = make("layer")
    _, cache = norm.forward(tf.constant(batches(1, shape=[3] + SHAPE[1:])[0]), training=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 batch positions"):
        norm.update_statistics(cache)


def test_only_layer_and_instance_take_the_option():
    for scheme in tfnorm.SCHEMES:
        norm = norms.make_normalization(scheme, 8, tf.float32, per_position_running_stats=20)
        assert bool(norm.statistics and getattr(norm, "positions", 0)) == (scheme in SCHEMES)


def test_distributed_synchronize_refuses_the_option():
    network = tfnorm.article_network("instance", per_position_running_stats=20)
    with pytest.raises(ValueError, match="not supported under a distribution strategy"):
        distributed.synchronize(network)


def test_flag_is_boolean_off_by_default_and_part_of_the_identity():
    kind, default, text, _ = cli.flag_spec("per_position_running_stats")
    assert (kind, default) == ("boolean", False) and "notebook" in text
    assert cli.resolve({})["per_position_running_stats"] is False
    assert "per_position_running_stats" in cli.identity(cli.resolve({}))


def test_a_run_made_before_the_flag_is_still_recognized(tmp_path):
    config = cli.resolve(dict(out_dir=str(tmp_path)))
    old = {k: v for k, v in config.items() if k != "per_position_running_stats"}
    records.write_config(str(tmp_path), old, {})
    cli.validate_out_dir(config)  # the same run: accepted
    with pytest.raises(records.RunDirError, match="per_position_running_stats"):
        cli.validate_out_dir(dict(config, per_position_running_stats=True))


TINY = dict(scheme="instance", epochs=1, image_size=16, train_limit=100, test_limit=100,
            batch_size=20, progress=False, panels=False)


def tiny_run(out_dir, **flags):
    config = cli.resolve(dict(TINY, out_dir=str(out_dir), **flags))
    cli.validate(config)
    (row,) = runner.run(config)
    with open(os.path.join(out_dir, records.CONFIG_FILE)) as f:
        return row, json.load(f)["flags"]


def test_the_flag_reaches_the_network_through_resolve_and_the_runner(tmp_path):
    on, on_flags = tiny_run(tmp_path / "on", per_position_running_stats=True)
    off, off_flags = tiny_run(tmp_path / "off")
    assert on_flags["per_position_running_stats"] is True
    assert off_flags["per_position_running_stats"] is False
    # Training is the same; only the evaluation differs.
    assert (on["train_loss"], on["train_acc"]) == (off["train_loss"], off["train_acc"])
    assert on["test_acc"] != off["test_acc"] and on["test_loss"] != off["test_loss"]


def fake_compare(directory, per_scheme, on):
    """A compare directory: runs.csv with final/best test and final train accuracy per
    (scheme, seed), and each run's config.json."""
    rows = []
    for scheme, values in per_scheme.items():
        for seed, acc in enumerate(values):
            rows.append(dict(scheme=scheme, seed=seed, state="complete", final_test_acc=acc,
                             best_test_acc=acc, final_train_acc=0.9))
            config = cli.resolve(dict(scheme=scheme, seed=seed, per_position_running_stats=on,
                                      out_dir=str(directory / scheme / f"seed_{seed}")))
            os.makedirs(config["out_dir"])
            records.write_config(config["out_dir"], config, {})
    atomic.write_csv(str(directory / "runs.csv"), rows)


def test_quirk_command_pairs_by_seed_and_decides_the_claim(tmp_path):
    import subprocess
    import sys
    fake_compare(tmp_path / "off", {"batch": [0.9, 0.8, 0.7], "instance": [0.9, 0.8, 0.7]},
                 False)
    fake_compare(tmp_path / "on", {"batch": [0.9, 0.8, 0.7], "instance": [0.5, 0.5, 0.3]},
                 True)
    command = [sys.executable, "-c", "import sys; import experiments.article.quirk as q; "
               "assert 'tensorflow' not in sys.modules; q.define_flags(); q.cli.run(q.main)",
               f"--off_dir={tmp_path / 'off'}", f"--on_dir={tmp_path / 'on'}",
               f"--out_dir={tmp_path / 'out'}"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {(r["scheme"], r["metric"]): r for r in atomic.read_csv(
        str(tmp_path / "out" / "quirk.csv"))}
    instance = rows[("instance", "final_test_acc")]
    # d = (-0.4, -0.3, -0.4): mean -11/30, s = 0.057735, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.0577350269 / 3 ** 0.5
    assert float(instance["difference"]) == pytest.approx(-11 / 30)
    assert float(instance["high"]) == pytest.approx(-11 / 30 + half, rel=1e-6)
    assert instance["verdict"] == "supported"
    assert rows[("batch", "final_test_acc")]["verdict"] == "inconclusive"
    assert "| instance | final_test_acc |" in (tmp_path / "out" / "quirk.md").read_text()
    # The sides swapped: the off side has the flag on, refused in one line.
    swapped = command[:3] + [f"--off_dir={tmp_path / 'on'}", f"--on_dir={tmp_path / 'off'}",
                             f"--out_dir={tmp_path / 'out2'}"]
    done = subprocess.run(swapped, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == cli.EXIT_BAD_INPUT
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_train_refuses_the_flag_under_a_strategy_in_one_line(tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "experiments.article.train", "--scheme=instance",
                           "--per_position_running_stats", "--strategy=mirrored",
                           "--cpu_devices=2", f"--out_dir={tmp_path / 'run'}"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == cli.EXIT_BAD_INPUT
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --per_position_running_stats: not supported with --strategy=mirrored "
        "(train on one device)")
