"""Speed of tfnorm's hand-written training step, measured side by side (issue 6).

For every scheme, on the article's network (batch 20, 96x96x3, float32, Adam update
included), each step a compiled tf.function, interleaved round-robin (the order rotates
every round) with medians over the timed rounds:

  A  tfnorm's hand-written step, ``Trainer.train_step`` (it also moves the running
     statistics and returns per-layer statistics and finite checks every step);
  B  tf.GradientTape over ``Network.loss`` of the same network, then the same
     hand-written Adam update as A (``optimizer.apply``);
  C  A and B, each compiled whole with jit_compile=True (C_A, C_B);
  D  a floor: the same convolutions forward and backward alone (conv2d,
     conv2d_backprop_filter, conv2d_backprop_input; no input gradient for the first
     layer, which neither A nor B computes), no normalization, activation or update;
  E  where Keras has the scheme (none, batch, layer, instance, group): a Keras 3 model
     of keras layers (no gamma/beta, epsilon 1e-8) trained with GradientTape and
     keras' Adam.

Also measured, on synthetic data of STL-10's shape (5000 train, 8000 test images):
the recording step's extra cost as a fraction of an epoch (one record_step per epoch of
250 steps), the step fed by the tf.data pipeline against the step on tensors already in
memory, and the epoch time (250 train steps as the driver runs them, then the 8000-image
test pass through eval_step in batches of 100, the driver's).

    python -m experiments.benchmark                    # all schemes, ~10 min on 2 cores
    python -m experiments.benchmark --schemes=batch --rounds=60

Writes --out_dir/benchmark.md (tables) and --out_dir/benchmark.json (the same numbers,
every sample's median, the machine). Timings are wall-clock; with other work on the
machine they move, so the ratios of one interleaved run are what the targets are on.
"""

import os
import platform
import statistics
import tempfile
import time

from experiments import common  # quiets TensorFlow's start-up banner

from absl import app, flags, logging  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfnorm  # noqa: E402
from tfnorm import data, io, layers, optimizers, plots, records, training  # noqa: E402

FLAGS = flags.FLAGS

KERAS_SCHEMES = ("none", "batch", "layer", "instance", "group")  # keras_model has their layers
# Targets of issue 6.
TARGET_A_OVER_B = 0.9
TARGET_A_OVER_D = 1.25
TARGET_RECORD_FRACTION = 0.10
TARGET_PIPELINE_GAP = 0.05
TARGET_EPOCH_SECONDS = 10.0
# The article's optimizer (REFERENCE.md section 1).
LEARNING_RATE = 0.0008
ARTICLE_EPSILON = 1e-8


def define_flags(flag_values=FLAGS):
    """The command line's flags (defined only when run as a script; tests pass their own)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("schemes", ",".join(tfnorm.SCHEMES),
                        "Comma-separated schemes to time (default: all).", **fv)
    flags.DEFINE_integer("rounds", 60, "Timed rounds per scheme (each times every variant "
                         "once).", **fv)
    flags.DEFINE_integer("warmup", 5, "Untimed rounds first (tracing, compiling, caches).", **fv)
    flags.DEFINE_integer("batch_size", 20, "Batch size of the timed steps (the article's 20).", **fv)
    flags.DEFINE_integer("image_size", 96, "Image height and width (STL-10: 96).", **fv)
    flags.DEFINE_boolean("jit", True, "Also time C: A and B compiled with jit_compile=True.", **fv)
    flags.DEFINE_boolean("keras", True, "Also time E: a Keras 3 model, where Keras has the "
                         "scheme.", **fv)
    flags.DEFINE_string("epoch_schemes", "batch",
                        "Schemes whose epoch, recording cost and tf.data step are measured "
                        "('all', or comma-separated; empty: none).", **fv)
    flags.DEFINE_integer("train_images", 5000, "Training images of the synthetic epoch "
                         "(STL-10: 5000).", **fv)
    flags.DEFINE_integer("test_images", 8000, "Test images of the synthetic epoch "
                         "(STL-10: 8000).", **fv)
    flags.DEFINE_integer("eval_batch", 100, "Batch size of the test pass (the driver's for "
                         "8000).", **fv)
    flags.DEFINE_integer("epoch_repeats", 3, "Epochs timed per scheme (the median is "
                         "reported).", **fv)
    flags.DEFINE_integer("pipeline_rounds", 8, "Interleaved rounds of the tf.data vs in-memory "
                         "comparison (each round times --pipeline_steps steps of both).", **fv)
    flags.DEFINE_integer("pipeline_steps", 25, "Steps per round of the tf.data comparison.", **fv)
    flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and the weights.", **fv)
    flags.DEFINE_string("out_dir", "results", "Where benchmark.md and benchmark.json go.", **fv)


def _schemes(text, flag, allow_empty=False):
    if text == "all":
        return list(tfnorm.SCHEMES)
    names = [name for name in text.split(",") if name]
    if not names and not allow_empty:
        raise common.ConfigError(f"--{flag}: no scheme given")
    for name in names:
        if name not in tfnorm.SCHEMES:
            raise common.ConfigError(f"--{flag}: unknown scheme {name!r}; expected some of "
                                     f"{', '.join(tfnorm.SCHEMES)}")
    return names


def check_flags(flag_values=FLAGS):
    """Every flag checked before any work; ConfigError names the first bad one.
    Returns the run's configuration (a dict)."""
    values = flag_values
    config = {
        "schemes": _schemes(values.schemes, "schemes"),
        "epoch_schemes": _schemes(values.epoch_schemes, "epoch_schemes", allow_empty=True),
    }
    for name in ("rounds", "batch_size", "image_size", "train_images", "test_images",
                 "eval_batch", "epoch_repeats", "pipeline_rounds", "pipeline_steps"):
        value = getattr(values, name)
        if value < 1:
            raise common.ConfigError(f"--{name}={value}: must be a positive integer")
        config[name] = value
    if values.warmup < 1:
        raise common.ConfigError(f"--warmup={values.warmup}: must be at least 1 (the first "
                                 "call traces and compiles)")
    # Batch statistics and the image size: 4 stride-2 convolutions take 96 to 6.
    if values.batch_size < 2:
        raise common.ConfigError(f"--batch_size={values.batch_size}: batch statistics need "
                                 "at least 2 images")
    if config["epoch_schemes"] and values.train_images < values.batch_size:
        raise common.ConfigError(f"--train_images={values.train_images}: fewer than one batch "
                                 f"of {values.batch_size}")
    config.update(warmup=values.warmup, jit=values.jit, keras=values.keras, seed=values.seed,
                  out_dir=values.out_dir)
    common.check_writable(values.out_dir, "--out_dir")
    return config


# ----------------------------------------------------------------------------
# The machine


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
            return keras.layers.GroupNormalization(groups=4, **options)
        return None

    keras.utils.set_random_seed(seed)
    model = keras.Sequential()
    channels = [16] * 5 + [num_classes]
    strides = [2, 2, 2, 2, 1, 1]
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
    row["A_min"], row["B_min"], row["D_min"] = (1e3 * min(times[k]) for k in ("A", "B", "D"))
    row["rounds"] = config["rounds"]
    return row, trainer


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
    # Raw bytes, scaled inside the steps, as the driver feeds them.
    train_batches = data.batches(train_x, train_y, batch, dtype=tf.uint8)
    test_batches = data.batches(test_x, test_y, config["eval_batch"], dtype=tf.uint8,
                                drop_remainder=False)

    def epoch():
        start = time.perf_counter()
        batches = iter(train_batches)
        for step in range(1, steps + 1):
            out = (trainer.record_step_from if step == steps else trainer.train_step_from)(
                batches)
            # The driver reads these every step.
            for key in ("finite", "loss", "accuracy", "layer_stats"):
                out[key].numpy()
        recorded = {k: out[k].numpy() for k in ("counts", "ranges", "summaries",
                                                "layer_stats")}
        train_seconds = time.perf_counter() - start
        for images, labels in test_batches:
            loss_sum, correct = trainer.eval_step(images, labels)
            loss_sum.numpy()
            correct.numpy()
        return train_seconds, time.perf_counter() - start, recorded

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
        panels = plots.FourPanels()
        saving, drawing = [], []
        for epoch_index in range(1, 4):  # the first draw of a figure is not the usual one
            start = time.perf_counter()
            records.save_record(run_dir, epoch_index, steps * epoch_index, scheme, recorded)
            saving.append(time.perf_counter() - start)
            start = time.perf_counter()
            plots.draw_epoch_panels(run_dir, epoch_index, panels)
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


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def _mark(ok):
    return "yes" if ok else "**no**"


def markdown(result):
    m, config = result["machine"], result["config"]
    lines = [
        "# tfnorm benchmark: hand-written step against autograd",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; TensorFlow {m['tensorflow']}"
        + (f", Keras {m['keras']}" if "keras" in m else "") + f"; Python {m['python']}.",
        f"Load average (1, 5, 15 min) at start {result['load_start']}, at end "
        f"{result['load_end']} (other work on the machine moves the absolute numbers; "
        "the variants are interleaved, so their ratios are comparable).",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Article network, batch {config['batch_size']}, {config['image_size']}x"
        f"{config['image_size']}x3, float32, Adam update included; median wall-clock ms of "
        f"{config['rounds']} interleaved rounds after {config['warmup']} warm-up rounds.",
        "A: Trainer.train_step (hand-written); B: GradientTape over Network.loss + the same "
        "update; C_A, C_B: A and B with jit_compile=True; D: the convolutions alone, forward "
        "and backward; E: Keras 3 layers + GradientTape + keras Adam.",
        "",
        "| scheme | A | B | A/B | D | A/D | C_A | C_B | E | A/B <= 0.9 | A/D <= 1.25 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scheme, row in result["schemes"].items():
        lines.append(
            f"| {scheme} | {_fmt(row['A'])} | {_fmt(row['B'])} | {_fmt(row['A/B'])} | "
            f"{_fmt(row['D'])} | {_fmt(row['A/D'])} | {_fmt(row.get('C_A'))} | "
            f"{_fmt(row.get('C_B'))} | {_fmt(row.get('E'))} | "
            f"{_mark(row['A/B'] <= TARGET_A_OVER_B)} | {_mark(row['A/D'] <= TARGET_A_OVER_D)} |")
    if result["epochs"]:
        lines += [
            "",
            f"## Epoch of STL-10's size (synthetic data: {config['train_images']} train, "
            f"{config['test_images']} test images; median of {config['epoch_repeats']} epochs)",
            "",
            "Train: the driver's loop over the tf.data pipeline (raw uint8 batches, fetched "
            "and scaled inside the compiled step), record_step at the last step; "
            f"test: eval_step in batches of {config['eval_batch']}. Recording, as a fraction of "
            "the epoch: record_step's extra time over train_step, plus saving the record and "
            "drawing the epoch's four-panel figure of every layer (the driver's default with "
            "--record_every=1). tf.data: train_step_from on data.batches against "
            "train_step on the same batches already in memory.",
            "",
            "| scheme | epoch s | train s | test s | epoch <= 10 s | train step ms | record step ms "
            "| record + panels ms | recording / epoch | <= 10% | tf.data step ms | "
            "in-memory step ms | tf.data gap | <= 5% |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for scheme, e in result["epochs"].items():
            lines.append(
                f"| {scheme} | {_fmt(e['epoch_seconds'])} | {_fmt(e['train_seconds'])} | "
                f"{_fmt(e['test_seconds'])} | {_mark(e['epoch_seconds'] <= TARGET_EPOCH_SECONDS)} | "
                f"{_fmt(e['train_step_ms'])} | {_fmt(e['record_step_ms'])} | "
                f"{_fmt(e['record_save_ms'] + e['panels_ms'], 0)} | "
                f"{100 * e['record_fraction_of_epoch']:.1f}% | "
                f"{_mark(e['record_fraction_of_epoch'] <= TARGET_RECORD_FRACTION)} | "
                f"{_fmt(e['pipeline_step_ms'])} | {_fmt(e['memory_step_ms'])} | "
                f"{100 * e['pipeline_gap']:+.1f}% | "
                f"{_mark(e['pipeline_gap'] <= TARGET_PIPELINE_GAP)} |")
    return "\n".join(lines) + "\n"


def run(config, command):
    result = {"machine": machine(), "config": config, "command": command,
              "load_start": load_average(), "schemes": {}, "epochs": {},
              "targets": {"A/B": TARGET_A_OVER_B, "A/D": TARGET_A_OVER_D,
                          "record_fraction_of_epoch": TARGET_RECORD_FRACTION,
                          "pipeline_gap": TARGET_PIPELINE_GAP,
                          "epoch_seconds": TARGET_EPOCH_SECONDS}}
    trainers = {}
    for scheme in config["schemes"]:
        row, trainer = time_scheme(scheme, config)
        if scheme in config["epoch_schemes"]:
            trainers[scheme] = trainer
        result["schemes"][scheme] = row
        logging.info("%s: A %.2f ms, B %.2f ms, A/B %.3f, D %.2f ms, A/D %.3f", scheme,
                     row["A"], row["B"], row["A/B"], row["D"], row["A/D"])
    for scheme in config["epoch_schemes"]:
        result["epochs"][scheme] = measure_epoch(scheme, config, trainers.get(scheme))
        logging.info("%s epoch: %s", scheme, result["epochs"][scheme])
    result["load_end"] = load_average()
    io.write_json(os.path.join(config["out_dir"], "benchmark.json"), result)
    io.write_text(os.path.join(config["out_dir"], "benchmark.md"), markdown(result))
    return result


def main(argv, flag_values=FLAGS):
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = check_flags(flag_values)
    except common.ConfigError as error:
        common.fail(str(error))
    tf.config.experimental.enable_op_determinism()
    command = "python -m experiments.benchmark " + " ".join(
        f"--{name}={flag_values[name].value}" for name in _FLAG_NAMES
        if flag_values[name].present)
    run(config, command.strip())  # app.run exits with main's return value: None is 0


_FLAG_NAMES = ("schemes", "rounds", "warmup", "batch_size", "image_size", "jit", "keras",
               "epoch_schemes", "train_images", "test_images", "eval_batch", "epoch_repeats",
               "pipeline_rounds", "pipeline_steps", "seed", "out_dir")

if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=common.parse_flags_or_fail)
