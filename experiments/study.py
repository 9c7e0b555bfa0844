"""What the study scripts (experiments/ics.py, landscape.py, noisy_bn.py, weightnorm.py,
shattered.py, saturation.py) share: the flags every study has, flag checks that fail
with one line, loading the data, a plain training loop, and atomic CSV / figure output
through tfnorm.io.

A study script defines its flags at import::

    study.define_data_flags(out_dir="runs/ics")
    study.define_training_flags(epochs=4, batch_size=20, optimizer="sgd",
                                learning_rate=0.1, schemes="none,batch")

and in ``main`` calls ``study.check_data_flags()`` / ``study.check_training_flags()``
(plus its own ``study.require`` checks) before ``study.load_data()``. Failures print one
line on stderr and exit with status 2, before any work.
"""

import os
import sys
import time

import matplotlib

matplotlib.use("Agg")  # figures only go to files; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

import tfnorm  # noqa: E402
from tfnorm import data, io, optimizers, training  # noqa: E402

FLAGS = flags.FLAGS
EXIT_BAD_INPUT = 2


class StudyError(Exception):
    """Bad input to a study; the message is the one line the user sees."""


def fail(message):
    """One line on stderr, exit status 2."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(EXIT_BAD_INPUT)


def require(condition, message):
    if not condition:
        raise StudyError(message)


def run_checked(function, *args, **kwargs):
    """Call ``function``; a StudyError or data.DataError becomes ``fail(message)``."""
    try:
        return function(*args, **kwargs)
    except (StudyError, data.DataError) as error:
        fail(str(error))


# ----------------------------------------------------------------------------
# Flags


def define_data_flags(out_dir):
    """--dataset, --data_dir, --stl10_archive, --image_size, --out_dir, --seed, --limit."""
    flags.DEFINE_string("dataset", "digits", f"One of {', '.join(data.DATASETS)}.")
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir (STL-10).")
    flags.DEFINE_string("stl10_archive", None,
                        "A local stl10_binary.tar.gz, for machines without a download.")
    flags.DEFINE_integer("image_size", None,
                         "Resize images to this size (default: digits 32, STL-10 96).")
    flags.DEFINE_string("out_dir", out_dir, "Where the CSV files and figures go.")
    flags.DEFINE_integer("seed", 0, "Seed of the network's initialization and batch order.")
    flags.DEFINE_integer("limit", None, "Use only the first N training and N test images "
                         "(quick runs).")


def define_training_flags(*, epochs, batch_size, optimizer, learning_rate, schemes):
    """--epochs, --batch_size, --optimizer, --learning_rate, --schemes."""
    flags.DEFINE_integer("epochs", epochs, "Training epochs per scheme.")
    flags.DEFINE_integer("batch_size", batch_size, "Batch size.")
    flags.DEFINE_string("optimizer", optimizer, f"One of {', '.join(optimizers.OPTIMIZERS)}.")
    flags.DEFINE_float("learning_rate", learning_rate, "Learning rate.")
    flags.DEFINE_string("schemes", schemes,
                        f"Comma-separated schemes (of {', '.join(tfnorm.SCHEMES)}), or 'all'.")


def make_trainer(network, optimizer):
    """The studies' training step: a tfnorm.training.Trainer."""
    return training.Trainer(network, optimizer)


def parse_schemes(text, allowed=tfnorm.SCHEMES, flag="--schemes"):
    """'a,b' -> ['a', 'b'] ('all' -> allowed); unknown or repeated names are refused."""
    names = list(allowed) if text.strip() == "all" else [s.strip() for s in text.split(",")]
    require(names and all(names), f"{flag}: expected a comma-separated list, got {text!r}")
    for name in names:
        require(name in allowed,
                f"{flag}: unknown scheme {name!r}; expected some of {', '.join(allowed)}")
    require(len(set(names)) == len(names), f"{flag}: a scheme is named twice in {text!r}")
    return names


def require_positive(value, flag):
    require(value is not None and value > 0, f"{flag} must be positive, got {value}")


def check_out_dir(path):
    """The output directory exists (or can be made) and can be written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise StudyError(f"--out_dir {path}: cannot be created ({error.strerror})") from error
    require(os.path.isdir(path), f"--out_dir {path}: not a directory")
    require(os.access(path, os.W_OK), f"--out_dir {path}: cannot be written")


def check_data_flags():
    """Checks of the flags from ``define_data_flags``; raises StudyError."""
    require(FLAGS.dataset in data.DATASETS,
            f"--dataset: unknown dataset {FLAGS.dataset!r}; expected one of "
            f"{', '.join(data.DATASETS)}")
    if FLAGS.limit is not None:
        require_positive(FLAGS.limit, "--limit")
    if FLAGS.image_size is not None:
        require(FLAGS.image_size >= 32, f"--image_size must be at least 32, got {FLAGS.image_size}")
    if FLAGS.stl10_archive:
        require(FLAGS.dataset == "stl10", "--stl10_archive is only used with --dataset=stl10")
        data.check_stl10_archive(FLAGS.stl10_archive)
    check_out_dir(FLAGS.out_dir)


def check_training_flags(allowed=tfnorm.SCHEMES):
    """Checks of the flags from ``define_training_flags``; returns the schemes (names
    from ``allowed``)."""
    require_positive(FLAGS.epochs, "--epochs")
    require_positive(FLAGS.batch_size, "--batch_size")
    require_positive(FLAGS.learning_rate, "--learning_rate")
    require(FLAGS.optimizer in optimizers.OPTIMIZERS,
            f"--optimizer: unknown optimizer {FLAGS.optimizer!r}; expected one of "
            f"{', '.join(optimizers.OPTIMIZERS)}")
    return parse_schemes(FLAGS.schemes, allowed)


# ----------------------------------------------------------------------------
# Data and training


def load_data():
    """The dataset named by the flags (raises data.DataError when it cannot be had)."""
    dataset = data.load(FLAGS.dataset, data_dir=FLAGS.data_dir,
                        stl10_archive=FLAGS.stl10_archive, image_size=FLAGS.image_size)
    if FLAGS.limit:
        dataset = dataset._replace(
            train_images=dataset.train_images[:FLAGS.limit],
            train_labels=dataset.train_labels[:FLAGS.limit],
            test_images=dataset.test_images[:FLAGS.limit],
            test_labels=dataset.test_labels[:FLAGS.limit])
    require(len(dataset.train_labels) >= FLAGS.batch_size,
            f"--batch_size {FLAGS.batch_size} is larger than the "
            f"{len(dataset.train_labels)} training images")
    return dataset


def train_batches(dataset, batch_size, epoch, seed):
    """The training batches of ``epoch`` (from 1): a fixed shuffle per (seed, epoch)."""
    # data.batches keys its shuffle on epoch - 1: the orders of the published results.
    return data.batches(dataset.train_images, dataset.train_labels, batch_size,
                        shuffle_seed=seed, epoch=epoch - 1)


def evaluate(trainer, dataset, batch_size):
    """(mean test loss, test accuracy) in evaluation mode, over every test image."""
    total_loss = total_correct = 0.0
    for images, labels in data.batches(dataset.test_images, dataset.test_labels, batch_size,
                                       drop_remainder=False):
        loss_sum, correct = trainer.eval_step(images, labels)
        total_loss += float(loss_sum)
        total_correct += float(correct)
    count = len(dataset.test_labels)
    return total_loss / count, total_correct / count


def train_and_evaluate(name, trainer, dataset, *, epochs, batch_size, seed, log=None,
                       step_fn=None):
    """Train ``epochs`` epochs; returns one row per step (loss, accuracy) and one per epoch
    (mean train loss/accuracy, test loss/accuracy, seconds), each tagged with ``name``;
    epochs are numbered 1..epochs.

    trainer: has ``train_step`` and ``eval_step`` (a tfnorm.training.Trainer); step_fn:
    optional ``step_fn(step, epoch, images, labels)`` -> dict with loss and accuracy, run
    instead of ``trainer.train_step`` (a study probes some steps there)."""
    step_rows, epoch_rows = [], []
    step = 0
    # Epochs count from 1, as in the driver's metrics.csv (epoch 0 is "before training").
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        losses, accuracies = [], []
        for images, labels in train_batches(dataset, batch_size, epoch, seed):
            if step_fn is None:
                out = trainer.train_step(images, labels)
            else:
                out = step_fn(step, epoch, images, labels)
            loss, accuracy = float(out["loss"]), float(out["accuracy"])
            if not np.isfinite(loss):
                raise StudyError(f"{name}: the loss is {loss} at epoch {epoch}, step {step}; "
                                 f"lower --learning_rate")
            losses.append(loss)
            accuracies.append(accuracy)
            step_rows.append(dict(scheme=name, step=step, epoch=epoch, train_loss=loss,
                                  train_acc=accuracy))
            step += 1
        seconds = time.perf_counter() - start
        test_loss, test_acc = evaluate(trainer, dataset, batch_size)
        epoch_rows.append(dict(scheme=name, epoch=epoch, train_loss=float(np.mean(losses)),
                               train_acc=float(np.mean(accuracies)), test_loss=test_loss,
                               test_acc=test_acc, seconds=seconds))
        if log:
            log(f"{name} epoch {epoch}: train acc {np.mean(accuracies):.3f}, "
                f"test acc {test_acc:.3f} ({seconds:.1f} s)")
    return step_rows, epoch_rows


def first_batch(dataset, batch_size, seed):
    """The first training batch of epoch 1 (e.g. for weight normalization's init)."""
    return next(iter(train_batches(dataset, batch_size, 1, seed)))


def build_network(scheme, dataset, *, batch_size, seed, **options):
    """The article network for ``dataset`` under ``scheme`` (options go to
    tfnorm.article_network), weight-normalized layers initialized from the first batch
    (Salimans & Kingma's data-dependent init; a no-op for other schemes)."""
    network = tfnorm.article_network(scheme, num_classes=dataset.num_classes, seed=seed,
                                     **options)
    network.initialize_from_batch(first_batch(dataset, batch_size, seed)[0])
    return network


# ----------------------------------------------------------------------------
# Output


def write_csv(out_dir, name, rows):
    """rows (list of dicts) to out_dir/name, atomically; returns the path."""
    path = os.path.join(out_dir, name)
    io.write_csv(path, rows)
    return path


def write_config(out_dir, extra=None):
    """config.json: every flag of the script, the library versions, and ``extra``."""
    own_flags = [f for module, module_flags in FLAGS.flags_by_module_dict().items()
                 if not module.startswith(("absl", "tensorflow")) for f in module_flags]
    values = {f.name: f.value for f in own_flags}
    config = dict(flags=values, tensorflow=tf.__version__, numpy=np.__version__,
                  **(extra or {}))
    io.write_json(os.path.join(out_dir, "config.json"), config)


def figure(rows=1, cols=1, width=4.5, height=3.2, **kwargs):
    """A matplotlib figure and axes grid (always 2-D: axes[row][col])."""
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                        **kwargs)


def save_figure(fig, out_dir, name):
    """Save ``fig`` to out_dir/name atomically and close it; returns the path."""
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def scheme_colors(names):
    """A fixed colour per scheme name, the same in every figure of a study."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}
