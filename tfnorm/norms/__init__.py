"""Normalization schemes: the maths in pure forward/backward functions
(``tfnorm.norms.maths``), the state (learnable gamma/beta/lambda, running statistics,
noise counters) in thin classes around them (``tfnorm.norms.normalizations``). Both
are re-exported here: ``norms.BatchNorm``, ``norms.standardize_forward``, ...

Defaults follow the article (biased variance, no learnable gamma/beta); they, and which
class a scheme name builds with which hyperparameters, are the registry's
(``tfnorm.schemes``).
"""

import tensorflow as tf

from tfnorm import schemes
from tfnorm.norms.maths import *  # noqa: F401,F403
from tfnorm.norms.normalizations import *  # noqa: F401,F403
from tfnorm.norms.noise import *  # noqa: F401,F403


def make_normalization(scheme, channels, dtype=tf.float32, **hyperparameters):
    """The normalization that follows a layer under ``scheme`` (see ``tfnorm.SCHEMES``),
    given those of the ``hyperparameters`` its registry row takes (the row's defaults
    for the others; one it does not take is ignored, an unknown one is a TypeError).

    'weight' reparameterizes the layer's weights instead (see ``tfnorm.network``), so
    its normalization here is the identity; 'meanonly' is the mean-only batch norm
    that Salimans & Kingma pair with weight normalization."""
    if scheme not in schemes.REGISTRY:
        raise ValueError(f"unknown normalization scheme {scheme!r}; expected one of "
                         f"{', '.join(schemes.SCHEMES)}")
    return schemes.build(scheme, channels, dtype, **hyperparameters)
