"""Saturation (seed 002): a tanh network with and without normalization.

    python -m experiments.papers.saturation --out_dir=results/saturation

The article's network with tanh after layers 1-5 (a linear last layer), the
normalization placed *before* the activation (conv -> norm -> tanh), as the point
is to keep tanh's input in its responsive range. Each scheme of --schemes is
initialized with every std of --init_stds (0.05 is the article's; a wider one
shows seed 002's wide pre-activations) and trained --epochs on --dataset, once per
seed of --seed, --seed + 1, ... (--seeds).

Before and after training, on the first --probe_size test images in training mode
(batch statistics, as the training step sees them), per tanh layer: histograms of
the activation's input (pre-activation, after the normalization) and of the
activation (histograms.csv; figures preactivation_<std>.png and
activation_<std>.png, after training), the fraction of saturated units,
|tanh| > --saturation_threshold, and the fraction of near-zero gradients, at the
activation's input and passed back to the layer's input, near-zero meaning
|g| < --near_zero_relative x RMS(g) over that layer's tensor (saturation.csv,
saturation.png, mean over seeds; the histogram figures show the first seed). Accuracy
per epoch: accuracy.csv (was training.csv). Every row has its scheme and seed first.
summary.csv: per scheme, init std and seed the saturated fraction (mean over layers) and
the final test accuracy; summary_over_seeds.csv; verdicts.csv/md. Each init std trains at
--learning_rate x std / 0.05 (--lr_matched_to_init; see its help).

Box-Cox is not offered: its input must stay above -1, which a pre-activation does not.
"""

import numpy as np
from absl import flags, logging

from experiments import cli, study
from tfnorm import schemes as registry
from tfnorm.analysis import stats, verdicts

FLAGS = flags.FLAGS
# Box-Cox's input must stay above -1, which a pre-activation does not.
SCHEMES = registry.names(input_domain="any")


def define_flags(flag_values):
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("init_stds", "0.05,0.5",
                        "Std of the N(0, std) kernel init; one run per value, scheme and "
                        "seed.", **fv)
    flags.DEFINE_integer("probe_size", 256, "Test images the measurements are taken on.", **fv)
    flags.DEFINE_float("saturation_threshold", 0.99,
                       "A unit is saturated when |tanh| exceeds this.", **fv)
    flags.DEFINE_float("near_zero_relative", 0.01, "A gradient entry is near zero below "
                       "this times the RMS of its layer's tensor.", **fv)
    flags.DEFINE_bool("lr_matched_to_init", True,
                      "Train each init std at --learning_rate x std / 0.05: a normalization "
                      "without gamma/beta makes its layer scale-invariant, so Adam's step, "
                      "about lr per weight whatever the gradient, moves a layer of weights "
                      "10x larger 10x less in relative terms; matching keeps the relative "
                      "step the same, so the accuracy compares saturation, not step size.",
                      **fv)


def parse_stds(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise cli.ConfigError(f"--init_stds: expected comma-separated numbers, got {text!r}") \
            from None
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise cli.ConfigError(f"--init_stds: every std must be positive, got {text!r}")
    return values


def check(values):
    if values["probe_size"] < 2:
        raise cli.ConfigError(f"--probe_size={values['probe_size']}: must be at least 2")
    if not 0 < values["saturation_threshold"] < 1:
        raise cli.ConfigError(f"--saturation_threshold={values['saturation_threshold']}: "
                              "must be in (0, 1)")
    cli.check_positive(values, "near_zero_relative")
    return parse_stds(values["init_stds"])


def build(ctx, init_std):
    return ctx.build_network(ctx.unit, activation="tanh", placement="before",
                             final_activation="linear", init_std=init_std,
                             groups=ctx.values["groups"])


def learning_rate(values, init_std):
    """The learning rate of the runs at ``init_std`` (see --lr_matched_to_init)."""
    scale = init_std / REFERENCE_STD if values["lr_matched_to_init"] else 1.0
    return values["learning_rate"] * scale


REFERENCE_STD = 0.05  # the article's init, at which --learning_rate applies as given


def restart(trainer, fresh):
    """Give the trainer's network the state of ``fresh`` (same scheme, another init or
    seed) and its optimizer a clean start. Compiling a training step costs far more than
    these runs' training itself; this reuses the compiled step of the same architecture."""
    import tensorflow as tf
    network = trainer.network
    for target, source in zip(network.trainable_variables + network.statistics,
                              fresh.trainable_variables + fresh.statistics):
        target.assign(source)
    for slot in trainer.optimizer.slot_variables():
        slot.assign(tf.zeros_like(slot))
    trainer.optimizer.iterations.assign(0)


def measure(ctx, network, key):
    """Rows of saturation.csv and histograms.csv for the tanh layers of ``network``."""
    from tfnorm.probes import saturation
    values = ctx.values
    _, per_layer = saturation.probe(network, *ctx.cache["probe"], training=True)
    stat_rows, hist_rows = [], []
    for layer, tensors in enumerate(per_layer[:-1], start=1):  # the last layer is linear
        stats = saturation.layer_statistics(tensors, values["saturation_threshold"],
                                            values["near_zero_relative"])
        stat_rows.append(dict(key, layer=layer, **stats))
        for quantity in ("activation_input", "activation"):
            array = np.asarray(getattr(tensors, quantity), np.float64).reshape(-1)
            counts, edges = np.histogram(array, bins=values["bins"])
            hist_rows += [dict(key, layer=layer, quantity=quantity, bin_low=float(lo),
                               bin_high=float(hi), count=int(c))
                          for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    return stat_rows, hist_rows


def run(ctx):
    import tensorflow as tf
    size = ctx.values["probe_size"]
    ctx.cache["probe"] = (tf.constant(ctx.dataset.test_images[:size], tf.float32) / 255.0,
                          tf.constant(ctx.dataset.test_labels[:size], tf.int32))
    import tfnorm
    from tfnorm import training
    for init_std in ctx.settings:
        # One compiled step per learning rate (it is a constant of the traced step).
        rate = learning_rate(ctx.values, init_std)
        if rate not in ctx.cache:
            optimizer = tfnorm.make_optimizer(ctx.values["optimizer"], rate)
            ctx.cache[rate] = training.Trainer(build(ctx, init_std), optimizer)
        else:
            restart(ctx.cache[rate], build(ctx, init_std))
        trainer = ctx.cache[rate]
        for stage in ("init", "trained"):
            if stage == "trained":
                ctx.train(trainer, tag=dict(init_std=init_std))
            stats, hists = measure(ctx, trainer.network, dict(init_std=init_std, stage=stage))
            ctx.add("saturation.csv", stats)
            ctx.add("histograms.csv", hists)
        logging.info("%s seed %d init std %g: saturated per layer %s", ctx.unit, ctx.seed,
                     init_std, [round(r["saturated_frac"], 3) for r in stats])


def plot_histograms(ctx, init_std, quantity):
    """The first seed's histograms after training, per scheme and layer."""
    rows = [r for r in ctx.rows("histograms.csv", seed=ctx.seeds[0], init_std=init_std,
                                stage="trained", quantity=quantity)]
    layer_ids = sorted({r["layer"] for r in rows})
    fig, axes = study.figure(len(ctx.units), len(layer_ids), width=2.4, height=1.7,
                             sharex="col")
    for i, scheme in enumerate(ctx.units):
        for j, layer in enumerate(layer_ids):
            ax = axes[i][j]
            cell = [r for r in rows if r["scheme"] == scheme and r["layer"] == layer]
            edges = [r["bin_low"] for r in cell] + [cell[-1]["bin_high"]]
            ax.stairs([r["count"] for r in cell], edges, fill=True)
            if quantity == "activation_input":
                # Beyond +-atanh(threshold) the unit is saturated.
                edge = np.arctanh(ctx.values["saturation_threshold"])
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
    fig.suptitle(f"{what}, init std {init_std:g}, after training, seed {ctx.seeds[0]}",
                 fontsize=9)
    name = "preactivation" if quantity == "activation_input" else "activation"
    return {f"{name}_{init_std:g}.png": fig}


def plot_saturation(ctx):
    panels = [("saturated_frac",
               f"saturated (|tanh| > {ctx.values['saturation_threshold']:g})"),
              ("near_zero_input_grad_frac", "near-zero gradient at tanh input"),
              ("near_zero_passed_grad_frac", "near-zero passed gradient")]
    fig, axes = study.figure(len(panels), len(ctx.settings), width=4.2, height=2.8)
    colors = study.colors(ctx.units)
    for col, init_std in enumerate(ctx.settings):
        for row, (key, title) in enumerate(panels):
            ax = axes[row][col]
            for scheme in ctx.units:
                for stage, style in (("init", ":"), ("trained", "-")):
                    mine = ctx.rows("saturation.csv", init_std=init_std, scheme=scheme,
                                    stage=stage)
                    layers, values = study.per_seed(mine, "layer", key, ctx.seeds)
                    ax.plot(layers, np.nanmean(values, axis=0), style, marker="o", ms=3,
                            color=colors[scheme], label=scheme if stage == "trained" else None)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("layer")
            ax.set_ylabel("fraction (mean over seeds)")
            ax.set_title(f"{title}\ninit std {init_std:g} (dotted: at init)", fontsize=8)
    axes[0][-1].legend(fontsize=6)
    return {"saturation.png": fig}


def summarize(ctx):
    """Per scheme, init std and seed: the saturated fraction averaged over the tanh layers
    (at init and after training) and the final test accuracy."""
    out = []
    for init_std in ctx.settings:
        for scheme in ctx.units:
            for seed in ctx.seeds:
                where = dict(scheme=scheme, seed=seed, init_std=init_std)
                row = dict(where, learning_rate=learning_rate(ctx.values, init_std))
                for stage in ("init", "trained"):
                    mine = ctx.rows("saturation.csv", stage=stage, **where)
                    row[f"saturated_frac_{stage}"] = float(np.mean(
                        [r["saturated_frac"] for r in mine]))
                epochs = ctx.rows(study.ACCURACY_CSV, **where)
                row["final_test_acc"] = epochs[-1]["test_acc"] if epochs else float("nan")
                out.append(row)
    return out


def claims(ctx):
    """Seed 002: normalization keeps tanh's input in its responsive range (fewer saturated
    units than without) at the wide init; and the accuracy, with the learning rate matched
    to the weight scale (else the comparison measures Adam's relative step)."""
    if "none" not in ctx.units or max(ctx.settings) <= REFERENCE_STD:
        return []
    wide, out = max(ctx.settings), []
    for scheme in ctx.units:
        if scheme == "none":
            continue
        out.append(verdicts.difference(f"{scheme} keeps tanh out of saturation (fewer "
                                       "saturated units than none, after training)",
                                       "saturated_frac_trained", scheme, "none", -1,
                                       {"init_std": wide}))
    if "batch" in ctx.units:
        matched = ("lr x std/0.05" if ctx.values["lr_matched_to_init"] else
                   "lr NOT matched to the weight scale: confounded by Adam's relative step")
        out.append(verdicts.difference("BN trains better than none at the wide init (test "
                                       "accuracy)", "final_test_acc", "batch", "none", +1,
                                       {"init_std": wide}, note=f"({matched})"))
    return out


def lead_verdicts(ctx):
    """Seed 002's "and so" (saturation is what normalization spares the network): if
    saturation costs 'none' accuracy, BN's test-accuracy lead over none is larger at the
    wide init, where none saturates, than at the narrowest, where it hardly does; per seed
    the difference of the two leads (BN - none at each std), its t interval by seed."""
    summary = ctx.tables.get(study.SUMMARY_CSV) or []
    narrow, wide = min(ctx.settings), max(ctx.settings)
    if not summary or not {"batch", "none"} <= set(ctx.units) or narrow == wide:
        return []
    accuracy = {(r["scheme"], r["seed"], r["init_std"]): r["final_test_acc"] for r in summary}

    def lead(std):
        return [accuracy[("batch", s, std)] - accuracy[("none", s, std)] for s in ctx.seeds]

    claim = verdicts.difference(
        f"Seed 002's 'and so' (saturation the cause): BN's lead over none larger at init std "
        f"{wide:g} (none saturated) than at {narrow:g}", "final_test_acc: BN - none", f"lead at {wide:g}",
        f"lead at {narrow:g}", +1, note="(a test of the cause, not an isolation of it: the "
        "init std changes more than saturation)")
    return [verdicts.judge(claim, stats.paired_difference(lead(wide), lead(narrow)),
                           stats.interval(lead(wide)), stats.interval(lead(narrow)))]


def draw(ctx):
    figures = plot_saturation(ctx)
    for init_std in ctx.settings:
        for quantity in ("activation_input", "activation"):
            figures.update(plot_histograms(ctx, init_std, quantity))
    return figures


STUDY = study.Study(
    name="saturation", define_flags=define_flags, check=check, run=run, draw=draw,
    allowed=SCHEMES, summarize=summarize, claims=claims, summary_keys=("init_std",),
    extra_verdicts=lead_verdicts,
    shared=study.shared(out_dir="runs/saturation", seeds=5, epochs=3, batch_size=20,
                        optimizer="adam", learning_rate=0.0008, also=("groups", "bins"),
                        schemes="none,batch,layer,instance,group,weight"))


def main(argv):
    study.main(STUDY, argv)


if __name__ == "__main__":
    study.define_flags(STUDY)
    cli.run(main)
