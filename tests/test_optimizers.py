"""tfnorm.optimizers against numpy references over a few steps, Adam also against
keras.optimizers.Adam (epsilon semantics included), and the article's Adam against
his formula (constant bias correction 1 - beta, eps 1e-9)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnorm import optimizers
from tfnorm.optimizers import make_optimizer

LR = 0.01
STEPS = 4


def gradient_sequence(seed=0, shapes=((3, 2), (4,))):
    """Per step, one gradient per variable, of varying sizes and signs."""
    generator = np.random.default_rng(seed)
    return [[generator.standard_normal(shape) * (1 + step) for shape in shapes]
            for step in range(STEPS)]


def initial_values(seed=1, shapes=((3, 2), (4,))):
    generator = np.random.default_rng(seed)
    return [generator.standard_normal(shape) for shape in shapes]


def run_ours(optimizer, grads_per_step):
    variables = [tf.Variable(v, dtype=tf.float64) for v in initial_values()]
    values, updates = [], []
    for grads in grads_per_step:
        step_updates = optimizer.apply(variables, [tf.constant(g) for g in grads])
        updates.append([u.numpy() for u in step_updates])
        values.append([v.numpy() for v in variables])
    return values, updates


def run_reference(update_rule, grads_per_step):
    """update_rule(step t >= 1, index, grad, state dict) -> update."""
    weights = initial_values()
    states = [dict() for _ in weights]
    values, updates = [], []
    for t, grads in enumerate(grads_per_step, start=1):
        step_updates = [update_rule(t, g, states[i]) for i, g in enumerate(grads)]
        weights = [w + u for w, u in zip(weights, step_updates)]
        updates.append(step_updates)
        values.append([w.copy() for w in weights])
    return values, updates


def assert_same_trajectory(ours, reference, rtol=1e-12):
    for (our_values, our_updates), (ref_values, ref_updates) in zip(zip(*ours), zip(*reference)):
        for mine, theirs in zip(our_values + our_updates, ref_values + ref_updates):
            np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=1e-15)


def sgd_rule(t, g, state):
    return -LR * g


def momentum_rule(t, g, state, mu=0.9):
    state["velocity"] = mu * state.get("velocity", 0.0) - LR * g
    return state["velocity"]


def adam_rule(t, g, state, beta1=0.9, beta2=0.999, eps=1e-8, article=False):
    state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
    state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g * g
    if article:  # the article's quirk: the first step's correction, at every step
        m_hat, v_hat = state["m"] / (1 - beta1), state["v"] / (1 - beta2)
    else:
        m_hat, v_hat = state["m"] / (1 - beta1 ** t), state["v"] / (1 - beta2 ** t)
    return -LR * m_hat / (np.sqrt(v_hat) + eps)


@pytest.mark.parametrize("name,rule", [
    ("sgd", sgd_rule), ("momentum", momentum_rule), ("adam", adam_rule),
    ("article_adam", lambda t, g, s: adam_rule(t, g, s, eps=1e-9, article=True))])
def test_optimizer_matches_numpy_reference(name, rule):
    grads = gradient_sequence()
    optimizer = make_optimizer(name, LR)
    assert_same_trajectory(run_ours(optimizer, grads), run_reference(rule, grads))
    assert int(optimizer.iterations.numpy()) == STEPS


def test_article_adam_is_the_documented_variant():
    article = make_optimizer("article_adam", LR)
    assert article.epsilon == 1e-9 and article.article_bias_correction
    standard = make_optimizer("adam", LR)
    assert standard.epsilon == 1e-8 and not standard.article_bias_correction
    # Step 1 corrections coincide (1 - beta^1); from step 2 on they do not.
    grads = gradient_sequence()
    article_updates = run_ours(article, grads)[1]
    standard_updates = run_ours(standard, grads)[1]
    np.testing.assert_allclose(article_updates[0][0], standard_updates[0][0], rtol=1e-6)
    assert not np.allclose(article_updates[2][0], standard_updates[2][0], rtol=1e-3)


# Keras keeps the learning rate and betas in float32 (0.999 becomes 0.99899999: a 1e-5
# change of 1 - beta2); hyper-parameters exact in float32 keep the comparison to rounding.
KERAS_LR, KERAS_BETA1, KERAS_BETA2 = 2.0 ** -7, 0.875, 1 - 2.0 ** -10


def keras_adam_trajectory(grads_per_step, epsilon):
    variables = [keras.Variable(v, dtype="float64") for v in initial_values()]
    optimizer = keras.optimizers.Adam(learning_rate=KERAS_LR, beta_1=KERAS_BETA1,
                                      beta_2=KERAS_BETA2, epsilon=epsilon)
    values = []
    for grads in grads_per_step:
        optimizer.apply_gradients(
            [(tf.constant(g), v) for g, v in zip(grads, variables)])
        values.append([np.array(v.numpy()) for v in variables])
    return values


def test_adam_matches_keras_when_epsilon_is_negligible():
    grads = gradient_sequence(seed=2)
    ours = run_ours(optimizers.Adam(KERAS_LR, KERAS_BETA1, KERAS_BETA2, epsilon=1e-14), grads)[0]
    theirs = keras_adam_trajectory(grads, epsilon=1e-14)
    for our_step, their_step in zip(ours, theirs):
        for mine, other in zip(our_step, their_step):
            np.testing.assert_allclose(mine, other, rtol=1e-10)


def test_adam_epsilon_semantics_against_keras():
    # Ours adds epsilon to sqrt(v_hat) (Kingma & Ba, Algorithm 1); Keras adds it to
    # sqrt(v) and folds the bias corrections into the step size, i.e. Keras's epsilon
    # is ours times sqrt(1 - beta2^t). With a large epsilon the two differ, and match
    # exactly once the conversion is applied (checked on the first step).
    grads = gradient_sequence(seed=3)[:1]
    epsilon = 0.5
    ours = run_ours(optimizers.Adam(KERAS_LR, KERAS_BETA1, KERAS_BETA2, epsilon), grads)[0][0]
    same_number = keras_adam_trajectory(grads, epsilon=epsilon)[0]
    converted = keras_adam_trajectory(grads, epsilon=epsilon * np.sqrt(1 - KERAS_BETA2))[0]
    for mine, converted_theirs, plain_theirs in zip(ours, converted, same_number):
        np.testing.assert_allclose(mine, converted_theirs, rtol=1e-12)
        assert not np.allclose(mine, plain_theirs, rtol=1e-4)


def test_adam_in_tf_function_matches_eager():
    grads = gradient_sequence(seed=4)
    eager = run_ours(make_optimizer("adam", LR), grads)[0]
    optimizer = make_optimizer("adam", LR)
    variables = [tf.Variable(v, dtype=tf.float64) for v in initial_values()]
    optimizer.build(variables)
    step = tf.function(lambda g0, g1: optimizer.apply(variables, [g0, g1]))
    for grads_now, expected in zip(grads, eager):
        step(tf.constant(grads_now[0]), tf.constant(grads_now[1]))
        for var, value in zip(variables, expected):
            np.testing.assert_allclose(var.numpy(), value, rtol=1e-12)


@pytest.mark.parametrize("call,message", [
    (lambda: make_optimizer("rmsprop", LR), "unknown optimizer 'rmsprop'"),
    (lambda: make_optimizer("sgd", 0.0), "learning rate must be positive"),
    (lambda: make_optimizer("adam", -1e-3), "learning rate must be positive"),
])
def test_bad_optimizer_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
