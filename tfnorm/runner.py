"""Train one run directory: the article's network under one scheme, resumed from its
last checkpoint, each epoch's metrics, records, panels and checkpoint written in an order
that survives a kill (the layout is in ``tfnorm.records``).

``run(config)`` takes the configuration of ``experiments.cli.resolve`` (a dict of every
training flag, checked by ``cli.validate``); ``experiments.train`` is its command line.
"""

import contextlib
import importlib.metadata
import os
import platform
import shutil
import sys
import time

from absl import logging
import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata
import tqdm

import tfnorm
from tfnorm import data, distributed, plots, records, training
from tfnorm.catalog import ConfigError
from tfnorm.records import LAYER_STATS, QUANTITIES

# Measured on 2 cores: 8000 STL-10 test images take ~1.6x longer in batches of 500 than of
# 100 (a batch's activations no longer fit in the caches).
EVAL_BATCH = 100


class Divergence(Exception):
    """NaN or Inf appeared; the message names the epoch, step, layer and scheme."""


def versions():
    found = {"python": platform.python_version()}
    for package in ("tensorflow", "tensorflow-cpu", "tensorflow-datasets", "numpy",
                    "absl-py", "matplotlib", "scikit-learn"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _eval_batch_size(count):
    """The largest divisor of ``count`` up to EVAL_BATCH (one traced shape), unless it is
    small, then EVAL_BATCH with a remainder batch."""
    divisor = max(d for d in range(1, min(count, EVAL_BATCH) + 1) if count % d == 0)
    return divisor if divisor >= EVAL_BATCH // 2 or divisor == count else min(count, EVAL_BATCH)


def load_data(config):

    try:
        dataset = data.load(config["dataset"], data_dir=config["data_dir"],
                            stl10_archive=config["stl10_archive"],
                            image_size=config["image_size"])
    except data.DataError as error:
        raise ConfigError(str(error)) from None
    limits = {"train": config["train_limit"], "test": config["test_limit"]}
    arrays = {}
    for split in ("train", "test"):
        images = getattr(dataset, f"{split}_images")
        labels = getattr(dataset, f"{split}_labels")
        if limits[split]:
            images, labels = images[:limits[split]], labels[:limits[split]]
        arrays[split] = (np.ascontiguousarray(images), np.ascontiguousarray(labels))
    train_count = len(arrays["train"][1])
    if config["batch_size"] > train_count:
        raise ConfigError(f"--batch_size={config['batch_size']}: larger than the "
                                 f"{train_count} training images of {config['dataset']}")
    if not len(arrays["test"][1]):
        raise ConfigError(f"--test_limit: no test images left in {config['dataset']}")
    return dataset._replace(train_images=arrays["train"][0], train_labels=arrays["train"][1],
                            test_images=arrays["test"][0], test_labels=arrays["test"][1])


def build(config, strategy=None):
    """The network, optimizer, trainer and checkpoint of a run; with a tf.distribute
    ``strategy``, mirrored variables, synchronized batch statistics and the distributed
    step (tfnorm.distributed)."""

    with distributed.scope(strategy) if strategy else contextlib.nullcontext():
        network = tfnorm.article_network(config["scheme"], seed=config["seed"],
                                         groups=config["groups"], affine=config["affine"],
                                         boxcox_lambda=config["boxcox_lambda"])
        optimizer = tfnorm.make_optimizer(config["optimizer"], config["learning_rate"])
        if strategy:
            distributed.synchronize(network)
            trainer = distributed.DistributedTrainer(network, optimizer, strategy,
                                                     bins=config["bins"])
        else:
            trainer = training.Trainer(network, optimizer, bins=config["bins"])
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    # Everything a step changes: weights, running statistics and noise counters, the
    # optimizer's slots and step count; and how many epochs are done.
    checkpoint = tf.train.Checkpoint(
        epoch=epoch, network_variables=list(network.trainable_variables),
        network_statistics=list(network.statistics),
        optimizer_slots=optimizer.slot_variables(), optimizer_iterations=optimizer.iterations)
    return network, trainer, checkpoint, epoch


def _all_finite(tensors):
    return all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in tensors if t is not None)


def locate_divergence(network, images, labels, finite_after_step):
    """Where the first non-finite value of a step appears, as (layer, what): the first
    block whose forward output is not finite (or whose in-graph check fails); else the
    loss; else, going backward from the top, the first block whose weight gradients are
    not finite; else the first layer whose weights are not finite after the update
    (``finite_after_step``: the step's ``finite`` flags). Runs eagerly on the weights
    before the step and changes nothing."""

    images = x = data.to_unit_range(images, network.trainable_variables[0].dtype)
    for index, block in enumerate(network.blocks):
        try:
            x, _, _ = block.forward(x, training=True)
        except tf.errors.InvalidArgumentError as error:
            return index + 1, f"forward check failed: {error.message.splitlines()[0]}"
        if not _all_finite([x]):
            return index + 1, "output not finite in the forward pass"
    result = network.backprop(images, labels)
    if not _all_finite([result.loss]):
        return len(network.blocks), "loss not finite"
    for index in reversed(range(len(network.blocks))):
        start = sum(len(b.trainable_variables) for b in network.blocks[:index])
        grads = result.grads[start:start + len(network.blocks[index].trainable_variables)]
        if not _all_finite(grads):
            return index + 1, "gradient not finite in the backward pass"
    if finite_after_step is not None and not finite_after_step[1:].all():
        return int(finite_after_step[1:].argmin()) + 1, "weights not finite after the update"
    return len(network.blocks), "loss not finite"


def _tensorboard_epoch(writer, row, record, num_layers):

    step = row["epoch"]
    with writer.as_default():
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            tf.summary.scalar(key, row[key], step=step)
        for layer in range(1, num_layers + 1):
            for stat in LAYER_STATS:
                tf.summary.scalar(f"layer{layer}/{stat}", row[f"{stat}_{layer}"], step=step)
        if record is not None:
            # The records already hold fixed-bin histograms: write them as TensorBoard's
            # [bins, 3] (left edge, right edge, count) histogram tensors.
            for layer in range(num_layers):
                for q, name in enumerate(QUANTITIES):
                    edges = records.histogram_edges(record, layer, q)
                    buckets = tf.stack([edges[:-1], edges[1:],
                                        record.counts[layer, q].astype("float64")], axis=1)
                    tag = f"layer{layer + 1}/{name}"
                    tf.summary.write(tag, buckets, step=step,
                                     metadata=histogram_metadata.create_summary_metadata(
                                         tag, ""))
    writer.flush()


def _rebuild_tensorboard(out_dir, rows, num_layers):
    """A new tensorboard folder holding the completed epochs (``rows``, from metrics.csv,
    and their records), and its writer for the epochs to come. Event files can only be
    appended to, so writing on after a resume would show the redone epochs twice; every
    value there comes from metrics.csv and the records, so rewriting it loses nothing
    (and fills it in for a run started without --tensorboard)."""

    folder = os.path.join(out_dir, records.TENSORBOARD_DIR)
    shutil.rmtree(folder, ignore_errors=True)
    writer = tf.summary.create_file_writer(folder)
    recorded = set(records.record_epochs(out_dir))
    for row in rows:
        record = (records.load_record(records.record_path(out_dir, row["epoch"]))
                  if row["epoch"] in recorded else None)
        _tensorboard_epoch(writer, row, record, num_layers)
    return writer


class _NoCheckpointChatter:
    """TF's checkpoint saver logs one INFO line per save through absl; drop those."""

    def filter(self, record):
        return not record.pathname.endswith("functional_saver.py")


def _quiet_checkpoint_logging():
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _NoCheckpointChatter) for f in absl_logger.filters):
        absl_logger.addFilter(_NoCheckpointChatter())


def run(config, strategy=None, placement=None):
    """Train (or resume) the run ``config`` describes (``common.resolve``, validated by
    ``common.validate``). Returns the metrics rows. Raises ConfigError for bad input
    found only now (data, checkpoint, another process training in --out_dir), Divergence
    on NaN/Inf.

    ``strategy``: a tf.distribute strategy (``make_strategy``) or None; ``placement``: its
    flags for config.json. Not part of the run's identity: a run may resume elsewhere."""
    with contextlib.ExitStack() as stack:
        # Held until the run ends: everything below may rewrite or delete what is in
        # out_dir, which only the one process training the run may do.
        try:
            stack.enter_context(records.lock_run_dir(config["out_dir"]))
        except records.RunDirError as error:
            raise ConfigError(str(error)) from None
        return _run_locked(config, strategy, placement)


def _run_locked(config, strategy, placement):


    out_dir = config["out_dir"]
    _quiet_checkpoint_logging()
    tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(config["seed"])
    np.random.seed(config["seed"])
    if config["overwrite"]:
        records.clear_run(out_dir)
    records.remove_interrupted_writes(out_dir)
    dataset = load_data(config)
    network, trainer, checkpoint, epoch_done = build(config, strategy)
    num_layers = len(network.blocks)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(out_dir, records.CHECKPOINT_DIR), max_to_keep=2)
    train_images, train_labels = dataset.train_images, dataset.train_labels
    shuffle_seed = config["seed"] if config["shuffle"] else None

    def epoch_batches(epoch):
        # Raw bytes: the compiled steps scale them (see data.batches).
        return data.batches(train_images, train_labels, config["batch_size"], dtype=tf.uint8,
                            shuffle_seed=shuffle_seed, epoch=epoch)

    if manager.latest_checkpoint:
        try:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            raise ConfigError(
                f"checkpoint {manager.latest_checkpoint} cannot be restored "
                f"({type(error).__name__}); delete {manager.directory} to restart, or pass "
                "--overwrite") from None
        completed = int(epoch_done.numpy())
        logging.info("resuming %s from epoch %d", out_dir, completed)
    else:
        completed = 0
        records.write_config(out_dir, dict(config, **(placement or {})), versions())
        if any(block.layer.weight_norm for block in network.blocks):
            first_images, _ = next(iter(epoch_batches(1)))
            network.initialize_from_batch(
                data.to_unit_range(first_images, network.trainable_variables[0].dtype))
        # Epoch 0: the initial state, so that a divergence in epoch 1 can be replayed.
        manager.save(checkpoint_number=0)
    records.truncate_to_epoch(out_dir, completed, num_layers)
    rows = records.read_metrics(out_dir)
    records.write_status(out_dir, "running", epoch=completed)

    writer = _rebuild_tensorboard(out_dir, rows, num_layers) if config["tensorboard"] else None
    steps = len(train_labels) // config["batch_size"]
    eval_batch = _eval_batch_size(len(dataset.test_labels))
    test_batches = data.batches(dataset.test_images, dataset.test_labels, eval_batch,
                                dtype=tf.uint8, drop_remainder=False)
    stat_index = {name: i for i, name in enumerate(LAYER_STATS)}

    def stop_diverged(epoch, step, finite=None):
        """Replay the epoch up to the failing step from the last checkpoint (runs are
        deterministic), find where the first non-finite value appears on that step's
        batch, and stop."""
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        for replayed, (images, labels) in enumerate(epoch_batches(epoch), start=1):
            if replayed == step:
                break
            trainer.train_step(images, labels)
        layer, what = locate_divergence(network, images, labels, finite)
        kept = (f"epochs 1-{epoch - 1} are kept in {out_dir}" if epoch > 1
                else f"no epoch was completed in {out_dir}")
        message = (f"scheme {config['scheme']} diverged at epoch {epoch}, step {step} of "
                   f"{steps}, layer {layer}: {what}; the run stopped, {kept} (a smaller "
                   "--learning_rate, or for boxcox --boxcox_lambda, may help)")
        records.write_status(out_dir, "diverged", epoch=epoch, step=step, layer=layer,
                             message=message)
        raise Divergence(message)

    panels = plots.FourPanels() if config["panels"] else None  # one figure, redrawn
    for epoch in range(completed + 1, config["epochs"] + 1):
        start = time.time()
        losses, accuracies, layer_stats = [], [], []
        progress = tqdm.tqdm(total=steps, desc=f"{config['scheme']} epoch {epoch}/"
                             f"{config['epochs']}", leave=False, file=sys.stderr,
                             disable=None if config["progress"] else True,
                             dynamic_ncols=True)
        batches = iter(epoch_batches(epoch))  # the steps fetch their batch in the graph
        for step in range(1, steps + 1):
            # The last step of every epoch records: it alone computes layer 1's passed
            # gradient and the histograms.
            last = step == steps
            try:
                out = (trainer.record_step_from if last else trainer.train_step_from)(batches)
                finite = out["finite"].numpy()
            except tf.errors.InvalidArgumentError:  # an in-graph check (Box-Cox's input)
                progress.close()
                stop_diverged(epoch, step)
            if not finite.all():
                progress.close()
                stop_diverged(epoch, step, finite)
            losses.append(float(out["loss"].numpy()))
            accuracies.append(float(out["accuracy"].numpy()))
            layer_stats.append(out["layer_stats"].numpy())
            progress.update()
            if last:
                recorded = {k: out[k].numpy() for k in ("counts", "ranges", "summaries",
                                                        "layer_stats")}
        progress.close()

        test_loss_sum, test_correct = 0.0, 0.0
        for images, labels in test_batches:
            loss_sum, correct = trainer.eval_step(images, labels)
            test_loss_sum += float(loss_sum.numpy())
            test_correct += float(correct.numpy())
        test_count = len(dataset.test_labels)

        stats = np.mean(np.stack(layer_stats), axis=0)
        # Layer 1's passed gradient (to the image) exists only at the recording step.
        stats[0, stat_index["passed_grad_norm"]] = \
            recorded["layer_stats"][0, stat_index["passed_grad_norm"]]
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)),
               "train_acc": float(np.mean(accuracies)),
               "test_loss": test_loss_sum / test_count, "test_acc": test_correct / test_count,
               "seconds": time.time() - start}
        for layer in range(num_layers):
            for name, index in stat_index.items():
                row[f"{name}_{layer + 1}"] = float(stats[layer, index])
        rows.append(row)

        # Write order: records, panels, metrics, then the checkpoint last, so a kill in
        # between leaves a checkpoint of an earlier epoch and the resume redoes this one.
        record = None
        if records.is_recorded_epoch(epoch, config["epochs"], config["record_every"]):
            records.save_record(out_dir, epoch, (epoch - 1) * steps + steps,
                                config["scheme"], recorded)
            if config["panels"]:
                plots.draw_epoch_panels(out_dir, epoch, panels)
            if writer is not None:
                record = records.load_record(records.record_path(out_dir, epoch))
        records.write_metrics(out_dir, rows, num_layers)
        if writer is not None:
            _tensorboard_epoch(writer, row, record, num_layers)
        epoch_done.assign(epoch)
        manager.save(checkpoint_number=epoch)
        # After the checkpoint: the status never claims an epoch a resume would redo.
        records.write_status(out_dir, "running", epoch=epoch)
        logging.info("%s epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | "
                     "%.1fs", config["scheme"], epoch, config["epochs"], row["train_loss"],
                     row["train_acc"], row["test_loss"], row["test_acc"], row["seconds"])

    if config["panels"]:
        panels.close()
        plots.draw_panels(out_dir, only_missing=True)
    records.write_status(out_dir, "complete", epoch=config["epochs"])
    return rows
