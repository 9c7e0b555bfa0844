"""The compiled training step: forward, hand-written backward, optimizer update,
running statistics, and what the records need, all in one tf.function.

Per-layer statistics come out of every step as one small tensor (so an epoch's
means cost no extra pass); the four histograms per layer are computed in-graph
only by the recording step.

``train_step`` and ``eval_step`` run the *fused* step where the network allows it
(blocks without residual connections): the convolutions on TF's kernels, and each
stretch of element-wise work between two convolutions (activation, normalization,
their backward, the loss, the update and the statistics) as one XLA-compiled
function of our own maths. Same formulas, same outputs; see ``_BlockTail``.
``record_step`` runs the plain step (``Network.backprop``), once per epoch.
"""

import tensorflow as tf

from tfnorm import layers, losses, norms

# Columns of the per-step layer statistics, in order.
LAYER_STATS = ("nonzero_grad_frac", "weight_grad_norm", "passed_grad_norm", "weights_norm",
               "update_norm")
# The four quantities of the article's panels, in panel order.
QUANTITIES = ("weight_gradient", "passed_gradient", "weights", "update")
# Summary statistics stored beside each histogram.
SUMMARY_STATS = ("mean", "std", "min", "max", "norm", "nonzero_frac")
DEFAULT_BINS = 50  # the article's histograms


def nonzero_fraction(x):
    """Fraction of entries that are exactly non-zero (the article's count)."""
    return tf.math.count_nonzero(x, dtype=tf.int64) / tf.size(x, out_type=tf.int64)


def histogram(x, bins):
    """Fixed-bin histogram of x over [min, max]: (counts[bins] int64, range[2])."""
    x = tf.reshape(tf.cast(x, tf.float64), [-1])
    low, high = tf.reduce_min(x), tf.reduce_max(x)
    # A constant tensor still gets a non-empty range, centred on its value.
    pad = tf.where(high > low, tf.zeros([], tf.float64), 0.5 * tf.maximum(tf.abs(low), 1e-12))
    low, high = low - pad, high + pad
    counts = tf.histogram_fixed_width(x, tf.stack([low, high]), nbins=bins, dtype=tf.int64)
    return counts, tf.stack([low, high])


def summary(x):
    x = tf.reshape(tf.cast(x, tf.float64), [-1])
    mean, variance = tf.nn.moments(x, axes=[0])
    return tf.stack([mean, tf.sqrt(variance), tf.reduce_min(x), tf.reduce_max(x),
                     tf.norm(x), tf.cast(nonzero_fraction(x), tf.float64)])


def _norm(x):
    # One reduction (tf.norm squares into a temporary first); XLA has no EuclideanNorm.
    return tf.cast(tf.math.reduce_euclidean_norm(x), tf.float64)


def _compiled_norm(x):
    """``_norm`` inside XLA, which fuses the square into the sum."""
    return tf.cast(tf.sqrt(tf.reduce_sum(tf.square(x))), tf.float64)


def _finite(tensors):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def _layer_stats(weight_gradient, passed_norm, weights, update, norm=_norm):
    """One row of LAYER_STATS (float64)."""
    return tf.stack([tf.cast(nonzero_fraction(weight_gradient), tf.float64),
                     norm(weight_gradient), passed_norm, norm(weights), norm(update)])


_NO_PASSED_GRADIENT = float("nan")  # layer 1 outside the recording step


# ----------------------------------------------------------------------------
# The fused step.
#
# Measured on the article's network (batch 20, 96x96x3, 2 CPU cores): the convolutions
# are the unavoidable work; on top of them come (a) full passes over the large tensors of
# the first two blocks (48x48x16 and 24x24x16 per image), each costing about as much as
# the next, and (b) a few hundred small ops (later blocks, the update of 6-18 variables,
# the statistics), each costing its fixed launch time. XLA on CPU is slower than TF's own
# kernels for (a) (single-threaded loops, tree reductions) and far faster for (b), where it
# turns each stretch into one launch. So: large stretches run as plain TF ops, written
# with as few passes as the maths allows; small ones, the loss and the update with its
# statistics run as XLA-compiled functions. The convolutions stay on TF's oneDNN kernels.

# A stretch whose largest tensor has at most this many elements is compiled with XLA.
SMALL_ELEMENTS = 1 << 16


def _is_small(x):
    count = x.shape.num_elements()
    return count is not None and count <= SMALL_ELEMENTS


def _split_cache(structure):
    """A cache as (its tensors, a layout holding everything else: axes, flags, variables)."""
    leaves = tf.nest.flatten(structure)
    is_tensor = [isinstance(leaf, tf.Tensor) for leaf in leaves]
    tensors = [leaf for leaf, tensor in zip(leaves, is_tensor) if tensor]
    statics = [None if tensor else leaf for leaf, tensor in zip(leaves, is_tensor)]
    skeleton = tf.nest.map_structure(lambda _: None, structure)
    return tensors, (skeleton, is_tensor, statics)


def _join_cache(tensors, layout):
    skeleton, is_tensor, statics = layout
    remaining = iter(tensors)
    leaves = [next(remaining) if tensor else static for tensor, static in zip(is_tensor, statics)]
    return tf.nest.pack_sequence_as(skeleton, leaves)


def _boxcox_part(normalization):
    """The Box-Cox inside a normalization (alone, or first of a Sequence), else None."""
    if isinstance(normalization, norms.BoxCox):
        return normalization
    if isinstance(normalization, norms.Sequence) and isinstance(normalization.parts[0],
                                                                norms.BoxCox):
        return normalization.parts[0]
    return None


class _BlockTail:
    """What follows a block's convolution: activation and normalization in the block's
    order, forward and backward, as functions of tensors only (compiled with XLA when
    small). The caches cross as flat tensor lists; their other leaves stay in ``layout``."""

    def __init__(self, block):
        if block.residual_beta is not None:
            raise ValueError("residual blocks are not fused")
        self.block = block
        self.act_forward, self.act_backward = layers.activation_pair(block.activation)
        self.boxcox = _boxcox_part(block.normalization)
        norm = block.normalization
        self.parts = norm.parts if isinstance(norm, norms.Sequence) else [norm]
        self.layout = {}
        self.forward_compiled = {
            training: tf.function(
                lambda pre, noises, training=training: self._forward(pre, training, noises, True),
                jit_compile=True)
            for training in (True, False)}
        self.backward_compiled = tf.function(self._backward, jit_compile=True)

    def draw_noise(self, batch, training):
        """This step's Santurkar noise for each noise part, drawn by TF's generators (XLA's
        give other numbers)."""
        if not training:
            return []
        return [part.draw(batch) for part in self.parts
                if isinstance(part, norms.DistributionNoise)]

    def _normalize(self, x, training, noises):
        """The block's normalization (``Sequence.forward`` part by part, feeding the noise)."""
        noises, caches = list(noises), []
        for part in self.parts:
            if isinstance(part, norms.DistributionNoise):
                x, cache = part.forward(x, training, noise=noises.pop(0) if training else None)
            else:
                x, cache = part.forward(x, training)
            caches.append(cache)
        if isinstance(self.block.normalization, norms.Sequence):
            return x, caches
        return x, caches[0]

    def _forward(self, pre, training, noises, compiled):
        if self.block.placement == "after":
            act, act_cache = self.act_forward(pre)
            norm_input = act
            out, norm_cache = self._normalize(act, training, noises)
        else:
            norm_input = pre
            normed, norm_cache = self._normalize(pre, training, noises)
            out, act_cache = self.act_forward(normed)
        tensors, self.layout[training] = _split_cache((act_cache, norm_cache))
        # XLA drops assertions: Box-Cox's input check leaves as its minimum, checked outside.
        guard = (tf.reduce_min(norm_input) if compiled and self.boxcox is not None
                 else tf.zeros([], pre.dtype))
        return out, tensors, guard

    def forward(self, pre, training):
        """Returns (out, cache tensors)."""
        noises = self.draw_noise(tf.shape(pre)[0], training)
        if not _is_small(pre):
            out, tensors, _ = self._forward(pre, training, noises, False)
            return out, tensors
        out, tensors, guard = self.forward_compiled[training](pre, noises)
        return self.guarded(out, guard), tensors

    def guarded(self, result, guard):
        """``result`` once Box-Cox's input check on ``guard`` has passed (outside XLA)."""
        if self.boxcox is None:
            return result
        shift = self.boxcox.shift
        check = tf.debugging.assert_positive(
            guard + shift, message=f"Box-Cox input must be above {-shift:g} "
                                   f"(x + {shift:g} > 0); got a value at or below it")
        with tf.control_dependencies([check]):
            return tf.nest.map_structure(tf.identity, result)

    def cache(self, tensors, training=True):
        """(act_cache, norm_cache) rebuilt from the forward's tensors."""
        return _join_cache(tensors, self.layout[training])

    def backward_terms(self, dout, tensors):
        """Returns (dpre, normalization grads)."""
        act_cache, norm_cache = self.cache(tensors)
        norm = self.block.normalization
        if self.block.placement == "after":
            dact, norm_grads = norm.backward(dout, norm_cache)
            dpre = self.act_backward(dact, act_cache)
        else:
            dnormed = self.act_backward(dout, act_cache)
            dpre, norm_grads = norm.backward(dnormed, norm_cache)
        return dpre, list(norm_grads)

    def _backward(self, dout, tensors):
        dpre, norm_grads = self.backward_terms(dout, tensors)
        # dout is the next block's passed gradient: its norm is one more reduction here.
        return dpre, norm_grads, _compiled_norm(dout)

    def backward(self, dout, tensors):
        """Returns (dpre, normalization grads, norm of dout as float64)."""
        if _is_small(dout):
            return self.backward_compiled(dout, tensors)
        dpre, norm_grads = self.backward_terms(dout, tensors)
        return dpre, norm_grads, _norm(dout)


class Trainer:
    """Owns the compiled steps for one network and optimizer.

    ``train_step(images, labels)`` -> dict(loss, accuracy, layer_stats[L, 5], finite[L + 1]);
    ``record_step`` also returns histograms: counts[L, 4, bins], ranges[L, 4, 2],
    summaries[L, 4, 6] over QUANTITIES, and computes layer 1's passed gradient.
    ``finite``: the loss, then per layer whether its gradients and weights are finite
    after the step (a divergence check that costs one reduction per variable).

    ``fused`` (default on): run ``train_step`` and ``eval_step`` as the fused step when
    the network allows it (``self.fused`` says whether it does); ``jit_compile``
    compiles the whole plain step with XLA instead."""

    def __init__(self, network, optimizer, bins=DEFAULT_BINS, jit_compile=False, fused=True):
        self.network, self.optimizer, self.bins = network, optimizer, int(bins)
        optimizer.build(network.trainable_variables)
        self._jit_compile = bool(jit_compile)
        self.fused = bool(fused) and not jit_compile and _can_fuse(network)
        if self.fused:
            self._tails = [_BlockTail(block) for block in network.blocks]
            self._head = tf.function(self._head_step, jit_compile=True)
            self._head_eval = tf.function(self._head_evaluate, jit_compile=True)
            self._update = tf.function(self._update_and_stats, jit_compile=True)
            self.train_step = tf.function(self._fused_step)
            self.eval_step = tf.function(self._fused_eval)
        else:
            self.train_step = tf.function(lambda x, y: self._step(x, y, record=False),
                                          jit_compile=jit_compile)
            self.eval_step = tf.function(self._eval, jit_compile=jit_compile)
        self._apply = tf.function(self._apply_gradients, jit_compile=self.fused)
        self.record_step = tf.function(lambda x, y: self._step(x, y, record=True),
                                       jit_compile=False)

    def apply_gradients(self, grads):
        """The optimizer update alone (compiled as the fused step's is), for a step whose
        gradients come from elsewhere, e.g. the benchmark's reference. Returns the updates."""
        return self._apply(list(grads))

    def _apply_gradients(self, grads):
        return self.optimizer.apply(self.network.trainable_variables, grads)

    # ------------------------------------------------------------------------
    # The plain step: Network.backprop, then the update and the statistics.

    def _step(self, images, labels, record):
        net = self.network
        result = net.backprop(images, labels, first_passed_gradient=record)
        old_weights = [tf.identity(w) for w in net.layer_weights] if record else None
        with tf.control_dependencies(net.update_statistics(result.caches)):
            updates = self.optimizer.apply(net.trainable_variables, result.grads)
        layer_updates = [updates[i] for i in net.weight_indices]
        stats, finite = [], [tf.reduce_all(tf.math.is_finite(result.loss))]
        block_vars = 0
        for block, layer, update in zip(net.blocks, result.layers, layer_updates):
            n = len(block.trainable_variables)
            grads = result.grads[block_vars:block_vars + n]
            block_vars += n
            finite.append(_finite(grads + block.trainable_variables))
            norm = _compiled_norm if self._jit_compile and not record else _norm
            passed = (norm(layer.passed_gradient) if layer.passed_gradient is not None
                      else tf.constant(_NO_PASSED_GRADIENT, tf.float64))
            stats.append(_layer_stats(layer.weight_gradient, passed, layer.weights, update,
                                      norm))
        out = {"loss": result.loss,
               "accuracy": losses.accuracy(result.logits, labels),
               "layer_stats": tf.stack(stats),
               "finite": tf.stack(finite)}
        if record:
            counts, ranges, summaries = [], [], []
            for layer, old, update in zip(result.layers, old_weights, layer_updates):
                per_quantity = [layer.weight_gradient, layer.passed_gradient, old, update]
                hists = [histogram(q, self.bins) for q in per_quantity]
                counts.append(tf.stack([h[0] for h in hists]))
                ranges.append(tf.stack([h[1] for h in hists]))
                summaries.append(tf.stack([summary(q) for q in per_quantity]))
            out.update(counts=tf.stack(counts), ranges=tf.stack(ranges),
                       summaries=tf.stack(summaries))
        return out

    def _eval(self, images, labels):
        """Returns (sum of losses, number correct) on a batch, in evaluation mode."""
        logits, _, _ = self.network.forward(images, training=False)
        loss, _ = losses.softmax_cross_entropy_forward(logits, labels)
        batch = tf.cast(tf.shape(labels)[0], loss.dtype)
        return loss * batch, losses.accuracy(logits, labels) * batch

    # ------------------------------------------------------------------------
    # The fused step: the same maths, cut at the convolutions.

    def _convolutions_forward(self, images, training):
        """Every block but the last: convolution (TF), then its compiled tail. Returns the
        last block's pre-activation and, per block, (layer cache, tail cache tensors)."""
        net = self.network
        net._check_input(images)
        x = tf.convert_to_tensor(images, net.trainable_variables[0].dtype)
        caches = []
        for block, tail in zip(net.blocks[:-1], self._tails[:-1]):
            pre, layer_cache = block.layer.forward(x)
            x, tail_tensors = tail.forward(pre, training)
            caches.append((layer_cache, tail_tensors))
        pre, layer_cache = net.blocks[-1].layer.forward(x)
        return pre, layer_cache, caches

    def _logits(self, x):
        return layers.global_avg_pool_forward(x) if self.network.head == "global_avg" else (x, None)

    def _head_step(self, pre, labels, noises):
        """Last block's tail, head, loss, and back to the last convolution's output."""
        tail = self._tails[-1]
        out, tail_tensors, guard = tail._forward(pre, True, noises, True)
        logits, head_cache = self._logits(out)
        loss, loss_cache = losses.softmax_cross_entropy_forward(logits, labels)
        dlogits = losses.softmax_cross_entropy_backward(tf.ones([], logits.dtype), loss_cache)
        dout = (layers.global_avg_pool_backward(dlogits, head_cache)
                if self.network.head == "global_avg" else dlogits)
        dpre, norm_grads = tail.backward_terms(dout, tail_tensors)
        return (loss, losses.accuracy(logits, labels), dpre, norm_grads, tail_tensors, guard)

    def _head_evaluate(self, pre, labels):
        out, _, guard = self._tails[-1]._forward(pre, False, [], True)
        logits, _ = self._logits(out)
        loss, _ = losses.softmax_cross_entropy_forward(logits, labels)
        batch = tf.cast(tf.shape(labels)[0], loss.dtype)
        return loss * batch, losses.accuracy(logits, labels) * batch, guard

    def _check_head_guard(self, guard, result):
        """The last block's Box-Cox input check (see _BlockTail.forward)."""
        return self._tails[-1].guarded(result, guard)

    def _update_and_stats(self, loss, grads, passed_norms, tail_tensors):
        """Running statistics, optimizer update, LAYER_STATS and the finite checks, compiled."""
        net = self.network
        moves = [op for block, tail, tensors in zip(net.blocks, self._tails, tail_tensors)
                 for op in block.normalization.update_statistics(tail.cache(tensors)[1])]
        with tf.control_dependencies(moves):
            updates = self.optimizer.apply(net.trainable_variables, grads)
        stats, finite = [], [tf.reduce_all(tf.math.is_finite(loss))]
        for index, (block, start) in enumerate(zip(net.blocks, net.weight_indices)):
            count = len(block.trainable_variables)
            finite.append(_finite(grads[start:start + count] + block.trainable_variables))
            passed = (passed_norms[index - 1] if index > 0
                      else tf.constant(_NO_PASSED_GRADIENT, tf.float64))
            stats.append(_layer_stats(grads[start], passed, block.layer.weights, updates[start],
                                      _compiled_norm))
        return tf.stack(stats), tf.stack(finite)

    def _fused_step(self, images, labels):
        net = self.network
        pre, layer_cache, caches = self._convolutions_forward(images, True)
        noises = self._tails[-1].draw_noise(tf.shape(pre)[0], True)
        loss, accuracy, dpre, head_norm_grads, head_tensors, guard = self._head(
            pre, labels, noises)
        dpre = self._check_head_guard(guard, dpre)
        grads, passed_norms = [], []
        block_grads = None
        for index in reversed(range(len(net.blocks))):
            block = net.blocks[index]
            if index == len(net.blocks) - 1:
                cache, norm_grads = layer_cache, head_norm_grads
            else:
                layer_cache_i, tail_tensors = caches[index]
                dpre, norm_grads, passed_norm = self._tails[index].backward(dx, tail_tensors)
                passed_norms.insert(0, passed_norm)
                cache = layer_cache_i
            # The first layer's input is the image: its gradient is never needed here.
            dx, layer_grads = block.layer.backward(dpre, cache, need_input_grad=index > 0)
            grads = layer_grads + list(norm_grads) + grads
        tail_tensors = [tensors for _, tensors in caches] + [head_tensors]
        layer_stats, finite = self._update(loss, grads, passed_norms, tail_tensors)
        return {"loss": loss, "accuracy": accuracy, "layer_stats": layer_stats,
                "finite": finite}

    def _fused_eval(self, images, labels):
        pre, _, _ = self._convolutions_forward(images, False)
        loss_sum, correct, guard = self._head_eval(pre, labels)
        return self._check_head_guard(guard, (loss_sum, correct))


def _can_fuse(network):
    return all(block.residual_beta is None for block in network.blocks)
