"""Balduzzi et al. (2017), "The Shattered Gradients Problem": how the gradient of a
network's output w.r.t. its input varies along a line of inputs.

Along a 1-D line of inputs x_1 < ... < x_N (a grid of a few hundred points), a
shallow rectifier network's input gradient g_n = df/dx (x_n) changes only where a
unit switches on or off, so neighbouring gradients are nearly equal ("brown
noise"); the paper's deep feedforward nets' gradients decorrelate ("white noise").
Whether ours do depends on the net (README, docs/shattering.md). The measurements:

- ``input_gradients``: g_n for every point of the line, by the network's
  hand-written backward (``Network.backward(..., need_input_grad=True)``);
- ``autocorrelation`` and ``neighbour_correlation``: the sample autocorrelation
  of the sequence g_1..g_N, and its lag-1 value (the correlation between the
  gradients of neighbouring inputs);
- ``ensemble_autocorrelation``: the same lags, but each correlation taken across
  networks (independent inits) at a fixed pair of points, then averaged along the line:
  an expectation over the init, as a covariance of gradients in a theorem is;
- ``coactivation_rate``: how often rectifiers are active together (the paper:
  batch norm keeps the rate near 1/4, as if each unit were an unbiased coin); over
  'neighbours', how often a unit is on at both of two neighbouring points.

Why the co-activation of two inputs sets their gradients' correlation (a mean-field
argument, ours): with He init (weight variance 2/fan_in) and the weights independent of
the rectifiers' states, a layer multiplies the covariance of the gradients at x_i and
x_j by 2 x (fraction of its units on for both) and each variance by 2 x (fraction on),
so the correlation by P(unit on at x_j | on at x_i). Units that are independent fair
coins (co-activation 1/4, active 1/2) halve it at every layer: 2^-L. Neighbouring
points of a fine line share almost every unit's state, and the factor is near 1.

Batch norm and the line. In training mode, batch norm makes every output depend
on the whole batch, so a backward pass started from ones gives d(sum_m f_m)/dx_n,
not df_n/dx_n: it adds a term shared by all points of the line, which would
correlate neighbours artificially. ``input_gradients`` therefore defaults to
``batch_mode='line_statistics'``: the line is run once as one batch in training
mode, every batch statistic is frozen at its value on the line, and the gradient
is taken in evaluation mode with those statistics. The forward is exactly the
training-mode forward on the line (as in the paper's batch-norm experiments);
the gradient is that of the function f(x_n) each point sees. ``batch_mode='train'``
gives the coupled gradient instead, for comparison.
"""

import numpy as np
import tensorflow as tf

BATCH_MODES = ("line_statistics", "train")


def line_inputs(num_points=256, low=-2.0, high=2.0, dtype=tf.float64):
    """The paper's 1-D line: ``num_points`` evenly spaced scalars in [low, high], shape (N, 1)."""
    if num_points < 2:
        raise ValueError(f"the line needs at least 2 points, got {num_points}")
    if not high > low:
        raise ValueError(f"the line needs low < high, got [{low}, {high}]")
    return tf.cast(tf.linspace(float(low), float(high), int(num_points))[:, None], dtype)


def image_line(image_a, image_b, num_points=256, low=-2.0, high=2.0):
    """A 1-D family of images through two images: x(t) = m + t d with m = (a + b)/2 and
    d = (b - a)/2, so x(-1) = a and x(1) = b; t on ``num_points`` points of [low, high].

    image_a, image_b: (H, W, C). Returns (images (N, H, W, C), t (N,), direction (H, W, C))."""
    image_a = tf.convert_to_tensor(image_a)
    image_b = tf.cast(image_b, image_a.dtype)
    t = tf.cast(tf.linspace(float(low), float(high), int(num_points)), image_a.dtype)
    middle, direction = (image_a + image_b) / 2, (image_b - image_a) / 2
    images = middle[None] + t[:, None, None, None] * direction[None]
    return images, t, direction


def freeze_batch_statistics(network, inputs):
    """Run ``inputs`` as one batch in training mode and set every running statistic to its
    value on that batch, so that evaluation mode reproduces the training-mode forward.

    Each normalization freezes its own (``Normalization.freeze_statistics``); noise is
    refused (it is not a function of the input)."""
    _, (block_caches, _), _ = network.forward(inputs, training=True)
    for block, cache in zip(network.blocks, block_caches):
        block.normalization.freeze_statistics(cache.normalization)


def input_gradients(network, inputs, batch_mode="line_statistics"):
    """Gradient of the network's single output w.r.t. each input of the line.

    network: a ``Network`` with one output unit; inputs: (N, D) or (N, H, W, C).
    Returns (outputs (N,), gradients with the shape of inputs, records per block
    from the forward that the gradient went through)."""
    if batch_mode not in BATCH_MODES:
        raise ValueError(f"batch_mode must be one of {', '.join(BATCH_MODES)}, got {batch_mode!r}")
    if batch_mode == "line_statistics":
        freeze_batch_statistics(network, inputs)
    outputs, caches, records = network.forward(inputs, training=batch_mode == "train")
    if outputs.shape[-1] != 1:
        raise ValueError(f"the shattering probe needs a network with one output, got "
                         f"{outputs.shape[-1]}")
    # With the statistics frozen each output depends on its own input only, so one
    # backward pass from ones gives every per-point gradient df_n/dx_n at once.
    gradients, _, _ = network.backward(tf.ones_like(outputs), caches, need_input_grad=True)
    return outputs[:, 0], gradients, records


def autocorrelation(values, max_lag):
    """Sample autocorrelation of a sequence, lags 0..max_lag (lag 0 is 1):
    r_k = sum_t (v_t - mean)(v_{t+k} - mean) / sum_t (v_t - mean)^2.

    values: (N,) array. NaN where the sequence is constant (no variation to correlate)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if not 0 <= max_lag < v.size:
        raise ValueError(f"max_lag must be in [0, {v.size - 1}] for {v.size} values, got {max_lag}")
    centred = v - v.mean()
    denominator = float(np.dot(centred, centred))
    if denominator == 0.0:
        return np.full(max_lag + 1, np.nan)
    return np.array([np.dot(centred[:v.size - k], centred[k:]) / denominator
                     for k in range(max_lag + 1)])


def ensemble_autocorrelation(gradients, max_lag):
    """Across-network autocorrelation of the gradients along the line, lags 0..max_lag:
    r_k = mean_n [ sum_m g_mn g_m(n+k) / sqrt(sum_m g_mn^2 sum_m g_m(n+k)^2) ].

    gradients: (M networks, N points), the networks independent draws of one init. Not
    centred: a network's output weights are symmetric about 0, so E[g_n] = 0 over the
    init and the second moment is the covariance. NaN where a point's gradient is 0 in
    every network."""
    g = np.asarray(gradients, np.float64)
    if g.ndim != 2 or g.shape[0] < 2:
        raise ValueError(f"gradients must be (networks >= 2, points), got shape {g.shape}")
    if not 0 <= max_lag < g.shape[1]:
        raise ValueError(f"max_lag must be in [0, {g.shape[1] - 1}] for {g.shape[1]} points, "
                         f"got {max_lag}")
    second = np.einsum("mn,mn->n", g, g)
    out = []
    for k in range(max_lag + 1):
        cross = np.einsum("mn,mn->n", g[:, :g.shape[1] - k], g[:, k:])
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(float(np.mean(cross / np.sqrt(second[:g.shape[1] - k] * second[k:]))))
    return np.array(out)


def neighbour_correlation(values):
    """Correlation between the gradients of neighbouring inputs: the lag-1 autocorrelation
    of the sequence (about 1 for brown noise, about 0 for white noise)."""
    return float(autocorrelation(values, 1)[1])


def activity(records):
    """Per block, which rectifiers are active: a bool (N, units) array, units being every
    entry of the block's activation (for conv blocks, positions x channels)."""
    return [np.reshape(np.asarray(r["activation"]) > 0, (r["activation"].shape[0], -1))
            for r in records]


def coactivation_rate(active, over="inputs"):
    """How often two rectifiers are on together, as a fraction.

    active: bool (N inputs, U units). over='inputs' (the paper's): for each pair of
    distinct inputs, the fraction of units active on both, averaged over all pairs,
    = sum_i k_i (k_i - 1) / (U N (N - 1)) with k_i the number of inputs unit i is
    active on. over='units': for each pair of distinct units, the fraction of inputs
    on which both are active, averaged over pairs. Units that are on or off
    independently with probability 1/2 give 1/4 either way. over='neighbours': for
    each pair of consecutive inputs n, n + 1 (a line's neighbours), the fraction of
    units active on both, averaged over the N - 1 pairs; divided by the active rate it
    is P(on at n + 1 | on at n), the per-layer factor of the module docstring."""
    a = np.asarray(active, bool)
    if a.ndim != 2:
        raise ValueError(f"active must be (inputs, units), got shape {a.shape}")
    if over == "neighbours":
        if a.shape[0] < 2:
            raise ValueError(f"co-activation needs at least 2 inputs, got {a.shape[0]}")
        return float(np.mean(a[:-1] & a[1:]))
    if over == "units":
        a = a.T
    elif over != "inputs":
        raise ValueError(f"over must be 'inputs', 'units' or 'neighbours', got {over!r}")
    n, units = a.shape
    if n < 2:
        raise ValueError(f"co-activation needs at least 2 {over}, got {n}")
    counts = a.sum(axis=0, dtype=np.float64)
    return float(np.sum(counts * (counts - 1)) / (units * n * (n - 1)))
