"""Speed of tfnorm's hand-written training step, measured side by side.

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

    python -m experiments.bench.speed                    # all schemes, ~10 min on 2 cores
    python -m experiments.bench.speed --schemes=batch --rounds=60

Writes --out_dir/benchmark.md (tables) and --out_dir/benchmark.json (the same numbers,
every sample's median, the machine). Timings are wall-clock; with other work on the
machine they move, so the ratios of one interleaved run are what the targets are on.
"""

import os

from absl import flags, logging

from experiments import cli
from tfnorm import schemes
from tfnorm.run import atomic

FLAGS = flags.FLAGS

KERAS_SCHEMES = ("none", "batch", "layer", "instance", "group")  # keras_model has their layers
# The targets the README reports against.
TARGET_A_OVER_B = 0.9
TARGET_H_OVER_B = 1.0  # no hand-written backward slower than autograd
TARGET_A_OVER_D = 1.25
TARGET_RECORD_FRACTION = 0.10
TARGET_PIPELINE_GAP = 0.05
TARGET_EPOCH_SECONDS = 10.0
TRACED = ("train_step_from", "record_step_from", "eval_step")  # benchmark_steps times them
# The article's optimizer (his notebook: Adam at 0.0008).
LEARNING_RATE = 0.0008
ARTICLE_EPSILON = 1e-8


def define_flags(flag_values=FLAGS):
    """The command line's flags (defined only when run as a script; tests pass their own)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_integer("rounds", 60, "Timed rounds per scheme (each times every variant "
                         "once).", **fv)
    flags.DEFINE_integer("warmup", 5, "Untimed rounds first (tracing, compiling, caches).", **fv)
    flags.DEFINE_boolean("jit", True, "Also time C: A and B compiled with jit_compile=True.", **fv)
    flags.DEFINE_boolean("keras", True, "Also time E: a Keras 3 model, where Keras has the "
                         "scheme.", **fv)
    flags.DEFINE_boolean("tracing", True, "Also time the first call of each compiled "
                         "function of a new Trainer against its later calls, and count "
                         "its traces over two epochs.", **fv)
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
    cli.define_flags(
        ("schemes", "batch_size", "image_size", "seed", "out_dir"),
        dict(schemes=",".join(schemes.SCHEMES), batch_size=20, image_size=96,
             out_dir="results"), flag_values,
        helps=dict(schemes="Comma-separated schemes to time (default: all).",
                   batch_size="Batch size of the timed steps (the article's 20).",
                   image_size="Image height and width (STL-10: 96).",
                   seed="Seed of the synthetic data and the weights.",
                   out_dir="Where benchmark.md and benchmark.json go."))


def check_flags(flag_values=FLAGS):
    """Every flag checked before any work; ConfigError names the first bad one.
    Returns the run's configuration (a dict)."""
    values = flag_values
    config = {
        "schemes": cli.parse_schemes(values.schemes, flag="--schemes"),
        "epoch_schemes": cli.parse_schemes(values.epoch_schemes, flag="--epoch_schemes",
                                            allow_empty=True),
    }
    for name in ("rounds", "batch_size", "image_size", "train_images", "test_images",
                 "eval_batch", "epoch_repeats", "pipeline_rounds", "pipeline_steps"):
        value = getattr(values, name)
        if value < 1:
            raise cli.ConfigError(f"--{name}={value}: must be a positive integer")
        config[name] = value
    if values.warmup < 1:
        raise cli.ConfigError(f"--warmup={values.warmup}: must be at least 1 (the first "
                                 "call traces and compiles)")
    # Batch statistics and the image size: 4 stride-2 convolutions take 96 to 6.
    if values.batch_size < 2:
        raise cli.ConfigError(f"--batch_size={values.batch_size}: batch statistics need "
                                 "at least 2 images")
    if config["epoch_schemes"] and values.train_images < values.batch_size:
        raise cli.ConfigError(f"--train_images={values.train_images}: fewer than one batch "
                                 f"of {values.batch_size}")
    config.update(warmup=values.warmup, jit=values.jit, keras=values.keras, seed=values.seed,
                  tracing=values.tracing,
                  out_dir=values.out_dir)
    cli.check_memory(config, memory_needed(config))
    cli.check_writable(values.out_dir, "--out_dir")
    return config


def memory_needed(config):
    """Bytes the benchmark needs, from its flags: the synthetic batch (int64, then float64:
    48 bytes a pixel), the synthetic epoch's images (uint8) and the activations of a step
    and a test batch (cli.memory_needed's 130 bytes a pixel an image)."""
    images = (config["train_images"] + config["test_images"]) if config["epoch_schemes"] else 0
    return config["image_size"] ** 2 * (48 * config["batch_size"] + 3 * images
                                        + 130 * (config["batch_size"] + config["eval_batch"]))


# ----------------------------------------------------------------------------
# The machine


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
        "H: Network.gradients (hand-written backward) + the same update, nothing else; B: "
        "GradientTape over Network.loss + the same update (H/B: the two backwards like for "
        "like, with the 10th-90th percentile of the per-round ratio); A: Trainer.train_step, "
        "H plus the driver's per-layer statistics, finiteness checks and running statistics "
        "(A/H: their cost); C_A, C_B: A and B with jit_compile=True; D: the convolutions "
        "alone, forward and backward; E: Keras 3 layers + GradientTape + keras Adam.",
        "",
        "| scheme | H | B | H/B [p10, p90] | H/B <= 1.00 | A | A/H | A/B | D | A/D | C_A | "
        "C_B | E |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scheme, row in result["schemes"].items():
        lines.append(
            f"| {scheme} | {_fmt(row['H'])} | {_fmt(row['B'])} | {_fmt(row['H/B'])} "
            f"[{_fmt(row['H/B_p10'])}, {_fmt(row['H/B_p90'])}] | "
            f"{_mark(row['H/B'] <= TARGET_H_OVER_B)} | {_fmt(row['A'])} | "
            f"{_fmt(row['A/H'])} | {_fmt(row['A/B'])} | {_fmt(row['D'])} | "
            f"{_fmt(row['A/D'])} | {_fmt(row.get('C_A'))} | {_fmt(row.get('C_B'))} | "
            f"{_fmt(row.get('E'))} |")
    if result.get("tracing"):
        lines += [
            "",
            "## Tracing: the first call of each compiled function",
            "",
            "A new Trainer's first call of each function (tracing, graph optimization, "
            "first run), as the driver calls it, against the median of its next 10 calls, "
            "in ms; traces: how many times it was traced after a second epoch on a new "
            "iterator (1: none again).",
            "",
            "| scheme | " + " | ".join(f"{n} first | later | traces" for n in TRACED)
            + " | first calls, s |",
            "|---|" + "---|---|---|" * len(TRACED) + "---|",
        ]
        for scheme, row in result["tracing"].items():
            lines.append(f"| {scheme} | " + " | ".join(
                f"{_fmt(row[f'{n}_first_ms'], 0)} | {_fmt(row[f'{n}_later_ms'])} | "
                f"{row[f'{n}_traces']}" for n in TRACED)
                + f" | {_fmt(row['first_calls_s'])} |")
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
    # TensorFlow loads here, once the flags are checked.
    from experiments.bench.speed_variants import (load_average, machine, measure_epoch,
                                                  measure_tracing, time_scheme)
    result = {"machine": machine(), "config": config, "command": command,
              "load_start": load_average(), "schemes": {}, "epochs": {},
              "targets": {"H/B": TARGET_H_OVER_B, "A/B": TARGET_A_OVER_B,
                          "A/D": TARGET_A_OVER_D,
                          "record_fraction_of_epoch": TARGET_RECORD_FRACTION,
                          "pipeline_gap": TARGET_PIPELINE_GAP,
                          "epoch_seconds": TARGET_EPOCH_SECONDS}}
    trainers = {}
    for scheme in config["schemes"]:
        row, trainer = time_scheme(scheme, config)
        if scheme in config["epoch_schemes"]:
            trainers[scheme] = trainer
        result["schemes"][scheme] = row
        logging.info("%s: H %.2f ms, B %.2f ms, H/B %.3f [%.3f, %.3f], A %.2f ms, A/H %.3f",
                     scheme, row["H"], row["B"], row["H/B"], row["H/B_p10"], row["H/B_p90"],
                     row["A"], row["A/H"])
    if config["tracing"]:
        result["tracing"] = {}
        for scheme in config["schemes"]:
            result["tracing"][scheme] = measure_tracing(scheme, config)
            logging.info("%s tracing: %s", scheme, result["tracing"][scheme])
    for scheme in config["epoch_schemes"]:
        result["epochs"][scheme] = measure_epoch(scheme, config, trainers.get(scheme))
        logging.info("%s epoch: %s", scheme, result["epochs"][scheme])
    result["load_end"] = load_average()
    atomic.write_json(os.path.join(config["out_dir"], "benchmark.json"), result)
    atomic.write_text(os.path.join(config["out_dir"], "benchmark.md"), markdown(result))
    return result


def main(argv, flag_values=FLAGS):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = check_flags(flag_values)
    except cli.ConfigError as error:
        cli.fail(str(error))
    command = cli.command_as_given("experiments.bench.speed", flag_values, _FLAG_NAMES)
    run(config, command)  # app.run exits with main's return value: None is 0


_FLAG_NAMES = ("schemes", "rounds", "warmup", "batch_size", "image_size", "jit", "keras", "tracing",
               "epoch_schemes", "train_images", "test_images", "eval_batch", "epoch_repeats",
               "pipeline_rounds", "pipeline_steps", "seed", "out_dir")

if __name__ == "__main__":
    define_flags()
    cli.run(main)
