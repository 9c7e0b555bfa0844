"""Normalization schemes: the maths in pure forward/backward functions
(``tfnorm.norms.maths``), the state (learnable gamma/beta/lambda, running statistics,
noise counters) in thin classes around them (``tfnorm.norms.normalizations``). Both
are re-exported here: ``norms.BatchNorm``, ``norms.standardize_forward``, ...

Defaults follow the article: epsilon 1e-8 under the square root, biased
variance, running statistics ``momentum * old + (1 - momentum) * batch`` with
momentum 0.9, no learnable gamma/beta (``affine=False``). Which class a scheme
name builds, and with which hyperparameters, is the registry's (``tfnorm.schemes``).
"""

import tensorflow as tf

from tfnorm import schemes
from tfnorm.norms.maths import *  # noqa: F401,F403
from tfnorm.norms.maths import DEFAULT_EPSILON, DEFAULT_MOMENTUM
from tfnorm.norms.normalizations import *  # noqa: F401,F403
from tfnorm.norms.noise import *  # noqa: F401,F403


def make_normalization(scheme, channels, dtype=tf.float32, *, epsilon=DEFAULT_EPSILON,
                       momentum=DEFAULT_MOMENTUM, affine=False, groups=4, boxcox_lambda=2.0,
                       boxcox_shift=1.0, seed=0, per_position_running_stats=0):
    """The normalization that follows a layer under ``scheme`` (see ``tfnorm.SCHEMES``),
    given those of the hyperparameters its registry row takes.

    'weight' reparameterizes the layer's weights instead (see ``tfnorm.network``), so
    its normalization here is the identity; 'meanonly' is the mean-only batch norm
    that Salimans & Kingma pair with weight normalization."""
    if scheme not in schemes.REGISTRY:
        raise ValueError(f"unknown normalization scheme {scheme!r}; expected one of "
                         f"{', '.join(schemes.SCHEMES)}")
    return schemes.build(scheme, channels, dtype, epsilon=epsilon, momentum=momentum,
                         affine=affine, groups=groups, boxcox_lambda=boxcox_lambda,
                         boxcox_shift=boxcox_shift, seed=seed,
                         per_position_running_stats=per_position_running_stats)
