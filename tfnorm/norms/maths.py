"""The maths of the normalization schemes: pure forward/backward pairs, no state.

Every ``*_forward`` returns ``(out, cache)``; every ``*_backward(dout, cache)``
returns the gradients in the order of the forward's inputs.

Statistics "over S" (a mean over some axes) may span several replicas of a
data-parallel step: the functions that take them accept ``reduce_sum``, a callable
that sums a list of tensors over every replica (``tfnorm.distributed.replica_sum``).
Without it (the default) S is this tensor's axes alone, computed as before any
replica existed, so a single-process run gives bit-identical numbers.
"""

import collections
import math

import tensorflow as tf

from tfnorm.schemes import DEFAULT_EPSILON, DEFAULT_MOMENTUM  # the registry's defaults

__all__ = ["DEFAULT_EPSILON", "DEFAULT_MOMENTUM", "StandardizeCache", "CenterCache",
           "BoxCoxCache", "WeightNormCache", "means", "standardize_forward",
           "standardize_backward", "affine_forward", "affine_backward", "center_forward",
           "center_backward", "BOXCOX_SERIES_LIMIT", "BOXCOX_SERIES_LIMIT_FLOAT32",
           "boxcox_forward", "boxcox_backward", "weight_norm_forward", "weight_norm_backward",
           "weight_norm_data_init",
           "scale_shift_forward", "scale_shift_backward", "santurkar_noise"]

StandardizeCache = collections.namedtuple(
    "StandardizeCache", ["xhat", "inv_std", "axes", "mean", "variance"])
StandardizeCache.__doc__ = """Of ``standardize_forward``: xhat and 1/sqrt(var + eps) for the
backward, the axes of S, and the mean and variance (keepdims) for running statistics."""

CenterCache = collections.namedtuple("CenterCache", ["axes", "mean"])
CenterCache.__doc__ = "Of ``center_forward``: the axes of S and the mean (keepdims)."

BoxCoxCache = collections.namedtuple("BoxCoxCache", ["log_u", "z", "small", "safe_z", "lam"])
WeightNormCache = collections.namedtuple("WeightNormCache", ["v", "g", "norm", "axes"])


def _count(x, axes, dtype):
    """Number of entries of x in one statistic over ``axes`` (as ``dtype``)."""
    return tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), dtype)


def means(tensors, axes, reduce_sum=None):
    """mean_S of each tensor (keepdims). With ``reduce_sum``, S spans every replica: the
    sums and the count go through one call (one all-reduce)."""
    if reduce_sum is None:
        return [tf.reduce_mean(t, axis=axes, keepdims=True) for t in tensors]
    *sums, count = reduce_sum([tf.reduce_sum(t, axis=axes, keepdims=True) for t in tensors]
                              + [_count(tensors[0], axes, tensors[0].dtype)])
    return [total / count for total in sums]


def standardize_forward(x, axes, eps=DEFAULT_EPSILON, reduce_sum=None):
    """xhat = (x - mean_S x) / sqrt(var_S x + eps), statistics over ``axes`` (biased variance).

    x: any shape. Returns (xhat, StandardizeCache); mean and variance come out of the
    cache too, for the running averages."""
    # Not tf.nn.moments: under tf.function, oneDNN's remapper rewrites its pattern
    # followed by gamma/beta on a (1, C) input into _MklLayerNorm, which ignores our
    # epsilon (uses 1e-3) in float32 and does not exist for float64.
    (mean,) = means([x], axes, reduce_sum)
    centered = x - mean
    (variance,) = means([tf.square(centered)], axes, reduce_sum)
    inv_std = tf.math.rsqrt(variance + eps)
    xhat = centered * inv_std
    return xhat, StandardizeCache(xhat, inv_std, tuple(axes), mean, variance)


def standardize_backward(dxhat, cache, reduce_sum=None):
    """dx = inv_std * (dxhat - mean_S dxhat - xhat * mean_S(dxhat * xhat)).

    The reference formula inv_std/M * (M dxhat - sum dxhat - xhat sum(dxhat xhat))
    with the 1/M folded into means. dxhat: the shape of x; returns dx."""
    xhat, inv_std, axes, _, _ = cache
    mean_dxhat, mean_dxhat_xhat = means([dxhat, dxhat * xhat], axes, reduce_sum)
    return inv_std * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


def affine_forward(xhat, gamma, beta):
    """y = gamma * xhat + beta, gamma and beta per channel (last axis)."""
    return xhat * gamma + beta


def affine_backward(dy, xhat, gamma):
    """Returns (dxhat, dgamma, dbeta)."""
    reduce_axes = list(range(dy.shape.rank - 1))
    return dy * gamma, tf.reduce_sum(dy * xhat, reduce_axes), tf.reduce_sum(dy, reduce_axes)


def center_forward(x, axes, reduce_sum=None):
    """Mean-only normalization: y = x - mean_S x. Returns (y, CenterCache)."""
    (mean,) = means([x], axes, reduce_sum)
    return x - mean, CenterCache(tuple(axes), mean)


def center_backward(dy, cache, reduce_sum=None):
    """dx = dy - mean_S dy."""
    (mean_dy,) = means([dy], cache.axes, reduce_sum)
    return dy - mean_dy


# Below these |z| = |lambda ln u| the Taylor series (through z^7) replace the closed
# forms. The closed form of dy/dlambda, (z e^z - expm1 z)/z^2, loses about
# 2 eps/|z| to cancellation; the series' first dropped term is ~2.5e-6 z^8. The
# limits balance the two: ~1e-14 relative in float64, ~3e-7 in float32 (a limit of
# 1e-3 in float32 left the lambda gradient wrong by ~1e-4).
BOXCOX_SERIES_LIMIT = 0.05
BOXCOX_SERIES_LIMIT_FLOAT32 = 0.5

# expm1(z)/z = sum z^k/(k+1)!  and  d/dz of it = sum (k+1) z^k/(k+2)!, k = 0..7.
_RATIO_SERIES = tuple(1.0 / math.factorial(k + 1) for k in range(8))
_RATIO_DERIVATIVE_SERIES = tuple((k + 1.0) / math.factorial(k + 2) for k in range(8))


def _horner(z, coefficients):
    result = tf.fill(tf.shape(z), tf.constant(coefficients[-1], z.dtype))
    for coefficient in reversed(coefficients[:-1]):
        result = coefficient + z * result
    return result


def _boxcox_series_limit(dtype):
    return BOXCOX_SERIES_LIMIT if dtype == tf.float64 else BOXCOX_SERIES_LIMIT_FLOAT32


def boxcox_forward(u, lam):
    """y = (u^lam - 1) / lam, and ln u at lam = 0. u > 0; lam a scalar.

    Written as ln u * expm1(z)/z with z = lam ln u, and for |z| small the series
    of expm1(z)/z, so the limit lam -> 0 is exact and smooth."""
    log_u = tf.math.log(u)
    z = lam * log_u
    small = tf.abs(z) < _boxcox_series_limit(z.dtype)
    safe_z = tf.where(small, tf.ones_like(z), z)
    ratio = tf.where(small, _horner(z, _RATIO_SERIES), tf.math.expm1(safe_z) / safe_z)
    return log_u * ratio, BoxCoxCache(log_u, z, small, safe_z, lam)


def boxcox_backward(dy, cache):
    """Returns (du, dlam): dy/du = u^(lam - 1); dy/dlam = (lam u^lam ln u - u^lam + 1)/lam^2,
    written as (ln u)^2 * (z e^z - expm1 z)/z^2, whose series is 1/2 + z/3 + z^2/8 + z^3/30 + ..."""
    log_u, z, small, safe_z, lam = cache
    du = dy * tf.exp((lam - 1) * log_u)
    h = tf.where(small, _horner(z, _RATIO_DERIVATIVE_SERIES),
                 (safe_z * tf.exp(safe_z) - tf.math.expm1(safe_z)) / (safe_z * safe_z))
    dlam = tf.reduce_sum(dy * log_u * log_u * h)
    return du, dlam


def weight_norm_forward(v, g, axes):
    """w = g * v / ||v||, the norm over ``axes`` (all but the output axis)."""
    norm = tf.sqrt(tf.reduce_sum(v * v, axis=axes))
    return v * (g / norm), WeightNormCache(v, g, norm, tuple(axes))


def weight_norm_backward(dw, cache):
    """grad_g = sum(dw * v)/||v||; grad_v = g/||v|| (dw - grad_g/||v|| v). Returns (dv, dg)."""
    v, g, norm, axes = cache
    dg = tf.reduce_sum(dw * v, axis=axes) / norm
    dv = (g / norm) * (dw - (dg / norm) * v)
    return dv, dg


def weight_norm_data_init(t):
    """Salimans & Kingma's data-dependent init from t, a layer's output under the kernel
    v/||v|| and no bias: (g, bias) = (1/std(t), -mean(t)/std(t)) over all but the last
    axis, so that the output starts standardized."""
    mean, variance = tf.nn.moments(t, axes=list(range(t.shape.rank - 1)))
    std = tf.sqrt(variance + 1e-12)
    return 1.0 / std, -mean / std


def scale_shift_forward(x, scale, shift):
    """y = scale * x + shift with scale and shift constants (noise) broadcast against x."""
    return scale * x + shift, scale


def scale_shift_backward(dy, scale):
    return scale * dy


def santurkar_noise(shape_nc, seed, dtype):
    """Santurkar et al.'s distributional noise for one step.

    Per channel j: mu_j ~ U(-0.5, 0.5), sigma_j ~ U(1, 1.25); per sample and channel
    m ~ U(mu_j - 0.1, mu_j + 0.1) and s ~ N(sigma_j, 0.1). ``seed``: shape-[2] int
    tensor for the stateless generators. Returns (s, m), each (N, C)."""
    n, c = shape_nc[0], shape_nc[1]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    mu = tf.random.stateless_uniform([c], seeds[0], -0.5, 0.5, dtype=dtype)
    sigma = tf.random.stateless_uniform([c], seeds[1], 1.0, 1.25, dtype=dtype)
    m = mu + tf.random.stateless_uniform([n, c], seeds[2], -0.1, 0.1, dtype=dtype)
    s = sigma + 0.1 * tf.random.stateless_normal([n, c], seeds[3], dtype=dtype)
    return s, m
