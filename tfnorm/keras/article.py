"""The article's network as a Keras model, the same function as ``tfnorm.article_network``
with the same seed (the same initial weights, the same noise), built from Keras layers and
``tfnorm.keras`` normalizations.

Six 3x3 SAME convolutions (``tfnorm.catalog``'s depth, width and strides), each followed by
a ReLU and, after layers 1-5, the scheme's normalization; global mean over H, W; no
softmax (train with ``from_logits=True``); no bias, except in the weight-normalized
convolutions, which always have one (as tfnorm's).
"""

import keras
import tensorflow as tf

from tfnorm import catalog, schemes
from tfnorm.keras.layers import PACKAGE, Normalization, weight_layer

__all__ = ["StatelessNormal", "article_model"]


@keras.saving.register_keras_serializable(package=PACKAGE)
class StatelessNormal(keras.initializers.Initializer):
    """N(0, stddev) drawn by ``tf.random.stateless_normal`` at seed [seed, 0]: tfnorm's
    weight initialization, so a Keras layer starts where tfnorm's does."""

    def __init__(self, stddev, seed):
        self.stddev, self.seed = float(stddev), int(seed)

    def __call__(self, shape, dtype=None):
        return tf.random.stateless_normal(shape, seed=[self.seed, 0], stddev=self.stddev,
                                          dtype=dtype or "float32")

    def get_config(self):
        return {"stddev": self.stddev, "seed": self.seed}


def article_model(scheme, *, image_size=32, in_channels=3, num_classes=10, seed=0,
                  dtype="float32", init_std=0.05, **hyperparameters):
    """A ``keras.Sequential`` equal to ``tfnorm.article_network(scheme, seed=seed, ...)``
    on (image_size, image_size, in_channels) images, its output the logits.
    ``hyperparameters``: the registry's (``tfnorm.schemes.HYPERPARAMETERS``); each
    normalization takes those its scheme takes, and under a scheme with a ``seed`` the
    normalization after layer i is seeded seed * 1000 + i, as in tfnorm's network."""
    unknown = set(hyperparameters) - set(schemes.HYPERPARAMETERS)
    if unknown:
        raise TypeError(f"unknown hyperparameter(s) {sorted(unknown)}")
    row = schemes.get(scheme)
    taken = {k: v for k, v in hyperparameters.items() if k in row.hyperparameters}
    depth, strides = catalog.ARTICLE_DEPTH, catalog.ARTICLE_STRIDES
    channels = [catalog.ARTICLE_WIDTH] * (depth - 1) + [num_classes]
    layers = [keras.Input((image_size, image_size, in_channels), dtype=dtype)]
    for i in range(depth):
        conv = keras.layers.Conv2D(
            channels[i], 3, strides=strides[i], padding="same",
            use_bias=row.reparameterizes_weights, dtype=dtype, name=f"conv{i + 1}",
            kernel_initializer=StatelessNormal(init_std, seed * 1000 + i))
        layers += [weight_layer(scheme, conv), keras.layers.ReLU(dtype=dtype, name=f"relu{i + 1}")]
        if i < depth - 1:
            seeded = {"seed": seed * 1000 + i} if "seed" in row.hyperparameters else {}
            layers.append(Normalization(scheme, dtype=dtype, name=f"norm{i + 1}",
                                        **dict(taken, **seeded)))
    layers.append(keras.layers.GlobalAveragePooling2D(dtype=dtype, name="mean"))
    return keras.Sequential(layers, name=f"article_{scheme}")
