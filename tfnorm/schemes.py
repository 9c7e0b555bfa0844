"""The scheme registry: one table says what each normalization scheme is and needs.

Everything else (the network builder, the command-line checks, the distributed trainer,
the probes, the studies, the benchmark) asks this table instead of keeping its own list.
It imports no TensorFlow, so that a script can check its flags against it before paying
TensorFlow's start-up.

Adding a scheme: write its maths (a ``*_forward``/``*_backward`` pair in
``tfnorm/norms/maths.py`` and a thin ``Normalization`` class in
``tfnorm/norms/normalizations.py``), add one ``Scheme`` row below naming its factory,
and test it (``tests/test_network.py`` and ``tests/test_schemes.py`` pick every
registered scheme up by themselves).
"""

import collections
import importlib

# What a factory may be given, each only if the scheme lists it in ``hyperparameters``:
# epsilon, momentum, affine, groups, boxcox_lambda, boxcox_shift, seed, and
# per_position_running_stats (0: off; N: the article notebook's evaluation of layer and
# instance norm with running statistics per position of a training batch of N).
HYPERPARAMETERS = ("epsilon", "momentum", "affine", "groups", "boxcox_lambda", "boxcox_shift",
                   "seed", "per_position_running_stats")

Scheme = collections.namedtuple("Scheme", [
    "name",
    "factory",                  # "module:function" under tfnorm, called (channels, dtype, **hyper)
    "uses_batch_statistics",    # statistics over the batch: needs >= 2 samples, running stats
    "reparameterizes_weights",  # w = g v/||v|| in the weight layer (with data-dependent init)
    "hyperparameters",          # which of HYPERPARAMETERS the factory takes
    "synchronized",             # its forward sums over the batch across replicas when the
                                # batch is split (``Normalization.synchronize``)
    "input_domain",             # "any", or "above_minus_shift" (Box-Cox needs x + shift > 0)
    "description",
])

_ROWS = (
    Scheme("none", "norms:Normalization", False, False, (), False, "any",
           "no normalization (the identity)"),
    Scheme("batch", "norms:BatchNorm", True, False, ("epsilon", "momentum", "affine"),
           True, "any",
           "batch norm: per channel over (N, H, W); running statistics at test time"),
    Scheme("layer", "norms:LayerNorm", False, False,
           ("epsilon", "affine", "momentum", "per_position_running_stats"), False, "any",
           "layer norm: per sample over (H, W, C)"),
    Scheme("instance", "norms:InstanceNorm", False, False,
           ("epsilon", "affine", "momentum", "per_position_running_stats"), False, "any",
           "instance norm: per sample and channel over (H, W)"),
    Scheme("group", "norms:GroupNorm", False, False, ("epsilon", "affine", "groups"), False,
           "any", "group norm: per sample and group of C/G channels over (H, W, C/G)"),
    Scheme("boxcox", "norms:boxcox", False, False, ("boxcox_lambda", "boxcox_shift"), False,
           "above_minus_shift", "Box-Cox power transform of x + 1, lambda learned per layer"),
    Scheme("weight", "norms:Normalization", False, True, (), False, "any",
           "weight norm: w = g v/||v|| in every layer, no normalization of activations"),
    Scheme("meanonly", "norms:MeanOnlyBatchNorm", True, True, ("momentum", "affine"),
           True, "any",
           "weight norm plus mean-only batch norm (Salimans & Kingma)"),
    Scheme("noisybatch", "norms:noisy_batch_norm", True, False,
           ("epsilon", "momentum", "affine", "seed"), True, "any",
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


def _resolve(reference):
    module, function = reference.split(":")
    return getattr(importlib.import_module(f"tfnorm.{module}"), function)


def build(name, channels, dtype, **hyperparameters):
    """The normalization that follows a layer under ``name``: the registry's factory,
    given those of ``hyperparameters`` the scheme takes (the rest are ignored, so that
    one call site can pass a network's full set)."""
    row = get(name)
    unknown = set(hyperparameters) - set(HYPERPARAMETERS)
    if unknown:
        raise TypeError(f"unknown hyperparameter(s) {sorted(unknown)}")
    taken = {k: v for k, v in hyperparameters.items() if k in row.hyperparameters}
    return _resolve(row.factory)(channels, dtype, **taken)

