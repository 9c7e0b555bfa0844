"""A small Keras CNN on the bundled digits with tfnorm's batch norm (its hand-written
backward) and the article's four panels of every layer, every epoch. From the checkout:

    .venv/bin/python -m docs.examples.keras_digits [out_dir]   # default results/keras_example
"""
import sys

import keras
import tensorflow as tf

import tfnorm.keras as tk
from tfnorm import data

out_dir = sys.argv[1] if len(sys.argv) > 1 else "results/keras_example"
tf.config.experimental.enable_op_determinism()
keras.utils.set_random_seed(0)
digits = data.load("digits")  # 1257 train / 540 test images, 32x32x3
x, y = digits.train_images / 255.0, digits.train_labels
x_test, y_test = digits.test_images / 255.0, digits.test_labels

model = keras.Sequential([keras.Input((32, 32, 3))] + [
    layer for filters in (16, 32, 32) for layer in (
        keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False),
        keras.layers.ReLU(),
        tk.Normalization("batch"))] + [
    keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
model.compile(optimizer="adam", metrics=["accuracy"],
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, batch_size=20, epochs=3, validation_data=(x_test, y_test), verbose=2,
          callbacks=[tk.PanelRecorder(out_dir, batch=(x[:20], y[:20]), every=1)])
