"""Normalization schemes: the maths in pure forward/backward functions, the
state (learnable gamma/beta/lambda, running statistics, noise counters) in thin
classes around them.

All schemes share one interface (:class:`Normalization`): ``forward(x, training)``
returns ``(y, cache)``, ``backward(dy, cache)`` returns ``(dx, grads)`` with
``grads`` aligned with ``trainable_variables``, and ``update_statistics(cache)``
moves running statistics after a training step (kept apart from the forward so
that evaluating a loss, e.g. along a line in the landscape study, never changes
the model). Inputs are (N, H, W, C) or, where the scheme allows it, (N, C).

Defaults follow the article: epsilon 1e-8 under the square root, biased
variance, running statistics ``momentum * old + (1 - momentum) * batch`` with
momentum 0.9, no learnable gamma/beta (``affine=False``).
"""

import math

import tensorflow as tf

from tfnorm import checks

DEFAULT_EPSILON = 1e-8
DEFAULT_MOMENTUM = 0.9

# ----------------------------------------------------------------------------
# Pure maths


def standardize_forward(x, axes, eps=DEFAULT_EPSILON):
    """xhat = (x - mean_S x) / sqrt(var_S x + eps), statistics over ``axes`` (biased variance).

    Returns (xhat, cache) with cache = (xhat, inv_std, axes); mean and variance
    come out of the cache too (``batch_statistics``) for the running averages."""
    # Not tf.nn.moments: under tf.function, oneDNN's remapper rewrites its pattern
    # followed by gamma/beta on a (1, C) input into _MklLayerNorm, which ignores our
    # epsilon (uses 1e-3) in float32 and does not exist for float64.
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    centered = x - mean
    variance = tf.reduce_mean(tf.square(centered), axis=axes, keepdims=True)
    inv_std = tf.math.rsqrt(variance + eps)
    xhat = centered * inv_std
    return xhat, (xhat, inv_std, tuple(axes), mean, variance)


def standardize_backward(dxhat, cache):
    """dx = inv_std * (dxhat - mean_S dxhat - xhat * mean_S(dxhat * xhat)).

    The reference formula inv_std/M * (M dxhat - sum dxhat - xhat sum(dxhat xhat))
    with the 1/M folded into means."""
    xhat, inv_std, axes, _, _ = cache
    mean_dxhat = tf.reduce_mean(dxhat, axis=axes, keepdims=True)
    mean_dxhat_xhat = tf.reduce_mean(dxhat * xhat, axis=axes, keepdims=True)
    return inv_std * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


def affine_forward(xhat, gamma, beta):
    """y = gamma * xhat + beta, gamma and beta per channel (last axis)."""
    return xhat * gamma + beta


def affine_backward(dy, xhat, gamma):
    """Returns (dxhat, dgamma, dbeta)."""
    reduce_axes = list(range(dy.shape.rank - 1))
    return dy * gamma, tf.reduce_sum(dy * xhat, reduce_axes), tf.reduce_sum(dy, reduce_axes)


def center_forward(x, axes):
    """Mean-only normalization: y = x - mean_S x."""
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    return x - mean, (tuple(axes), mean)


def center_backward(dy, cache):
    axes, _ = cache
    return dy - tf.reduce_mean(dy, axis=axes, keepdims=True)


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
    return log_u * ratio, (log_u, z, small, safe_z, lam)


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
    return v * (g / norm), (v, g, norm, tuple(axes))


def weight_norm_backward(dw, cache):
    """grad_g = sum(dw * v)/||v||; grad_v = g/||v|| (dw - grad_g/||v|| v). Returns (dv, dg)."""
    v, g, norm, axes = cache
    dg = tf.reduce_sum(dw * v, axis=axes) / norm
    dv = (g / norm) * (dw - (dg / norm) * v)
    return dv, dg


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


# ----------------------------------------------------------------------------
# Thin classes with state


def _spatial_axes(rank):
    return list(range(1, rank - 1))


class Normalization:
    """Base class: the identity, i.e. the scheme 'none'."""

    name = "none"
    supported_ranks = (2, 4)

    def __init__(self, channels, dtype=tf.float32):
        self.channels = int(channels)
        self.dtype = tf.as_dtype(dtype)
        self.trainable_variables = []
        self.statistics = []  # non-trainable state, checkpointed

    def check(self, x, training):
        checks.require_rank(x, self.supported_ranks, f"{self.name} normalization input")
        if x.shape[-1] is not None and x.shape[-1] != self.channels:
            raise ValueError(f"{self.name} normalization was built for {self.channels} channels, "
                             f"got input of shape {x.shape}")
        return []

    def forward(self, x, training=True):
        self.check(x, training)
        return x, None

    def backward(self, dy, cache):
        return dy, []

    def update_statistics(self, cache):
        """Move running statistics after a training step. Returns a list of ops."""
        return []


class _Affine:
    """Optional learnable gamma/beta per channel after standardization."""

    def _make_affine(self, affine):
        self.affine = bool(affine)
        if self.affine:
            self.gamma = tf.Variable(tf.ones([self.channels], self.dtype), name="gamma")
            self.beta = tf.Variable(tf.zeros([self.channels], self.dtype), name="beta")
            self.trainable_variables = [self.gamma, self.beta]

    def _affine_forward(self, xhat):
        return affine_forward(xhat, self.gamma, self.beta) if self.affine else xhat

    def _affine_backward(self, dy, xhat):
        if not self.affine:
            return dy, []
        dxhat, dgamma, dbeta = affine_backward(dy, xhat, self.gamma)
        return dxhat, [dgamma, dbeta]


class BatchNorm(Normalization, _Affine):
    """Batch statistics (over N, H, W per channel) in training, running ones at evaluation."""

    name = "batch"

    def __init__(self, channels, dtype=tf.float32, epsilon=DEFAULT_EPSILON,
                 momentum=DEFAULT_MOMENTUM, affine=False):
        super().__init__(channels, dtype)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self._make_affine(affine)
        self.running_mean = tf.Variable(tf.zeros([channels], self.dtype), trainable=False,
                                        name="running_mean")
        self.running_variance = tf.Variable(tf.ones([channels], self.dtype), trainable=False,
                                            name="running_variance")
        self.statistics = [self.running_mean, self.running_variance]

    def check(self, x, training):
        super().check(x, training)
        if training:
            return checks.require_batch_above_one(x, f"{self.name} normalization")
        return []

    def forward(self, x, training=True):
        asserts = self.check(x, training)
        with tf.control_dependencies(asserts):
            if training:
                xhat, cache = standardize_forward(x, list(range(x.shape.rank - 1)), self.epsilon)
            else:
                inv_std = tf.math.rsqrt(self.running_variance + self.epsilon)
                xhat = (x - self.running_mean) * inv_std
                cache = (xhat, inv_std, None, None, None)
        return self._affine_forward(xhat), (training, cache)

    def backward(self, dy, cache):
        training, std_cache = cache
        dxhat, grads = self._affine_backward(dy, std_cache[0])
        if training:
            return standardize_backward(dxhat, std_cache), grads
        return dxhat * std_cache[1], grads

    def update_statistics(self, cache):
        training, (_, _, _, mean, variance) = cache
        if not training:
            return []
        keep = self.momentum
        return [
            self.running_mean.assign(keep * self.running_mean + (1 - keep) * tf.reshape(mean, [-1])),
            self.running_variance.assign(
                keep * self.running_variance + (1 - keep) * tf.reshape(variance, [-1])),
        ]


class _PerSampleNorm(Normalization, _Affine):
    """Statistics per sample, the same in training and evaluation (no running statistics:
    the article's running averages for layer/instance norm were a bug)."""

    def __init__(self, channels, dtype=tf.float32, epsilon=DEFAULT_EPSILON, affine=False):
        super().__init__(channels, dtype)
        self.epsilon = float(epsilon)
        self._make_affine(affine)

    def axes(self, rank):
        raise NotImplementedError

    def forward(self, x, training=True):
        self.check(x, training)
        xhat, cache = standardize_forward(x, self.axes(x.shape.rank), self.epsilon)
        return self._affine_forward(xhat), cache

    def backward(self, dy, cache):
        dxhat, grads = self._affine_backward(dy, cache[0])
        return standardize_backward(dxhat, cache), grads


class LayerNorm(_PerSampleNorm):
    """Per sample over (H, W, C), or over C for (N, C) input."""

    name = "layer"

    def axes(self, rank):
        return list(range(1, rank))


class InstanceNorm(_PerSampleNorm):
    """Per sample and channel over (H, W)."""

    name = "instance"
    supported_ranks = (4,)

    def axes(self, rank):
        return _spatial_axes(rank)


class GroupNorm(_PerSampleNorm):
    """Per sample and group of C/G channels over (H, W, C/G). G=1 is layer norm, G=C instance."""

    name = "group"
    supported_ranks = (4,)

    def __init__(self, channels, dtype=tf.float32, epsilon=DEFAULT_EPSILON, affine=False,
                 groups=4):
        checks.require_divides(int(groups), int(channels), "group normalization")
        super().__init__(channels, dtype, epsilon, affine)
        self.groups = int(groups)

    def forward(self, x, training=True):
        self.check(x, training)
        shape = tf.shape(x)
        grouped = tf.reshape(x, tf.concat([shape[:-1], [self.groups, self.channels // self.groups]], 0))
        xhat_grouped, cache = standardize_forward(grouped, [1, 2, 4], self.epsilon)
        xhat = tf.reshape(xhat_grouped, shape)
        return self._affine_forward(xhat), (xhat, cache)

    def backward(self, dy, cache):
        xhat, grouped_cache = cache
        dxhat, grads = self._affine_backward(dy, xhat)
        dgrouped = standardize_backward(tf.reshape(dxhat, tf.shape(grouped_cache[0])), grouped_cache)
        return tf.reshape(dgrouped, tf.shape(dy)), grads


class MeanOnlyBatchNorm(Normalization):
    """Salimans & Kingma: t - mean_batch(t) (+ b if affine), running mean at evaluation."""

    name = "meanonly"

    def __init__(self, channels, dtype=tf.float32, momentum=DEFAULT_MOMENTUM, affine=False):
        super().__init__(channels, dtype)
        self.momentum = float(momentum)
        self.affine = bool(affine)
        if self.affine:
            self.beta = tf.Variable(tf.zeros([channels], self.dtype), name="beta")
            self.trainable_variables = [self.beta]
        self.running_mean = tf.Variable(tf.zeros([channels], self.dtype), trainable=False,
                                        name="running_mean")
        self.statistics = [self.running_mean]

    def check(self, x, training):
        super().check(x, training)
        return checks.require_batch_above_one(x, "mean-only batch normalization") if training else []

    def forward(self, x, training=True):
        asserts = self.check(x, training)
        with tf.control_dependencies(asserts):
            if training:
                y, cache = center_forward(x, list(range(x.shape.rank - 1)))
            else:
                y, cache = x - self.running_mean, None
        if self.affine:
            y = y + self.beta
        return y, (training, cache)

    def backward(self, dy, cache):
        training, center_cache = cache
        grads = [tf.reduce_sum(dy, axis=list(range(dy.shape.rank - 1)))] if self.affine else []
        return (center_backward(dy, center_cache) if training else dy), grads

    def update_statistics(self, cache):
        training, center_cache = cache
        if not training:
            return []
        mean = tf.reshape(center_cache[1], [-1])
        return [self.running_mean.assign(self.momentum * self.running_mean + (1 - self.momentum) * mean)]


class DistributionNoise(Normalization):
    """Santurkar et al.'s noise, a <- s * a + m per sample and channel, in training only.

    Seedable and repeatable: the noise of step t is drawn from the stateless
    generator at (seed, t); t moves on in ``update_statistics``, so a loss and its
    gradients at one step see the same noise."""

    name = "noise"

    def __init__(self, channels, dtype=tf.float32, seed=0):
        super().__init__(channels, dtype)
        self.seed = int(seed)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="noise_step")
        self.statistics = [self.step]

    def draw(self, batch, dtype=None):
        """This step's noise (s, m), each (batch, C)."""
        return santurkar_noise([batch, self.channels],
                               tf.stack([tf.constant(self.seed, tf.int64), self.step]),
                               dtype or self.dtype)

    def forward(self, x, training=True, noise=None):
        """``noise``: this step's (s, m) drawn beforehand by ``draw`` (XLA's random
        generators give other numbers than TF's, so a compiled caller draws outside)."""
        self.check(x, training)
        if not training:
            return x, None
        s, m = self.draw(tf.shape(x)[0], x.dtype) if noise is None else noise
        expand = [-1] + [1] * (x.shape.rank - 2) + [self.channels]
        return scale_shift_forward(x, tf.reshape(s, expand), tf.reshape(m, expand))

    def backward(self, dy, cache):
        return (dy if cache is None else scale_shift_backward(dy, cache)), []

    def update_statistics(self, cache):
        return [self.step.assign_add(1)] if cache is not None else []


class Sequence(Normalization):
    """Several normalizations one after the other (noisy batch norm = batch norm, then noise)."""

    def __init__(self, parts, name):
        super().__init__(parts[0].channels, parts[0].dtype)
        self.parts = list(parts)
        self.name = name
        self.trainable_variables = [v for p in self.parts for v in p.trainable_variables]
        self.statistics = [v for p in self.parts for v in p.statistics]

    def forward(self, x, training=True):
        caches = []
        for part in self.parts:
            x, cache = part.forward(x, training)
            caches.append(cache)
        return x, caches

    def backward(self, dy, cache):
        grads = []
        for part, part_cache in reversed(list(zip(self.parts, cache))):
            dy, part_grads = part.backward(dy, part_cache)
            grads = part_grads + grads
        return dy, grads

    def update_statistics(self, cache):
        return [op for part, c in zip(self.parts, cache) for op in part.update_statistics(c)]


class BoxCox(Normalization):
    """y = ((x + shift)^lambda - 1)/lambda with a learnable scalar lambda (init 2.0, shift 1:
    the article's), exactly ln(x + shift) at lambda = 0. The input must stay above -shift."""

    name = "boxcox"

    def __init__(self, channels, dtype=tf.float32, init_lambda=2.0, shift=1.0):
        super().__init__(channels, dtype)
        self.shift = float(shift)
        self.lam = tf.Variable(tf.constant(init_lambda, self.dtype), name="boxcox_lambda")
        self.trainable_variables = [self.lam]

    def forward(self, x, training=True):
        self.check(x, training)
        u = x + self.shift
        positive = tf.debugging.assert_positive(
            u, message=f"Box-Cox input must be above {-self.shift:g} (x + {self.shift:g} > 0); "
                       f"got a value at or below it")
        with tf.control_dependencies([positive]):
            return boxcox_forward(u, self.lam)

    def backward(self, dy, cache):
        du, dlam = boxcox_backward(dy, cache)
        return du, [dlam]


def make_normalization(scheme, channels, dtype=tf.float32, *, epsilon=DEFAULT_EPSILON,
                       momentum=DEFAULT_MOMENTUM, affine=False, groups=4, boxcox_lambda=2.0,
                       boxcox_shift=1.0, seed=0):
    """The normalization that follows a layer under ``scheme`` (see ``tfnorm.SCHEMES``).

    'weight' reparameterizes the layer's weights instead (see ``tfnorm.network``), so
    its normalization here is the identity; 'meanonly' is the mean-only batch norm
    that Salimans & Kingma pair with weight normalization."""
    if scheme in ("none", "weight"):
        return Normalization(channels, dtype)
    if scheme == "batch":
        return BatchNorm(channels, dtype, epsilon, momentum, affine)
    if scheme == "layer":
        return LayerNorm(channels, dtype, epsilon, affine)
    if scheme == "instance":
        return InstanceNorm(channels, dtype, epsilon, affine)
    if scheme == "group":
        return GroupNorm(channels, dtype, epsilon, affine, groups)
    if scheme == "boxcox":
        return BoxCox(channels, dtype, boxcox_lambda, boxcox_shift)
    if scheme == "meanonly":
        return MeanOnlyBatchNorm(channels, dtype, momentum, affine)
    if scheme == "noisybatch":
        return Sequence([BatchNorm(channels, dtype, epsilon, momentum, affine),
                         DistributionNoise(channels, dtype, seed)], "noisybatch")
    raise ValueError(f"unknown normalization scheme {scheme!r}; expected one of "
                     "none, batch, layer, instance, group, boxcox, weight, meanonly, noisybatch")
