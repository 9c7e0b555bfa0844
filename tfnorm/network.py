"""Networks built from blocks (layer -> activation -> normalization), run forward
and backward by hand.

A :class:`Block` is one weight layer (convolution or dense, optionally weight
normalized), its activation and its normalization, in the article's order
(layer -> activation -> norm, ``placement='after'``) or the usual one
(layer -> norm -> activation, ``placement='before'``), optionally wrapped in a
residual connection y = x + beta * F(x). A :class:`Network` is a list of blocks
and a head (global average pooling for conv nets).
"""

import collections

import tensorflow as tf

from tfnorm import checks, layers, losses, norms, schemes
# ARTICLE_STRIDES: the article's shape, exported here with the network that has it.
from tfnorm.catalog import ARTICLE_DEPTH, ARTICLE_STRIDES, ARTICLE_WIDTH, article_strides  # noqa: F401,E501


check_scheme = schemes.check

WeightLayerCache = collections.namedtuple("WeightLayerCache", ["layer", "weight_norm"])
BlockCache = collections.namedtuple("BlockCache", ["layer", "activation", "normalization"])
BlockCache.__doc__ = """Of ``Block.forward``: the caches of its weight layer (a
``WeightLayerCache``), its activation and its normalization."""
BlockGradients = collections.namedtuple("BlockGradients",
                                        ["input", "variables", "activation_input"])
BlockGradients.__doc__ = """Of ``Block.backward_detail``: the gradient w.r.t. the block's
input (None if not needed), its variables' gradients (aligned with trainable_variables),
and the gradient w.r.t. the activation's input (what the activation's derivative let
through)."""


def _normal(shape, std, seed, dtype):
    return tf.random.stateless_normal(shape, seed=[seed, 0], stddev=std, dtype=dtype)


class WeightLayer:
    """A convolution or dense layer: ``kernel`` (and ``bias``), or under weight
    normalization ``v``, ``g`` and ``bias`` with kernel = g v / ||v||."""

    def __init__(self, kind, shape, *, stride=1, padding="SAME", use_bias=False,
                 weight_norm=False, init_std=0.05, seed=0, dtype=tf.float32, name="layer"):
        if kind not in ("conv", "dense"):
            raise ValueError(f"unknown layer kind {kind!r}")
        self.kind, self.stride, self.padding = kind, int(stride), checks.require_padding(padding)
        self.weight_norm = bool(weight_norm)
        self.out_channels = shape[-1]
        self.norm_axes = [0, 1, 2] if kind == "conv" else [0]
        init = _normal(shape, init_std, seed, dtype)
        if self.weight_norm:
            self.v = tf.Variable(init, name=f"{name}/v")
            self.g = tf.Variable(tf.ones([self.out_channels], dtype), name=f"{name}/g")
            self.bias = tf.Variable(tf.zeros([self.out_channels], dtype), name=f"{name}/bias")
            self.trainable_variables = [self.v, self.g, self.bias]
        else:
            self.kernel = tf.Variable(init, name=f"{name}/kernel")
            self.bias = (tf.Variable(tf.zeros([self.out_channels], dtype), name=f"{name}/bias")
                         if use_bias else None)
            self.trainable_variables = [self.kernel] + ([self.bias] if use_bias else [])

    @property
    def weights(self):
        """The variable the plots show as 'the weights' (v under weight normalization)."""
        return self.trainable_variables[0]

    def effective_weights(self):
        """The kernel the layer applies: its weights, or g v/||v|| under weight norm."""
        return (norms.weight_norm_forward(self.v, self.g, self.norm_axes)[0]
                if self.weight_norm else self.kernel)

    def _apply(self, x, kernel, bias):
        if self.kind == "conv":
            return layers.conv2d_forward(x, kernel, bias, self.stride, self.padding)
        return layers.dense_forward(x, kernel, bias)

    def forward(self, x):
        wn_cache = None
        kernel = self.weights
        if self.weight_norm:
            kernel, wn_cache = norms.weight_norm_forward(self.v, self.g, self.norm_axes)
        out, cache = self._apply(x, kernel, self.bias)
        return out, WeightLayerCache(cache, wn_cache)

    def backward(self, dout, cache, need_input_grad=True):
        """Returns (dx, grads aligned with trainable_variables)."""
        layer_cache, wn_cache = cache
        backward = layers.conv2d_backward if self.kind == "conv" else layers.dense_backward
        dx, dkernel, dbias = backward(dout, layer_cache, need_input_grad)
        if self.weight_norm:
            dv, dg = norms.weight_norm_backward(dkernel, wn_cache)
            return dx, [dv, dg, dbias]
        return dx, [dkernel] + ([dbias] if self.bias is not None else [])

    def initialize_from(self, x):
        """Salimans & Kingma's data-dependent init: with t = x * v/||v||, set
        g = 1/std(t), bias = -mean(t)/std(t), so the layer's output starts standardized."""
        if not self.weight_norm:
            return
        direction, _ = norms.weight_norm_forward(self.v, tf.ones_like(self.g), self.norm_axes)
        t, _ = self._apply(x, direction, None)
        g, bias = norms.weight_norm_data_init(t)
        self.g.assign(g)
        self.bias.assign(bias)


class Block:
    """layer -> activation -> norm ('after', the article's) or layer -> norm -> activation
    ('before'); with ``residual_beta`` set, y = x + beta * F(x)."""

    def __init__(self, layer, activation, normalization, placement="after", residual_beta=None):
        if placement not in ("after", "before"):
            raise ValueError(f"placement must be 'after' or 'before' the activation, got {placement!r}")
        self.layer, self.normalization, self.placement = layer, normalization, placement
        self.activation = activation
        self._act_forward, self._act_backward = layers.activation_pair(activation)
        self.residual_beta = residual_beta
        self.trainable_variables = layer.trainable_variables + normalization.trainable_variables
        self.statistics = list(normalization.statistics)

    def _branch_forward(self, x, training):
        pre, layer_cache = self.layer.forward(x)
        if self.placement == "after":
            act_input = pre
            act, act_cache = self._act_forward(act_input)
            out, norm_cache = self.normalization.forward(act, training)
        else:
            act_input, norm_cache = self.normalization.forward(pre, training)
            act, act_cache = self._act_forward(act_input)
            out = act
        record = {"pre_activation": pre, "activation_input": act_input, "activation": act}
        return out, BlockCache(layer_cache, act_cache, norm_cache), record

    def forward(self, x, training=True):
        """Returns (y, BlockCache, record) with record the block's pre-activation, the
        activation's input (the normalized pre-activation under placement 'before'), the
        activation and the output."""
        out, cache, record = self._branch_forward(x, training)
        if self.residual_beta is not None:
            out = x + self.residual_beta * out
        record["output"] = out
        return out, cache, record

    def backward(self, dout, cache, need_input_grad=True):
        """Returns (dx, grads aligned with trainable_variables); dx None if not needed."""
        gradients = self.backward_detail(dout, cache, need_input_grad)
        return gradients.input, gradients.variables

    def backward_detail(self, dout, cache, need_input_grad=True):
        """The backward pass, with the gradient at the activation's input kept: a
        ``BlockGradients``."""
        dbranch = dout if self.residual_beta is None else self.residual_beta * dout
        if self.placement == "after":
            dact, norm_grads = self.normalization.backward(dbranch, cache.normalization)
            dpre = self._act_backward(dact, cache.activation)
            dact_input = dpre
        else:
            dact_input = self._act_backward(dbranch, cache.activation)
            dpre, norm_grads = self.normalization.backward(dact_input, cache.normalization)
        need_layer_dx = need_input_grad or self.residual_beta is not None
        dx, layer_grads = self.layer.backward(dpre, cache.layer, need_layer_dx)
        if self.residual_beta is not None:
            dx = dout + dx
        return BlockGradients(dx, layer_grads + norm_grads, dact_input)

    def update_statistics(self, cache):
        return self.normalization.update_statistics(cache.normalization)


LayerGradients = collections.namedtuple(
    "LayerGradients", ["weight_gradient", "passed_gradient", "weights", "pre_activation",
                       "activation", "output"])
LayerGradients.__doc__ = """What the plots and studies need of one block after a backward pass:
the gradient of the loss w.r.t. the block's weights (the kernel, or v under weight
normalization), the gradient it passes to the previous block (w.r.t. its input; None
for the first block unless asked for), the weights, and the forward's pre-activation,
activation and output."""

Backprop = collections.namedtuple("Backprop", ["loss", "logits", "grads", "layers", "caches"])


class Network:
    """Blocks and a head. ``head='global_avg'``: mean over H, W of the last block's
    output gives the logits; ``head='none'``: the last block's output is the logits."""

    def __init__(self, blocks, head="global_avg", scheme="none", config=None):
        if head not in ("global_avg", "none"):
            raise ValueError(f"unknown head {head!r}")
        self.blocks, self.head, self.scheme = list(blocks), head, scheme
        self.config = dict(config or {})
        self.trainable_variables = [v for b in self.blocks for v in b.trainable_variables]
        self.statistics = [v for b in self.blocks for v in b.statistics]
        self._block_slices = []
        start = 0
        for block in self.blocks:
            self._block_slices.append(slice(start, start + len(block.trainable_variables)))
            start += len(block.trainable_variables)

    @property
    def layer_weights(self):
        """Per block, the variable shown as its weights."""
        return [b.layer.weights for b in self.blocks]

    def parameter_counts(self):
        """Per block, its trainable numbers (the layer's and the normalization's)."""
        return [sum(v.shape.num_elements() for v in b.trainable_variables) for b in self.blocks]

    @property
    def weight_indices(self):
        """Per block, the index of its weights in ``trainable_variables``."""
        return [s.start for s in self._block_slices]

    def split_by_block(self, values):
        """A list aligned with ``trainable_variables`` (e.g. gradients), split per block."""
        return [values[s] for s in self._block_slices]

    def _check_input(self, images):
        first = self.blocks[0].layer
        rank = 4 if first.kind == "conv" else 2
        checks.require_rank(images, rank, "network input")
        expected = first.weights.shape[-2]
        if images.shape[-1] is not None and images.shape[-1] != expected:
            raise ValueError(f"network input must have {expected} channels in its last axis, "
                             f"got shape {images.shape}")

    def forward(self, images, training=True):
        """Returns (logits, caches, records): records per block as in ``Block.forward``."""
        self._check_input(images)
        x = tf.convert_to_tensor(images, self.trainable_variables[0].dtype)
        caches, records = [], []
        for block in self.blocks:
            x, cache, record = block.forward(x, training)
            caches.append(cache)
            records.append(record)
        if self.head == "global_avg":
            x, head_cache = layers.global_avg_pool_forward(x)
        else:
            head_cache = None
        return x, (caches, head_cache), records

    def backward(self, dlogits, caches, need_input_grad=False):
        """Returns (dimages or None, grads aligned with trainable_variables, passed gradients
        per block: the gradient w.r.t. each block's input, None for the first unless asked)."""
        block_caches, head_cache = caches
        d = dlogits
        if self.head == "global_avg":
            d = layers.global_avg_pool_backward(d, head_cache)
        grads, passed = [], []
        for index in reversed(range(len(self.blocks))):
            need = need_input_grad or index > 0
            d, block_grads = self.blocks[index].backward(d, block_caches[index], need)
            grads = block_grads + grads
            passed.insert(0, d)
        return d, grads, passed

    def update_statistics(self, caches):
        """Move running statistics (and noise counters) after a training step."""
        return [op for b, c in zip(self.blocks, caches[0]) for op in b.update_statistics(c)]

    def loss(self, images, labels, training=True):
        """Scalar mean cross-entropy, from differentiable TF ops only (no state changes)."""
        logits, _, _ = self.forward(images, training)
        loss, _ = losses.softmax_cross_entropy_forward(logits, labels)
        return loss

    def backprop(self, images, labels, first_passed_gradient=False, loss_share=None,
                 reduce_sum=None):
        """Forward and hand-written backward in training mode. Returns a ``Backprop``:
        loss, logits, grads (aligned with trainable_variables), layers (one
        ``LayerGradients`` per block) and the caches (for ``update_statistics``).

        A replica holding n of the N rows of a global batch passes ``loss_share`` n/N and
        ``reduce_sum`` (the sum over replicas): the loss and grads are then those of the
        global batch's mean loss; logits, passed gradients and caches stay its own."""
        logits, caches, records = self.forward(images, training=True)
        loss, loss_cache = losses.softmax_cross_entropy_forward(logits, labels)
        dloss = tf.ones([], logits.dtype) if loss_share is None else loss_share
        dlogits = losses.softmax_cross_entropy_backward(dloss, loss_cache)
        _, grads, passed = self.backward(dlogits, caches, need_input_grad=first_passed_gradient)
        if reduce_sum is not None:
            grads = reduce_sum(grads)
            (loss,) = reduce_sum([dloss * loss])
        per_layer = [
            LayerGradients(grads[s.start], p, b.layer.weights, r["pre_activation"],
                           r["activation"], r["output"])
            for b, s, p, r in zip(self.blocks, self._block_slices, passed, records)]
        return Backprop(loss, logits, grads, per_layer, caches)

    def gradients(self, images, labels):
        """(loss, grads): grads aligned with trainable_variables, by the hand-written backward."""
        result = self.backprop(images, labels)
        return result.loss, result.grads

    def initialize_from_batch(self, images):
        """Data-dependent initialization (weight normalization): block by block, set each
        layer so that its output on ``images`` is standardized. A no-op for other schemes."""
        x = tf.convert_to_tensor(images, self.trainable_variables[0].dtype)
        for block in self.blocks:
            block.layer.initialize_from(x)
            x, _, _ = block.forward(x, training=True)


def article_network(scheme, *, num_classes=10, dtype=tf.float32, seed=0, in_channels=3,
                    width=ARTICLE_WIDTH, depth=ARTICLE_DEPTH, strides=None, kernel_size=3,
                    activation="relu",
                    placement="after", residual=False, residual_beta=1.0, init_std=0.05,
                    noise=False, weight_norm=None, final_activation="relu", use_bias=False,
                    **hyperparameters):
    """The article's network under ``scheme``, and variants.

    Default: six 3x3 SAME convolutions, channels in_channels-16-16-16-16-16-num_classes,
    strides 2,2,2,2,1,1, conv -> ReLU -> norm after layers 1-5, ReLU after layer 6,
    global mean over H, W, weights N(0, init_std), no bias, no gamma/beta.

    depth: number of conv layers (the last maps to num_classes); strides: one per
    layer (default: 2 for the first min(4, depth-1), then 1); placement: 'after' or
    'before' the activation; residual: wrap stride-1, same-width blocks in
    y = x + residual_beta * F(x); noise: add Santurkar et al.'s noise after each
    normalization (e.g. 'none' with noise); weight_norm: reparameterize every conv
    as g v/||v|| + b (default: on for 'weight' and 'meanonly', as Salimans & Kingma
    pair mean-only BN with it); per_position_running_stats: 0, or the training batch size
    (``tfnorm.norms.per_position``); use_bias: a bias in plain convs (weight-normalized
    ones always have one); ``hyperparameters``: the normalizations' (affine, groups,
    boxcox_lambda, epsilon, ...: ``tfnorm.schemes.HYPERPARAMETERS``), the registry's
    defaults for those not given. Variables do not depend on the input size.
    """
    check_scheme(scheme)
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if strides is None:
        strides = list(article_strides(depth))
    if len(strides) != depth:
        raise ValueError(f"strides has {len(strides)} entries for a depth of {depth}")
    hyperparameters = dict(schemes.defaults(), **hyperparameters)
    hyperparameters.pop("seed", None)  # each normalization's seed is its layer's
    if scheme == "group":
        checks.require_divides(int(hyperparameters["groups"]), int(width), "--groups")
    if weight_norm is None:
        weight_norm = schemes.get(scheme).reparameterizes_weights
    dtype = tf.as_dtype(dtype)
    channels = [in_channels] + [width] * (depth - 1) + [num_classes]
    blocks = []
    for i in range(depth):
        last = i == depth - 1
        layer = WeightLayer("conv", [kernel_size, kernel_size, channels[i], channels[i + 1]],
                            stride=strides[i], padding="SAME", weight_norm=weight_norm,
                            init_std=init_std, seed=seed * 1000 + i, dtype=dtype,
                            name=f"conv{i + 1}", use_bias=use_bias)
        if last:
            norm = norms.Normalization(channels[i + 1], dtype)
        else:
            norm = schemes.build(scheme, channels[i + 1], dtype, seed=seed * 1000 + i,
                                 **hyperparameters)
            if noise:
                norm = norms.Sequence([norm, norms.DistributionNoise(
                    channels[i + 1], dtype, seed=seed * 1000 + 500 + i)], f"{scheme}+noise")
        is_residual = (residual and not last and strides[i] == 1
                       and channels[i] == channels[i + 1])
        blocks.append(Block(layer, final_activation if last else activation, norm, placement,
                            residual_beta if is_residual else None))
    config = dict(scheme=scheme, num_classes=num_classes, dtype=dtype.name, seed=seed,
                  in_channels=in_channels, width=width, depth=depth, strides=list(strides),
                  kernel_size=kernel_size, activation=activation, placement=placement,
                  residual=residual, residual_beta=residual_beta, init_std=init_std,
                  noise=noise, weight_norm=weight_norm, final_activation=final_activation,
                  use_bias=use_bias, **hyperparameters)
    return Network(blocks, "global_avg", scheme, config)


def dataset_network(scheme, dataset=None, **options):
    """The article network under ``scheme`` for ``dataset``'s images and classes (a
    ``tfnorm.data`` Dataset; None: the article's 3 channels and 10 classes); ``options``
    go to ``article_network``. The one builder of the driver's and the studies' runs."""
    if dataset is not None:
        options = dict(options, num_classes=dataset.num_classes,
                       in_channels=dataset.train_images.shape[-1])
    return article_network(scheme, **options)
