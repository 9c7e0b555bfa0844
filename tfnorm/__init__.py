"""tfnorm: normalization schemes with every gradient written by hand, in TensorFlow 2.

Public API: ``SCHEMES`` (the registry, ``tfnorm.schemes``), ``article_network``,
``Network`` (see ``tfnorm.network``).

Importing ``tfnorm`` imports no TensorFlow: the names below that need it load
``tfnorm.network`` on first use, so that a command line can check its flags against
``SCHEMES`` before paying TensorFlow's start-up.
"""

import importlib

from tfnorm.schemes import SCHEMES

_LAZY = {"Backprop": "network", "Block": "network", "LayerGradients": "network",
         "Network": "network", "WeightLayer": "network", "article_network": "network",
         "check_scheme": "network", "mlp_network": "mlp",
         "make_optimizer": "optimizers"}

__all__ = ["SCHEMES"] + sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tfnorm.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfnorm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
