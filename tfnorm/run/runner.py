"""Train one run directory: the article's network under one scheme, resumed from its
last checkpoint, through the shared epoch loop (``tfnorm.loop.run_epochs``) whose hooks
(``tfnorm.run.driver_hooks``) write each epoch's metrics, records, panels and checkpoint in an
order that survives a kill (the layout is in ``tfnorm.run.records``).

``run(config)`` takes a run's configuration (``tfnorm.config.resolve``: every field, as a
RunConfig or a dict, checked by ``experiments.cli.validate``);
``experiments.article.train`` is its command line.
"""

import contextlib
import errno
import importlib.metadata
import math
import os
import platform
import re

from absl import logging
import numpy as np
import tensorflow as tf

import tfnorm
from tfnorm import data, distributed, loop, training
from tfnorm import config as run_config, network as networks, schemes
from tfnorm.run import (driver_hooks, four_panels, records, rundir, runid, stopping,
                        tensorboard_log)
from tfnorm.errors import ConfigError, DamagedFile, NoSpace, OutOfMemory

# A run has diverged when a loss passes LOSS_BOUND times that of a uniform guess over the
# classes, ln(classes) (2.3 for 10): every run starts near that, and a cross-entropy a
# million times larger means logits of that size, a run that will not come back.
LOSS_BOUND = 1e6


def versions():
    found = {"python": platform.python_version()}
    for package in ("tensorflow", "tensorflow-cpu", "tensorflow-datasets", "numpy",
                    "absl-py", "matplotlib", "scikit-learn"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def load_data(config):
    """The run's dataset, cut to --train_limit / --test_limit. With --train_per_class the
    training subset is drawn with the run's seed: each seed samples its own training set
    as well as its initialization, and every scheme's seed k trains on the same images."""
    per_class = config.get("train_per_class", 0)
    try:
        dataset = data.load(config["dataset"], data_dir=config["data_dir"],
                            stl10_archive=config["stl10_archive"],
                            image_size=config["image_size"], train_per_class=per_class,
                            seed=config["seed"] if per_class else 0)
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


def build(config, strategy=None, dataset=None):
    """The network, optimizer, trainer and checkpoint of a run (for ``dataset``'s images
    and classes; None: the article's); with a tf.distribute ``strategy``, mirrored
    variables, synchronized batch statistics and the distributed step
    (tfnorm.distributed)."""

    with distributed.scope(strategy) if strategy else contextlib.nullcontext():
        network = _network(config, dataset)
        optimizer = tfnorm.make_optimizer(config["optimizer"], config["learning_rate"])
        if strategy:
            distributed.synchronize(network)
            trainer = distributed.DistributedTrainer(network, optimizer, strategy,
                                                     bins=config["bins"])
        else:
            trainer = training.Trainer(network, optimizer, bins=config["bins"])
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    # Everything a step changes: weights, running statistics and noise counters, the
    # optimizer's slots and step count; and how many epochs are done, and of which run
    # (``checkpoint.run``: its identity, checked before a restore, rundir.check_checkpoint).
    checkpoint = tf.train.Checkpoint(
        epoch=epoch, network_variables=list(network.trainable_variables),
        network_statistics=list(network.statistics),
        optimizer_slots=optimizer.slot_variables(), optimizer_iterations=optimizer.iterations,
        run=tf.Variable(_identity_text(config), trainable=False, name="run"))
    return network, trainer, checkpoint, epoch


def _identity_text(config):
    return rundir.identity_text(runid.run_identity(config))


class Builds:
    """One network, optimizer and compiled trainer per configuration but the seed,
    re-initialized for each seed, so that the steps traced for the first seed serve every
    other (tracing costs seconds; a seed's ten digits epochs a few). Re-initializing
    assigns the variables of a network newly built for the seed (the same code, so the
    same values a run of that seed alone starts from: the tests check the metrics are
    bit-identical), zeroes the optimizer's slots and step count and the epoch counter."""

    def __init__(self):
        self._built = {}

    def build(self, config, strategy=None, dataset=None):
        if strategy is not None:  # replicas: a fresh build (no sharing across strategies)
            return build(config, strategy, dataset)
        key = tuple(sorted((k, v) for k, v in config.items()
                           if k not in ("seed",) + BUILD_NEUTRAL))  # names the dataset too
        if key not in self._built:
            self._built[key] = build(config, dataset=dataset)
            return self._built[key]
        network, trainer, checkpoint, epoch = self._built[key]
        fresh = _network(config, dataset)
        for shared, new in zip(network.trainable_variables + network.statistics,
                               fresh.trainable_variables + fresh.statistics, strict=True):
            shared.assign(new)
        for slot in trainer.optimizer.slot_variables():
            slot.assign(tf.zeros_like(slot))
        trainer.optimizer.iterations.assign(0)
        epoch.assign(0)
        checkpoint.run.assign(_identity_text(config))
        return network, trainer, checkpoint, epoch


# Fields that change nothing a step computes (where files go, what is drawn or shown,
# which epochs are recorded or evaluated): the configuration's place and schedule roles.
BUILD_NEUTRAL = run_config.names("place", "schedule")


def _network(config, dataset=None):
    # --per_position_running_stats: his notebook's running statistics, one per position of
    # a training batch (so as many positions as the batch size).
    positions = config["batch_size"] if config.get("per_position_running_stats") else 0
    hyperparameters = {name: config[name] for name in schemes.run_hyperparameters()}
    return networks.dataset_network(
        config["scheme"], dataset, seed=config["seed"],
        final_activation=config["final_activation"], per_position_running_stats=positions,
        **hyperparameters)


class _NoCheckpointChatter:
    """TF's checkpoint saver logs one INFO line per save through absl; drop those."""

    def filter(self, record):
        return not record.pathname.endswith("functional_saver.py")


def _quiet_checkpoint_logging():
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _NoCheckpointChatter) for f in absl_logger.filters):
        absl_logger.addFilter(_NoCheckpointChatter())


def run(config, strategy=None, placement=None, builds=None):
    """Train (or resume) the run ``config`` describes (``tfnorm.config.resolve``, checked by
    ``cli.validate``). Returns the metrics rows.

    Raises ConfigError for bad input found only now (data, another process training in
    --out_dir), records.RunDirError for a damaged file that cannot be repaired,
    Divergence (NaN, Inf or a loss past LOSS_BOUND, in training or in the test pass),
    NoSpace, OutOfMemory, and loop.Interrupted after a SIGINT or SIGTERM (``stopping``);
    in each case the directory stays resumable and keeps every finished epoch.

    ``strategy``: a tf.distribute strategy (``make_strategy``) or None; ``placement``: its
    flags for config.json. Not part of the run's identity: a run may resume elsewhere.
    ``builds``: a ``Builds`` shared by the runs of one process (compare's seeds)."""
    with contextlib.ExitStack() as stack:
        # Held until the run ends: everything below may rewrite or delete what is in
        # out_dir, which only the one process training the run may do.
        try:
            stack.enter_context(records.lock_run_dir(config["out_dir"]))
        except records.RunDirError as error:
            raise ConfigError(str(error)) from None
        try:
            return _run_locked(config, strategy, placement, builds or Builds())
        except (OSError, tf.errors.OpError, MemoryError) as error:
            raise _resource_error(config["out_dir"], error) from None


def _resource_error(out_dir, error):
    """NoSpace or OutOfMemory for a full disk or memory (status.json says so when it
    can still be written), else the error itself."""
    text = str(error)
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text:
        where = getattr(error, "filename", None) or _written_by_tensorflow(text) or out_dir
        message = (f"no space left on the device writing {where}; free some space and rerun "
                   "the same command to resume")
        with contextlib.suppress(OSError):
            records.write_status(out_dir, "no space", message=message)
        return NoSpace(message)
    if isinstance(error, (MemoryError, tf.errors.ResourceExhaustedError)):
        return OutOfMemory("out of memory (a smaller --image_size or --batch_size needs "
                           f"less): {' '.join(text.split())[:200]}")
    return error


def _prepare(config):
    """Under the run's lock: refuse what cannot be this run (again: the directory may have
    changed since the flags were checked), remove what killed writes left, audit, delete
    stale derived files and rewind to the audit's epoch. Returns the Audit."""
    out_dir = config["out_dir"]
    if config["overwrite"]:
        records.clear_run(out_dir)
    rundir.check_run_dir(out_dir, config, overwrite=False, checkpoint=False)
    records.remove_interrupted_writes(out_dir)
    found = rundir.audit(out_dir, config)
    for line in found.repairs:
        logging.warning("%s", line)
    for path in found.stale_derived:  # redrawn from the records
        os.remove(path)
    rundir.rewind(out_dir, found.resume_epoch)
    return found


def refresh(config):
    """Rewrite the derived files of a finished run from its audited files (compare calls
    it for every run it reuses): status.json, the panels and GIFs it lacks (with
    ``config["panels"]``), TensorBoard (with ``config["tensorboard"]``). Returns its
    ``rundir.View``; a run that turns out not finished is left for training."""
    with records.lock_run_dir(config["out_dir"]):
        try:
            _prepare(dict(config, overwrite=False))  # a finished run of this config stays
            found = rundir.view(config["out_dir"], config)
            if found.state == "complete":
                if config["tensorboard"]:
                    tensorboard_log.rebuild(config["out_dir"], found.rows,
                                            records.num_layers_of(found.rows[0])).close()
                if config["panels"]:
                    four_panels.draw_panels(config["out_dir"], only_missing=True)
                records.write_status(config["out_dir"], "complete", epoch=config["epochs"])
            return found
        except (OSError, tf.errors.OpError, MemoryError) as error:
            raise _resource_error(config["out_dir"], error) from None


def _written_by_tensorflow(text):
    """The file a TensorFlow write that failed was writing, from its error's text (a
    checkpoint's shards go to <prefix>_temp/...: then the checkpoint's prefix), or None."""
    match = re.search(r"(/\S+?); No space left on device", text)
    if not match:
        return None
    return re.sub(r"_temp(_[0-9a-f]+)?/.*$", "", match.group(1))


def _run_locked(config, strategy, placement, builds):
    out_dir = config["out_dir"]
    _quiet_checkpoint_logging()
    tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(config["seed"])
    np.random.seed(config["seed"])
    found = _prepare(config)
    dataset = load_data(config)
    network, trainer, checkpoint, epoch_done = builds.build(config, strategy, dataset)
    num_layers = len(network.blocks)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(out_dir, records.CHECKPOINT_DIR), max_to_keep=2)

    def epoch_batches(epoch):
        return loop.train_batches(dataset, config["batch_size"], epoch, config["seed"],
                                  shuffle=config["shuffle"])

    if manager.latest_checkpoint:
        rundir.restore_checkpoint(checkpoint, manager.latest_checkpoint,
                                  runid.run_identity(config))
        completed = int(epoch_done.numpy())
        if completed != found.resume_epoch:
            raise DamagedFile(
                f"checkpoint {manager.latest_checkpoint} holds epoch {completed}, its name "
                f"says {found.resume_epoch}; pass --overwrite to start the run again")
        if completed < config["epochs"]:
            logging.info("resuming %s from epoch %d", out_dir, completed)
    else:
        completed = 0
        records.write_config(out_dir, dict(config, **(placement or {})), versions(),
                             parameters=network.parameter_counts())
        if any(block.layer.weight_norm for block in network.blocks):
            first_images, _ = next(iter(epoch_batches(1)))
            network.initialize_from_batch(
                data.to_unit_range(first_images, network.trainable_variables[0].dtype))
        # Epoch 0: the initial state, so that a divergence in epoch 1 can be replayed.
        driver_hooks.save_checkpoint(manager, checkpoint, 0)
    records.truncate_to_epoch(out_dir, completed, num_layers)
    rows = records.read_metrics(out_dir)
    records.write_status(out_dir, "running", epoch=completed)

    writer = tensorboard_log.rebuild(out_dir, rows, num_layers) if config["tensorboard"] else None
    hooks = driver_hooks.DriverHooks(
        config, network, trainer, checkpoint, manager, epoch_done, rows, writer,
        loop.steps_per_epoch(dataset, config["batch_size"]),
        LOSS_BOUND * math.log(dataset.num_classes), epoch_batches)
    loop.run_epochs(trainer, dataset, range(completed + 1, config["epochs"] + 1),
                    config["epochs"], batch_size=config["batch_size"], seed=config["seed"],
                    hooks=hooks, shuffle=config["shuffle"],
                    eval_every=config.get("eval_every", 1), loss_bound=hooks.loss_bound,
                    should_stop=stopping.requested)
    if config["panels"]:
        hooks.panels.close()
        four_panels.draw_panels(out_dir, only_missing=True)
    records.write_status(out_dir, "complete", epoch=config["epochs"])
    return rows
