"""Fully connected networks of the same blocks as the article's (``tfnorm.network``):
what the shattering and saturation probes train (Balduzzi et al.'s MLPs)."""

import tensorflow as tf

from tfnorm import norms, schemes
from tfnorm.network import Block, Network, WeightLayer, check_scheme


def mlp_network(scheme, *, in_dim=1, out_dim=1, width=200, depth=2, activation="relu",
                placement="before", residual_beta=None, use_bias=True, init="he", seed=0,
                dtype=tf.float32, epsilon=1e-5, momentum=norms.DEFAULT_MOMENTUM, affine=False):
    """A fully connected network: ``depth`` hidden dense blocks of ``width`` units
    (layer, norm and activation in the order given by ``placement``), then a linear
    dense output. ``residual_beta``: hidden blocks after the first become
    y = x + beta * F(x). ``init='he'`` draws weights N(0, 2/fan_in) (Balduzzi et al.)."""
    check_scheme(scheme)
    dtype = tf.as_dtype(dtype)
    blocks = []
    sizes = [in_dim] + [width] * depth
    for i in range(depth + 1):
        last = i == depth
        fan_in, fan_out = sizes[i], (out_dim if last else sizes[i + 1])
        std = (2.0 / fan_in) ** 0.5 if init == "he" else float(init)
        layer = WeightLayer("dense", [fan_in, fan_out], use_bias=use_bias, init_std=std,
                            seed=seed * 1000 + i, dtype=dtype, name=f"dense{i + 1}",
                            weight_norm=schemes.get(scheme).reparameterizes_weights)
        if last:
            blocks.append(Block(layer, "linear", norms.Normalization(fan_out, dtype)))
            continue
        norm = schemes.build(scheme, fan_out, dtype, epsilon=epsilon, momentum=momentum,
                             affine=affine, seed=seed * 1000 + i)
        beta = residual_beta if (residual_beta is not None and i > 0) else None
        blocks.append(Block(layer, activation, norm, placement, beta))
    config = dict(scheme=scheme, in_dim=in_dim, out_dim=out_dim, width=width, depth=depth,
                  activation=activation, placement=placement, residual_beta=residual_beta)
    return Network(blocks, "none", scheme, config)
