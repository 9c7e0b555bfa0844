"""Shattered gradients (Balduzzi et al. 2017): the gradient of a network's output
w.r.t. its input along a 1-D line of inputs, against depth.

    python -m experiments.shattered --out_dir=results/shattered

Fully connected networks (input 1, width 200, output 1, ReLU, He init as in the paper;
biases N(0, --bias_std^2), our choice: see the flag) at every depth of --depths, on 256
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
version beside it), the decay fits against depth (decay_fit.csv) and the verdicts
(verdicts.csv/md; experiments/shattered_verdicts.py).
"""


import numpy as np
from absl import flags, logging

from experiments import cli, shattered_verdicts, study

ARCHITECTURES = ("plain", "batch", "resnet", "resnet_batch")
BATCH_MODES = ("line_statistics", "train")  # tfnorm.probes.shattering.BATCH_MODES
BRANCHES = ("linear_last", "relu_last")

FAMILIES = ("dense", "conv")


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
        layers.append(dict(layer=layer, active_rate=float(active.mean()),
                           coactivation_inputs=shattering.coactivation_rate(active, "inputs"),
                           coactivation_units=shattering.coactivation_rate(active, "units")))
    return along, acf, layers


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
            key = dict(family=family, depth=depth)
            pair = image_pair(ctx.dataset.test_labels, ctx.seed) if family == "conv" else ()
            ctx.add("correlation.csv", [dict(key, image_pair="-".join(map(str, pair)),
                                             neighbour_correlation=acf[1],
                                             gradient_std=float(np.std(along)))])
            ctx.add("autocorrelation.csv", [dict(key, lag=lag, autocorrelation=float(r))
                                            for lag, r in enumerate(acf)])
            ctx.add("coactivation.csv", [dict(key, **row) for row in layers])
            if ctx.seed == ctx.seeds[0]:
                ctx.add("gradients.csv", [dict(key, position=float(p), gradient=float(g))
                                          for p, g in zip(positions, along)])
            logging.info("%s %s seed %d depth %d: neighbour correlation %.3f", family,
                         ctx.unit, ctx.seed, depth, acf[1])


def summarize(ctx):
    """Per architecture, seed, family and depth: the neighbour correlation, the
    references 1/2^L and 1/sqrt(L), and the co-activation rate's mean over layers."""
    out = []
    for row in ctx.tables["correlation.csv"]:
        where = {k: row[k] for k in ("architecture", "seed", "family", "depth")}
        coact = [r["coactivation_inputs"] for r in ctx.rows("coactivation.csv", **where)]
        out.append(dict(where, reference_2_pow_minus_L=2.0 ** -row["depth"],
                        reference_1_over_sqrt_L=1.0 / np.sqrt(row["depth"]),
                        neighbour_correlation=row["neighbour_correlation"],
                        coactivation_inputs=float(np.mean(coact)) if coact else float("nan"),
                        coactivation_gap=abs(float(np.mean(coact)) - 0.25) if coact
                        else float("nan")))
    return out


# ----------------------------------------------------------------------------
# Figures


def families(ctx):
    return [f for f in FAMILIES if ctx.rows("correlation.csv", family=f)]


def plot_gradients(ctx, family):
    rows = ctx.rows("gradients.csv", family=family, seed=ctx.seeds[0])
    available = sorted({r["depth"] for r in rows})
    depths = [d for d in ctx.settings["figure_depths"] if d in available] or available[-4:]
    fig, axes = study.figure(len(depths), len(ctx.units), width=3.2, height=2.2, sharex=True)
    for col, label in enumerate(ctx.units):
        for row, depth in enumerate(depths):
            ax = axes[row][col]
            points = [(r["position"], r["gradient"]) for r in rows
                      if (r["architecture"], r["depth"]) == (label, depth)]
            ax.plot(*np.array(points).T, lw=0.8)
            ax.set_title(f"{label}, depth {depth}", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == len(depths) - 1:
                ax.set_xlabel("input x" if family == "dense" else "line position t", fontsize=8)
            if col == 0:
                ax.set_ylabel("df/dx" if family == "dense" else "df(x(t))/dt", fontsize=8)
    fig.suptitle(f"{family} nets: gradient of the output along the line (seed "
                 f"{ctx.seeds[0]})", fontsize=10)
    return fig


def plot_autocorrelation(ctx, family):
    import matplotlib
    fig, axes = study.figure(1, len(ctx.units), width=3.2, height=2.8, sharey=True)
    cmap = matplotlib.colormaps["viridis"]
    for ax, label in zip(axes[0], ctx.units):
        rows = ctx.rows("autocorrelation.csv", family=family, architecture=label)
        depths = sorted({r["depth"] for r in rows})
        for i, depth in enumerate(depths):
            lags, values = study.per_seed([r for r in rows if r["depth"] == depth], "lag",
                                          "autocorrelation", ctx.seeds)
            with np.errstate(all="ignore"):
                ax.plot(lags, np.nanmean(values, axis=0), lw=1, label=f"L={depth}",
                        color=cmap(i / max(1, len(depths) - 1)))
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("lag (points)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("autocorrelation of df/dx (mean over seeds)", fontsize=8)
    axes[0][-1].legend(fontsize=6)
    return fig


def plot_correlation(ctx):
    import matplotlib.ticker
    names = families(ctx)
    colors = study.colors(ctx.units)
    fig, axes = study.figure(1, len(names), width=5.0, height=3.8)
    for ax, family in zip(axes[0], names):
        rows = ctx.rows(study.OVER_SEEDS_CSV, family=family)
        for label in ctx.units:
            mine = [r for r in rows if r["architecture"] == label]
            depth = np.array([r["depth"] for r in mine])
            ax.plot(depth, [r["neighbour_correlation_mean"] for r in mine], "o-", ms=3,
                    color=colors[label], label=label)
            low = np.array([r["neighbour_correlation_low"] for r in mine], float)
            high = np.array([r["neighbour_correlation_high"] for r in mine], float)
            shown = np.isfinite(low) & np.isfinite(high)
            ax.fill_between(depth[shown], low[shown], high[shown], color=colors[label],
                            alpha=0.15)
        depth = np.array(sorted({r["depth"] for r in rows}), float)
        ax.plot(depth, 2.0 ** -depth, "k--", lw=1, label="$1/2^L$")
        ax.plot(depth, 1 / np.sqrt(depth), "k:", lw=1, label=r"$1/\sqrt{L}$")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_xticks(depth)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set(xlabel="depth L", ylabel="correlation of neighbours' gradients")
        ax.set_title(f"{family} nets (mean over seeds, 95% t interval)", fontsize=9)
        ax.legend(fontsize=6)
    return fig


def plot_coactivation(ctx):
    names = families(ctx)
    colors = study.colors(ctx.units)
    fig, axes = study.figure(2, len(names), width=5.0, height=3.0)
    for col, family in enumerate(names):
        rows = ctx.rows("coactivation.csv", family=family)
        deepest = max(r["depth"] for r in rows)
        for row, (key, title) in enumerate([("coactivation_inputs", "co-activation rate"),
                                            ("active_rate", "active rate")]):
            ax = axes[row][col]
            for label in ctx.units:
                mine = [r for r in rows if r["architecture"] == label and r["depth"] == deepest]
                layers, values = study.per_seed(mine, "layer", key, ctx.seeds)
                ax.plot(layers, np.nanmean(values, axis=0), color=colors[label], lw=1,
                        label=label)
            ax.axhline(0.25 if row == 0 else 0.5, color="k", ls="--", lw=0.8,
                       label="1/4" if row == 0 else "1/2")
            ax.set(ylim=(0, 1), xlabel="layer", ylabel=title)
            ax.set_title(f"{family} nets of depth {deepest}", fontsize=9)
            ax.legend(fontsize=6)
    return fig


def draw(ctx):
    figures = {}
    for family in families(ctx):
        figures[f"gradients_{family}.png"] = plot_gradients(ctx, family)
        figures[f"autocorrelation_{family}.png"] = plot_autocorrelation(ctx, family)
    figures["neighbour_correlation.png"] = plot_correlation(ctx)
    figures["coactivation.png"] = plot_coactivation(ctx)
    return figures


STUDY = study.Study(
    name="shattered", define_flags=define_flags, check=check, run=run, summarize=summarize,
    draw=draw, key="architecture", finish=shattered_verdicts.finish,
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
