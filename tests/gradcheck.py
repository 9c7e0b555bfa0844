"""Shared test helpers: compare a hand-written backward with tf.GradientTape and with
finite differences.

Relative error, used everywhere here::

    relative_error(actual, expected) = max|actual - expected| / max(max|expected|, TINY)

i.e. the largest element-wise gap scaled by the largest magnitude of the reference,
so an entry that is legitimately near zero cannot blow the ratio up, while a wrong
entry of any size still shows at the scale of the whole gradient. Several tensors
are compared one by one and the worst ratio is kept.

Two shapes of code are checked:

* pure functions ``forward(*inputs) -> (out, cache)`` with
  ``backward(dout, cache) -> grads`` aligned with ``inputs`` (``check_function``);
* stateful modules (a normalization holding gamma/beta/lambda in tf.Variables):
  ``forward(x) -> (out, cache)`` and ``backward(dout, cache) -> (dx, grads)`` with
  ``grads`` aligned with ``variables`` (``check_module``).

Finite differences go through ``tf.test.compute_gradient`` on a ``tf.custom_gradient``
op whose gradient IS the hand backward (``with_hand_gradient``): the "theoretical"
Jacobian it reports is then the hand one. The output is projected onto a fixed
random direction first, which keeps the theoretical side to one backward pass and
still catches any wrong Jacobian entry with probability one.
"""

import numpy as np
import tensorflow as tf

TINY = 1e-30
# Central differences with a step that is exact in binary. Truncation ~ step^2 f'''/6,
# rounding ~ 1e-16 |f| / step (float64). Measured over every check of test_layers.py and
# test_norms.py on N(0, 1)-sized inputs: with 2^-16 the worst error was 1.2e-8 (weight norm,
# v ~ 0.05, truncation-bound) and 4.2e-9 (batch norm of 3 rows); with 2^-18 the worst is
# 7.5e-10 (weight norm), most are 1e-10 to 6e-10 (rounding-bound); with 2^-20 rounding
# takes over (2.4e-9). Hence 2^-18 and FD_TOLERANCE 1e-8: a margin of 13 over the worst.
FD_STEP = 2.0 ** -18
FD_TOLERANCE = 1e-8


def relative_error(actual, expected):
    """max|actual - expected| / max(max|expected|, TINY) over all entries (float64 numpy)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape mismatch: {actual.shape} vs {expected.shape}")
    if expected.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(expected))), TINY)
    return float(np.max(np.abs(actual - expected))) / scale


def max_relative_error(actuals, expecteds):
    """The worst ``relative_error`` over pairs of tensors; a missing gradient fails."""
    actuals, expecteds = list(actuals), list(expecteds)
    if len(actuals) != len(expecteds):
        raise AssertionError(f"{len(actuals)} gradients against {len(expecteds)} references")
    worst = 0.0
    for index, (a, e) in enumerate(zip(actuals, expecteds)):
        if a is None or e is None:
            raise AssertionError(f"gradient {index} is missing (hand {a is None}, "
                                 f"reference {e is None})")
        worst = max(worst, relative_error(a, e))
    return worst


def gradients_relative_error(actuals, expecteds, dtype, names=None):
    """``max_relative_error`` over many variables (a network's), except that a variable
    whose reference gradient is zero to rounding -- max|expected| at most
    ``100 eps(dtype)`` times the largest reference gradient of all the variables, e.g.
    the bias of a layer followed by batch or mean-only normalization, whose exact
    gradient is 0 -- cannot be compared relatively (both sides are rounding noise):
    its hand gradient must then be as small, else AssertionError.

    Returns ``(worst relative error, names of the variables skipped that way)``: the
    caller asserts which ones they are, so that nothing is skipped silently."""
    actuals, expecteds = list(actuals), list(expecteds)
    names = list(names) if names is not None else [str(i) for i in range(len(actuals))]
    if len(actuals) != len(expecteds) or len(names) != len(actuals):
        raise AssertionError(f"{len(actuals)} gradients against {len(expecteds)} references "
                             f"and {len(names)} names")
    if any(a is None or e is None for a, e in zip(actuals, expecteds)):
        raise AssertionError("a gradient is missing")
    largest = max(float(np.max(np.abs(np.asarray(e, np.float64)))) for e in expecteds)
    zero_level = 100 * float(np.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps) * largest
    compared_actual, compared_expected, skipped = [], [], []
    for name, a, e in zip(names, actuals, expecteds):
        if float(np.max(np.abs(np.asarray(e, np.float64)))) <= zero_level:
            hand = float(np.max(np.abs(np.asarray(a, np.float64))))
            if hand > zero_level:
                raise AssertionError(f"{name}: reference gradient is zero to rounding, "
                                     f"hand gradient reaches {hand:.3g}")
            skipped.append(name)
            continue
        compared_actual.append(a)
        compared_expected.append(e)
    return max_relative_error(compared_actual, compared_expected), skipped


# ----------------------------------------------------------------------------
# Inputs


def rng(seed):
    return np.random.default_rng(seed)


def normal(generator, shape, dtype=tf.float64, scale=1.0):
    return tf.constant(scale * generator.standard_normal(shape), dtype)


def away_from_zero(generator, shape, dtype=tf.float64, margin=0.2):
    """Values with |x| >= margin, random signs: no ReLU-like kink within reach of
    a finite-difference step."""
    magnitude = margin + np.abs(generator.standard_normal(shape))
    sign = np.where(generator.random(shape) < 0.5, -1.0, 1.0)
    return tf.constant(sign * magnitude, dtype)


def distinct(generator, shape, dtype=tf.float64, spacing=0.05):
    """All entries distinct, at least ``spacing`` apart (a shuffled grid): every
    max-pool window has a clear winner that a small step cannot change."""
    size = int(np.prod(shape))
    values = (generator.permutation(size) - size / 2) * spacing
    return tf.constant(values.reshape(shape), dtype)


# ----------------------------------------------------------------------------
# Hand backward against tf.GradientTape


def tape_gradients(compute_output, sources, dout):
    """Vector-Jacobian product <dout, d output / d sources> by tf.GradientTape.
    ``sources``: tensors (watched here) or tf.Variables."""
    with tf.GradientTape(persistent=False) as tape:
        for source in sources:
            if not isinstance(source, tf.Variable):
                tape.watch(source)
        out = compute_output()
    return tape.gradient(out, sources, output_gradients=dout)


def _projection(out, seed):
    """A random direction for the output; its own stream (the [seed, salt] key), so it
    never coincides with an input drawn from ``rng(seed)``, which could make the
    gradient cancel to rounding noise (e.g. dout proportional to x under batch norm)."""
    generator = np.random.default_rng([seed, 0x5EED])
    return tf.constant(generator.standard_normal(out.shape.as_list()), out.dtype)


def function_tape_error(forward, backward, inputs, seed=0):
    """Relative error of the hand backward of a pure function against GradientTape,
    for a random upstream gradient."""
    out, cache = forward(*inputs)
    dout = _projection(out, seed)
    hand = backward(dout, cache)
    reference = tape_gradients(lambda: forward(*inputs)[0], list(inputs), dout)
    return max_relative_error(hand, reference)


def module_tape_error(forward, backward, x, variables, seed=0):
    """As ``function_tape_error`` for a module: gradients w.r.t. x and ``variables``."""
    out, cache = forward(x)
    dout = _projection(out, seed)
    dx, grads = backward(dout, cache)
    reference = tape_gradients(lambda: forward(x)[0], [x] + list(variables), dout)
    return max_relative_error([dx] + list(grads), reference)


# ----------------------------------------------------------------------------
# Hand backward against finite differences


def with_hand_gradient(forward, backward):
    """A tf.custom_gradient op ``op(*inputs) -> out`` whose gradient is ``backward``.

    ``backward(dout, cache)`` must return one gradient per input. A module that reads
    tf.Variables in its forward gets their values as explicit inputs (see
    ``check_module``), so the variables themselves get no gradient from this op."""

    @tf.custom_gradient
    def op(*inputs):
        out, cache = forward(*inputs)

        def grad(dout, variables=None):
            input_grads = list(backward(dout, cache))
            if variables is None:
                return input_grads
            return input_grads, [None] * len(variables)

        return out, grad

    return op


def finite_difference_error(forward, backward, inputs, seed=0, delta=FD_STEP, compiled=False):
    """Relative error of the hand Jacobian (through ``with_hand_gradient``) against
    central differences by tf.test.compute_gradient, worst over the inputs.

    ``delta``: the step, one for all inputs or a list with one per input (an input whose
    function is ill-conditioned, e.g. a normalization whose variance is near epsilon,
    needs a smaller step than its gamma and beta)."""
    op = with_hand_gradient(forward, backward)
    projection = _projection(forward(*inputs)[0], seed + 1)
    inputs = list(inputs)

    def projected(*xs):
        return tf.reduce_sum(op(*xs) * projection)

    def maybe_compiled(function):
        # Traced once: the numerical side evaluates it twice per input entry, and for
        # a normalization's dozens of small ops a graph call is cheaper than eager.
        return tf.function(function) if compiled else function

    if not isinstance(delta, (list, tuple)):
        theoretical, numerical = tf.test.compute_gradient(maybe_compiled(projected), inputs,
                                                          delta=delta)
        return max_relative_error(theoretical, numerical)
    if len(delta) != len(inputs):
        raise ValueError(f"{len(delta)} steps for {len(inputs)} inputs")
    theoretical, numerical = [], []
    for index, step in enumerate(delta):
        def one_input(x, index=index):
            xs = list(inputs)
            xs[index] = x
            return projected(*xs)

        t, n = tf.test.compute_gradient(maybe_compiled(one_input), [inputs[index]],
                                        delta=step)
        theoretical += t
        numerical += n
    return max_relative_error(theoretical, numerical)


def check_function(forward, backward, inputs, seed=0, delta=FD_STEP):
    """(tape error, finite-difference error) of a pure forward/backward pair."""
    inputs = [tf.convert_to_tensor(t) for t in inputs]
    return (function_tape_error(forward, backward, inputs, seed),
            finite_difference_error(forward, backward, inputs, seed, delta))


def check_module(forward, backward, x, variables, seed=0, delta=FD_STEP):
    """(tape error, finite-difference error) of a module holding ``variables``.

    For finite differences the variables' values become explicit inputs: each
    evaluation assigns them, then runs the module's own forward. ``delta``: one step, or
    a pair ``(step for x, step for the variables)``."""
    variables = list(variables)
    tape_error = module_tape_error(forward, backward, x, variables, seed)
    saved = [tf.identity(v) for v in variables]

    def pure_forward(x_value, *values):
        for var, value in zip(variables, values):
            var.assign(value)
        return forward(x_value)

    def pure_backward(dout, cache):
        dx, grads = backward(dout, cache)
        return [dx] + list(grads)

    try:
        if isinstance(delta, (list, tuple)):
            delta = [delta[0]] + [delta[1]] * len(saved)
        fd_error = finite_difference_error(pure_forward, pure_backward, [x] + saved, seed,
                                           delta, compiled=True)
    finally:
        for var, value in zip(variables, saved):
            var.assign(value)
    return tape_error, fd_error
