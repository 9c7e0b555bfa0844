"""What experiments.train and experiments.compare share: the training flags, their
per-dataset defaults, checking a configuration before any work, and the one-line
error exit.

A run's configuration is a plain dict (``resolve``): every training flag with its
dataset default filled in. ``train.run(config)`` takes it, so callers (compare, a
distribution strategy, tests) build one without going through the command line.
"""

import math
import os
import sys
import tempfile

# TensorFlow's C++ start-up lines (oneDNN, CPU features) say nothing about the run.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_STARTUP_NOISE = ("All log messages before absl::InitializeLog() is called",
                  "oneDNN custom operations are on")


def _import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up banner filtered out of stderr (TF 2.21
    prints it through absl before TF_CPP_MIN_LOG_LEVEL applies), so that a bad flag
    leaves exactly one line there. Anything else TF prints is passed on."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _STARTUP_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()


_import_tensorflow_quietly()

from absl import flags  # noqa: E402

import tfnorm  # noqa: E402
from tfnorm import data, optimizers, records, training  # noqa: E402

# The article's STL-10 setup (REFERENCE.md section 1); digits: a short run that still
# separates the schemes (see README). None in a flag means "the dataset's default".
DATASET_DEFAULTS = {
    "stl10": dict(epochs=200, batch_size=20, learning_rate=0.0008, optimizer="article_adam",
                  image_size=96, record_every=1, shuffle=False),
    "digits": dict(epochs=10, batch_size=20, learning_rate=0.001, optimizer="adam",
                   image_size=32, record_every=5, shuffle=True),
}
ARTICLE_WIDTH = 16  # channels of the article's hidden layers: --groups must divide it

# Flags that say where things are or how to show progress, not what is computed: a
# run directory may be resumed with other values of these.
NOT_IDENTITY = ("out_dir", "overwrite", "data_dir", "stl10_archive", "tensorboard",
                "progress", "panels")

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


class ConfigError(Exception):
    """Bad input: the message is one line naming the flag or file at fault."""


def define_run_flags(flag_values=flags.FLAGS):
    """The training flags that train and compare share (compare passes them on)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_enum("dataset", "digits", list(data.DATASETS),
                      "digits (bundled with scikit-learn) or stl10 (tensorflow-datasets).", **fv)
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir (STL-10).", **fv)
    flags.DEFINE_string("stl10_archive", None,
                        f"A local {data.STL10_ARCHIVE_NAME} for offline machines "
                        "(it becomes tfds's manual_dir).", **fv)
    flags.DEFINE_integer("epochs", None, "Epochs (default: stl10 200, digits 10).", **fv)
    flags.DEFINE_integer("batch_size", None, "Batch size (default 20, the article's).", **fv)
    flags.DEFINE_float("learning_rate", None, "Learning rate (default: stl10 0.0008, "
                       "digits 0.001).", **fv)
    flags.DEFINE_string("optimizer", None,
                        f"One of {', '.join(optimizers.OPTIMIZERS)} (default: stl10 "
                        "article_adam, the article's Adam with constant bias correction; "
                        "digits adam).", **fv)
    flags.DEFINE_integer("record_every", None,
                         "Record histograms and draw panels every N epochs (and at the "
                         "first and last epoch). Default: stl10 1, digits 5.", **fv)
    flags.DEFINE_boolean("affine", False, "Learnable gamma/beta after normalization "
                         "(the article had none).", **fv)
    flags.DEFINE_float("boxcox_lambda", 2.0, "Initial lambda of Box-Cox (the article's 2).",
                       **fv)
    flags.DEFINE_integer("groups", 4, "Groups of group normalization; must divide "
                         f"the width {ARTICLE_WIDTH}.", **fv)
    flags.DEFINE_integer("image_size", None, "Image side in pixels (default: stl10 96, "
                         "digits 32).", **fv)
    flags.DEFINE_boolean("shuffle", None, "Shuffle the training set each epoch, the order "
                         "a function of (seed, epoch). Default: stl10 no (the article's "
                         "file order), digits yes.", **fv)
    flags.DEFINE_integer("bins", training.DEFAULT_BINS,
                         "Histogram bins of the records (the article's 50).", **fv)
    flags.DEFINE_integer("train_limit", 0, "Use only the first N training images (0: all).",
                         **fv)
    flags.DEFINE_integer("test_limit", 0, "Use only the first N test images (0: all).", **fv)
    flags.DEFINE_boolean("tensorboard", False, "Also write tf.summary scalars and per-layer "
                         "histograms under <out_dir>/tensorboard.", **fv)
    flags.DEFINE_boolean("overwrite", False, "Replace the run in --out_dir (start again) "
                         "instead of resuming it or refusing a different one.", **fv)
    flags.DEFINE_boolean("progress", True, "Show a progress bar within each epoch.", **fv)
    flags.DEFINE_boolean("panels", True, "Draw the four-panel figures and GIFs while "
                         "training (--nopanels: only the records; draw them later with "
                         "experiments.panels).", **fv)


RUN_FLAGS = ("dataset", "data_dir", "stl10_archive", "epochs", "batch_size", "learning_rate",
             "optimizer", "record_every", "affine", "boxcox_lambda", "groups", "image_size",
             "shuffle", "bins", "train_limit", "test_limit", "tensorboard", "overwrite", "progress",
             "panels")


def resolve(values):
    """A full configuration from flag values (a dict; None or missing: the default)."""
    config = {name: values.get(name) for name in RUN_FLAGS + ("scheme", "seed", "out_dir")}
    for key, default in (("dataset", "digits"), ("affine", False), ("groups", 4),
                         ("boxcox_lambda", 2.0),
                         ("bins", training.DEFAULT_BINS), ("train_limit", 0),
                         ("test_limit", 0), ("tensorboard", False), ("overwrite", False),
                         ("progress", True), ("panels", True), ("seed", 0),
                         ("scheme", "none")):
        if config[key] is None:
            config[key] = default
    for key, default in DATASET_DEFAULTS.get(config["dataset"], {}).items():
        if config[key] is None:
            config[key] = default
    return config


def flag_values(flag_values, names):
    return {name: flag_values[name].value for name in names}


def to_command_line(config, names):
    """Flags that reproduce ``config`` for ``names`` (for compare's subprocesses)."""
    args = []
    for name in names:
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(f"--{name}" if value else f"--no{name}")
        else:
            args.append(f"--{name}={value}")
    return args


def check_writable(directory, flag="--out_dir"):
    """Create ``directory`` if needed and prove a file can be written in it."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise ConfigError(f"{flag} {directory}: cannot be written "
                          f"({error.strerror or error})") from None


def validate(config, *, check_out_dir=True):
    """Raise ConfigError (one line naming the flag) for any bad value, before any work."""
    if config["dataset"] not in data.DATASETS:
        raise ConfigError(f"--dataset={config['dataset']}: unknown dataset; expected one of "
                          f"{', '.join(data.DATASETS)}")
    if config["scheme"] not in tfnorm.SCHEMES:
        raise ConfigError(f"--scheme={config['scheme']}: unknown scheme; expected one of "
                          f"{', '.join(tfnorm.SCHEMES)}")
    if config["optimizer"] not in optimizers.OPTIMIZERS:
        raise ConfigError(f"--optimizer={config['optimizer']}: unknown optimizer; expected one "
                          f"of {', '.join(optimizers.OPTIMIZERS)}")
    for name in ("epochs", "batch_size", "record_every", "image_size", "bins"):
        if not config[name] > 0:
            raise ConfigError(f"--{name}={config[name]}: must be a positive integer")
    if not math.isfinite(config["boxcox_lambda"]):
        raise ConfigError(f"--boxcox_lambda={config['boxcox_lambda']}: must be finite")
    if not config["learning_rate"] > 0 or config["learning_rate"] == float("inf"):
        raise ConfigError(f"--learning_rate={config['learning_rate']}: must be a positive "
                          "finite number")
    for name in ("train_limit", "test_limit"):
        if config[name] < 0:
            raise ConfigError(f"--{name}={config[name]}: must be 0 (all) or positive")
    if config["groups"] <= 0 or ARTICLE_WIDTH % config["groups"]:
        raise ConfigError(f"--groups={config['groups']}: does not divide the network width "
                          f"{ARTICLE_WIDTH} (use 1, 2, 4, 8 or 16)")
    if config["batch_size"] < 2 and config["scheme"] in ("batch", "noisybatch", "meanonly"):
        raise ConfigError(f"--batch_size={config['batch_size']}: {config['scheme']} "
                          "normalization needs batches of at least 2")
    if config["stl10_archive"]:
        if config["dataset"] != "stl10":
            raise ConfigError("--stl10_archive: only used with --dataset=stl10")
        try:
            data.check_stl10_archive(config["stl10_archive"])
        except data.DataError as error:
            raise ConfigError(str(error)) from None
    if check_out_dir:
        if not config["out_dir"]:
            raise ConfigError("--out_dir: required")
        check_writable(config["out_dir"])
        try:
            records.check_run_dir(config["out_dir"], identity(config), config["overwrite"])
        except records.RunDirError as error:
            raise ConfigError(str(error)) from None


def identity(config):
    """The part of a configuration that decides the results."""
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}


def fail(message, code=EXIT_BAD_INPUT):
    """One line on stderr, then exit with ``code`` (no traceback)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def parse_flags_or_fail(argv, flag_values=flags.FLAGS):
    """absl flags_parser: a bad flag value is one line and exit 2, not absl's help text."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])
