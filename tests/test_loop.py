"""tfnorm.loop.run_epochs, the one epoch loop of the driver and the studies: which epochs
are tested, what the hooks see and in which order, and its one divergence policy (a
non-finite step or test pass reaches ``hooks.diverged``, which raises). A stand-in
trainer keeps these tests free of any network."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfnorm import data, errors, loop

IMAGES = np.zeros([8, 4, 4, 3], np.uint8)
DATASET = data.Dataset("tiny", IMAGES, np.zeros(8, np.int32), IMAGES[:4],
                       np.zeros(4, np.int32), 10, None)


class StandIn:
    """A trainer whose test pass has mean loss ``test_loss`` and accuracy 1/2."""

    def __init__(self, test_loss=1.0):
        self.test_loss = test_loss

    def eval_step(self, images, labels):
        count = int(tf.shape(labels)[0])
        return tf.constant(self.test_loss * count), tf.constant(count / 2)


def step_with_loss(loss):
    def step_fn(global_step, epoch, images, labels):
        return {"loss": loss(global_step), "accuracy": 0.25}
    return step_fn


class Recording(loop.CollectRows):
    def __init__(self):
        super().__init__("tiny seed 0")
        self.calls = []

    def before_epoch(self, epoch):
        self.calls.append(("before", epoch))

    def after_steps(self, epoch):
        self.calls.append(("steps", epoch))

    def after_epoch(self, epoch, row, result):
        self.calls.append(("after", epoch))
        super().after_epoch(epoch, row, result)


def test_every_epoch_is_trained_and_tested_every_eval_every_and_at_the_last():
    hooks = Recording()
    loop.run_epochs(StandIn(), DATASET, range(1, 6), 5, batch_size=4, seed=0, hooks=hooks,
                    eval_every=2, record=False, step_fn=step_with_loss(lambda step: 0.5))
    assert hooks.calls == [(kind, epoch) for epoch in range(1, 6)
                           for kind in ("before", "steps", "after")]
    tested = [row["epoch"] for row in hooks.epoch_rows if not math.isnan(row["test_loss"])]
    assert tested == [2, 4, 5]
    assert [row["test_acc"] for row in hooks.epoch_rows if row["epoch"] in tested] == [0.5] * 3
    assert [row["step"] for row in hooks.step_rows] == list(range(1, 11))  # 2 steps an epoch
    assert all(row["train_loss"] == 0.5 for row in hooks.epoch_rows)


def test_a_non_finite_step_stops_the_run_through_the_hooks():
    hooks = Recording()
    with pytest.raises(errors.Divergence, match="tiny seed 0: not finite at epoch 2, step 1"):
        loop.run_epochs(StandIn(), DATASET, range(1, 4), 3, batch_size=4, seed=0,
                        hooks=hooks, record=False,
                        step_fn=step_with_loss(lambda step: math.nan if step == 3 else 0.5))
    assert hooks.calls[-2:] == [("before", 2), ("steps", 2)]  # the bar closed, no row
    assert [row["epoch"] for row in hooks.epoch_rows] == [1]


@pytest.mark.parametrize("test_loss, bound", [(math.nan, math.inf), (7.0, 5.0)])
def test_a_test_pass_past_the_bound_or_not_finite_is_a_divergence(test_loss, bound):
    with pytest.raises(errors.Divergence, match="at epoch 1, the test pass"):
        loop.run_epochs(StandIn(test_loss), DATASET, range(1, 3), 2, batch_size=4, seed=0,
                        hooks=loop.CollectRows("tiny seed 0"), record=False,
                        loss_bound=bound, step_fn=step_with_loss(lambda step: 0.5))


def test_hooks_whose_diverged_returns_are_refused():
    class Lenient(loop.EpochHooks):
        def diverged(self, epoch, step, finite=None, what=None):
            pass

    with pytest.raises(AssertionError, match="must raise"):
        loop.run_epochs(StandIn(), DATASET, range(1, 2), 1, batch_size=4, seed=0,
                        hooks=Lenient(), record=False,
                        step_fn=step_with_loss(lambda step: math.inf))
