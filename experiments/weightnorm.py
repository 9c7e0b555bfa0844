"""Weight normalization (Salimans & Kingma 2016) against batch norm and none.

Trains the article network as 'weight' (every conv w = g v/||v|| + b, initialized from
the first batch so each layer's output starts standardized), 'meanonly' (weight norm
plus mean-only batch norm, the paper's best), 'batch' and 'none', and draws the
accuracy curves. Then times one training step of each trained network, interleaved
(every round runs each scheme's steps in a rotated order) on a fixed batch of
--timing_size images, and reports the median time per step relative to 'none' and to
'weight' (the paper: batch norm about 16% slower per step than weight norm).

    python -m experiments.weightnorm               # digits, ~2 minutes on 2 cores
    python -m experiments.weightnorm --dataset=stl10 --stl10_archive=/path/stl10_binary.tar.gz

Outputs in --out_dir: accuracy.csv (per epoch), steps.csv, timing.csv (per round and
scheme), summary.csv, config.json, weightnorm.png.
"""

import time

import numpy as np
import tensorflow as tf
from absl import app, logging

from experiments import study
from tfnorm import optimizers

FLAGS = study.FLAGS

study.define_data_flags(out_dir="runs/weightnorm")
study.define_training_flags(epochs=10, batch_size=20, optimizer="article_adam",
                            learning_rate=0.0008, schemes="weight,meanonly,batch,none")
study.flags.DEFINE_integer("timing_size", 96, "Image size of the timed steps (96: STL-10's, "
                           "the article's).")
study.flags.DEFINE_integer("timing_rounds", 20, "Interleaved timing rounds.")
study.flags.DEFINE_integer("timing_steps", 5, "Timed steps per scheme in each round.")


def make_trainer(scheme, dataset):
    network = study.build_network(scheme, dataset, batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    return study.make_trainer(network, optimizers.make_optimizer(FLAGS.optimizer,
                                                                 FLAGS.learning_rate))


def time_steps(trainers, num_classes):
    """Per round and scheme, the mean seconds per training step over --timing_steps steps.

    trainers: scheme -> Trainer (the trained ones: a step costs the same whatever the
    weights). Every scheme steps on the same random batch; the order of schemes rotates
    from round to round so that a slow moment of the machine is shared out."""
    rng = np.random.default_rng(FLAGS.seed)
    size = FLAGS.timing_size
    images = tf.constant(rng.uniform(0, 1, (FLAGS.batch_size, size, size, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, num_classes, FLAGS.batch_size), tf.int32)
    schemes = list(trainers)
    for scheme in schemes:
        for _ in range(3):  # tracing for this image size, and warm-up
            float(trainers[scheme].train_step(images, labels)["loss"])
    rows = []
    for round_index in range(FLAGS.timing_rounds):
        shift = round_index % len(schemes)
        for scheme in schemes[shift:] + schemes[:shift]:
            start = time.perf_counter()
            for _ in range(FLAGS.timing_steps):
                out = trainers[scheme].train_step(images, labels)
            float(out["loss"])  # the step has finished
            seconds = (time.perf_counter() - start) / FLAGS.timing_steps
            rows.append(dict(round=round_index, scheme=scheme, seconds_per_step=seconds))
    return rows


def relative_times(timing_rows, schemes, baseline):
    """Per scheme: median seconds per step, and the median over rounds of its time over the
    baseline's time in the same round (paired, so a busy round cancels)."""
    result = {}
    for scheme in schemes:
        mine = {r["round"]: r["seconds_per_step"] for r in timing_rows if r["scheme"] == scheme}
        base = {r["round"]: r["seconds_per_step"] for r in timing_rows if r["scheme"] == baseline}
        ratios = [mine[k] / base[k] for k in mine if k in base]
        result[scheme] = (float(np.median(list(mine.values()))),
                          float(np.median(ratios)) if ratios else float("nan"), ratios)
    return result


def draw(epoch_rows, timing, schemes, baseline):
    colors = study.scheme_colors(schemes)
    fig, axes = study.figure(1, 3, width=4.6, height=3.4)
    for scheme in schemes:
        mine = [r for r in epoch_rows if r["scheme"] == scheme]
        epochs = [r["epoch"] for r in mine]
        axes[0][0].plot(epochs, [r["train_acc"] for r in mine], "-o", ms=3,
                        color=colors[scheme], label=scheme)
        axes[0][1].plot(epochs, [r["test_acc"] for r in mine], "-o", ms=3,
                        color=colors[scheme], label=scheme)
    axes[0][0].set(title="training accuracy", xlabel="epoch", ylim=(0, 1))
    axes[0][1].set(title="test accuracy", xlabel="epoch", ylim=(0, 1))
    axes[0][0].legend(fontsize=7)
    ax = axes[0][2]
    ax.boxplot([timing[s][2] for s in schemes], showfliers=False)
    ax.set_xticks(range(1, len(schemes) + 1), schemes)
    for i, scheme in enumerate(schemes, start=1):
        ax.annotate(f"{timing[scheme][1]:.2f}", (i, timing[scheme][1]), xytext=(8, 0),
                    textcoords="offset points", fontsize=8, va="center")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(title=f"time per step / {baseline}'s (interleaved rounds, "
                 f"{FLAGS.timing_size}x{FLAGS.timing_size})")
    for a in axes[0]:
        a.title.set_fontsize(9)
    return fig


def check_flags():
    schemes = study.check_training_flags()
    study.require("none" in schemes, "--schemes must include none, the timing baseline")
    study.require(FLAGS.timing_size is not None and FLAGS.timing_size >= 32,
                  f"--timing_size must be at least 32, got {FLAGS.timing_size}")
    study.require_positive(FLAGS.timing_rounds, "--timing_rounds")
    study.require_positive(FLAGS.timing_steps, "--timing_steps")
    study.check_data_flags()
    return schemes


def main(argv):
    if len(argv) > 1:
        study.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    schemes = study.run_checked(check_flags)
    dataset = study.run_checked(study.load_data)
    study.write_config(FLAGS.out_dir)
    step_rows, epoch_rows, trainers = [], [], {}
    for scheme in schemes:
        trainers[scheme] = make_trainer(scheme, dataset)
        steps, epochs = study.run_checked(
            study.train_and_evaluate, scheme, trainers[scheme], dataset,
            epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, seed=FLAGS.seed, log=logging.info)
        step_rows += steps
        epoch_rows += epochs
    timing_rows = time_steps(trainers, dataset.num_classes)
    timing = relative_times(timing_rows, schemes, "none")
    # The paper's comparison: each scheme's step time over weight norm's, paired by round.
    against_weight = (relative_times(timing_rows, schemes, "weight") if "weight" in schemes
                      else {s: (None, float("nan"), []) for s in schemes})
    summary = []
    for scheme in schemes:
        mine = [r for r in epoch_rows if r["scheme"] == scheme]
        summary.append(dict(scheme=scheme, final_train_acc=mine[-1]["train_acc"],
                            final_test_acc=mine[-1]["test_acc"],
                            best_test_acc=max(r["test_acc"] for r in mine),
                            median_ms_per_step=1000 * timing[scheme][0],
                            time_relative_to_none=timing[scheme][1],
                            time_relative_to_weight=against_weight[scheme][1]))
        logging.info("%-9s final test acc %.3f, %.2f ms per step, %.3f x none, %.3f x weight",
                     scheme, mine[-1]["test_acc"], 1000 * timing[scheme][0], timing[scheme][1],
                     against_weight[scheme][1])
    study.write_csv(FLAGS.out_dir, "steps.csv", step_rows)
    study.write_csv(FLAGS.out_dir, "accuracy.csv", epoch_rows)
    study.write_csv(FLAGS.out_dir, "timing.csv", timing_rows)
    study.write_csv(FLAGS.out_dir, "summary.csv", summary)
    path = study.save_figure(draw(epoch_rows, timing, schemes, "none"), FLAGS.out_dir,
                             "weightnorm.png")
    logging.info("wrote %s", path)


if __name__ == "__main__":
    app.run(main)
