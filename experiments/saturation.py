"""Saturation (seed 002): a tanh network with and without normalization.

    python -m experiments.saturation --out_dir=results/saturation

The article's network with tanh after layers 1-5 (a linear last layer), the
normalization placed *before* the activation (conv -> norm -> tanh), as the point
is to keep tanh's input in its responsive range. Each scheme of --schemes is
initialized with every std of --init_stds (0.05 is the article's; a wider one
shows seed 002's wide pre-activations) and trained --epochs on --dataset.

Before and after training, on the first --probe_size test images in training mode
(batch statistics, as the training step sees them), per tanh layer: histograms of
the activation's input (pre-activation, after the normalization) and of the
activation (histograms.csv; figures preactivation_<std>.png and
activation_<std>.png, after training), the fraction of saturated units,
|tanh| > --saturation_threshold, and the fraction of near-zero gradients, at the
activation's input and passed back to the layer's input, near-zero meaning
|g| < --near_zero_relative x RMS(g) over that layer's tensor (saturation.csv,
saturation.png). Accuracy per epoch: training.csv.

Box-Cox is not offered: its input must stay above -1, which a pre-activation does not.
"""

import os

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import tfnorm
from experiments import study
from tfnorm import training
from tfnorm.probes import saturation

FLAGS = flags.FLAGS
SCHEMES = tfnorm.schemes.names(input_domain="any")  # Box-Cox needs its input above -1

study.define_data_flags(out_dir="runs/saturation")
study.define_training_flags(epochs=3, batch_size=20, optimizer="adam", learning_rate=0.0008,
                            schemes="none,batch,layer,instance,group,weight")
flags.DEFINE_string("init_stds", "0.05,0.5",
                    "Std of the N(0, std) kernel init; one run per value and scheme.")
flags.DEFINE_integer("groups", 4, "Groups of group normalization.")
flags.DEFINE_integer("probe_size", 256, "Test images the measurements are taken on.")
flags.DEFINE_float("saturation_threshold", saturation.SATURATION_THRESHOLD,
                   "A unit is saturated when |tanh| exceeds this.")
flags.DEFINE_float("near_zero_relative", saturation.NEAR_ZERO_RELATIVE,
                   "A gradient entry is near zero below this times the RMS of its layer's tensor.")
flags.DEFINE_integer("bins", 50, "Histogram bins.")


def parse_stds(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise study.StudyError(f"--init_stds: expected comma-separated numbers, got {text!r}") \
            from None
    study.require(all(np.isfinite(v) and v > 0 for v in values),
                  f"--init_stds: every std must be positive, got {text!r}")
    return values


def check_flags():
    study.check_data_flags()
    study.check_training_flags()
    schemes = study.parse_schemes(FLAGS.schemes, allowed=SCHEMES)
    stds = parse_stds(FLAGS.init_stds)
    study.require(FLAGS.groups > 0 and 16 % FLAGS.groups == 0,
                  f"--groups must divide the network's 16 channels, got {FLAGS.groups}")
    study.require(FLAGS.probe_size >= 2, f"--probe_size must be at least 2, got {FLAGS.probe_size}")
    study.require(0 < FLAGS.saturation_threshold < 1,
                  f"--saturation_threshold must be in (0, 1), got {FLAGS.saturation_threshold}")
    study.require(FLAGS.near_zero_relative > 0,
                  f"--near_zero_relative must be positive, got {FLAGS.near_zero_relative}")
    study.require_positive(FLAGS.bins, "--bins")
    return schemes, stds


def build(scheme, init_std, dataset):
    network = tfnorm.article_network(
        scheme, activation="tanh", placement="before", final_activation="linear",
        init_std=init_std, groups=FLAGS.groups, seed=FLAGS.seed,
        in_channels=dataset.train_images.shape[-1])
    images, _ = study.first_batch(dataset, FLAGS.batch_size, FLAGS.seed)
    network.initialize_from_batch(images)  # weight norm's data-dependent init; else a no-op
    return network


def restart(trainer, fresh):
    """Give the trainer's network the state of ``fresh`` (same scheme, another init) and
    its optimizer a clean start. Compiling a training step costs far more than these
    runs' training itself; this reuses the compiled step of the same architecture."""
    network = trainer.network
    for target, source in zip(network.trainable_variables + network.statistics,
                              fresh.trainable_variables + fresh.statistics):
        target.assign(source)
    for slot in trainer.optimizer.slot_variables():
        slot.assign(tf.zeros_like(slot))
    trainer.optimizer.iterations.assign(0)


def measure(network, probe_images, probe_labels, key):
    """Rows of saturation.csv and histograms.csv for the tanh layers of ``network``."""
    _, per_layer = saturation.probe(network, probe_images, probe_labels, training=True)
    stat_rows, hist_rows = [], []
    for layer, tensors in enumerate(per_layer[:-1], start=1):  # the last layer is linear
        stats = saturation.layer_statistics(tensors, FLAGS.saturation_threshold,
                                            FLAGS.near_zero_relative)
        stat_rows.append(dict(key, layer=layer, **stats))
        for quantity in ("activation_input", "activation"):
            values = np.asarray(getattr(tensors, quantity), np.float64).reshape(-1)
            counts, edges = np.histogram(values, bins=FLAGS.bins)
            hist_rows += [dict(key, layer=layer, quantity=quantity, bin_low=float(lo),
                               bin_high=float(hi), count=int(c))
                          for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    return stat_rows, hist_rows


def plot_histograms(hist_rows, init_std, schemes, quantity, out_dir):
    rows = [r for r in hist_rows if r["init_std"] == init_std and r["stage"] == "trained"
            and r["quantity"] == quantity]
    layer_ids = sorted({r["layer"] for r in rows})
    fig, axes = study.figure(len(schemes), len(layer_ids), width=2.4, height=1.7, sharex="col")
    for i, scheme in enumerate(schemes):
        for j, layer in enumerate(layer_ids):
            ax = axes[i][j]
            cell = [r for r in rows if r["scheme"] == scheme and r["layer"] == layer]
            edges = [r["bin_low"] for r in cell] + [cell[-1]["bin_high"]]
            ax.stairs([r["count"] for r in cell], edges, fill=True)
            if quantity == "activation_input":
                # Beyond +-atanh(threshold) the unit is saturated.
                edge = np.arctanh(FLAGS.saturation_threshold)
                for x in (-edge, edge):
                    ax.axvline(x, color="r", lw=0.6, ls="--")
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"layer {layer}", fontsize=8)
            if j == 0:
                ax.set_ylabel(scheme, fontsize=8)
    what = ("tanh input (pre-activation after the normalization; red: saturation edges)"
            if quantity == "activation_input" else "tanh output")
    fig.suptitle(f"{what}, init std {init_std:g}, after training", fontsize=9)
    name = "preactivation" if quantity == "activation_input" else "activation"
    return study.save_figure(fig, out_dir, f"{name}_{init_std:g}.png")


def plot_saturation(stat_rows, schemes, stds, out_dir):
    panels = [("saturated_frac", f"saturated (|tanh| > {FLAGS.saturation_threshold:g})"),
              ("near_zero_input_grad_frac", "near-zero gradient at tanh input"),
              ("near_zero_passed_grad_frac", "near-zero passed gradient")]
    fig, axes = study.figure(len(panels), len(stds), width=4.2, height=2.8)
    colors = study.scheme_colors(schemes)
    for col, init_std in enumerate(stds):
        for row, (key, title) in enumerate(panels):
            ax = axes[row][col]
            for scheme in schemes:
                for stage, style in (("init", ":"), ("trained", "-")):
                    mine = [r for r in stat_rows if (r["init_std"], r["scheme"], r["stage"])
                            == (init_std, scheme, stage)]
                    ax.plot([r["layer"] for r in mine], [r[key] for r in mine], style,
                            marker="o", ms=3, color=colors[scheme],
                            label=scheme if stage == "trained" else None)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("layer")
            ax.set_ylabel("fraction")
            ax.set_title(f"{title}\ninit std {init_std:g} (dotted: at init)", fontsize=8)
    axes[0][-1].legend(fontsize=6)
    return study.save_figure(fig, out_dir, "saturation.png")


def run():
    schemes, stds = check_flags()
    dataset = study.load_data()
    out_dir = FLAGS.out_dir
    probe_images = tf.constant(dataset.test_images[:FLAGS.probe_size], tf.float32) / 255.0
    probe_labels = tf.constant(dataset.test_labels[:FLAGS.probe_size], tf.int32)
    stat_rows, hist_rows, epoch_rows = [], [], []
    for scheme in schemes:
        network = trainer = None
        for init_std in stds:
            if trainer is None:
                network = build(scheme, init_std, dataset)
                trainer = training.Trainer(
                    network, tfnorm.make_optimizer(FLAGS.optimizer, FLAGS.learning_rate))
            else:
                restart(trainer, build(scheme, init_std, dataset))
            key = dict(init_std=init_std, scheme=scheme)
            for stage in ("init", "trained"):
                if stage == "trained":
                    name = f"{scheme} (init std {init_std:g})"
                    _, epochs = study.train_and_evaluate(
                        name, trainer, dataset, epochs=FLAGS.epochs,
                        batch_size=FLAGS.batch_size, seed=FLAGS.seed, log=logging.info)
                    epoch_rows += [dict(row, scheme=scheme, init_std=init_std) for row in epochs]
                stats, hists = measure(network, probe_images, probe_labels,
                                       dict(key, stage=stage))
                stat_rows += stats
                hist_rows += hists
            logging.info("%s init std %g: saturated per layer %s", scheme, init_std,
                         [round(r["saturated_frac"], 3) for r in stats])
    study.write_csv(out_dir, "saturation.csv", stat_rows)
    study.write_csv(out_dir, "histograms.csv", hist_rows)
    study.write_csv(out_dir, "training.csv", epoch_rows)
    for init_std in stds:
        for quantity in ("activation_input", "activation"):
            plot_histograms(hist_rows, init_std, schemes, quantity, out_dir)
    plot_saturation(stat_rows, schemes, stds, out_dir)
    study.write_config(out_dir)
    logging.info("wrote %s", os.path.abspath(out_dir))


def main(argv):
    if len(argv) > 1:
        study.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    study.run_checked(run)


if __name__ == "__main__":
    app.run(main)
