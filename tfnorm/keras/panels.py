"""The article's four panels for any Keras model: ``PanelRecorder``, a callback.

Every ``every`` epochs (and the first and last, as ``experiments.article.train``) it records, for
each layer with a kernel (Conv, Dense, ``WeightNormalization``: v), the four quantities of
the epoch's last step, the same as a tfnorm run records them (``tfnorm.run.records``):

- the gradient of the compiled loss w.r.t. the kernel, and w.r.t. the layer's input
  (for the first layer, the image), on ``batch`` (the images and labels given to the
  callback: Keras does not show a callback the step's own batch), in training mode, at
  the weights before the step;
- the kernel before the step, and the update the optimizer then applied to it.

The model does not move while it is observed: the forward runs in a ``keras.StatelessScope``
(no running statistic, noise counter or metric changes); its gradients come from a tape
(the callback observes a model, it does not train one). The histograms are
``tfnorm.training``'s, the record is ``records.save_record``'s, the figures
``four_panels.draw_panels``' (after training: drawing every epoch would cost more than the
epoch; ``python -m experiments.article.panels --run_dir=...`` redraws them). It also writes
``config.json`` and ``metrics.csv`` through ``tfnorm.run.records``: the Keras logs of each
epoch (loss, accuracy, their val_ twins: NaN where absent) and, in recorded epochs, each
layer's LAYER_STATS of the observed step (NaN otherwise; a tfnorm run's are epoch means).
A functional or Sequential model with one input and one output is needed (the inputs of
its layers are read from its graph).
"""

import functools
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfnorm import loop, training
from tfnorm.run import four_panels, records, runid, runner
from tfnorm.keras.layers import Normalization, WeightNormalization
from tfnorm.measures import DEFAULT_BINS, EPOCH_STATS, LAYER_STATS, QUANTITIES, SUMMARY_STATS

__all__ = ["PanelRecorder", "kernel_layers"]

# metrics.csv's columns from the first of these Keras log keys found.
LOG_KEYS = {"train_loss": ("loss",), "train_acc": ("accuracy", "acc",
                                                    "sparse_categorical_accuracy"),
            "test_loss": ("val_loss",), "test_acc": ("val_accuracy", "val_acc",
                                                     "val_sparse_categorical_accuracy")}


def _kernel(layer):
    if isinstance(layer, WeightNormalization):
        return layer.kernel
    found = [v for v in layer.trainable_variables if v.name == "kernel"]
    return found[0] if len(found) == 1 else None


def kernel_layers(model):
    """The layers of ``model`` (nested models included) that have a kernel, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += kernel_layers(layer)
        elif _kernel(layer) is not None:
            found.append(layer)
    return found


class _AllButTheEpoch:
    """The metrics.csv columns that may hold NaN in a recorder's directory: all but the
    epoch. Keras reports only what the model was compiled with (no test pass, maybe no
    accuracy), and an epoch not recorded has no layer statistics."""

    def __contains__(self, name):
        return name != "epoch"


MAY_BE_NAN = _AllButTheEpoch()


def _layer_stats(summaries):
    """records' LAYER_STATS of each layer, from its summaries of the four quantities (the
    same numbers a tfnorm step computes: the weight gradient's non-zero and near-zero
    shares and norm, the norms of the passed gradient, the weights and the update, and the
    update's share above the near-zero bound). summaries: [L, 4, S]."""
    def of(quantity, stat):
        return summaries[:, QUANTITIES.index(quantity), SUMMARY_STATS.index(stat)]
    columns = {"nonzero_grad_frac": of("weight_gradient", "nonzero_frac"),
               "nearzero_grad_frac": of("weight_gradient", "nearzero_frac"),
               "weight_grad_norm": of("weight_gradient", "norm"),
               "passed_grad_norm": of("passed_gradient", "norm"),
               "weights_norm": of("weights", "norm"),
               "update_norm": of("update", "norm"),
               "update_freq": 1.0 - of("update", "nearzero_frac")}
    return np.stack([columns[name] for name in LAYER_STATS], axis=1)


def _schemes(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _schemes(layer)
        elif isinstance(layer, Normalization):
            yield layer.scheme


def _scheme_of(model):
    used = sorted(set(_schemes(model)))
    return used[0] if len(used) == 1 else (model.name if not used else "+".join(used))


class PanelRecorder(keras.callbacks.Callback):
    """``PanelRecorder(out_dir, batch=(images, labels), every=1)``: records (and after
    training draws) the four panels of every layer with a kernel into ``out_dir``, a
    directory ``experiments.article.panels`` and, placed where a compare directory keeps
    the run (``tfnorm.analysis.compare_grid.run_dir``), ``experiments.article.crosspanels``
    read. ``name``: the scheme shown on the panels (default:
    the model's tfnorm scheme, else the model's name); ``seed``: the seed the model was
    made with (keras.utils.set_random_seed), which names the run in its records as the
    run's folder in a compare directory does for crosspanels; ``draw``: draw the panels and GIFs when
    training ends. A ``fit`` from epoch 0 starts ``out_dir`` anew (the files a run
    writes), one with ``initial_epoch`` continues it."""

    def __init__(self, out_dir, batch, every=1, name=None, bins=DEFAULT_BINS, draw=True,
                 seed=0):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be at least 1 (epochs), got {every}")
        images, labels = batch
        self.out_dir, self.every, self.name = out_dir, int(every), name
        self.images, self.labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
        self.bins, self.draw, self.seed = int(bins), bool(draw), int(seed)
        self.rows, self._observed, self._observed_model = [], None, None

    # ------------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs=None):
        model = self.model
        self.steps = self.params.get("steps")
        if not self.steps:
            raise ValueError("PanelRecorder needs the number of steps per epoch: give fit "
                             "steps_per_epoch, or data of known length")
        if getattr(model, "steps_per_execution", 1) != 1:
            raise ValueError("PanelRecorder observes the last step of an epoch alone: compile "
                             "the model with steps_per_execution=1")
        if self._observed_model is not model:
            self._prepare(model)
        self._fresh = True

    def _prepare(self, model):
        """The layers to record and the compiled observation, once per model (a later fit of
        the same model reuses them)."""
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError("PanelRecorder needs a functional or Sequential model with one "
                             "input and one output")
        self.layers = kernel_layers(model)
        if not self.layers:
            raise ValueError(f"model {model.name!r} has no layer with a kernel to record")
        self.kernels = [_kernel(layer) for layer in self.layers]
        self._probe = keras.Model(model.inputs[0], [layer.input for layer in self.layers[1:]]
                                  + [model.outputs[0]])
        self.name = self.name or _scheme_of(model)
        self.images = tf.cast(self.images, model.inputs[0].dtype)
        # Compiled once (a few seconds of tracing, at the first recorded epoch): eagerly, the
        # observation and the 24 histograms of the article network cost 0.4-0.7 s an epoch
        # on 2 busy cores, about half a digits epoch.
        compiled = functools.partial(tf.function, autograph=False)
        self._observe = compiled(self.observe)
        self._histograms = compiled(functools.partial(training.histograms, bins=self.bins))
        self._observed_model = model

    def _open_directory(self, done):
        """A fit from epoch 0 starts ``out_dir`` anew (only the files a run writes are
        removed); a fit from ``initial_epoch`` = done > 0 continues it after epoch done."""
        if done == 0:
            records.clear_run(self.out_dir)
            self.rows = []
        else:
            records.truncate_to_epoch(self.out_dir, done, len(self.layers), MAY_BE_NAN)
            self.rows = records.read_metrics(self.out_dir, MAY_BE_NAN)
        os.makedirs(self.out_dir, exist_ok=True)
        config = {"scheme": self.name, "model": self.model.name,
                  "source": "tfnorm.keras.PanelRecorder", "epochs": self.params.get("epochs"),
                  "steps_per_epoch": self.steps, "record_every": self.every,
                  "batch_size": int(self.images.shape[0]), "bins": self.bins,
                  "layers": [layer.name for layer in self.layers], "keras": keras.__version__,
                  "seed": self.seed}
        records.write_config(self.out_dir, config, runner.versions())
        # Who wrote the records (records.load_record checks it); the hash is of what
        # config.json holds.
        self.run = runid.RunIdentity(self.name, self.seed, runid.config_hash(config))

    def on_epoch_begin(self, epoch, logs=None):
        if self._fresh:
            self._fresh = False
            self._open_directory(epoch)
        self.epoch, self._start = epoch + 1, time.time()  # tfnorm counts epochs from 1
        # The kernels at the end of the epoch before, for the epoch's weight movement.
        self._start_kernels = [tf.convert_to_tensor(kernel).numpy() for kernel in self.kernels]

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.steps - 1 and records.is_recorded_epoch(
                self.epoch, self.params["epochs"], self.every):
            self._observed = self._observe(self.images, self.labels)

    # No on_train_batch_end: a callback that has one makes Keras wait for every step's logs
    # (no asynchronous dispatch; with one, an epoch of the article network at 32 px took 80%
    # longer, one pair of runs at load 11). The last step's update is read at the epoch's
    # end instead, when the step is done.

    def _record(self):
        weight_grads, passed, old = self._observed
        self._observed = None
        updates = [tf.convert_to_tensor(kernel) - weights for kernel, weights
                   in zip(self.kernels, old)]
        hists = self._histograms([list(q) for q in zip(weight_grads, passed, old, updates)])
        outputs = {key: value.numpy() for key, value in hists.items()}
        outputs["layer_stats"] = _layer_stats(outputs["summaries"])
        step = int(self.model.optimizer.iterations.numpy())
        records.save_record(self.out_dir, self.epoch, step, self.run, outputs)
        return outputs["layer_stats"]

    def on_epoch_end(self, epoch, logs=None):
        stats = np.full((len(self.layers), len(LAYER_STATS)), math.nan)
        if self._observed is not None:
            stats = self._record()
        logs = logs or {}
        row = {"epoch": self.epoch, "seconds": time.time() - self._start}
        for column, keys in LOG_KEYS.items():
            row[column] = next((float(logs[k]) for k in keys if k in logs), math.nan)
        epoch_stats = {"weight_movement": loop.weight_movement(
            self._start_kernels, [tf.convert_to_tensor(k).numpy() for k in self.kernels])}
        for layer in range(len(self.layers)):
            for index, stat in enumerate(LAYER_STATS):
                row[f"{stat}_{layer + 1}"] = float(stats[layer, index])
            for stat in EPOCH_STATS:
                row[f"{stat}_{layer + 1}"] = float(epoch_stats[stat][layer])
        self.rows.append(row)
        records.write_metrics(self.out_dir, self.rows, len(self.layers))

    def on_train_end(self, logs=None):
        if self.draw and records.record_epochs(self.out_dir):
            four_panels.draw_panels(self.out_dir)

    # ------------------------------------------------------------------ the observation

    def observe(self, images, labels):
        """(weight gradients, passed gradients, kernels) per recorded layer, at the model's
        current weights, on ``images`` and ``labels``, in training mode; nothing moves."""
        with keras.StatelessScope():  # captures every assignment; none reaches the model
            with tf.GradientTape() as tape:
                tape.watch(images)
                *inputs, predictions = self._probe(images, training=True)
                loss = self.model.compute_loss(x=images, y=labels, y_pred=predictions,
                                               training=True)
            gradients = tape.gradient(loss, self.kernels + [images] + inputs)
        kernels = [tf.identity(tf.convert_to_tensor(kernel)) for kernel in self.kernels]
        return gradients[:len(self.kernels)], gradients[len(self.kernels):], kernels
