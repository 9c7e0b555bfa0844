"""The one epoch loop and evaluation loop, used by the driver (``tfnorm.run.runner``), the
studies and the benchmark, so that all of them see the same batches in the same order
and count steps the same way.

- Epochs count from 1; the training order of epoch e is a fixed permutation keyed on
  (seed, e) (``train_batches``), so a resumed run, a study and the driver see the same
  batches for the same seed.
- Steps count from 1 within an epoch; the global step of step s of epoch e is
  (e - 1) * steps + s (the records' ``step``).
- ``run_epochs`` is the loop over epochs (train, test, hand the row to the caller's
  ``EpochHooks``) that the driver and the studies share. A non-finite loss, gradient or
  weight stops the epoch at once (``NonFinite``, naming the epoch and step), and a loss
  past the bound too; one policy: the hooks' ``diverged`` raises ``errors.Divergence``
  (the driver first replays the step from its checkpoint to name the layer).
"""

import collections
import math
import time

import numpy as np
import tensorflow as tf

from tfnorm import data, faults
from tfnorm.errors import Divergence, Interrupted
from tfnorm.measures import LAYER_STATS, is_evaluated_epoch

# Measured on 2 cores: 8000 STL-10 test images take ~1.6x longer in batches of 500 than of
# 100 (a batch's activations no longer fit in the caches).
EVAL_BATCH = 100

EpochResult = collections.namedtuple(
    "EpochResult", ["epoch", "train_loss", "train_acc", "layer_stats", "recorded", "steps",
                    "seconds"])
EpochResult.__doc__ = """One epoch of training: mean batch loss and accuracy, per-layer
statistics averaged over the steps ([L, len(LAYER_STATS)], layer 1's passed-gradient norm
from the recording step, the only one that computes it), the recording step's outputs
(counts, ranges, summaries, layer_stats, magnitude_counts, magnitude_ranges; None without
recording), the step rows (each step's loss and accuracy), and the seconds the steps
took."""


class NonFinite(Exception):
    """A step produced NaN or Inf (``finite``: the step's per-layer flags, or None when an
    in-graph check raised), or a loss past the bound (``what`` says so)."""

    def __init__(self, epoch, step, finite=None, what=None):
        super().__init__(f"{what or 'not finite'} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.finite, self.what = epoch, step, finite, what


def train_batches(dataset, batch_size, epoch, seed, shuffle=True, dtype=tf.uint8):
    """The training batches of ``epoch`` (from 1): a fixed permutation of (seed, epoch), or
    the file order without ``shuffle`` (the article's). Raw uint8 by default: the compiled
    steps scale them (see ``data.batches``)."""
    return data.batches(dataset.train_images, dataset.train_labels, batch_size, dtype=dtype,
                        shuffle_seed=seed if shuffle else None, epoch=epoch)


def effective_weights(network):
    """Each layer's effective weights now, as numpy (``WeightLayer.effective_weights``)."""
    return [block.layer.effective_weights().numpy() for block in network.blocks]


def weight_movement(before, after):
    """Per layer ||after - before|| / ||before||, float64 (measures.EPOCH_STATS)."""
    return np.array([np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
                     / np.linalg.norm(np.asarray(b, np.float64)) for b, a in zip(before, after)])


def steps_per_epoch(dataset, batch_size):
    return len(dataset.train_labels) // batch_size


def eval_batch_size(count):
    """The largest divisor of ``count`` up to EVAL_BATCH (one traced shape), unless it is
    small, then EVAL_BATCH with a remainder batch."""
    divisor = max(d for d in range(1, min(count, EVAL_BATCH) + 1) if count % d == 0)
    return divisor if divisor >= EVAL_BATCH // 2 or divisor == count else min(count, EVAL_BATCH)


def test_batches(dataset):
    return data.batches(dataset.test_images, dataset.test_labels,
                        eval_batch_size(len(dataset.test_labels)), dtype=tf.uint8,
                        drop_remainder=False)


def evaluate(trainer, batches, count):
    """(mean loss, accuracy) of ``trainer.eval_step`` over ``batches`` of ``count`` images
    in all (evaluation mode: running statistics)."""
    loss_sum = correct = 0.0
    for images, labels in batches:
        batch_loss, batch_correct = trainer.eval_step(images, labels)
        loss_sum += float(batch_loss.numpy())
        correct += float(batch_correct.numpy())
    return loss_sum / count, correct / count


def _bound(step, iterator):
    """``step(iterator)`` as a function of nothing, through the concrete function of
    ``step`` for this iterator when it has one: a call then skips tf.function's dispatch
    on a tf.data iterator (a digits run of batch norm, 620 steps: 3.68 s -> 3.26 s)."""
    if hasattr(step, "get_concrete_function"):
        concrete = step.get_concrete_function(iterator)
        return lambda: concrete(iterator)
    return lambda: step(iterator)


def train_epoch(trainer, batches, steps, epoch, *, record=True, step_fn=None, on_step=None,
                should_stop=None, loss_bound=math.inf):
    """Train one epoch of ``steps`` steps over ``batches`` (a tf.data pipeline).

    Without ``step_fn`` the compiled steps fetch their batch from the iterator inside the
    graph (``train_step_from``; Python's next() cost ~0.7 ms a step), and with ``record``
    the last step is the recording step (histograms, layer 1's passed gradient). With
    ``step_fn(global_step, epoch, images, labels)`` -> dict(loss, accuracy, ...) the
    batches come through Python (a study probes some steps there).

    ``on_step()`` is called after each step (a progress bar); ``should_stop()`` before
    each, and a True stops the epoch (``errors.Interrupted``) without finishing it.
    Raises NonFinite at the first step whose loss, gradients or weights are not finite,
    or whose loss is above ``loss_bound``."""
    start = time.perf_counter()
    losses, accuracies, layer_stats, step_rows = [], [], [], []
    recorded = None
    iterator = iter(batches)
    if step_fn is None:
        train_step = _bound(trainer.train_step_from, iterator)
        record_step = _bound(trainer.record_step_from, iterator) if record else None
    for step in range(1, steps + 1):
        if should_stop is not None and should_stop():
            raise Interrupted(epoch, step)
        faults.point("step", epoch, step)
        global_step = (epoch - 1) * steps + step
        last = record and step == steps
        try:
            if step_fn is not None:
                images, labels = next(iterator)
                out = step_fn(global_step, epoch, images, labels)
            else:
                out = record_step() if last else train_step()
            finite = out["finite"].numpy() if "finite" in out else None
            loss = float(out["loss"].numpy() if hasattr(out["loss"], "numpy") else out["loss"])
        except tf.errors.InvalidArgumentError:  # an in-graph check (Box-Cox's input)
            raise NonFinite(epoch, step) from None
        if (finite is not None and not finite.all()) or not np.isfinite(loss):
            raise NonFinite(epoch, step, finite)
        if loss > loss_bound:
            raise NonFinite(epoch, step, finite, f"loss {loss:g} above the bound {loss_bound:g}")
        accuracy = float(out["accuracy"].numpy() if hasattr(out["accuracy"], "numpy")
                         else out["accuracy"])
        losses.append(loss)
        accuracies.append(accuracy)
        step_rows.append(dict(step=global_step, epoch=epoch, train_loss=loss,
                              train_acc=accuracy))
        if "layer_stats" in out:
            layer_stats.append(out["layer_stats"].numpy())
        if last:
            recorded = {k: out[k].numpy() for k in ("counts", "ranges", "summaries",
                                                    "layer_stats", "magnitude_counts",
                                                    "magnitude_ranges")}
        if on_step is not None:
            on_step()
    stats = np.mean(np.stack(layer_stats), axis=0) if layer_stats else None
    if stats is not None and recorded is not None:
        passed = LAYER_STATS.index("passed_grad_norm")
        stats[0, passed] = recorded["layer_stats"][0, passed]
    return EpochResult(epoch, float(np.mean(losses)), float(np.mean(accuracies)), stats,
                       recorded, step_rows, time.perf_counter() - start)


class EpochHooks:
    """What a caller of ``run_epochs`` adds around the shared epoch; every method here does
    nothing but ``diverged``, which raises. The driver's hooks keep the run directory
    (records, panels, metrics, checkpoint, status, progress bar); a study's collect its
    rows."""

    def before_epoch(self, epoch):
        """Before the epoch's first step (a progress bar, the weights to measure against)."""

    def on_step(self):
        """After each step."""

    def after_steps(self, epoch):
        """The epoch's steps ended: finished, diverged or interrupted (close the bar)."""

    def interrupted(self, epoch):
        """A stop was requested in epoch ``epoch``; ``Interrupted`` is raised after this."""

    def diverged(self, epoch, step, finite=None, what=None):
        """The run diverged at ``step`` of ``epoch`` (None: in the test pass after it):
        must raise (``errors.Divergence``; the driver first locates the layer)."""
        raise Divergence(f"diverged at epoch {epoch}, "
                         f"{f'step {step}' if step else 'the test pass'}: "
                         f"{what or 'not finite'}")

    def after_epoch(self, epoch, row, result):
        """The epoch's ``row`` (epoch, train_loss, train_acc, test_loss, test_acc, seconds:
        the wall time of its steps and test pass) and its EpochResult."""


class CollectRows(EpochHooks):
    """The hooks of a run that keeps its rows in memory (a study's): ``step_rows`` (each
    step's loss and accuracy) and ``epoch_rows`` (``tag``'s columns first; seconds: the
    steps'), then ``on_epoch(epoch, row, result)``; a divergence is raised naming the run
    (``name``)."""

    def __init__(self, name, tag=None, on_epoch=None):
        self.name, self.tag, self.on_epoch = name, tag or {}, on_epoch
        self.step_rows, self.epoch_rows = [], []

    def diverged(self, epoch, step, finite=None, what=None):
        where = f"step {step}" if step else "the test pass"
        raise Divergence(f"{self.name}: {what or 'not finite'} at epoch {epoch}, {where}; "
                         "lower --learning_rate")

    def after_epoch(self, epoch, row, result):
        self.step_rows += result.steps
        self.epoch_rows.append(dict(self.tag, **dict(row, seconds=result.seconds)))
        if self.on_epoch is not None:
            self.on_epoch(epoch, row, result)


def run_epochs(trainer, dataset, epochs, last_epoch, *, batch_size, seed, hooks,
               shuffle=True, eval_every=1, record=True, step_fn=None, loss_bound=math.inf,
               should_stop=None):
    """The epoch loop of every training run, the driver's and the studies': for each
    epoch of ``epochs`` (of a run of ``last_epoch``), train it (``train_epoch``; batches
    keyed on (seed, epoch), float32 when a ``step_fn`` takes them), test every
    ``eval_every``-th epoch and the last (else the row's test loss and accuracy are NaN),
    and hand the row to ``hooks.after_epoch``. One divergence policy: a non-finite value,
    or a loss past ``loss_bound`` in a step or the test pass, goes to ``hooks.diverged``,
    which raises. A requested stop (``should_stop``) calls ``hooks.interrupted``, then
    ``errors.Interrupted`` propagates."""
    steps = steps_per_epoch(dataset, batch_size)
    tests = test_batches(dataset)
    for epoch in epochs:
        start = time.time()
        hooks.before_epoch(epoch)
        batches = train_batches(dataset, batch_size, epoch, seed, shuffle=shuffle,
                                dtype=tf.float32 if step_fn else tf.uint8)
        try:
            result = train_epoch(trainer, batches, steps, epoch, record=record,
                                 step_fn=step_fn, on_step=hooks.on_step,
                                 should_stop=should_stop, loss_bound=loss_bound)
        except NonFinite as error:
            hooks.after_steps(epoch)
            hooks.diverged(epoch, error.step, error.finite, error.what)
            raise AssertionError("EpochHooks.diverged must raise") from error
        except Interrupted:
            hooks.after_steps(epoch)
            hooks.interrupted(epoch)
            raise
        hooks.after_steps(epoch)
        test_loss = test_acc = math.nan  # no test pass this epoch (eval_every)
        if is_evaluated_epoch(epoch, last_epoch, eval_every):
            test_loss, test_acc = evaluate(trainer, tests, len(dataset.test_labels))
            if not math.isfinite(test_loss) or test_loss > loss_bound:
                hooks.diverged(epoch, None,
                               what=f"test loss {test_loss:g} (bound {loss_bound:g})")
                raise AssertionError("EpochHooks.diverged must raise")
        row = {"epoch": epoch, "train_loss": result.train_loss, "train_acc": result.train_acc,
               "test_loss": test_loss, "test_acc": test_acc, "seconds": time.time() - start}
        hooks.after_epoch(epoch, row, result)
