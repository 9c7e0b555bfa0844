"""Shattered gradients (Balduzzi et al. 2017): the gradient of a network's output
w.r.t. its input along a 1-D line of inputs, against depth.

    python -m experiments.papers.shattered --out_dir=results/shattered

Fully connected networks (input 1, width 200, output 1, ReLU, He init as in the paper,
--weight_variance; biases N(0, --bias_std^2), our choice: see the flag) at every depth of
--depths, on 256
inputs evenly spaced in [-2, 2], as in the paper's Figure 1, under --architectures:
plain (dense -> ReLU); batch (dense -> BN -> ReLU); resnet, y = x + beta W ReLU(x), and
resnet_batch, y = x + beta W ReLU(BN(x)) (the branch ends in a linear map as in the
paper, tfnorm.preactivation; --residual_branch=relu_last for x + beta ReLU([BN](W x))),
each once per beta of --residual_betas.

And a convolutional variant (--conv): 3x3 convs of width 16, He init, one output, on a
1-D family of images x(t) = m + t d through a pair of test images a and b of --dataset
(m = (a + b)/2, d = (b - a)/2; the seed picks the pair, ``image_pair``), with the scalar
g(t) = <grad f(x(t)), d> = df(x(t))/dt as its gradient along the line.

Batch norm: the line is one batch; its statistics are frozen at their values on the line
and each point's gradient is taken with them (tfnorm.probes.shattering; --batch_mode=train
for the batch-coupled gradient).

Measured per network, --seeds networks per architecture and depth (every row has its
architecture and seed first): the gradient at every point (gradients.csv, first seed;
gradients_<family>.png like Figure 1), its autocorrelation (autocorrelation.csv), the
neighbour correlation (correlation.csv; summary.csv per seed with the co-activation and
its distance from 1/4; summary_over_seeds.csv with 95% intervals;
neighbour_correlation.png), per layer the active and co-active rates (coactivation.csv,
coactivation.png; co-activation as the paper defines it: for a pair of distinct inputs,
the fraction of a layer's units active on both, averaged over all pairs; the unit-pair
version beside it; and over neighbouring points, with the neighbour persistence
P(on at x_n+1 | on at x_n) and its product over the layers in summary.csv, the
correlation the mean-field argument of tfnorm.probes.shattering predicts for
neighbours), the decay fits against depth (decay_fit.csv) and the verdicts
(verdicts.csv/md; experiments/papers/shattered_verdicts.py).

--ensemble=M (off by default: M times the work): each seed also draws M - 1 more networks
of the same architecture and depth (seeds seed + 1000 k), and the correlation of the
gradients at two points is taken across the M networks, as an expectation over the init
(tfnorm.probes.shattering.ensemble_autocorrelation): ensemble_autocorrelation in
autocorrelation.csv, ensemble_neighbour_correlation in correlation.csv and summary.csv.
"""


import numpy as np
from absl import flags, logging

from experiments import cli, study
from experiments.papers import shattered_figures, shattered_verdicts

ARCHITECTURES = ("plain", "batch", "resnet", "resnet_batch")
BATCH_MODES = ("line_statistics", "train")  # tfnorm.probes.shattering.BATCH_MODES
BRANCHES = ("linear_last", "relu_last")

ENSEMBLE_STRIDE = 1000  # an ensemble's k-th network: seed + ENSEMBLE_STRIDE * k


def define_flags(flag_values):
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("depths", "1,2,4,8,16,24,32,50", "Depths (hidden layers) of the dense "
                        "nets.", **fv)
    flags.DEFINE_string("architectures", ",".join(ARCHITECTURES),
                        f"Comma-separated, of {', '.join(ARCHITECTURES)}.", **fv)
    flags.DEFINE_string("residual_betas", "1.0,0.1",
                        "Scales beta of the residual branch, y = x + beta F(x); each residual "
                        "architecture runs once per beta.", **fv)
    flags.DEFINE_integer("num_points", 256, "Points on the line.", **fv)
    flags.DEFINE_float("low", -2.0, "Start of the line.", **fv)
    flags.DEFINE_float("high", 2.0, "End of the line.", **fv)
    flags.DEFINE_integer("width", 200, "Units per hidden layer of the dense nets.", **fv)
    flags.DEFINE_float("bias_std", 1.0,
                       "Std of the dense biases at init: our choice, not the paper's (our "
                       "sources, REFERENCE.md section 3 and seed 001, give He init and no "
                       "bias init); 0 puts every first-layer unit's switching point at "
                       "x = 0.", **fv)
    flags.DEFINE_float("weight_variance", 2.0,
                       "Dense kernels are N(0, weight_variance / fan_in): 2 is He et al.'s "
                       "(the paper's); 1 is the Glorot-like variance of the Understanding Deep "
                       "Learning notebook's replication.", **fv)
    flags.DEFINE_integer("ensemble", 0,
                         "Networks per seed for the across-network correlation (0: off; "
                         "otherwise at least 2, and seeds below 1000).", **fv)
    flags.DEFINE_bool("figures", True, "Draw the figures.", **fv)
    flags.DEFINE_enum("residual_branch", BRANCHES[0], BRANCHES,
                      "linear_last: y = x + beta W ReLU(norm(x)), the branch ending in a "
                      "linear map (the paper's, tfnorm.preactivation); relu_last: y = x + "
                      "beta ReLU(norm(W x)).", **fv)
    flags.DEFINE_integer("max_lag", 40, "Largest lag of the autocorrelation.", **fv)
    flags.DEFINE_enum("batch_mode", BATCH_MODES[0], BATCH_MODES,
                      "Batch norm: frozen statistics of the line, or the training-mode "
                      "gradient of the sum of outputs.", **fv)
    flags.DEFINE_bool("conv", True, "Also run the convolutional variant.", **fv)
    flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Precision of every "
                      "network.", **fv)
    flags.DEFINE_string("conv_depths", "2,4,8,16,32,50",
                        "Depths of the conv nets (depth 1 is linear: one conv, no "
                        "activation).", **fv)
    flags.DEFINE_integer("conv_width", 16, "Channels of the conv nets.", **fv)
    flags.DEFINE_string("figure_depths", "1,2,8,24,50",
                        "Depths whose gradients the gradient figure shows (those present).",
                        **fv)


def parse_numbers(text, flag, kind=int, minimum=1):
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        raise cli.ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") \
            from None
    if not all(np.isfinite(v) and (v >= minimum if kind is int else v > 0) for v in values):
        raise cli.ConfigError(f"{flag}: every value must be "
                              + (f"at least {minimum}" if kind is int else "positive")
                              + f", got {text!r}")
    return values


def check(values):
    """Every flag of the study's own, before any work. Returns the parsed settings."""
    names = [a.strip() for a in values["architectures"].split(",")]
    for name in names:
        if name not in ARCHITECTURES:
            raise cli.ConfigError(f"--architectures: unknown architecture {name!r}; expected "
                                  f"some of {', '.join(ARCHITECTURES)}")
    if values["num_points"] < 3:
        raise cli.ConfigError(f"--num_points={values['num_points']}: must be at least 3")
    if not values["high"] > values["low"]:
        raise cli.ConfigError(f"--high={values['high']}: must be above --low={values['low']}")
    cli.check_positive(values, "width", "conv_width")
    if values["bias_std"] < 0:
        raise cli.ConfigError(f"--bias_std={values['bias_std']}: must be non-negative")
    if not (np.isfinite(values["weight_variance"]) and values["weight_variance"] > 0):
        raise cli.ConfigError(f"--weight_variance={values['weight_variance']}: must be "
                              "positive")
    if values["ensemble"] == 1 or values["ensemble"] < 0:
        raise cli.ConfigError(f"--ensemble={values['ensemble']}: must be 0 (off) or at "
                              "least 2")
    if values["ensemble"] and values["seed"] + values["seeds"] > ENSEMBLE_STRIDE:
        raise cli.ConfigError(f"--ensemble: the seeds must be below {ENSEMBLE_STRIDE} (the "
                              "ensemble's networks are seeds seed + "
                              f"{ENSEMBLE_STRIDE} k)")
    if not 0 < values["max_lag"] < values["num_points"]:
        raise cli.ConfigError(f"--max_lag={values['max_lag']}: must be in "
                              f"[1, {values['num_points'] - 1}]")
    return dict(depths=parse_numbers(values["depths"], "--depths"),
                conv_depths=parse_numbers(values["conv_depths"], "--conv_depths"),
                figure_depths=parse_numbers(values["figure_depths"], "--figure_depths"),
                architectures=architectures(
                    names, parse_numbers(values["residual_betas"], "--residual_betas", float)))


def architectures(names, betas):
    """label -> (scheme, residual beta or None), per architecture and beta."""
    out = {}
    for name in names:
        scheme = "batch" if name.endswith("batch") else "none"
        if name.startswith("resnet"):
            out.update({f"{name} beta={beta:g}": (scheme, beta) for beta in betas})
        else:
            out[name] = (scheme, None)
    return out


def dense_network(values, scheme, beta, depth, seed):
    import tensorflow as tf
    import tfnorm
    from tfnorm import preactivation
    if beta is not None and values["residual_branch"] == "linear_last":
        network = preactivation.preactivation_resnet(
            scheme, kind="dense", width=values["width"], depth=depth, residual_beta=beta,
            seed=seed, dtype=values["dtype"])
    else:
        network = tfnorm.mlp_network(scheme, in_dim=1, out_dim=1, width=values["width"],
                                     depth=depth, residual_beta=beta, seed=seed,
                                     dtype=values["dtype"])
    # He et al.'s init with zero biases puts every first-layer unit's switching point at
    # x = 0; spread biases make the one-layer net's gradient the paper's brown noise.
    for index, block in enumerate(network.blocks):
        bias = block.layer.bias
        bias.assign(tf.random.stateless_normal(bias.shape, [seed, 7919 + index], dtype=bias.dtype)
                    * values["bias_std"])
        if values["weight_variance"] != 2.0:  # the builders draw He's 2 / fan_in
            block.layer.kernel.assign(block.layer.kernel
                                      * np.sqrt(values["weight_variance"] / 2.0))
    return network


def conv_network(values, scheme, beta, depth, seed, in_channels):
    import tfnorm
    from tfnorm import preactivation
    if beta is not None and values["residual_branch"] == "linear_last":
        # One stride-2 conv, then residual units at the same width (He init throughout).
        return preactivation.preactivation_resnet(
            scheme, kind="conv", in_channels=in_channels, width=values["conv_width"],
            depth=depth, residual_beta=beta, seed=seed, dtype=values["dtype"],
            first_stride=2)
    strides = [2 if i < min(2, depth - 1) else 1 for i in range(depth)]
    network = tfnorm.article_network(
        scheme, num_classes=1, in_channels=in_channels, width=values["conv_width"],
        depth=depth, strides=strides, placement="before", residual=beta is not None,
        residual_beta=beta if beta is not None else 1.0, init_std=1.0, seed=seed,
        final_activation="linear", epsilon=1e-5, dtype=values["dtype"])
    for block in network.blocks:
        kernel = block.layer.kernel
        fan_in = float(np.prod(kernel.shape[:3]))
        kernel.assign(kernel * np.sqrt(2.0 / fan_in))  # He init
    return network


def measure(values, network, inputs, direction=None):
    """(gradient along the line (N,), acf, per-layer activity rows)."""
    import tensorflow as tf
    from tfnorm.probes import shattering
    _, gradients, records = shattering.input_gradients(network, inputs, values["batch_mode"])
    if direction is None:
        along = tf.reshape(gradients, [-1])
    else:
        along = tf.reduce_sum(gradients * direction[None], axis=[1, 2, 3])
    along = along.numpy()
    acf = shattering.autocorrelation(along, values["max_lag"])
    layers = []
    # Only the hidden rectifier blocks: the output block is linear.
    for layer, active in enumerate(shattering.activity(records[:-1]), start=1):
        neighbours = shattering.coactivation_rate(active, "neighbours")
        layers.append(dict(layer=layer, active_rate=float(active.mean()),
                           coactivation_inputs=shattering.coactivation_rate(active, "inputs"),
                           coactivation_units=shattering.coactivation_rate(active, "units"),
                           coactivation_neighbours=neighbours,
                           neighbour_persistence=(neighbours / float(active.mean())
                                                  if active.any() else float("nan"))))
    return along, acf, layers


def ensemble_acf(values, build, along, inputs, direction, seed):
    """The across-network autocorrelation of this seed's network (its gradient ``along``)
    and --ensemble - 1 more of the same architecture and depth, or None when off."""
    from tfnorm.probes import shattering
    if not values["ensemble"]:
        return None
    members = [along] + [measure(values, build(seed + ENSEMBLE_STRIDE * k), inputs,
                                 direction)[0] for k in range(1, values["ensemble"])]
    return shattering.ensemble_autocorrelation(np.stack(members), values["max_lag"])


def image_pair(labels, seed):
    """The conv line's two test images for ``seed``: image ``seed`` (mod the test set) and
    the next one of another class, so every seed crosses between two different digits."""
    first = seed % len(labels)
    later = np.flatnonzero(labels[first + 1:] != labels[first])
    second = first + 1 + int(later[0]) if later.size else int(
        np.flatnonzero(labels != labels[first])[0])
    return first, second


def lines(ctx):
    """family -> (build(scheme, beta, depth, seed), inputs, positions, direction); the conv
    line goes through this seed's image pair."""
    from tfnorm.probes import shattering
    values = ctx.values
    out = {"dense": (lambda *a: dense_network(values, *a),
                     shattering.line_inputs(values["num_points"], values["low"],
                                            values["high"], values["dtype"]),
                     np.linspace(values["low"], values["high"], values["num_points"]), None)}
    if values["conv"]:
        # Two test images of different classes, so the line crosses between digits/objects.
        first, second = image_pair(ctx.dataset.test_labels, ctx.seed)
        images = ctx.dataset.test_images.astype(values["dtype"]) / 255.0
        line, t, direction = shattering.image_line(images[first], images[second],
                                                   values["num_points"], values["low"],
                                                   values["high"])
        out["conv"] = (lambda *a: conv_network(values, *a, in_channels=images.shape[-1]),
                       line, t.numpy(), direction)
    return out


def run(ctx):
    """One architecture and seed: every depth of each family."""
    scheme, beta = ctx.settings["architectures"][ctx.unit]
    for family, (build, inputs, positions, direction) in lines(ctx).items():
        depths = ctx.settings["depths" if family == "dense" else "conv_depths"]
        for depth in depths:
            along, acf, layers = measure(ctx.values, build(scheme, beta, depth, ctx.seed),
                                         inputs, direction)
            ensemble = ensemble_acf(ctx.values, lambda seed: build(scheme, beta, depth, seed),
                                    along, inputs, direction, ctx.seed)
            key = dict(family=family, depth=depth)
            pair = image_pair(ctx.dataset.test_labels, ctx.seed) if family == "conv" else ()
            row = dict(key, image_pair="-".join(map(str, pair)), neighbour_correlation=acf[1],
                       gradient_std=float(np.std(along)))
            acf_rows = [dict(key, lag=lag, autocorrelation=float(r)) for lag, r in enumerate(acf)]
            if ensemble is not None:
                row["ensemble_neighbour_correlation"] = float(ensemble[1])
                for acf_row, r in zip(acf_rows, ensemble):
                    acf_row["ensemble_autocorrelation"] = float(r)
            ctx.add("correlation.csv", [row])
            ctx.add("autocorrelation.csv", acf_rows)
            ctx.add("coactivation.csv", [dict(key, **row) for row in layers])
            if ctx.seed == ctx.seeds[0]:
                ctx.add("gradients.csv", [dict(key, position=float(p), gradient=float(g))
                                          for p, g in zip(positions, along)])
            logging.info("%s %s seed %d depth %d: neighbour correlation %.3f", family,
                         ctx.unit, ctx.seed, depth, acf[1])


def summarize(ctx):
    """Per architecture, seed, family and depth: the neighbour correlation (and across
    networks, with --ensemble), the references 1/2^L and 1/sqrt(L), the co-activation
    rate's mean over layers, and the product over layers of the neighbour persistence."""
    out = []
    for row in ctx.tables["correlation.csv"]:
        where = {k: row[k] for k in ("architecture", "seed", "family", "depth")}
        layers = ctx.rows("coactivation.csv", **where)
        coact = [r["coactivation_inputs"] for r in layers]
        summary = dict(where, reference_2_pow_minus_L=2.0 ** -row["depth"],
                       reference_1_over_sqrt_L=1.0 / np.sqrt(row["depth"]),
                       neighbour_correlation=row["neighbour_correlation"])
        if "ensemble_neighbour_correlation" in row:
            summary["ensemble_neighbour_correlation"] = row["ensemble_neighbour_correlation"]
        summary.update(
            coactivation_inputs=float(np.mean(coact)) if coact else float("nan"),
            coactivation_gap=abs(float(np.mean(coact)) - 0.25) if coact else float("nan"),
            persistence_product=(float(np.prod([r["neighbour_persistence"] for r in layers]))
                                 if layers else float("nan")))
        out.append(summary)
    return out


STUDY = study.Study(
    name="shattered", define_flags=define_flags, check=check, run=run, summarize=summarize,
    draw=shattered_figures.draw, key="architecture", finish=shattered_verdicts.finish,
    claims=shattered_verdicts.claims, extra_verdicts=shattered_verdicts.decay_verdicts,
    units=lambda ctx: list(ctx.settings["architectures"]),
    summary_keys=("family", "depth", "reference_2_pow_minus_L", "reference_1_over_sqrt_L"),
    needs_data=lambda values: values["conv"],
    shared=study.shared(training=False, out_dir="runs/shattered", seeds=5))


def main(argv):
    study.main(STUDY, argv)


if __name__ == "__main__":
    study.define_flags(STUDY)
    cli.run(main)
