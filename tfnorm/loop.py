"""The one epoch loop and evaluation loop, used by the driver (``tfnorm.run.runner``), the
studies and the benchmark, so that all of them see the same batches in the same order
and count steps the same way.

- Epochs count from 1; the training order of epoch e is a fixed permutation keyed on
  (seed, e) (``train_batches``), so a resumed run, a study and the driver see the same
  batches for the same seed.
- Steps count from 1 within an epoch; the global step of step s of epoch e is
  (e - 1) * steps + s (the records' ``step``).
- A non-finite loss, gradient or weight stops the epoch at once with ``NonFinite``
  naming the epoch and step; the caller decides what to do (the driver replays and
  locates it, a study reports it).
"""

import collections
import math
import time

import numpy as np
import tensorflow as tf

from tfnorm import data, faults
from tfnorm.errors import Interrupted
from tfnorm.measures import LAYER_STATS

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
