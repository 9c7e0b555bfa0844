"""Noisy batch norm (Santurkar et al. 2018, section 2, Figure 2).

Trains the article network side by side as 'none', 'batch', 'noisybatch' (batch norm
followed by Santurkar et al.'s distributional noise: per step and channel a random
shift and scale, per sample jittered) and 'none+noise' (the same noise with no
normalization, ``tfnorm.article_network(..., noise=True)``). If batch norm helped by
keeping the layers' input distributions stable, the noise should undo the help; the
paper finds noisy BN trains about as well as BN, and better than none.

    python -m experiments.noisy_bn                 # digits, ~2 minutes on 2 cores
    python -m experiments.noisy_bn --dataset=stl10 --stl10_archive=/path/stl10_binary.tar.gz

Outputs in --out_dir: accuracy.csv (per epoch), steps.csv (per step), activations.csv
(percentiles of one layer's output during training, per epoch), summary.csv,
config.json, noisy_bn.png.
"""

import numpy as np
import tensorflow as tf
from absl import app, logging

from experiments import study
from tfnorm import optimizers

FLAGS = study.FLAGS
VARIANTS = ("none", "batch", "noisybatch", "none+noise")
PERCENTILES = (5, 25, 50, 75, 95)

study.define_data_flags(out_dir="runs/noisy_bn")
study.define_training_flags(epochs=10, batch_size=20, optimizer="article_adam",
                            learning_rate=0.0008, schemes=",".join(VARIANTS))
study.flags.DEFINE_integer("activation_layer", 3,
                           "The layer (1..5) whose output distribution is tracked.")


def build(variant, dataset):
    scheme, _, noise = variant.partition("+")
    return study.build_network(scheme, dataset, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                               noise=bool(noise))


def activation_percentiles(network, images, layer_index):
    """Percentiles of one block's output on ``images`` in training mode (noise included):
    the distribution the next layer sees while it trains."""
    _, _, records = network.forward(images, training=True)
    values = tf.reshape(records[layer_index]["output"], [-1]).numpy()
    return np.percentile(values, PERCENTILES)


def run_variant(variant, dataset):
    network = build(variant, dataset)
    trainer = study.make_trainer(network, optimizers.make_optimizer(FLAGS.optimizer,
                                                                    FLAGS.learning_rate))
    fixed_images = study.first_batch(dataset, FLAGS.batch_size, FLAGS.seed)[0]
    activation_rows = []

    def record_activations(epoch):
        row = dict(scheme=variant, epoch=epoch, layer=FLAGS.activation_layer)
        percentiles = activation_percentiles(network, fixed_images, FLAGS.activation_layer - 1)
        row.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, percentiles)})
        activation_rows.append(row)

    record_activations(0)
    steps_per_epoch = len(dataset.train_labels) // FLAGS.batch_size

    def step_fn(step, epoch, images, labels):
        out = trainer.train_step(images, labels)
        if (step + 1) % steps_per_epoch == 0:
            record_activations(epoch)
        return out

    step_rows, epoch_rows = study.train_and_evaluate(
        variant, trainer, dataset, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        seed=FLAGS.seed, log=logging.info, step_fn=step_fn)
    return step_rows, epoch_rows, activation_rows


def smooth(values, width):
    """Running mean over ``width`` steps (shorter at the start)."""
    values = np.asarray(values, np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - width, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def draw(step_rows, epoch_rows, activation_rows, variants, steps_per_epoch):
    """Training accuracy per step (smoothed), test accuracy per epoch, and the tracked
    layer's output percentiles (5-95 band, median line) per variant."""
    colors = study.scheme_colors(variants)
    fig, axes = study.figure(1, 3, width=4.6, height=3.4)
    for variant in variants:
        steps = [r for r in step_rows if r["scheme"] == variant]
        axes[0][0].plot([r["step"] for r in steps],
                        smooth([r["train_acc"] for r in steps], steps_per_epoch),
                        color=colors[variant], label=variant, lw=1)
        epochs = [r for r in epoch_rows if r["scheme"] == variant]
        axes[0][1].plot([r["epoch"] for r in epochs], [r["test_acc"] for r in epochs], "-o",
                        color=colors[variant], label=variant, ms=3)
        acts = [r for r in activation_rows if r["scheme"] == variant]
        x = [r["epoch"] for r in acts]
        axes[0][2].fill_between(x, [r["p5"] for r in acts], [r["p95"] for r in acts],
                                color=colors[variant], alpha=0.2, lw=0)
        axes[0][2].plot(x, [r["p50"] for r in acts], color=colors[variant], label=variant)
    axes[0][0].set(title="training accuracy (one-epoch running mean)", xlabel="step",
                   ylim=(0, 1))
    axes[0][1].set(title="test accuracy", xlabel="epoch", ylim=(0, 1))
    layer = activation_rows[0]["layer"] if activation_rows else "?"
    axes[0][2].set(title=f"layer {layer} output: 5-95th percentile, median", xlabel="epoch",
                   yscale="symlog")
    for ax in axes[0]:
        ax.title.set_fontsize(9)
    axes[0][1].legend(fontsize=7)
    return fig


def summarize(epoch_rows, variants):
    lines = []
    for variant in variants:
        mine = [r for r in epoch_rows if r["scheme"] == variant]
        lines.append(dict(scheme=variant, final_train_acc=mine[-1]["train_acc"],
                          final_test_acc=mine[-1]["test_acc"],
                          best_test_acc=max(r["test_acc"] for r in mine)))
    return lines


def check_flags():
    variants = study.check_training_flags(allowed=VARIANTS)
    study.require(1 <= FLAGS.activation_layer <= 5,
                  f"--activation_layer must be in 1..5 (the normalized layers), got "
                  f"{FLAGS.activation_layer}")
    study.check_data_flags()
    return variants


def main(argv):
    if len(argv) > 1:
        study.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    variants = study.run_checked(check_flags)
    dataset = study.run_checked(study.load_data)
    study.write_config(FLAGS.out_dir)
    step_rows, epoch_rows, activation_rows = [], [], []
    for variant in variants:
        steps, epochs, activations = study.run_checked(run_variant, variant, dataset)
        step_rows += steps
        epoch_rows += epochs
        activation_rows += activations
    study.write_csv(FLAGS.out_dir, "steps.csv", step_rows)
    study.write_csv(FLAGS.out_dir, "accuracy.csv", epoch_rows)
    study.write_csv(FLAGS.out_dir, "activations.csv", activation_rows)
    summary = summarize(epoch_rows, variants)
    study.write_csv(FLAGS.out_dir, "summary.csv", summary)
    for line in summary:
        logging.info("%-11s final train acc %.3f, final test acc %.3f, best test acc %.3f",
                     line["scheme"], line["final_train_acc"], line["final_test_acc"],
                     line["best_test_acc"])
    steps_per_epoch = len(dataset.train_labels) // FLAGS.batch_size
    path = study.save_figure(draw(step_rows, epoch_rows, activation_rows, variants,
                                  steps_per_epoch), FLAGS.out_dir, "noisy_bn.png")
    logging.info("wrote %s", path)


if __name__ == "__main__":
    app.run(main)
