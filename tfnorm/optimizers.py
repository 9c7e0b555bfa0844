"""Optimizers written by hand. ``apply(variables, grads)`` updates the variables and
returns the applied updates (new - old), which the four-panel plots show."""

import tensorflow as tf

from tfnorm.catalog import OPTIMIZERS


class Optimizer:
    def __init__(self, learning_rate):
        if not learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {learning_rate}")
        self.learning_rate = float(learning_rate)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._slots = {}

    def _slot(self, var, name):
        key = (var.ref(), name)
        if key not in self._slots:
            self._slots[key] = tf.Variable(tf.zeros_like(var), trainable=False,
                                           name=f"{var.name.split(':')[0]}_{name}")
        return self._slots[key]

    def build(self, variables):
        """Create the slots up front (so a checkpoint can be restored before the first step)."""
        for var in variables:
            self._slots_for(var)

    def _slots_for(self, var):
        return []

    def slot_variables(self):
        return list(self._slots.values())

    def update(self, var, grad):
        """The update for one variable (and the slot moves it implies)."""
        raise NotImplementedError

    def apply(self, variables, grads):
        self.build(variables)
        updates = [self.update(v, g) for v, g in zip(variables, grads)]
        for var, upd in zip(variables, updates):
            var.assign_add(upd)
        self.iterations.assign_add(1)
        return updates


class SGD(Optimizer):
    def update(self, var, grad):
        return -self.learning_rate * grad


class Momentum(Optimizer):
    """Heavy ball: velocity = mu * velocity - lr * grad; w += velocity."""

    def __init__(self, learning_rate, momentum=0.9):
        super().__init__(learning_rate)
        self.momentum = float(momentum)

    def _slots_for(self, var):
        return [self._slot(var, "velocity")]

    def update(self, var, grad):
        velocity = self._slot(var, "velocity")
        velocity.assign(self.momentum * velocity - self.learning_rate * grad)
        return tf.identity(velocity)


class Adam(Optimizer):
    """Adam (Kingma & Ba). ``article_bias_correction=True`` reproduces the article's Adam
    as he ran it: the moments divided by the constants (1 - beta1) and (1 - beta2)
    at every step instead of (1 - beta^t), with eps 1e-9 (pass ``epsilon=1e-9``)."""

    def __init__(self, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 article_bias_correction=False):
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)
        self.article_bias_correction = bool(article_bias_correction)

    def _slots_for(self, var):
        return [self._slot(var, "m"), self._slot(var, "v")]

    def update(self, var, grad):
        m, v = self._slot(var, "m"), self._slot(var, "v")
        m.assign(self.beta1 * m + (1 - self.beta1) * grad)
        v.assign(self.beta2 * v + (1 - self.beta2) * grad * grad)
        if self.article_bias_correction:
            correction1, correction2 = 1 - self.beta1, 1 - self.beta2
        else:
            t = tf.cast(self.iterations + 1, var.dtype)
            correction1, correction2 = 1 - self.beta1 ** t, 1 - self.beta2 ** t
        m_hat, v_hat = m / correction1, v / correction2
        return -self.learning_rate * m_hat / (tf.sqrt(v_hat) + self.epsilon)




def make_optimizer(name, learning_rate):
    """By name: sgd, momentum (0.9), adam (standard), article_adam (constant bias
    correction, eps 1e-9: the article's)."""
    if name == "sgd":
        return SGD(learning_rate)
    if name == "momentum":
        return Momentum(learning_rate)
    if name == "adam":
        return Adam(learning_rate)
    if name == "article_adam":
        return Adam(learning_rate, epsilon=1e-9, article_bias_correction=True)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
