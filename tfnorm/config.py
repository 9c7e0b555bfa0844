"""A run's configuration: one frozen dataclass whose fields are every choice a run makes,
each with its type, default, help, choices and role written once, here, or for the
schemes' hyperparameters in the registry (``tfnorm.schemes``: each row gives the
defaults of those it takes, HYPERPARAMETERS their help). The scripts' flags are generated
from these fields (``experiments.cli``); a run's config.json holds them.

    config = tfnorm.config.resolve({"scheme": "batch", "out_dir": "runs/b"})
    config.epochs, config["epochs"]            # 10: the dataset's (digits) default
    config.replace(seed=1)                     # a new frozen configuration

A default of None means "the dataset's" (DATASET_DEFAULTS). Each field has a role: a
"result" decides the numbers a run computes; a "schedule" field decides which epochs are
recorded or evaluated (part of the run's identity, but not of its network or steps); a
"place" says where files are or how progress is shown (a run may resume with another).

No TensorFlow and no absl here: a script checks its flags against this before paying
TensorFlow's start-up.
"""

import collections
import collections.abc
import dataclasses
import functools

from tfnorm import catalog, schemes
from tfnorm.measures import DEFAULT_BINS


# The article's STL-10 setup (his notebook); digits: a short run that still separates
# the schemes (see README). A field whose default is None takes its dataset's.
DATASET_DEFAULTS = {
    "stl10": dict(epochs=200, batch_size=20, learning_rate=0.0008, optimizer="article_adam",
                  image_size=96, record_every=1, shuffle=False),
    "digits": dict(epochs=10, batch_size=20, learning_rate=0.001, optimizer="adam",
                   image_size=32, record_every=5, shuffle=True),
}

ROLES = ("result", "schedule", "place")

Field = collections.namedtuple("Field", ["name", "type", "default", "help", "choices", "role"])
Field.__doc__ = """One field of a run's configuration. ``type``: bool, int, float or str;
``choices``: the allowed values of a str field (None: any); ``role``: one of ROLES."""


def _field(name, type_, default, text, choices=None, role="result"):
    return Field(name, type_, default, text, choices, role)


# The run's fields before the schemes' hyperparameters, and after them (the order of the
# flags in --help; config.json sorts its keys).
_BEFORE = (
    _field("dataset", str, "digits", "digits (bundled with scikit-learn) or stl10 "
           "(tensorflow-datasets).", catalog.DATASETS),
    _field("data_dir", str, None, "tensorflow-datasets data_dir (STL-10).", role="place"),
    _field("stl10_archive", str, None, f"A local {catalog.STL10_ARCHIVE_NAME} for offline "
           "machines (it becomes tfds's manual_dir).", role="place"),
    _field("epochs", int, None, "Training epochs (of each run)."),
    _field("batch_size", int, None, "Batch size (the article's: 20)."),
    _field("learning_rate", float, None, "Learning rate."),
    # A free string checked against catalog.OPTIMIZERS (experiments.cli.validate), so that
    # a wrong one is answered by the project's one line, not absl's enum message.
    _field("optimizer", str, None, f"One of {', '.join(catalog.OPTIMIZERS)} (article_adam: "
           "the article's Adam with constant bias correction)."),
    _field("record_every", int, None, "Record histograms and draw panels every N epochs "
           "(and at the first and last epoch).", role="schedule"),
)
_AFTER = (
    _field("image_size", int, None, "Image side in pixels."),
    _field("shuffle", bool, None, "Shuffle the training set each epoch, the order a "
           "function of (seed, epoch); else the file order (the article's)."),
    _field("bins", int, DEFAULT_BINS, "Histogram bins (the article's 50)."),
    _field("train_limit", int, 0, "Use only the first N training images (0: all)."),
    _field("test_limit", int, 0, "Use only the first N test images (0: all)."),
    _field("tensorboard", bool, False, "Also write tf.summary scalars and per-layer "
           "histograms under <out_dir>/tensorboard.", role="place"),
    _field("overwrite", bool, False, "Replace the run in --out_dir (start again) instead of "
           "resuming it or refusing a different one.", role="place"),
    _field("progress", bool, True, "Show a progress bar within each epoch.", role="place"),
    _field("panels", bool, True, "Draw the four-panel figures and GIFs while training "
           "(--nopanels: only the records; draw them later with experiments.article.panels).",
           role="place"),
    _field("final_activation", str, "relu", "The activation of the last layer, whose output "
           "the softmax reads: relu (the article's) or linear (logits free to go negative).",
           ("relu", "linear")),
    _field("per_position_running_stats", bool, False, "Evaluate layer and instance norm as "
           "the article's notebook did (reproduces its quirk): with running averages (0.9 "
           "old + 0.1 batch) of the per-sample statistics kept per position of a training "
           "batch, test image i standardized with position i mod batch_size; ignored by the "
           "other schemes."),
    _field("train_per_class", int, 0, "Digits only: train on N images of each class, drawn "
           "with the run's seed and kept in file order, and test on every other image (0: "
           "the fixed 70/30 split). 10 x N must be whole batches."),
    _field("eval_every", int, 1, "The test pass every N epochs (epochs N, 2N, ... and the "
           "last); metrics.csv holds nan as the test loss and accuracy of the others.",
           role="schedule"),
)
_RUN = (
    _field("seed", int, 0, "The first seed (initial weights, data order, noise)."),
    _field("out_dir", str, None, "Where the outputs go.", role="place"),
)


def fields():
    """Every field of a run's configuration, in order: the fields above with the
    registry's run hyperparameters (``schemes.run_hyperparameters``, in alphabetical
    order) after record_every, then the scheme (its choices: the registry's), the seed
    and the run directory."""
    hyper = tuple(_field(name, type(default), default, text)
                  for name, (default, text) in sorted(schemes.run_hyperparameters().items()))
    scheme = _field("scheme", str, "none", "Normalization scheme.", tuple(schemes.REGISTRY))
    return _BEFORE + hyper + _AFTER + (scheme,) + _RUN


def field(name):
    """The Field ``name`` (KeyError if the configuration has none)."""
    for found in fields():
        if found.name == name:
            return found
    raise KeyError(name)


def names(*roles):
    """The field names (of ``roles`` only, when given), in order."""
    return tuple(f.name for f in fields() if not roles or f.role in roles)


def training_names():
    """The fields a script that trains shares with the driver: all but the scheme, the
    seed and the run directory, which each script names for itself."""
    return tuple(name for name in names() if name not in ("scheme", "seed", "out_dir"))


class _Mapping(collections.abc.Mapping):
    """A configuration is read as a mapping too (``config["epochs"]``, ``dict(config)``,
    ``dict(config, seed=1)``), the way every run-directory file names its fields."""

    def __getitem__(self, name):
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self):
        return len(self.__dataclass_fields__)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@functools.lru_cache(maxsize=None)
def _config_class(signature):
    return dataclasses.make_dataclass(
        "RunConfig", [(name, type_, dataclasses.field(default=default))
                      for name, type_, default in signature],
        bases=(_Mapping,), frozen=True, eq=False)


def run_config_class():
    """The frozen dataclass of a run's configuration, one field per ``fields()`` (made
    from the registry as it is now: a scheme's new hyperparameter is a new field)."""
    return _config_class(tuple((f.name, f.type, f.default) for f in fields()))


def resolve(values):
    """A full configuration (a RunConfig) from ``values`` (name -> value; None or
    missing: the default, then the dataset's; names that are no field are ignored)."""
    given = {f.name: values.get(f.name) for f in fields()}
    config = {f.name: f.default if given[f.name] is None else given[f.name]
              for f in fields()}
    for name, default in DATASET_DEFAULTS.get(config["dataset"], {}).items():
        if config[name] is None:
            config[name] = default
    return run_config_class()(**config)
