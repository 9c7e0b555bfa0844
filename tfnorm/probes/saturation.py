"""Saturation of a bounded non-linearity: tanh of a wide pre-activation sits
at +-1, where its derivative 1 - tanh^2 is 0 and the gradient stops.
Normalization placed before the activation keeps its input in the responsive range.

- ``saturated_fraction``: the fraction of units with |tanh| above a threshold (0.99,
  where the derivative is below 0.02);
- ``near_zero_fraction``: the fraction of gradient entries below ``relative`` times
  the root mean square of the same tensor (one layer, one scheme). Relative to the
  tensor's own scale, so that schemes whose gradients differ in overall size compare
  on how the gradient is spread, not on its size;
- ``probe``: one forward and hand-written backward of the loss, and per block the
  input of its activation, the activation, the gradient at the activation's input (what
  the derivative let through) and the gradient the block passes back.
"""

import collections

import numpy as np
import tensorflow as tf

from tfnorm import layers, losses

SATURATION_THRESHOLD = 0.99
NEAR_ZERO_RELATIVE = 0.01

LayerSaturation = collections.namedtuple(
    "LayerSaturation", ["activation_input", "activation", "activation_input_gradient",
                        "passed_gradient"])
LayerSaturation.__doc__ = """One block's tensors from ``probe``, all with the batch first:
the input of the activation (the normalized pre-activation when the normalization
comes before it), the activation, the gradient of the loss w.r.t. the activation's
input, and the gradient w.r.t. the block's input (the article's 'passed gradient')."""


def saturated_fraction(activation, threshold=SATURATION_THRESHOLD):
    """Fraction of entries with |activation| > threshold."""
    a = np.abs(np.asarray(activation, np.float64))
    if a.size == 0:
        raise ValueError("saturated_fraction of an empty tensor")
    return float(np.mean(a > threshold))


def near_zero_fraction(gradient, relative=NEAR_ZERO_RELATIVE):
    """Fraction of entries with |g| < relative * RMS(g); 1.0 for an all-zero gradient."""
    g = np.abs(np.asarray(gradient, np.float64))
    if g.size == 0:
        raise ValueError("near_zero_fraction of an empty tensor")
    rms = np.sqrt(np.mean(g * g))
    if rms == 0.0:
        return 1.0
    return float(np.mean(g < relative * rms))


def probe(network, images, labels, training=True):
    """Forward and hand-written backward of the mean cross-entropy on (images, labels).

    training: the normalization's mode (batch statistics, as the training step sees
    them, or running ones). Returns (loss, a ``LayerSaturation`` per block)."""
    logits, caches, records = network.forward(images, training)
    loss, loss_cache = losses.softmax_cross_entropy_forward(logits, labels)
    dlogits = losses.softmax_cross_entropy_backward(tf.ones([], logits.dtype), loss_cache)
    _, _, passed = network.backward(dlogits, caches, need_input_grad=True)
    block_caches, head_cache = caches
    head_gradient = (layers.global_avg_pool_backward(dlogits, head_cache)
                     if network.head == "global_avg" else dlogits)
    # What arrives at block i's output is what block i + 1 passed back to its input.
    output_gradients = passed[1:] + [head_gradient]
    out = []
    for block, cache, record, passed_gradient, output_gradient in zip(
            network.blocks, block_caches, records, passed, output_gradients):
        out.append(LayerSaturation(
            record["activation_input"], record["activation"],
            block.backward_detail(output_gradient, cache, need_input_grad=False).activation_input,
            passed_gradient))
    return loss, out


def layer_statistics(layer, threshold=SATURATION_THRESHOLD, relative=NEAR_ZERO_RELATIVE):
    """The numbers of one ``LayerSaturation``: saturated fraction, near-zero fractions of
    both gradients, mean derivative weight 1 - a^2 (tanh), and the input's spread."""
    activation = np.asarray(layer.activation, np.float64)
    activation_input = np.asarray(layer.activation_input, np.float64)
    return dict(
        saturated_frac=saturated_fraction(activation, threshold),
        near_zero_input_grad_frac=near_zero_fraction(layer.activation_input_gradient, relative),
        near_zero_passed_grad_frac=near_zero_fraction(layer.passed_gradient, relative),
        mean_tanh_derivative=float(np.mean(1.0 - activation * activation)),
        activation_input_std=float(np.std(activation_input)),
        activation_input_abs_max=float(np.max(np.abs(activation_input))))
