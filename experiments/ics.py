"""Internal covariate shift (Santurkar et al. 2018, Definition 2.1) per scheme.

Trains the article network under each scheme and, every --every steps, measures for
the layers in --layers: G, the gradient of the layer's weights on the step's batch, and
G', the same after the earlier layers took this step's update; writes ||G - G'||_2 and
cos(G, G') (tfnorm.probes.ics), and draws a figure like the paper's Figure 3.

    python -m experiments.ics                      # digits, ~2 minutes on 2 cores
    python -m experiments.ics --dataset=stl10 --stl10_archive=/path/stl10_binary.tar.gz

Outputs in --out_dir: ics.csv (one row per probed step and layer), accuracy.csv (per
epoch), config.json, ics.png.
"""

import numpy as np
from absl import app, logging

from experiments import study
from tfnorm import optimizers
from tfnorm.probes import ics

FLAGS = study.FLAGS

study.define_data_flags(out_dir="runs/ics")
study.define_training_flags(epochs=5, batch_size=20, optimizer="sgd", learning_rate=0.1,
                            schemes="none,batch,layer,instance,noisybatch")
study.flags.DEFINE_string("layers", "2,4,6", "Comma-separated layers (1 = the first conv) "
                          "whose ICS is measured.")
study.flags.DEFINE_float("init_std", 0.05, "Std of the weights' normal init (0.05: the "
                        "article's; without normalization SGD then barely moves).")
study.flags.DEFINE_integer("every", 5, "Measure every this many training steps.")


def parse_layers(text, depth):
    """'2,4' -> [1, 3] (0-based block indices)."""
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise study.StudyError(
            f"--layers: expected comma-separated integers, got {text!r}") from None
    for layer in layers:
        study.require(1 <= layer <= depth,
                      f"--layers: layer {layer} is outside the network's layers 1..{depth}")
    study.require(len(set(layers)) == len(layers), f"--layers: a layer is named twice in {text!r}")
    return [layer - 1 for layer in layers]


def run_scheme(scheme, dataset, layer_indices):
    network = study.build_network(scheme, dataset, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                  init_std=FLAGS.init_std)
    probe = ics.ICSTrainer(network, optimizers.make_optimizer(FLAGS.optimizer,
                                                              FLAGS.learning_rate),
                           layer_indices)
    rows = []

    def step_fn(step, epoch, images, labels):
        if step % FLAGS.every:
            return probe.train_step(images, labels)
        out = probe.measure_step(images, labels)
        for position, index in enumerate(layer_indices):
            gradient_norm = float(out["gradient_norm"][position])
            distance = float(out["distance"][position])
            rows.append(dict(scheme=scheme, step=step, epoch=epoch, layer=index + 1,
                             distance=distance, cosine=float(out["cosine"][position]),
                             gradient_norm=gradient_norm,
                             shifted_gradient_norm=float(out["shifted_gradient_norm"][position]),
                             relative_distance=distance / gradient_norm if gradient_norm else 0.0,
                             loss=float(out["loss"])))
        return out

    _, epoch_rows = study.train_and_evaluate(scheme, probe, dataset, epochs=FLAGS.epochs,
                                             batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                             log=logging.info, step_fn=step_fn)
    return rows, epoch_rows


def draw(rows, epoch_rows, schemes, layers):
    """Accuracy, then per layer ||G - G'|| and cos(G, G') against the step (Figure 3)."""
    colors = study.scheme_colors(schemes)
    fig, axes = study.figure(1 + len(layers), 2, width=5.0, height=2.8)
    for scheme in schemes:
        mine = [r for r in epoch_rows if r["scheme"] == scheme]
        epochs = [r["epoch"] for r in mine]
        axes[0][0].plot(epochs, [r["train_acc"] for r in mine], "-o", color=colors[scheme],
                        label=scheme, ms=3)
        axes[0][1].plot(epochs, [r["test_acc"] for r in mine], "-o", color=colors[scheme],
                        label=scheme, ms=3)
    axes[0][0].set(title="training accuracy", xlabel="epoch")
    axes[0][1].set(title="test accuracy", xlabel="epoch")
    axes[0][0].legend(fontsize=7)
    for row, layer in enumerate(layers, start=1):
        for scheme in schemes:
            mine = [r for r in rows if r["scheme"] == scheme and r["layer"] == layer]
            steps = [r["step"] for r in mine]
            axes[row][0].plot(steps, [r["distance"] for r in mine], color=colors[scheme],
                              label=scheme, lw=1)
            axes[row][1].plot(steps, [r["cosine"] for r in mine], color=colors[scheme],
                              label=scheme, lw=1)
        axes[row][0].set(title=f"layer {layer}: ||G - G'||", xlabel="step", yscale="log")
        axes[row][1].set(title=f"layer {layer}: cos(G, G')", xlabel="step", ylim=(-1.05, 1.05))
    return fig


def summarize(rows, schemes, layers):
    """Median distance, relative distance and cosine per scheme and layer, for the log and README."""
    lines = []
    for layer in layers:
        for scheme in schemes:
            mine = [r for r in rows if r["scheme"] == scheme and r["layer"] == layer]
            lines.append(dict(scheme=scheme, layer=layer,
                              median_distance=float(np.median([r["distance"] for r in mine])),
                              median_relative_distance=float(np.median(
                                  [r["relative_distance"] for r in mine])),
                              median_cosine=float(np.median([r["cosine"] for r in mine]))))
    return lines


def check_flags():
    schemes = study.check_training_flags()
    study.check_data_flags()
    study.require_positive(FLAGS.every, "--every")
    study.require_positive(FLAGS.init_std, "--init_std")
    return schemes, parse_layers(FLAGS.layers, 6)


def main(argv):
    if len(argv) > 1:
        study.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    schemes, layer_indices = study.run_checked(check_flags)
    dataset = study.run_checked(study.load_data)
    study.write_config(FLAGS.out_dir)
    rows, epoch_rows = [], []
    for scheme in schemes:
        scheme_rows, scheme_epochs = study.run_checked(run_scheme, scheme, dataset, layer_indices)
        rows += scheme_rows
        epoch_rows += scheme_epochs
    layers = [i + 1 for i in layer_indices]
    study.write_csv(FLAGS.out_dir, "ics.csv", rows)
    study.write_csv(FLAGS.out_dir, "accuracy.csv", epoch_rows)
    summary = summarize(rows, schemes, layers)
    study.write_csv(FLAGS.out_dir, "summary.csv", summary)
    for line in summary:
        logging.info("layer %d %-10s median ||G-G'|| %.3g (relative %.3g), median cos %.3f",
                     line["layer"], line["scheme"], line["median_distance"],
                     line["median_relative_distance"], line["median_cosine"])
    path = study.save_figure(draw(rows, epoch_rows, schemes, layers), FLAGS.out_dir, "ics.png")
    logging.info("wrote %s", path)


if __name__ == "__main__":
    app.run(main)
