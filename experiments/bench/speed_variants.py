"""The timed variants of ``experiments.bench.speed`` (see its docstring): tfnorm's step (A),
GradientTape over the same network (B), both under XLA (C), the convolutions alone (D),
Keras (E), and the epoch measurements. Imports TensorFlow: the benchmark loads this
module only after its flags are checked."""

import os
import platform
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

import tfnorm
from experiments.bench.speed import ARTICLE_EPSILON, KERAS_SCHEMES, LEARNING_RATE, TRACED
from tfnorm import catalog, data, layers, loop, optimizers, training
from tfnorm.run import four_panels, records, runid

# The benchmark times the deterministic kernels that training runs.
tf.config.experimental.enable_op_determinism()


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "op_determinism": True}
    try:
        import keras
        info["keras"] = keras.__version__
    except ImportError:
        pass
    return info


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# ----------------------------------------------------------------------------
# The steps


def synthetic_batch(batch_size, image_size, seed):
    """Float images in [0, 1] and labels, like a batch of STL-10 after /255."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (batch_size, image_size, image_size, 3)) / 255.0
    labels = generator.integers(0, 10, batch_size)
    return tf.constant(images, tf.float32), tf.constant(labels, tf.int32)


def make_optimizer():
    return optimizers.make_optimizer("article_adam", LEARNING_RATE)


def hand_trainer(scheme, seed, jit_compile=False):
    """A: the Trainer, whose compiled ``train_step`` is timed."""
    network = tfnorm.article_network(scheme, seed=seed)
    return training.Trainer(network, make_optimizer(), jit_compile=jit_compile)


def hand_gradient_step(scheme, seed):
    """H: ``Network.gradients`` (the hand-written backward) and the same Adam update, and
    nothing else: B's work, so that H/B compares the two backwards like for like (A adds
    the driver's per-layer statistics, finiteness checks and running statistics)."""
    network = tfnorm.article_network(scheme, seed=seed)
    optimizer = make_optimizer()
    variables = network.trainable_variables
    optimizer.build(variables)

    def step(images, labels):
        loss, grads = network.gradients(images, labels)
        optimizer.apply(variables, grads)
        return loss

    return tf.function(step, autograph=False)


def tape_step(scheme, seed, jit_compile=False):
    """B: the tape over Network.loss of the same network, then the same Adam update."""
    network = tfnorm.article_network(scheme, seed=seed)
    optimizer = make_optimizer()
    variables = network.trainable_variables
    optimizer.build(variables)

    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = network.loss(images, labels)
        grads = tape.gradient(loss, variables)
        optimizer.apply(variables, grads)
        return loss

    return tf.function(step, jit_compile=jit_compile)


def convolution_floor(scheme, seed):
    """D: the network's convolutions forward and backward, nothing else."""
    network = tfnorm.article_network(scheme, seed=seed)
    kernels = [block.layer.weights for block in network.blocks]
    strides = [block.layer.stride for block in network.blocks]

    def step(images, labels):
        del labels
        x, caches = images, []
        for kernel, stride in zip(kernels, strides):
            x, cache = layers.conv2d_forward(x, kernel, None, stride)
            caches.append(cache)
        # Any output gradient will do: the kernels' cost does not depend on the values.
        passed, kernel_grads = x, []
        for index in reversed(range(len(kernels))):
            passed, kernel_grad, _ = layers.conv2d_backward(passed, caches[index],
                                                            need_input_grad=index > 0)
            kernel_grads.append(kernel_grad)
        return kernel_grads

    return tf.function(step)


def keras_model(scheme, seed, num_classes=10):
    """The article's network in keras layers: conv -> ReLU -> norm, no gamma/beta."""
    import keras

    def normalization():
        options = dict(epsilon=ARTICLE_EPSILON, center=False, scale=False)
        if scheme == "batch":
            return keras.layers.BatchNormalization(momentum=0.9, **options)
        if scheme == "layer":
            return keras.layers.LayerNormalization(axis=[1, 2, 3], **options)
        if scheme == "instance":
            return keras.layers.GroupNormalization(groups=16, **options)
        if scheme == "group":
            return keras.layers.GroupNormalization(
                groups=tfnorm.schemes.default("group", "groups"), **options)
        return None

    keras.utils.set_random_seed(seed)
    model = keras.Sequential()
    channels = [catalog.ARTICLE_WIDTH] * (catalog.ARTICLE_DEPTH - 1) + [num_classes]
    strides = catalog.ARTICLE_STRIDES
    for index, (width, stride) in enumerate(zip(channels, strides)):
        model.add(keras.layers.Conv2D(
            width, 3, strides=stride, padding="same", use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.05, seed=seed + index)))
        model.add(keras.layers.ReLU())
        norm = normalization() if index < len(channels) - 1 else None
        if norm is not None:
            model.add(norm)
    model.add(keras.layers.GlobalAveragePooling2D())
    return model


def keras_step(scheme, seed, image_size):
    """E: a Keras 3 model trained with GradientTape and keras' Adam."""
    import keras

    model = keras_model(scheme, seed)
    model.build((None, image_size, image_size, 3))
    optimizer = keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return tf.function(step)


def _finish(result):
    """Wait for a step's outputs (the step is done when they are on the host)."""
    tf.nest.map_structure(lambda t: t.numpy(), result)


def interleaved(variants, args, rounds, warmup):
    """Each variant once per round, the order rotating every round. Returns per variant
    the wall-clock seconds of every timed call."""
    names = list(variants)
    times = {name: [] for name in names}
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            _finish(variants[name](*args))
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def median_ms(samples):
    return 1e3 * statistics.median(samples)


def time_scheme(scheme, config):
    images, labels = synthetic_batch(config["batch_size"], config["image_size"], config["seed"])
    trainer = hand_trainer(scheme, config["seed"])
    variants = {"A": trainer.train_step,
                "H": hand_gradient_step(scheme, config["seed"]),
                "B": tape_step(scheme, config["seed"]),
                "D": convolution_floor(scheme, config["seed"])}
    if config["jit"]:
        variants["C_A"] = hand_trainer(scheme, config["seed"], jit_compile=True).train_step
        variants["C_B"] = tape_step(scheme, config["seed"], jit_compile=True)
    if config["keras"] and scheme in KERAS_SCHEMES:
        variants["E"] = keras_step(scheme, config["seed"], config["image_size"])
    times = interleaved(variants, (images, labels), config["rounds"], config["warmup"])
    row = {name: median_ms(samples) for name, samples in times.items()}
    row["A/B"] = row["A"] / row["B"]
    row["A/D"] = row["A"] / row["D"]
    # H and B ran in the same rounds, next to each other: the spread of their ratio
    # round by round says how far one median ratio can be trusted.
    ratios = sorted(h / b for h, b in zip(times["H"], times["B"]))
    row["H/B"] = row["H"] / row["B"]
    row["H/B_p10"], row["H/B_p90"] = (ratios[int(q * (len(ratios) - 1))] for q in (0.1, 0.9))
    row["A/H"] = row["A"] / row["H"]
    row["A_min"], row["B_min"], row["D_min"] = (1e3 * min(times[k]) for k in ("A", "B", "D"))
    row["rounds"] = config["rounds"]
    return row, trainer


# ----------------------------------------------------------------------------
# Tracing


def measure_tracing(scheme, config, later_calls=10):
    """The first call of each compiled function of a new Trainer, as the driver makes it
    (raw uint8 batches from the tf.data pipeline; the test pass in one shape), against the
    median of its later calls: the difference is the tracing, graph optimization and
    first-run cost. Then a second epoch on a new iterator: how many times each function
    was traced in all (1: no retracing across epochs)."""
    batch, size, seed = config["batch_size"], config["image_size"], config["seed"]
    count = batch * (2 * later_calls + 2)
    images, labels = synthetic_dataset(count, size, seed)
    dataset = data.Dataset("synthetic", images, labels, images[:batch], labels[:batch], 10, ())
    trainer = hand_trainer(scheme, seed)
    test_images, test_labels = next(iter(loop.test_batches(dataset)))
    calls = {"train_step_from": trainer.train_step_from,
             "record_step_from": trainer.record_step_from,
             "eval_step": lambda unused_iterator: trainer.eval_step(test_images, test_labels)}
    row = {}
    for epoch in (1, 2):
        iterator = iter(loop.train_batches(dataset, batch, epoch, seed))
        for name in TRACED:
            times = []
            for _ in range(1 if epoch == 2 else 1 + later_calls):
                start = time.perf_counter()
                _finish(calls[name](iterator))
                times.append(time.perf_counter() - start)
            if epoch == 1:
                row[f"{name}_first_ms"] = 1e3 * times[0]
                row[f"{name}_later_ms"] = median_ms(times[1:])
    for name in TRACED:
        row[f"{name}_traces"] = getattr(trainer, name).experimental_get_tracing_count()
    row["first_calls_s"] = sum(row[f"{name}_first_ms"] for name in TRACED) / 1e3
    return row


# ----------------------------------------------------------------------------
# Epoch, recording, tf.data


def synthetic_dataset(count, image_size, seed):
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (count, image_size, image_size, 3), dtype=np.uint8)
    return images, generator.integers(0, 10, count).astype(np.int32)


def measure_epoch(scheme, config, trainer=None):
    """The driver's epoch on STL-10-shaped synthetic data, the recording step's extra
    cost, and tf.data against in-memory batches. ``trainer``: the one A was timed with,
    if any (its steps are compiled already; its weights do not change the cost)."""
    batch, size, seed = config["batch_size"], config["image_size"], config["seed"]
    train_x, train_y = synthetic_dataset(config["train_images"], size, seed)
    test_x, test_y = synthetic_dataset(config["test_images"], size, seed + 1)
    if trainer is None:
        trainer = hand_trainer(scheme, seed)
    steps = len(train_y) // batch
    dataset = data.Dataset("synthetic", train_x, train_y, test_x, test_y, 10, ())
    # Raw bytes, scaled inside the steps, as the driver feeds them.
    train_batches = loop.train_batches(dataset, batch, 1, seed, shuffle=False)
    test_batches = data.batches(test_x, test_y, config["eval_batch"], dtype=tf.uint8,
                                drop_remainder=False)

    def epoch():
        """The driver's epoch: the library's own loop (tfnorm.loop), not a copy."""
        start = time.perf_counter()
        result = loop.train_epoch(trainer, train_batches, steps, 1)
        train_seconds = time.perf_counter() - start
        loop.evaluate(trainer, test_batches, len(test_y))
        return train_seconds, time.perf_counter() - start, result.recorded

    # Compiles every step function on the real shapes (an eval remainder batch too).
    for images, labels in train_batches.take(1):
        _finish(trainer.train_step(images, labels))
        _finish(trainer.record_step(images, labels))
    batches = iter(train_batches)
    _finish(trainer.train_step_from(batches))
    _finish(trainer.record_step_from(batches))
    for images, labels in test_batches:
        _finish(trainer.eval_step(images, labels))
    # Whole epochs move with whatever else the machine does: the median of a few.
    runs = sorted((epoch() for _ in range(config["epoch_repeats"])), key=lambda run: run[1])
    train_seconds, epoch_seconds, recorded = runs[len(runs) // 2]

    # Recording: record_step against train_step, interleaved on one in-memory batch; then
    # what the driver does with the record: save it and draw the epoch's panels.
    images, labels = next(iter(train_batches))
    times = interleaved({"train": trainer.train_step, "record": trainer.record_step},
                        (images, labels), max(10, config["rounds"] // 2), 2)
    record_extra = (median_ms(times["record"]) - median_ms(times["train"])) / 1e3
    with tempfile.TemporaryDirectory() as run_dir:
        panels = four_panels.FourPanels()
        saving, drawing = [], []
        for epoch_index in range(1, 4):  # the first draw of a figure is not the usual one
            start = time.perf_counter()
            records.save_record(run_dir, epoch_index, steps * epoch_index,
                                runid.RunIdentity(scheme, config["seed"], ""), recorded)
            saving.append(time.perf_counter() - start)
            start = time.perf_counter()
            four_panels.draw_epoch_panels(run_dir, epoch_index, panels)
            drawing.append(time.perf_counter() - start)
        panels.close()
    save_seconds, panel_seconds = statistics.median(saving[1:]), statistics.median(drawing[1:])

    # tf.data against tensors already in memory: the same batches, alternating rounds;
    # one iterator throughout, as in an epoch (its start-up is not a step's cost).
    k = config["pipeline_steps"]
    memory = [(tf.identity(x), tf.identity(y)) for x, y in train_batches.take(k)]
    pipeline = iter(train_batches.repeat())
    _finish(trainer.train_step_from(pipeline))  # traced for this iterator, if need be
    pipeline_steps, memory_steps = [], []
    for _ in range(config["pipeline_rounds"]):
        start = time.perf_counter()
        for _ in range(k):
            _finish(trainer.train_step_from(pipeline)["loss"])
        pipeline_steps.append((time.perf_counter() - start) / k)
        start = time.perf_counter()
        for images, labels in memory:
            _finish(trainer.train_step(images, labels)["loss"])
        memory_steps.append((time.perf_counter() - start) / k)
    pipeline_ms, memory_ms = median_ms(pipeline_steps), median_ms(memory_steps)
    return {
        "epoch_seconds": epoch_seconds, "train_seconds": train_seconds,
        "epoch_seconds_all": [run[1] for run in runs],
        "test_seconds": epoch_seconds - train_seconds, "train_steps": steps,
        "test_images": len(test_y), "eval_batch": config["eval_batch"],
        "record_step_ms": median_ms(times["record"]), "train_step_ms": median_ms(times["train"]),
        "record_save_ms": 1e3 * save_seconds, "panels_ms": 1e3 * panel_seconds,
        "record_step_fraction_of_epoch": record_extra / epoch_seconds,
        "panels_fraction_of_epoch": (save_seconds + panel_seconds) / epoch_seconds,
        "record_fraction_of_epoch": (record_extra + save_seconds + panel_seconds) / epoch_seconds,
        "pipeline_step_ms": pipeline_ms, "memory_step_ms": memory_ms,
        "pipeline_gap": pipeline_ms / memory_ms - 1,
    }


# ----------------------------------------------------------------------------
# Report
