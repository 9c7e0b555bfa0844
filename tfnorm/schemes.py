"""The scheme registry: one table says what each normalization scheme is and needs.

Everything else (the network builder, the command-line checks, the distributed trainer,
the probes, the studies, the benchmark) asks this table instead of keeping its own list.
It imports no TensorFlow, so that a script can check its flags against it before paying
TensorFlow's start-up.

Adding a scheme: write its maths (a ``*_forward``/``*_backward`` pair in
``tfnorm/norms/maths.py`` and a thin ``Normalization`` class in
``tfnorm/norms/normalizations.py``), add one ``Scheme`` row below naming its factory and
its hyperparameters with their defaults (a new one also gets a line in HYPERPARAMETERS:
with a help text it becomes a field of the run configuration and a flag), and test it
(``tests/test_network.py`` and ``tests/test_schemes.py`` pick every registered scheme up
by themselves).
"""

import collections
import importlib

from tfnorm import catalog

# The library's defaults of the hyperparameters many schemes share (the article's: epsilon
# under the square root, running statistics momentum * old + (1 - momentum) * batch).
DEFAULT_EPSILON = 1e-8
DEFAULT_MOMENTUM = 0.9

# Every hyperparameter a factory may be given, with its help when a run chooses it (then
# it is a field of the run's configuration, ``tfnorm.config``, and a flag of the scripts,
# its default the one the rows below give it), or None when the library sets it: epsilon,
# momentum, boxcox_shift, seed (the network seeds layer i's noise seed * 1000 + i), and
# per_position_running_stats (0: off; N: the article notebook's evaluation of layer and
# instance norm with running statistics per position of a training batch of N; the
# network sets it from the run's boolean flag of that name).
HYPERPARAMETERS = collections.OrderedDict([
    ("epsilon", None),
    ("momentum", None),
    ("affine", "Learnable gamma/beta after normalization (the article had none)."),
    ("groups", "Groups of group normalization; must divide the width "
               f"{catalog.ARTICLE_WIDTH}."),
    ("boxcox_lambda", "Initial lambda of Box-Cox (the article's 2)."),
    ("boxcox_shift", None),
    ("seed", None),
    ("per_position_running_stats", None),
])

Scheme = collections.namedtuple("Scheme", [
    "name",
    "factory",                  # "module:function" under tfnorm, called (channels, dtype, **hyper)
    "uses_batch_statistics",    # statistics over the batch: needs >= 2 samples, running stats
    "reparameterizes_weights",  # w = g v/||v|| in the weight layer (with data-dependent init)
    "hyperparameters",          # {name: default} of those of HYPERPARAMETERS the factory takes
    "synchronized",             # its forward sums over the batch across replicas when the
                                # batch is split (``Normalization.synchronize``)
    "input_domain",             # "any", or "above_minus_shift" (Box-Cox needs x + shift > 0)
    "description",
])

_EPSILON, _MOMENTUM = {"epsilon": DEFAULT_EPSILON}, {"momentum": DEFAULT_MOMENTUM}

_ROWS = (
    Scheme("none", "norms:Normalization", False, False, {}, False, "any",
           "no normalization (the identity)"),
    Scheme("batch", "norms:BatchNorm", True, False, dict(_EPSILON, **_MOMENTUM, affine=False),
           True, "any",
           "batch norm: per channel over (N, H, W); running statistics at test time"),
    Scheme("layer", "norms:LayerNorm", False, False,
           dict(_EPSILON, affine=False, **_MOMENTUM, per_position_running_stats=0), False,
           "any", "layer norm: per sample over (H, W, C)"),
    Scheme("instance", "norms:InstanceNorm", False, False,
           dict(_EPSILON, affine=False, **_MOMENTUM, per_position_running_stats=0), False,
           "any", "instance norm: per sample and channel over (H, W)"),
    Scheme("group", "norms:GroupNorm", False, False, dict(_EPSILON, affine=False, groups=4),
           False, "any", "group norm: per sample and group of C/G channels over (H, W, C/G)"),
    Scheme("boxcox", "norms:boxcox", False, False, {"boxcox_lambda": 2.0, "boxcox_shift": 1.0},
           False, "above_minus_shift",
           "Box-Cox power transform of x + 1, lambda learned per layer"),
    Scheme("weight", "norms:Normalization", False, True, {}, False, "any",
           "weight norm: w = g v/||v|| in every layer, no normalization of activations"),
    Scheme("meanonly", "norms:MeanOnlyBatchNorm", True, True, dict(_MOMENTUM, affine=False),
           True, "any",
           "weight norm plus mean-only batch norm (Salimans & Kingma)"),
    Scheme("noisybatch", "norms:noisy_batch_norm", True, False,
           dict(_EPSILON, **_MOMENTUM, affine=False, seed=0), True, "any",
           "batch norm followed by Santurkar et al.'s per-step noise"),
)

REGISTRY = collections.OrderedDict((row.name, row) for row in _ROWS)
SCHEMES = tuple(REGISTRY)


class UnknownScheme(ValueError):
    """A name that is not in the registry."""


def get(name):
    """The registry row of ``name``; UnknownScheme names the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownScheme(f"unknown scheme {name!r}; expected one of "
                            f"{', '.join(SCHEMES)}") from None


def check(name):
    """Raise UnknownScheme (a ValueError naming the valid ones) unless ``name`` is registered."""
    get(name)


def names(**where):
    """The schemes whose fields equal ``where``, in registry order, e.g.
    ``names(uses_batch_statistics=True)``."""
    return tuple(row.name for row in REGISTRY.values()
                 if all(getattr(row, key) == value for key, value in where.items()))


def min_batch_size(name):
    """The smallest batch a scheme can train on (batch statistics need two samples)."""
    return 2 if get(name).uses_batch_statistics else 1


def default(name, hyperparameter):
    """The default of ``hyperparameter`` under scheme ``name`` (its registry row's)."""
    return get(name).hyperparameters[hyperparameter]


def defaults():
    """{name: default} of every hyperparameter some scheme takes (the first row's that
    takes it; the rows agree on those a run chooses, ``run_hyperparameters``)."""
    found = {}
    for row in REGISTRY.values():
        for name, value in row.hyperparameters.items():
            found.setdefault(name, value)
    return found


def run_hyperparameters():
    """{name: (default, help)} of the hyperparameters a run chooses (those with a help in
    HYPERPARAMETERS), in that order; the default is the rows' (ValueError if two rows
    that take one give it different defaults: a run's flag has one)."""
    found = collections.OrderedDict()
    for name, text in HYPERPARAMETERS.items():
        if text is None:
            continue
        defaults = {repr(row.hyperparameters[name]): row.hyperparameters[name]
                    for row in REGISTRY.values() if name in row.hyperparameters}
        if len(defaults) != 1:
            raise ValueError(f"hyperparameter {name!r}: the schemes that take it give "
                             f"{len(defaults)} defaults ({', '.join(sorted(defaults))}); a "
                             "run's flag has one")
        found[name] = (next(iter(defaults.values())), text)
    return found


def _resolve(reference):
    module, function = reference.split(":")
    return getattr(importlib.import_module(f"tfnorm.{module}"), function)


def build(name, channels, dtype, **hyperparameters):
    """The normalization that follows a layer under ``name``: the registry's factory,
    given every hyperparameter the scheme takes, from ``hyperparameters`` or else the
    row's default (the rest of ``hyperparameters`` are ignored, so that one call site can
    pass a network's full set)."""
    row = get(name)
    unknown = set(hyperparameters) - set(HYPERPARAMETERS)
    if unknown:
        raise TypeError(f"unknown hyperparameter(s) {sorted(unknown)}")
    taken = {k: hyperparameters.get(k, default) for k, default in row.hyperparameters.items()}
    return _resolve(row.factory)(channels, dtype, **taken)

