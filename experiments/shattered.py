"""Shattered gradients (Balduzzi et al. 2017): the gradient of a network's output
w.r.t. its input along a 1-D line of inputs, against depth.

    python -m experiments.shattered --out_dir=results/shattered

Fully connected networks (``tfnorm.mlp_network``: input 1, width 200, output 1,
ReLU, He init, biases N(0, --bias_std^2)) at every depth of --depths, on 256
inputs evenly spaced in [-2, 2], as in the paper's Figure 1, under the
architectures of --architectures:

- plain: dense -> ReLU;
- batch: dense -> batch norm -> ReLU;
- resnet: y = x + beta * ReLU(dense(x)) for the hidden blocks after the first;
- resnet_batch: y = x + beta * ReLU(BN(dense(x))),
each residual one once per beta of --residual_betas.

And a convolutional variant (--conv): the article's network (3x3 convs, width 16,
He init, one output, conv -> [BN] -> ReLU), its first two layers of stride 2, on a
1-D family of images x(t) = m + t d through two test images a and b of --dataset
(m = (a + b)/2, d = (b - a)/2, so x(-1) = a, x(1) = b), with the scalar
g(t) = <grad f(x(t)), d> = df(x(t))/dt as its gradient along the line.

Batch norm: the line is one batch; its statistics are frozen at their values on
the line and the gradient of each point is taken with them (see
tfnorm.probes.shattering; --batch_mode=train for the batch-coupled gradient).

Measured per network (and --seeds networks per setting): the gradient at every
point (gradients.csv, first seed; figure gradients.png like the paper's
Figure 1), its autocorrelation (autocorrelation.csv, mean over seeds;
autocorrelation.png), the correlation between the gradients of neighbouring
inputs against depth beside 1/2^L and 1/sqrt(L) (correlation.csv, summary.csv,
neighbour_correlation.png), and per layer the rate at which rectifiers are
active and co-active (coactivation.csv, coactivation.png). Co-activation, as
the paper defines it: for a pair of distinct inputs, the fraction of a layer's
units active on both, averaged over all pairs of inputs of the line (1/4 when
every unit is on for half the inputs independently); the unit-pair version is
stored beside it.
"""

import os

import matplotlib
import matplotlib.ticker
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import tfnorm
from experiments import study
from tfnorm import data
from tfnorm.probes import shattering

FLAGS = flags.FLAGS
ARCHITECTURES = ("plain", "batch", "resnet", "resnet_batch")

study.define_data_flags(out_dir="runs/shattered")
flags.DEFINE_string("depths", "1,2,4,8,16,24,32,50", "Depths (hidden layers) of the dense nets.")
flags.DEFINE_string("architectures", ",".join(ARCHITECTURES),
                    f"Comma-separated, of {', '.join(ARCHITECTURES)}.")
flags.DEFINE_string("residual_betas", "1.0,0.1",
                    "Scales beta of the residual branch, y = x + beta F(x); each residual "
                    "architecture runs once per beta.")
flags.DEFINE_integer("num_points", 256, "Points on the line.")
flags.DEFINE_float("low", -2.0, "Start of the line.")
flags.DEFINE_float("high", 2.0, "End of the line.")
flags.DEFINE_integer("width", 200, "Units per hidden layer of the dense nets.")
flags.DEFINE_float("bias_std", 1.0,
                   "Std of the dense biases at init; 0 puts every unit's switching point of "
                   "the first layer at x = 0.")
flags.DEFINE_integer("seeds", 3, "Networks per (architecture, depth); results are averaged.")
flags.DEFINE_integer("max_lag", 40, "Largest lag of the autocorrelation.")
flags.DEFINE_enum("batch_mode", "line_statistics", shattering.BATCH_MODES,
                  "Batch norm: frozen statistics of the line, or the training-mode gradient "
                  "of the sum of outputs.")
flags.DEFINE_bool("conv", True, "Also run the convolutional variant.")
flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Precision of every network.")
flags.DEFINE_string("conv_depths", "2,4,8,16,32,50",
                    "Depths of the conv nets (depth 1 is linear: one conv, no activation).")
flags.DEFINE_integer("conv_width", 16, "Channels of the conv nets.")
flags.DEFINE_integer("conv_seeds", 1, "Conv networks per (architecture, depth).")
flags.DEFINE_string("figure_depths", "1,2,8,24,50",
                    "Depths whose gradients the gradient figure shows (those present).")


def parse_ints(text, flag, minimum=1):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise study.StudyError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    study.require(all(v >= minimum for v in values),
                  f"{flag}: every value must be at least {minimum}, got {text!r}")
    return values


def parse_floats(text, flag):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise study.StudyError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    study.require(all(np.isfinite(v) and v > 0 for v in values),
                  f"{flag}: every value must be positive, got {text!r}")
    return values


def check_flags():
    """Every flag, before any work. Returns the parsed settings."""
    study.check_data_flags()
    depths = parse_ints(FLAGS.depths, "--depths")
    conv_depths = parse_ints(FLAGS.conv_depths, "--conv_depths")
    names = [a.strip() for a in FLAGS.architectures.split(",")]
    for name in names:
        study.require(name in ARCHITECTURES, f"--architectures: unknown architecture {name!r}; "
                      f"expected some of {', '.join(ARCHITECTURES)}")
    betas = parse_floats(FLAGS.residual_betas, "--residual_betas")
    study.require(FLAGS.num_points >= 3, f"--num_points must be at least 3, got {FLAGS.num_points}")
    study.require(FLAGS.high > FLAGS.low,
                  f"--high ({FLAGS.high}) must be above --low ({FLAGS.low})")
    study.require_positive(FLAGS.width, "--width")
    study.require_positive(FLAGS.conv_width, "--conv_width")
    study.require_positive(FLAGS.seeds, "--seeds")
    study.require_positive(FLAGS.conv_seeds, "--conv_seeds")
    study.require(FLAGS.bias_std >= 0, f"--bias_std must be non-negative, got {FLAGS.bias_std}")
    study.require(0 < FLAGS.max_lag < FLAGS.num_points,
                  f"--max_lag must be in [1, {FLAGS.num_points - 1}], got {FLAGS.max_lag}")
    figure_depths = parse_ints(FLAGS.figure_depths, "--figure_depths")
    return depths, conv_depths, settings(names, betas), figure_depths


def settings(names, betas):
    """(label, scheme, residual beta or None) per architecture and beta."""
    out = []
    for name in names:
        scheme = "batch" if name.endswith("batch") else "none"
        if name.startswith("resnet"):
            out += [(f"{name} beta={beta:g}", scheme, beta) for beta in betas]
        else:
            out.append((name, scheme, None))
    return out


def dense_network(scheme, beta, depth, seed):
    network = tfnorm.mlp_network(scheme, in_dim=1, out_dim=1, width=FLAGS.width, depth=depth,
                                 residual_beta=beta, seed=seed, dtype=FLAGS.dtype)
    # He et al.'s init with zero biases puts every first-layer unit's switching point at
    # x = 0; spread biases make the one-layer net's gradient the paper's brown noise.
    for index, block in enumerate(network.blocks):
        bias = block.layer.bias
        bias.assign(tf.random.stateless_normal(bias.shape, [seed, 7919 + index], dtype=bias.dtype)
                    * FLAGS.bias_std)
    return network


def conv_network(scheme, beta, depth, seed, in_channels):
    strides = [2 if i < min(2, depth - 1) else 1 for i in range(depth)]
    network = tfnorm.article_network(
        scheme, num_classes=1, in_channels=in_channels, width=FLAGS.conv_width, depth=depth,
        strides=strides, placement="before", residual=beta is not None,
        residual_beta=beta if beta is not None else 1.0, init_std=1.0, seed=seed,
        final_activation="linear", epsilon=1e-5, dtype=FLAGS.dtype)
    for block in network.blocks:
        kernel = block.layer.kernel
        fan_in = float(np.prod(kernel.shape[:3]))
        kernel.assign(kernel * np.sqrt(2.0 / fan_in))  # He init
    return network


def measure(network, inputs, direction=None):
    """(gradient along the line (N,), acf, per-layer activity rows)."""
    _, gradients, records = shattering.input_gradients(network, inputs, FLAGS.batch_mode)
    if direction is None:
        along = tf.reshape(gradients, [-1])
    else:
        along = tf.reduce_sum(gradients * direction[None], axis=[1, 2, 3])
    along = along.numpy()
    acf = shattering.autocorrelation(along, FLAGS.max_lag)
    layers = []
    # Only the hidden rectifier blocks: the output block is linear.
    for layer, active in enumerate(shattering.activity(records[:-1]), start=1):
        layers.append(dict(layer=layer, active_rate=float(active.mean()),
                           coactivation_inputs=shattering.coactivation_rate(active, "inputs"),
                           coactivation_units=shattering.coactivation_rate(active, "units")))
    return along, acf, layers


def run_family(family, configs, depths, seeds, build, inputs, positions, direction=None):
    """Every (architecture, depth, seed) of one family. Returns the CSV rows."""
    gradient_rows, correlation_rows, acf_rows, coactivation_rows = [], [], [], []
    for label, scheme, beta in configs:
        for depth in depths:
            acfs = []
            for seed in range(FLAGS.seed, FLAGS.seed + seeds):
                network = build(scheme, beta, depth, seed)
                along, acf, layers = measure(network, inputs, direction)
                acfs.append(acf)
                key = dict(family=family, architecture=label, depth=depth)
                correlation_rows.append(dict(key, seed=seed, neighbour_correlation=acf[1],
                                             gradient_std=float(np.std(along))))
                coactivation_rows += [dict(key, seed=seed, **row) for row in layers]
                if seed == FLAGS.seed:
                    gradient_rows += [dict(key, position=float(p), gradient=float(g))
                                      for p, g in zip(positions, along)]
            mean_acf = np.nanmean(np.array(acfs), axis=0)
            acf_rows += [dict(family=family, architecture=label, depth=depth, lag=lag,
                              autocorrelation=float(r)) for lag, r in enumerate(mean_acf)]
            logging.info("%s %s depth %d: neighbour correlation %.3f", family, label, depth,
                         mean_acf[1])
    return gradient_rows, correlation_rows, acf_rows, coactivation_rows


def summarize(correlation_rows, coactivation_rows):
    """One row per (family, architecture, depth): correlation mean/min/max over seeds,
    the references 1/2^L and 1/sqrt(L), and the mean co-activation over layers and seeds."""
    out = []
    keys = list(dict.fromkeys((r["family"], r["architecture"], r["depth"])
                              for r in correlation_rows))
    for family, label, depth in keys:
        corr = [r["neighbour_correlation"] for r in correlation_rows
                if (r["family"], r["architecture"], r["depth"]) == (family, label, depth)]
        coact = [r["coactivation_inputs"] for r in coactivation_rows
                 if (r["family"], r["architecture"], r["depth"]) == (family, label, depth)]
        out.append(dict(family=family, architecture=label, depth=depth,
                        neighbour_correlation_mean=float(np.nanmean(corr)),
                        neighbour_correlation_min=float(np.nanmin(corr)),
                        neighbour_correlation_max=float(np.nanmax(corr)),
                        reference_2_pow_minus_L=2.0 ** -depth,
                        reference_1_over_sqrt_L=1.0 / np.sqrt(depth),
                        coactivation_inputs_mean=float(np.mean(coact)) if coact else float("nan")))
    return out


# ----------------------------------------------------------------------------
# Figures


def plot_gradients(rows, family, figure_depths, out_dir):
    labels = list(dict.fromkeys(r["architecture"] for r in rows if r["family"] == family))
    available = sorted({r["depth"] for r in rows if r["family"] == family})
    depths = [d for d in figure_depths if d in available] or available[-4:]
    fig, axes = study.figure(len(depths), len(labels), width=3.2, height=2.2, sharex=True)
    for col, label in enumerate(labels):
        for row, depth in enumerate(depths):
            ax = axes[row][col]
            points = [(r["position"], r["gradient"]) for r in rows
                      if (r["family"], r["architecture"], r["depth"]) == (family, label, depth)]
            x, g = np.array(points).T
            ax.plot(x, g, lw=0.8)
            ax.set_title(f"{label}, depth {depth}", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == len(depths) - 1:
                ax.set_xlabel("input x" if family == "dense" else "line position t", fontsize=8)
            if col == 0:
                ax.set_ylabel("df/dx" if family == "dense" else "df(x(t))/dt", fontsize=8)
    fig.suptitle(f"{family} nets: gradient of the output along the line (seed {FLAGS.seed})",
                 fontsize=10)
    return study.save_figure(fig, out_dir, f"gradients_{family}.png")


def plot_autocorrelation(acf_rows, family, out_dir):
    labels = list(dict.fromkeys(r["architecture"] for r in acf_rows if r["family"] == family))
    fig, axes = study.figure(1, len(labels), width=3.2, height=2.8, sharey=True)
    for ax, label in zip(axes[0], labels):
        depths = sorted({r["depth"] for r in acf_rows
                         if (r["family"], r["architecture"]) == (family, label)})
        cmap = matplotlib.colormaps["viridis"]
        for i, depth in enumerate(depths):
            lag_r = [(r["lag"], r["autocorrelation"]) for r in acf_rows
                     if (r["family"], r["architecture"], r["depth"]) == (family, label, depth)]
            lags, values = np.array(lag_r).T
            ax.plot(lags, values, color=cmap(i / max(1, len(depths) - 1)), lw=1,
                    label=f"L={depth}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("lag (points)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("autocorrelation of df/dx", fontsize=8)
    axes[0][-1].legend(fontsize=6)
    return study.save_figure(fig, out_dir, f"autocorrelation_{family}.png")


def plot_correlation(summary_rows, out_dir):
    families = list(dict.fromkeys(r["family"] for r in summary_rows))
    fig, axes = study.figure(1, len(families), width=5.0, height=3.8)
    for ax, family in zip(axes[0], families):
        rows = [r for r in summary_rows if r["family"] == family]
        labels = list(dict.fromkeys(r["architecture"] for r in rows))
        colors = study.scheme_colors(labels)
        for label in labels:
            mine = [r for r in rows if r["architecture"] == label]
            depth = np.array([r["depth"] for r in mine])
            mean = np.array([r["neighbour_correlation_mean"] for r in mine])
            ax.plot(depth, mean, "o-", ms=3, color=colors[label], label=label)
            ax.fill_between(depth, [r["neighbour_correlation_min"] for r in mine],
                            [r["neighbour_correlation_max"] for r in mine],
                            color=colors[label], alpha=0.15)
        depth = np.array(sorted({r["depth"] for r in rows}), float)
        ax.plot(depth, 2.0 ** -depth, "k--", lw=1, label="$1/2^L$")
        ax.plot(depth, 1 / np.sqrt(depth), "k:", lw=1, label=r"$1/\sqrt{L}$")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_xticks(depth)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("depth L")
        ax.set_ylabel("correlation of neighbours' gradients")
        ax.set_title(f"{family} nets (mean and min-max over seeds)", fontsize=9)
        ax.legend(fontsize=6)
    return study.save_figure(fig, out_dir, "neighbour_correlation.png")


def plot_coactivation(coactivation_rows, out_dir):
    families = list(dict.fromkeys(r["family"] for r in coactivation_rows))
    fig, axes = study.figure(2, len(families), width=5.0, height=3.0)
    for col, family in enumerate(families):
        rows = [r for r in coactivation_rows if r["family"] == family]
        deepest = max(r["depth"] for r in rows)
        labels = list(dict.fromkeys(r["architecture"] for r in rows))
        colors = study.scheme_colors(labels)
        for row, (key, title) in enumerate([("coactivation_inputs", "co-activation rate"),
                                            ("active_rate", "active rate")]):
            ax = axes[row][col]
            for label in labels:
                mine = [r for r in rows if r["architecture"] == label and r["depth"] == deepest]
                layers = sorted({r["layer"] for r in mine})
                values = [np.mean([r[key] for r in mine if r["layer"] == layer])
                          for layer in layers]
                ax.plot(layers, values, color=colors[label], lw=1, label=label)
            ax.axhline(0.25 if row == 0 else 0.5, color="k", ls="--", lw=0.8,
                       label="1/4" if row == 0 else "1/2")
            ax.set_ylim(0, 1)
            ax.set_xlabel("layer")
            ax.set_ylabel(title)
            ax.set_title(f"{family} nets of depth {deepest}", fontsize=9)
            ax.legend(fontsize=6)
    return study.save_figure(fig, out_dir, "coactivation.png")


# ----------------------------------------------------------------------------


def run():
    depths, conv_depths, configs, figure_depths = check_flags()
    dataset = None
    if FLAGS.conv:
        dataset = data.load(FLAGS.dataset, data_dir=FLAGS.data_dir,
                            stl10_archive=FLAGS.stl10_archive, image_size=FLAGS.image_size)
    out_dir = FLAGS.out_dir
    results = [run_family(
        "dense", configs, depths, FLAGS.seeds, dense_network,
        shattering.line_inputs(FLAGS.num_points, FLAGS.low, FLAGS.high, FLAGS.dtype),
        np.linspace(FLAGS.low, FLAGS.high, FLAGS.num_points))]
    if FLAGS.conv:
        # Two test images of different classes, so the line crosses between digits/objects.
        labels = dataset.test_labels
        first = 0
        second = int(np.flatnonzero(labels != labels[first])[0])
        images = dataset.test_images.astype(FLAGS.dtype) / 255.0
        line, t, direction = shattering.image_line(images[first], images[second],
                                                   FLAGS.num_points, FLAGS.low, FLAGS.high)
        in_channels = images.shape[-1]
        results.append(run_family(
            "conv", configs, conv_depths, FLAGS.conv_seeds,
            lambda s, b, d, seed: conv_network(s, b, d, seed, in_channels),
            line, t.numpy(), direction))
    gradient_rows, correlation_rows, acf_rows, coactivation_rows = (
        [row for result in results for row in result[i]] for i in range(4))
    summary_rows = summarize(correlation_rows, coactivation_rows)
    study.write_csv(out_dir, "gradients.csv", gradient_rows)
    study.write_csv(out_dir, "correlation.csv", correlation_rows)
    study.write_csv(out_dir, "autocorrelation.csv", acf_rows)
    study.write_csv(out_dir, "coactivation.csv", coactivation_rows)
    study.write_csv(out_dir, "summary.csv", summary_rows)
    for family in dict.fromkeys(r["family"] for r in gradient_rows):
        plot_gradients(gradient_rows, family, figure_depths, out_dir)
        plot_autocorrelation(acf_rows, family, out_dir)
    plot_correlation(summary_rows, out_dir)
    plot_coactivation(coactivation_rows, out_dir)
    study.write_config(out_dir)
    logging.info("wrote %s", os.path.abspath(out_dir))


def main(argv):
    if len(argv) > 1:
        study.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    study.run_checked(run)


if __name__ == "__main__":
    app.run(main)
