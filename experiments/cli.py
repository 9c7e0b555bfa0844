"""The one support module of the scripts: the flag vocabulary they share, checking a
configuration before any work (and before TensorFlow is imported), the one-line error
exit with its exit codes, and TensorFlow's start-up banner kept off the terminal.

A run's configuration is the library's (``tfnorm.config``: a frozen dataclass, every
field's type, default and help written once there or, for the schemes' hyperparameters,
in the registry); the flags of a run are generated from its fields (``define_flags``),
and ``resolve`` fills in the defaults. ``tfnorm.run.runner.run(config)`` takes it, so callers
(compare, a distribution strategy, tests) build one without going through the command
line.

Nothing here imports TensorFlow, scipy or matplotlib, and no script imports them before
its flags and --out_dir are checked: a refusal answers in a fraction of a second. A
script ends with ``cli.run(main)``, which keeps the banner out of stderr
(``experiments.banner``) and turns absl's flag errors, and a float flag that is NaN or
infinite, into one line.
"""

import functools
import math
import os
import sys
import tempfile

# INFO lines of TensorFlow's C++ runtime say nothing about the run; its warnings and
# errors (level 1 and up) still reach the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags

from experiments import banner

from tfnorm import catalog, errors, schemes
from tfnorm import config as run_config
from tfnorm.run import records, rundir, runid, stopping

EXIT_BAD_INPUT = errors.ConfigError.exit_code
EXIT_DIVERGED = errors.Divergence.exit_code


ConfigError = errors.ConfigError


def define_run_flags(flag_values=flags.FLAGS):
    """The training flags that train and compare share (compare passes them on): every
    field of the run configuration but the scheme, the seed and the run directory."""
    define_flags(run_config.training_names(), flag_values=flag_values)


resolve = run_config.resolve  # a full configuration from flag values (name -> value)


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


def command_as_given(module, flag_values, names):
    """``python -m module`` with the flags of ``names`` the command line gave (what a
    results file names as the command that wrote it); a list flag as comma-separated."""
    given = {name: (",".join(flag_values[name].value) if isinstance(flag_values[name].value, list)
                    else flag_values[name].value)
             for name in names if flag_values[name].present}
    return " ".join([f"python -m {module}"] + to_command_line(given, names))


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_path(path):
    """``path`` as a results file may name it: as given when relative, else relative to
    the repository (an absolute path names one machine's layout, never another's)."""
    return os.path.relpath(path, REPOSITORY) if os.path.isabs(path) else path


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
    if config["dataset"] not in catalog.DATASETS:
        raise ConfigError(f"--dataset={config['dataset']}: unknown dataset; expected one of "
                          f"{', '.join(catalog.DATASETS)}")
    if config["scheme"] not in schemes.REGISTRY:
        raise ConfigError(f"--scheme={config['scheme']}: unknown scheme; expected one of "
                          f"{', '.join(schemes.REGISTRY)}")
    if config["optimizer"] not in catalog.OPTIMIZERS:
        raise ConfigError(f"--optimizer={config['optimizer']}: unknown optimizer; expected one "
                          f"of {', '.join(catalog.OPTIMIZERS)}")
    for name in ("epochs", "batch_size", "record_every", "image_size", "bins", "eval_every"):
        if not config[name] > 0:
            raise ConfigError(f"--{name}={config[name]}: must be a positive integer")
    check_seed(config["seed"])
    check_memory(config)
    if not math.isfinite(config["boxcox_lambda"]):
        raise ConfigError(f"--boxcox_lambda={config['boxcox_lambda']}: must be finite")
    if not config["learning_rate"] > 0 or config["learning_rate"] == float("inf"):
        raise ConfigError(f"--learning_rate={config['learning_rate']}: must be a positive "
                          "finite number")
    for name in ("train_limit", "test_limit"):
        if config[name] < 0:
            raise ConfigError(f"--{name}={config[name]}: must be 0 (all) or positive")
    catalog.check_train_per_class(config)
    if config["groups"] <= 0 or catalog.ARTICLE_WIDTH % config["groups"]:
        raise ConfigError(f"--groups={config['groups']}: does not divide the network width "
                          f"{catalog.ARTICLE_WIDTH} (use 1, 2, 4, 8 or 16)")
    if config["batch_size"] < schemes.min_batch_size(config["scheme"]):
        raise ConfigError(f"--batch_size={config['batch_size']}: {config['scheme']} "
                          "normalization needs batches of at least 2")
    if config["stl10_archive"]:
        if config["dataset"] != "stl10":
            raise ConfigError("--stl10_archive: only used with --dataset=stl10")
        try:
            catalog.check_stl10_archive(config["stl10_archive"])
        except catalog.DataError as error:
            raise ConfigError(str(error)) from None
    if check_out_dir:
        validate_out_dir(config)


MAX_SEED = 2 ** 32 - 1  # numpy's seeds; tf.random takes any int64


def check_seed(seed, flag="--seed", count=1):
    """Seeds seed .. seed + count - 1 must all be valid."""
    if not 0 <= seed <= MAX_SEED - (count - 1):
        raise ConfigError(f"{flag}={seed}: must be between 0 and {MAX_SEED - (count - 1)}"
                          + (f" (with {count} seeds)" if count > 1 else ""))


def available_memory():
    """Bytes of memory available now (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_needed(config):
    """Bytes a run needs, estimated from its flags: the images as uint8, the float32 copy
    of one resize chunk (1000 images), and the training step's and the test pass's
    activations (about 130 bytes per input pixel per image: six caches of the five
    normalized layers' maps, measured as 5.4 floats per pixel in all, kept in float32)."""
    pixels = config["image_size"] ** 2
    images = catalog.DATASET_IMAGES[config["dataset"]]
    for name in ("train_limit", "test_limit"):
        images = images if not config[name] else min(images, 2 * config[name])
    return pixels * (3 * images + 12 * min(images, 1000)
                     + 130 * (config["batch_size"] + 100))


def check_memory(config, needed=None):
    """Refuse a run whose images and step cannot fit in memory (``needed``: bytes)."""
    needed = memory_needed(config) if needed is None else needed
    available = available_memory()
    if available is not None and needed > 0.9 * available:
        raise errors.OutOfMemory(
            f"--image_size={config['image_size']} with --batch_size={config['batch_size']}: "
            f"needs about {needed / 2 ** 30:.1f} GiB of memory, {available / 2 ** 30:.1f} "
            "GiB are available; use a smaller --image_size or --batch_size")


def validate_out_dir(config, checkpoint=True):
    """--out_dir can be written and holds no other run (creates it); ``checkpoint``: its
    checkpoint is read whole and is this run's (imports TensorFlow when there is one)."""
    if not config["out_dir"]:
        raise ConfigError("--out_dir: required")
    check_writable(config["out_dir"])
    rundir.check_run_dir(config["out_dir"], config, config["overwrite"], checkpoint)


# ----------------------------------------------------------------------------
# The flag vocabulary: every field of the run configuration (``tfnorm.config``: its type,
# default, help and choices), and the few flags more than one script has that are no
# field of a run (SCRIPT_FLAGS). A script takes the names it needs with its own defaults
# and help (``define_flags``); a default of None means the dataset's
# (``tfnorm.config.DATASET_DEFAULTS``), and the help says so. The studies' checks
# (``check_study``) are the driver's ``validate``, run once per scheme.

SCRIPT_FLAGS = {
    "schemes": (str, None, "Comma-separated schemes, or 'all'."),
    "seeds": (int, 1, "Runs per scheme, with seeds seed, seed+1, ..."),
    "init_std": (float, 0.05, "Std of the weights' normal init (0.05: the article's; "
                 "without normalization SGD then barely moves)."),
    "every": (int, 1, "Measure every this many training steps (steps 1, 1 + every, ...)."),
    "compare_dir": (str, None, "An experiments.article.compare --out_dir."),
}
_ABSL_KIND = {bool: "boolean", int: "integer", float: "float", str: "string"}


def flag_names():
    """Every name of the vocabulary: the run configuration's fields, then SCRIPT_FLAGS."""
    return run_config.names() + tuple(SCRIPT_FLAGS)


def flag_spec(name):
    """(absl kind, default, help, choices) of the vocabulary's flag ``name``."""
    if name in SCRIPT_FLAGS:
        type_, default, text = SCRIPT_FLAGS[name]
        return _ABSL_KIND[type_], default, text, None
    found = run_config.field(name)
    kind = "enum" if found.choices is not None else _ABSL_KIND[found.type]
    return kind, found.default, found.help, found.choices


def define_flags(names, defaults=None, flag_values=flags.FLAGS, helps=None):
    """Define the flags ``names`` of the vocabulary, with ``defaults`` and ``helps`` (name
    -> value) in place of its own."""
    defaults, helps = defaults or {}, helps or {}
    for name in names:
        kind, default, text, choices = flag_spec(name)
        default, text = defaults.get(name, default), helps.get(name, text)
        if default is None and name in run_config.DATASET_DEFAULTS["digits"]:
            text += " Default: " + ", ".join(f"{dataset} {values[name]}" for dataset, values
                                             in run_config.DATASET_DEFAULTS.items()) + "."
        if kind == "enum":
            flags.DEFINE_enum(name, default, list(choices), text, flag_values=flag_values)
        else:
            getattr(flags, f"DEFINE_{kind}")(name, default, text, flag_values=flag_values)


# The flags every study has; those of the studies that train add TRAINING_STUDY_FLAGS.
STUDY_FLAGS = ("dataset", "data_dir", "stl10_archive", "image_size", "train_limit",
               "test_limit", "seed", "seeds", "out_dir")
TRAINING_STUDY_FLAGS = ("epochs", "batch_size", "optimizer", "learning_rate", "schemes")


def check_positive(values, *names):
    for name in names:
        if not values[name] > 0:
            raise ConfigError(f"--{name}={values[name]}: must be positive")


def check_study(values, allowed=schemes.SCHEMES):
    """Check a study's shared flags (``values``: name -> value) with the driver's rules.
    Returns (values with the dataset's defaults filled in, the --schemes list or None).
    A scheme of ``allowed`` may be a variant 'scheme+something' (checked as 'scheme')."""
    config = resolve(values)
    filled = dict(values, **{name: config[name] for name in values if name in config})
    check_positive(filled, "seeds")
    names = None
    if "schemes" in values:
        names = parse_schemes(values["schemes"], allowed)
    for name in names or ["none"]:
        base = name.partition("+")[0]
        validate(dict(config, scheme=base if base in schemes.SCHEMES else "none"),
                 check_out_dir=False)
    if not filled.get("out_dir"):
        raise ConfigError("--out_dir: required")
    check_writable(filled["out_dir"])
    return filled, names


STRATEGIES = ("none", "mirrored", "multiworker")


def check_strategy_flags(strategy, cpu_devices):
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy={strategy}: unknown; expected one of "
                          f"{', '.join(STRATEGIES)}")
    if cpu_devices < 0:
        raise ConfigError(f"--cpu_devices={cpu_devices}: must be 0 or more")
    if cpu_devices and strategy != "mirrored":
        raise ConfigError(f"--cpu_devices={cpu_devices}: applies to --strategy=mirrored "
                          f"only, not {strategy!r}")


def parse_schemes(text, allowed=schemes.SCHEMES, flag="--schemes", allow_empty=False):
    """'a,b' -> ['a', 'b']; None or 'all' -> ``allowed``; unknown or repeated names and an
    empty list (unless ``allow_empty``) are refused with one line naming ``flag``."""
    if text is None or text.strip() == "all":
        return list(allowed)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names and not allow_empty:
        raise ConfigError(f"{flag}: no scheme given")
    for name in names:
        if name not in allowed:
            raise ConfigError(f"{flag}: unknown scheme {name!r}; expected some of "
                              f"{', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{flag}: a scheme is named twice in {text!r}")
    return names


identity = runid.identity  # what decides a run's results (NOT_IDENTITY, ADDED_LATER there)


def stored_config(run_dir):
    """The configuration of the run in ``run_dir`` from its config.json (later flags take
    their defaults), or None if there is none; DamagedFile if it cannot be read."""
    stored = records.read_config(run_dir)
    return None if stored is None else resolve(dict(stored, out_dir=run_dir))


def fail(message, code=EXIT_BAD_INPUT):
    """One line on stderr, then exit with ``code`` (no traceback)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def parse_flags_or_fail(argv, flag_values=flags.FLAGS):
    """absl flags_parser, the last step before a script's main: a bad flag value is one
    line and exit 2, not absl's help text; so is a float flag that is NaN or infinite (no
    script can use one); a Ctrl-C that came while the script loaded is exit 130."""
    if stopping.requested():
        interrupted = errors.Interrupted(what="before any work began")
        fail(str(interrupted), interrupted.exit_code)
    try:
        remaining = flag_values(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])
    for name in sorted(flag_values):
        flag = flag_values[name]
        if isinstance(flag.parser, flags.FloatParser) and flag.value is not None \
                and not math.isfinite(flag.value):
            fail(f"--{name}={flag.value}: must be a finite number")
    return remaining


def one_line_errors(main):
    """A script's main with every ``errors.RunEnded`` as one line on stderr and its exit
    code (a direct call, as in the tests, exits the same way)."""
    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except errors.RunEnded as error:
            fail(str(error), error.exit_code)
    return guarded


def run(main):
    """The entry point of every script: the banner filter, Ctrl-C as a request to stop at
    a safe point (``tfnorm.run.stopping``), then absl's app.run with flag errors as one line
    (exit 2)."""
    banner.filter_banner()
    stopping.install()  # again, if this package was imported as a library (idempotent)
    app.run(one_line_errors(main), flags_parser=parse_flags_or_fail)
