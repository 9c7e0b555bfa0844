"""tfnorm's normalization schemes as Keras 3 layers, whose gradients are the hand-written ones.

- ``Normalization(scheme, **hyperparameters)``: the registry's normalization of ``scheme``
  (``tfnorm.schemes``), after any layer. Any registered scheme, with the hyperparameters
  its row takes (epsilon, momentum, affine, groups, ...; tfnorm's defaults otherwise).
- ``WeightNormalization(layer)``: a Conv or Dense layer whose kernel is g v/||v||
  (Salimans & Kingma), v being the layer's own kernel variable.
- ``weight_layer(scheme, layer)``: ``layer``, wrapped in ``WeightNormalization`` when the
  registry says ``scheme`` reparameterizes the weights (weight, meanonly).
- ``initialize_from_batch(model, images)``: the data-dependent initialization of every
  ``WeightNormalization`` of a functional or Sequential model, as ``Network``'s.

The forward and the backward are tfnorm's (``tfnorm.norms``); TensorFlow is handed the
backward through ``tf.custom_gradient``, the only autodiff hook of the library. Inside the
hooked op every variable of the layer is read through a ``keras.StatelessScope`` mapped to
values read outside it, so the op's gradient flows to the variables through those reads
and TensorFlow never sees a variable inside it.

Running statistics (and the noise counter of noisy batch norm) move in ``call`` with
``training=True``, after the forward, as Keras's own BatchNormalization does; with
``training`` False or None the running statistics are used. The schemes the registry
marks ``synchronized`` sum over the whole batch when ``tf.distribute`` splits it over
replicas (``tfnorm.replicas.CROSS_REPLICA``, the library's own synchronization).
"""

import keras
import tensorflow as tf

from tfnorm import norms, replicas, schemes

__all__ = ["Normalization", "WeightNormalization", "weight_layer", "initialize_from_batch"]

PACKAGE = "tfnorm"


def _read(variables):
    """(variable, its value read here) pairs: the state of a ``keras.StatelessScope``."""
    return [(v, tf.convert_to_tensor(v)) for v in variables]


def hand_gradient(forward, backward, trainable, others, *inputs):
    """``forward(*inputs) -> (out, cache)`` as one op whose gradient is
    ``backward(dout, cache) -> (input gradients, trainable gradients)``.

    ``trainable``: the Keras variables whose gradients ``backward`` returns (in its order);
    ``others``: every other variable the forward or backward reads. Both run in a
    ``keras.StatelessScope`` mapping each variable to a value read before the op, so the
    op reads no variable and cannot change one. Returns (out, cache)."""
    state = _read(others)
    kept = {}

    @tf.custom_gradient
    def op(*tensors):
        xs, values = tensors[:len(inputs)], tensors[len(inputs):]
        mapping = list(zip(trainable, values)) + state
        with keras.StatelessScope(mapping):
            out, cache = forward(*xs)
        kept["cache"] = cache

        def grad(dout):
            with keras.StatelessScope(mapping):
                input_grads, variable_grads = backward(dout, cache)
            return list(input_grads) + list(variable_grads)

        return out, grad

    out = op(*inputs, *[value for _, value in _read(trainable)])
    return out, kept["cache"]


class _KerasVariables:
    """A ``tf.variable_creator_scope`` under which the ``tf.Variable(...)`` calls of
    tfnorm's classes create Keras weights of ``layer`` instead (tracked, saved, mirrored
    under a strategy). Statistics are assigned in replica context, where every replica
    of a synchronized scheme holds the same value: aggregation ONLY_FIRST_REPLICA, as
    ``tfnorm.replicas.scope`` gives the library's own variables."""

    def __init__(self, layer):
        self.layer, self.created, self._inside = layer, [], False

    def __call__(self, next_creator, **kwargs):
        if self._inside:  # the tf.Variable that Keras's weight itself wraps
            return next_creator(**kwargs)
        initial = kwargs["initial_value"]
        initial = tf.convert_to_tensor(initial() if callable(initial) else initial,
                                       dtype=kwargs.get("dtype"))
        trainable = kwargs.get("trainable", True) is not False
        self._inside = True
        try:
            variable = self.layer.add_weight(
                shape=initial.shape, dtype=initial.dtype.name, trainable=trainable,
                initializer=lambda shape, dtype=None: initial, autocast=False,
                aggregation="none" if trainable else "only_first_replica",
                name=kwargs.get("name"))
        finally:
            self._inside = False
        self.created.append(variable)
        return variable

    def scope(self):
        return tf.variable_creator_scope(self)


def _split_hyperparameters(scheme, kwargs):
    """The registry hyperparameters in ``kwargs`` (removed from it); one the scheme does
    not take is refused by name (the registry's ``build`` would ignore it silently)."""
    row = schemes.get(scheme)
    given = {key: kwargs.pop(key) for key in list(kwargs) if key in schemes.HYPERPARAMETERS}
    refused = sorted(set(given) - set(row.hyperparameters))
    if refused:
        taken = ", ".join(row.hyperparameters) or "none"
        raise ValueError(f"scheme {scheme!r} takes no {', '.join(refused)} "
                         f"(its hyperparameters: {taken})")
    return given


def _require_one_dtype(layer):
    if layer.compute_dtype != layer.variable_dtype:
        raise ValueError(f"{layer.name}: mixed precision ({layer.dtype_policy.name}) is not "
                         "supported; use one dtype, e.g. float32 or float64")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Normalization(keras.layers.Layer):
    """The normalization of ``scheme`` (any of ``tfnorm.SCHEMES``) as a Keras layer, over
    inputs (N, H, W, C) or, where the scheme allows it, (N, C). Hyperparameters are the
    registry's (``tfnorm.schemes.HYPERPARAMETERS``), e.g. ``Normalization("batch",
    momentum=0.99)``, ``Normalization("group", groups=8)``; the rest of the keyword
    arguments are Keras's (name, dtype, ...)."""

    def __init__(self, scheme, **kwargs):
        schemes.check(scheme)
        self.scheme = scheme
        self.hyperparameters = _split_hyperparameters(scheme, kwargs)
        super().__init__(**kwargs)
        self.normalization = None

    def build(self, input_shape):
        _require_one_dtype(self)
        row = schemes.get(self.scheme)
        if (self.hyperparameters.get("per_position_running_stats")
                and tf.distribute.get_strategy().num_replicas_in_sync > 1):
            raise ValueError("per_position_running_stats is not supported under a "
                             "distribution strategy (a replica sees only its rows)")
        creator = _KerasVariables(self)
        # Eagerly, even when Keras builds the layer while tracing (a subclassed model): the
        # initial values must outlive the graph being traced.
        with tf.init_scope(), creator.scope():
            self.normalization = schemes.build(self.scheme, int(input_shape[-1]),
                                               self.variable_dtype, **self.hyperparameters)
        if row.synchronized:
            self.normalization.synchronize(replicas.CROSS_REPLICA)
        self._trainable_state = list(self.normalization.trainable_variables)
        self._other_state = [v for v in creator.created
                             if not any(v is t for t in self._trainable_state)]

    def forward(self, inputs, training=False):
        """(y, cache) with the hand-written backward; no state moves."""
        normalization = self.normalization

        def backward(dy, cache):
            dx, grads = normalization.backward(dy, cache)
            return [dx], grads

        return hand_gradient(lambda x: normalization.forward(x, training), backward,
                             self._trainable_state, self._other_state,
                             tf.convert_to_tensor(inputs, self.compute_dtype))

    def call(self, inputs, training=None):
        training = bool(training)
        y, cache = self.forward(inputs, training)
        if training:
            self.normalization.update_statistics(cache)
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scheme": self.scheme, **self.hyperparameters}


def _named_variable(layer, name):
    found = [v for v in layer.trainable_variables if v.name == name]
    return found[0] if len(found) == 1 else None


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightNormalization(keras.layers.Wrapper):
    """``layer`` (a Conv or Dense, built here) with kernel = g v / ||v||, the norm over all
    axes but the output one: v is the layer's own kernel variable, g (one per output,
    init 1) is added here; the bias and activation stay the layer's. The reparameterization's
    gradient is tfnorm's (``norms.weight_norm_backward``); the layer's own op keeps Keras's.
    ``kernel`` is v (what the four panels show as the weights)."""

    def build(self, input_shape=None):
        super().build(input_shape)
        _require_one_dtype(self.layer)
        self._v = _named_variable(self.layer, "kernel")
        if self._v is None or getattr(self.layer, "lora_enabled", False):
            raise ValueError(f"WeightNormalization wraps a layer with one trainable 'kernel' "
                             f"variable (Conv, Dense), not {type(self.layer).__name__}")
        self.norm_axes = list(range(len(self._v.shape) - 1))
        self.g = self.add_weight(name="g", shape=(self._v.shape[-1],), initializer="ones",
                                 dtype=self.layer.variable_dtype, autocast=False)

    @property
    def kernel(self):
        return self._v

    def direction_and_scale(self):
        """The kernel g v/||v|| as one op with the hand-written gradient (to v and g)."""
        kernel, _ = hand_gradient(
            lambda v, g: norms.weight_norm_forward(v, g, self.norm_axes),
            lambda dw, cache: (norms.weight_norm_backward(dw, cache), []),
            [], [], tf.convert_to_tensor(self._v), tf.convert_to_tensor(self.g))
        return kernel

    def _call_with(self, inputs, kernel, bias=None):
        """The wrapped layer's call with its kernel (and bias) replaced by tensors."""
        mapping = [(v, kernel if v is self._v else bias if (bias is not None and
                                                              v.name == "bias") else None)
                   for v in self.layer.variables]
        mapping = [(v, value if value is not None else tf.convert_to_tensor(v))
                   for v, value in mapping]
        with keras.StatelessScope(mapping):
            return self.layer.call(inputs)

    def call(self, inputs):
        return self._call_with(inputs, self.direction_and_scale())

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def initialize_from(self, inputs):
        """Salimans & Kingma's data-dependent init on ``inputs``, as tfnorm's weight layers:
        with t the layer's output under the kernel v/||v|| and no bias, g = 1/std(t) and
        bias = -mean(t)/std(t), so the output starts standardized. Needs the layer's bias
        and no activation inside it (t is the pre-activation)."""
        bias = _named_variable(self.layer, "bias")
        activation = getattr(self.layer, "activation", None)
        if bias is None or activation not in (None, keras.activations.linear):
            raise ValueError(f"{self.name}: the data-dependent init needs the wrapped layer's "
                             "bias (use_bias=True) and no activation inside it (put the "
                             "activation in a layer of its own)")
        direction, _ = norms.weight_norm_forward(tf.convert_to_tensor(self._v),
                                                 tf.ones(self.g.shape, self.g.dtype),
                                                 self.norm_axes)
        t = self._call_with(tf.convert_to_tensor(inputs, self.layer.compute_dtype),
                            direction, tf.zeros(bias.shape, bias.dtype))
        g, b = norms.weight_norm_data_init(t)
        self.g.assign(g)
        bias.assign(b)


def weight_layer(scheme, layer):
    """``layer`` under ``scheme``: wrapped in WeightNormalization when the registry says the
    scheme reparameterizes the weights, as it is otherwise."""
    if schemes.get(scheme).reparameterizes_weights:
        return WeightNormalization(layer)
    return layer


def initialize_from_batch(model, images):
    """The data-dependent init of every WeightNormalization of a functional or Sequential
    ``model``, in order, each on its input given the ones before it already initialized
    (``Network.initialize_from_batch``). The forward runs in training mode; no running
    statistic moves. A model without WeightNormalization is left as it is."""
    for layer in model.layers:
        if isinstance(layer, WeightNormalization):
            upstream = keras.Model(model.inputs[0], layer.input)
            with keras.StatelessScope():  # nothing before the layer moves
                inputs = upstream(images, training=True)
            layer.initialize_from(inputs)
