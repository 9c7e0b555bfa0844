"""Run by tests/test_keras_distributed.py in a fresh process (logical CPU devices must be set
before TensorFlow initializes): a Keras model of tfnorm.keras layers trained by model.fit
under MirroredStrategy on 2 logical CPU devices against the same model on one device.

    python tests/keras_mirrored_worker.py [--break_synchronization]

The model (float64, 16 px) has the three synchronized schemes (mean-only BN after a
weight-normalized conv, BN with gamma/beta, noisy BN) and layer norm; both copies start
from the same weights (``StatelessNormal``, the data-dependent init on the same batch) and
take ten SGD steps on the same ten global batches of 8 (4 rows per replica). Prints one
JSON object: the largest relative error of the losses, of every trainable weight and of
every running statistic and noise counter, and how far training moved the weights.
``--break_synchronization``: the layers forget the cross-replica sum (each replica
normalizes its own 4 rows), to show that the comparison catches it.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfnorm import distributed  # noqa: E402

STRATEGY = distributed.make_strategy("mirrored", cpu_devices=2)  # before any TF work

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfnorm.keras as tk  # noqa: E402

STEPS, BATCH, SIZE = 10, 8, 16


def model(seed=4):
    def conv(filters, strides, index, use_bias=False):
        return keras.layers.Conv2D(filters, 3, strides=strides, padding="same",
                                   use_bias=use_bias, dtype="float64",
                                   kernel_initializer=tk.StatelessNormal(0.1, seed + index))

    inputs = keras.Input((SIZE, SIZE, 3), dtype="float64")
    x = tk.WeightNormalization(conv(8, 2, 0, use_bias=True))(inputs)
    x = tk.Normalization("meanonly", affine=True)(keras.layers.ReLU()(x))
    x = tk.Normalization("batch", affine=True)(keras.layers.ReLU()(conv(8, 2, 1)(x)))
    x = tk.Normalization("noisybatch", seed=5)(keras.layers.ReLU()(conv(8, 1, 2)(x)))
    x = tk.Normalization("layer")(keras.layers.ReLU()(conv(8, 1, 3)(x)))
    outputs = keras.layers.GlobalAveragePooling2D()(conv(10, 1, 4)(x))
    return keras.Model(inputs, outputs)


def train(strategy, images, labels):
    with strategy.scope():
        net = model()
        tk.initialize_from_batch(net, images[:BATCH])
        net.compile(optimizer=keras.optimizers.SGD(0.01),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    initial = [w.numpy() for w in net.trainable_weights]
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)
    history = net.fit(batches, epochs=STEPS, steps_per_epoch=1, verbose=0, shuffle=False)
    return net, np.array(history.history["loss"]), initial


def relative(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


def main():
    if "--break_synchronization" in sys.argv[1:]:
        real_build = tk.Normalization.build

        def unsynchronized(self, input_shape):
            real_build(self, input_shape)
            self.normalization.synchronize(None)

        tk.Normalization.build = unsynchronized
    keras.config.set_floatx("float64")  # the reported loss too
    tf.config.experimental.enable_op_determinism()
    generator = np.random.default_rng(0)
    images = generator.random((STEPS * BATCH, SIZE, SIZE, 3))
    labels = generator.integers(0, 10, STEPS * BATCH).astype(np.int32)
    assert STRATEGY.num_replicas_in_sync == 2
    mirrored, mirrored_losses, _ = train(STRATEGY, images, labels)
    single, single_losses, initial = train(tf.distribute.get_strategy(), images, labels)
    trainable = [relative(a.numpy(), b.numpy())
                 for a, b in zip(mirrored.trainable_weights, single.trainable_weights)]
    statistics = [relative(a.numpy(), b.numpy())
                  for a, b in zip(mirrored.non_trainable_weights, single.non_trainable_weights)]
    moved = [relative(w.numpy(), start) for w, start in zip(single.trainable_weights, initial)]
    print(json.dumps({
        "replicas": STRATEGY.num_replicas_in_sync, "loss": relative(mirrored_losses, single_losses),
        "weights": max(trainable), "statistics": max(statistics),
        "statistics_count": len(statistics), "smallest_move": min(moved),
        "noise_steps": [int(w.numpy()) for w in single.non_trainable_weights
                        if w.name == "noise_step"]}))


if __name__ == "__main__":
    main()
