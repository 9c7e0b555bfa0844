"""Layers as forward/backward pairs of pure functions (cs231n style).

Every ``*_forward`` returns ``(out, cache)`` where ``cache`` holds exactly what
the matching ``*_backward`` needs; every ``*_backward(dout, cache)`` returns the
gradient for each input of the forward, in the forward's argument order.
Shapes are NHWC for images and (N, D) for vectors.

Only TF's convolution gradient kernels (``conv2d_backprop_*``) are called for
the convolution; everything else is written out here. No autodiff.
"""

import tensorflow as tf

from tfnorm import checks

# ----------------------------------------------------------------------------
# Convolution and dense


def conv2d_forward(x, w, b=None, stride=1, padding="SAME"):
    """x: (N, H, W, Cin), w: (kh, kw, Cin, Cout), b: (Cout,) or None.

    Returns out: (N, H', W', Cout) and the cache.
    """
    checks.require_rank(x, 4, "conv2d input")
    checks.require_rank(w, 4, "conv2d kernel")
    padding = checks.require_padding(padding)
    if x.shape[-1] is not None and w.shape[2] is not None and x.shape[-1] != w.shape[2]:
        raise ValueError(
            f"conv2d: input has {x.shape[-1]} channels but the kernel expects {w.shape[2]}")
    strides = [1, stride, stride, 1]
    out = tf.nn.conv2d(x, w, strides=strides, padding=padding)
    if b is not None:
        out = out + b
    return out, (x, w, b is not None, stride, padding)


def conv2d_backward(dout, cache, need_input_grad=True):
    """dout: (N, H', W', Cout). Returns (dx, dw, db); dx is None when not needed
    (the first layer), db is None when the layer has no bias."""
    x, w, has_bias, stride, padding = cache
    strides = [1, stride, stride, 1]
    # The weight gradient is a sum over the batch, the loss already being a mean.
    dw = tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(w), out_backprop=dout, strides=strides, padding=padding)
    dx = None
    if need_input_grad:
        dx = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=w, out_backprop=dout, strides=strides, padding=padding)
    db = tf.reduce_sum(dout, axis=[0, 1, 2]) if has_bias else None
    return dx, dw, db


def dense_forward(x, w, b=None):
    """x: (N, Din), w: (Din, Dout), b: (Dout,) or None. Returns (N, Dout)."""
    checks.require_rank(x, 2, "dense input")
    checks.require_rank(w, 2, "dense weights")
    out = tf.matmul(x, w)
    if b is not None:
        out = out + b
    return out, (x, w, b is not None)


def dense_backward(dout, cache, need_input_grad=True):
    """dout: (N, Dout). Returns (dx, dw, db)."""
    x, w, has_bias = cache
    dw = tf.matmul(x, dout, transpose_a=True)
    dx = tf.matmul(dout, w, transpose_b=True) if need_input_grad else None
    db = tf.reduce_sum(dout, axis=0) if has_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------
# Reshaping and pooling


def flatten_forward(x):
    """x: (N, ...). Returns (N, prod(...))."""
    return tf.reshape(x, [tf.shape(x)[0], -1]), tf.shape(x)


def flatten_backward(dout, input_shape):
    return tf.reshape(dout, input_shape)


def global_avg_pool_forward(x):
    """x: (N, H, W, C). Returns the mean over H and W: (N, C)."""
    checks.require_rank(x, 4, "global average pool input")
    return tf.reduce_mean(x, axis=[1, 2]), tf.shape(x)


def global_avg_pool_backward(dout, input_shape):
    """dout: (N, C). Returns dx: (N, H, W, C), each position getting dout / (H W)."""
    spatial = tf.cast(input_shape[1] * input_shape[2], dout.dtype)
    return tf.broadcast_to((dout / spatial)[:, None, None, :], input_shape)


def max_pool_forward(x, size=2, stride=2, padding="VALID"):
    """x: (N, H, W, C). Returns (N, H', W', C); the cache keeps the flat argmax."""
    checks.require_rank(x, 4, "max pool input")
    padding = checks.require_padding(padding)
    out, argmax = tf.nn.max_pool_with_argmax(
        x, ksize=size, strides=stride, padding=padding, include_batch_in_index=True)
    return out, (argmax, tf.shape(x))


def max_pool_backward(dout, cache):
    """Routes each output gradient to the input position that won the max."""
    argmax, input_shape = cache
    flat = tf.math.unsorted_segment_sum(
        tf.reshape(dout, [-1]), tf.reshape(argmax, [-1]), tf.reduce_prod(input_shape))
    return tf.reshape(flat, input_shape)


def _pool_counts(x, size, stride, padding):
    """How many input positions each average-pool window covers (SAME pads are not counted)."""
    ones = tf.ones(tf.concat([[1], tf.shape(x)[1:3], [1]], 0), x.dtype)
    kernel = tf.ones([size, size, 1, 1], x.dtype)
    return tf.nn.conv2d(ones, kernel, strides=[1, stride, stride, 1], padding=padding)


def avg_pool_forward(x, size=2, stride=2, padding="VALID"):
    """x: (N, H, W, C). Mean over each window (SAME: over the in-bounds part)."""
    checks.require_rank(x, 4, "average pool input")
    padding = checks.require_padding(padding)
    out = tf.nn.avg_pool2d(x, ksize=size, strides=stride, padding=padding)
    return out, (tf.shape(x), x.dtype, size, stride, padding)


def avg_pool_backward(dout, cache):
    """Spreads dout / window_count evenly back over each window."""
    input_shape, dtype, size, stride, padding = cache
    channels = tf.shape(dout)[-1]
    counts = _pool_counts(tf.zeros(input_shape, dtype), size, stride, padding)
    kernel = tf.ones(tf.stack([size, size, channels, 1]), dtype)
    return tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
        input_sizes=input_shape, filter=kernel, out_backprop=dout / counts,
        strides=[1, stride, stride, 1], padding=padding)


# ----------------------------------------------------------------------------
# Activations: the cache is whatever makes the derivative cheapest.


def relu_forward(x):
    """The cache is the output: out > 0 exactly where x > 0."""
    out = tf.nn.relu(x)
    return out, out


def relu_backward(dout, out):
    """dout where out > 0, else 0, in one pass (TensorFlow's ReluGrad kernel, the formula
    written as a kernel, not autodiff): a 0/1 mask kept from the forward cost a tf.sign
    pass over every activation there and a multiply here (the step of an unnormalized
    article network at 96 px: ~7% slower than autograd, which uses this kernel)."""
    return tf.raw_ops.ReluGrad(gradients=dout, features=out)


def leaky_relu_forward(x, alpha=0.2):
    # Not tf.nn.leaky_relu: its alpha is a float32 attribute, so in float64 the forward
    # would use 0.2000000030 while the backward uses 0.2.
    return tf.where(x > 0, x, alpha * x), (x, alpha)


def leaky_relu_backward(dout, cache):
    x, alpha = cache
    return tf.where(x > 0, dout, alpha * dout)


def elu_forward(x):
    out = tf.nn.elu(x)
    return out, out


def elu_backward(dout, out):
    # For x <= 0, d/dx (e^x - 1) = e^x = out + 1.
    return tf.where(out > 0, dout, dout * (out + 1))


def tanh_forward(x):
    out = tf.tanh(x)
    return out, out


def tanh_backward(dout, out):
    return dout * (1 - out * out)


def sigmoid_forward(x):
    out = tf.sigmoid(x)
    return out, out


def sigmoid_backward(dout, out):
    return dout * out * (1 - out)


def identity_forward(x):
    return x, None


def identity_backward(dout, cache):
    return dout


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "elu": (elu_forward, elu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "linear": (identity_forward, identity_backward),
}


def activation_pair(name):
    """The (forward, backward) pair of an activation by name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
