"""Residual networks whose branch ends in a linear map, y = x + beta * W ReLU(norm(x)):
the pre-activation residual unit (He et al. 2016, "Identity mappings in deep residual
networks"), the form of Balduzzi et al.'s resnets in "The Shattered Gradients Problem".

``tfnorm.network``'s residual blocks end their branch in the activation
(y = x + beta * ReLU(norm(W x))), so the stream only ever gains non-negative values;
here the branch's last operation is the weight layer, as in the paper. Forward and
backward by hand, like every block.
"""

import math

import tensorflow as tf

from tfnorm import norms, schemes
from tfnorm.network import Block, BlockCache, BlockGradients, Network, WeightLayer


class PreActivationBlock(Block):
    """y = x + beta * W act(norm(x)); ``layer`` maps the width to itself."""

    def __init__(self, layer, activation, normalization, residual_beta):
        super().__init__(layer, activation, normalization, "before", residual_beta)

    def _branch_forward(self, x, training):
        act_input, norm_cache = self.normalization.forward(x, training)
        act, act_cache = self._act_forward(act_input)
        out, layer_cache = self.layer.forward(act)
        record = {"pre_activation": x, "activation_input": act_input, "activation": act}
        return out, BlockCache(layer_cache, act_cache, norm_cache), record

    def backward_detail(self, dout, cache, need_input_grad=True):
        dact, layer_grads = self.layer.backward(self.residual_beta * dout, cache.layer, True)
        dact_input = self._act_backward(dact, cache.activation)
        dbranch, norm_grads = self.normalization.backward(dact_input, cache.normalization)
        return BlockGradients(dout + dbranch, layer_grads + norm_grads, dact_input)


def _he_layer(kind, shape, seed, dtype, name, stride=1):
    fan_in = math.prod(shape[:-1])
    return WeightLayer(kind, shape, stride=stride, padding="SAME", use_bias=kind == "dense",
                       init_std=math.sqrt(2.0 / fan_in), seed=seed, dtype=dtype, name=name)


def preactivation_resnet(scheme, *, kind="dense", in_channels=1, width=200, depth=2,
                         residual_beta=1.0, seed=0, dtype=tf.float32, epsilon=1e-5,
                         first_stride=1):
    """``depth`` rectifier blocks of ``width`` and a linear output of one unit, He init:
    block 1 is layer -> norm -> ReLU (from the input to the width, stride
    ``first_stride`` for convs), blocks 2..depth are PreActivationBlocks. kind 'dense'
    (biases zero, set them after) or 'conv' (3x3 SAME, no bias, global mean head)."""
    schemes.check(scheme)
    dtype = tf.as_dtype(dtype)

    def shape(fan_in, fan_out):
        return [fan_in, fan_out] if kind == "dense" else [3, 3, fan_in, fan_out]

    def norm(channels, i):
        return schemes.build(scheme, channels, dtype, epsilon=epsilon, seed=seed * 1000 + i)

    blocks = [Block(_he_layer(kind, shape(in_channels, width), seed * 1000, dtype, "layer1",
                              first_stride), "relu", norm(width, 0), "before")]
    for i in range(1, depth):
        blocks.append(PreActivationBlock(
            _he_layer(kind, shape(width, width), seed * 1000 + i, dtype, f"layer{i + 1}"),
            "relu", norm(width, i), residual_beta))
    output = _he_layer(kind, shape(width, 1), seed * 1000 + depth, dtype, "output")
    blocks.append(Block(output, "linear", norms.Normalization(1, dtype)))
    config = dict(scheme=scheme, kind=kind, width=width, depth=depth,
                  residual_beta=residual_beta, branch="linear_last")
    return Network(blocks, "none" if kind == "dense" else "global_avg", scheme, config)
