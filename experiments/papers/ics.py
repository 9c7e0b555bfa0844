"""Internal covariate shift (Santurkar et al. 2018, Definition 2.1) per scheme.

Trains the article network under each scheme and seed and, every --every steps (steps
1, 1 + every, ...), measures for the layers in --layers: G, the gradient of the layer's
weights on the step's batch, and G', the same after the earlier layers took this step's
update; writes ||G - G'||_2 and cos(G, G') (tfnorm.probes.ics, the paper's two measures)
and ||G - G'|| / ||G|| (ours), and draws a figure like the paper's Figure 3 (mean over
seeds, 95% t band). The paper's setting by default: BN before the ReLU with gamma/beta
(--placement=before --affine), SGD at lr 0.1.

    python -m experiments.papers.ics                      # digits
    python -m experiments.papers.ics --dataset=stl10 --stl10_archive=/path/stl10_binary.tar.gz

Outputs in --out_dir: ics.csv (one row per seed, probed step and layer), accuracy.csv (per
seed and epoch), summary.csv (medians per scheme, seed and layer), summary_over_seeds.csv,
verdicts.csv and verdicts.md (the paper's sentence per layer, paired by seed), config.json,
ics.png.
"""

import numpy as np
from absl import flags

from experiments import cli, study
from tfnorm.analysis import verdicts

DEPTH = 6  # the article network's layers


def define_flags(flag_values):
    flags.DEFINE_string("layers", "2,4,6", "Comma-separated layers (1 = the first conv) "
                        "whose ICS is measured.", flag_values=flag_values)
    study.define_placement_flag(flag_values)


def parse_layers(text, depth=DEPTH):
    """'2,4' -> [2, 4] (1-based layers)."""
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise cli.ConfigError(f"--layers: expected comma-separated integers, got {text!r}") \
            from None
    for layer in layers:
        if not 1 <= layer <= depth:
            raise cli.ConfigError(f"--layers: layer {layer} is outside the network's layers "
                                  f"1..{depth}")
    if len(set(layers)) != len(layers):
        raise cli.ConfigError(f"--layers: a layer is named twice in {text!r}")
    return layers


def check(values):
    cli.check_positive(values, "every", "init_std")
    return parse_layers(values["layers"])


def run(ctx):
    from tfnorm.probes import ics
    layers, every = ctx.settings, ctx.values["every"]
    network = ctx.build_network(ctx.unit, init_std=ctx.values["init_std"],
                                placement=ctx.values["placement"], affine=ctx.values["affine"])
    probe = ics.ICSTrainer(network, ctx.optimizer(), [layer - 1 for layer in layers])
    rows = []

    def step_fn(step, epoch, images, labels):
        if (step - 1) % every:
            return probe.train_step(images, labels)
        out = probe.measure_step(images, labels)
        for position, layer in enumerate(layers):
            gradient_norm = float(out["gradient_norm"][position])
            distance = float(out["distance"][position])
            rows.append(dict(step=step, epoch=epoch, layer=layer, distance=distance,
                             cosine=float(out["cosine"][position]),
                             gradient_norm=gradient_norm,
                             shifted_gradient_norm=float(out["shifted_gradient_norm"][position]),
                             relative_distance=distance / gradient_norm if gradient_norm else 0.0,
                             loss=float(out["loss"])))
        return out

    ctx.train(probe, step_fn=step_fn)
    ctx.add("ics.csv", rows)


def summarize(ctx):
    """Per scheme, seed and layer: median distance, relative distance and cosine over the
    probed steps."""
    out = []
    for layer in ctx.settings:
        for scheme in ctx.units:
            for seed in ctx.seeds:
                mine = ctx.rows("ics.csv", scheme=scheme, seed=seed, layer=layer)
                out.append(dict(scheme=scheme, seed=seed, layer=layer, median_distance=float(
                    np.median([r["distance"] for r in mine])),
                    median_relative_distance=float(np.median(
                        [r["relative_distance"] for r in mine])),
                    median_cosine=float(np.median([r["cosine"] for r in mine]))))
    return out


def claims(ctx):
    """Santurkar et al.: "models with BatchNorm have similar, or in some cases worse, ICS",
    on both of the paper's measures (l2 distance larger, cosine smaller) and on ours (the
    distance relative to ||G||, which does not grow with the gradient's scale). Its
    "worse" half is the claim (a difference); "similar" would be an equivalence whose
    margin the paper does not give, so where BN's ICS is smaller the sentence's "similar"
    stays untested."""
    if not {"batch", "none"} <= set(ctx.units):
        return []
    out = []
    for layer in ctx.settings:
        out += [verdicts.difference("BN's ICS is larger than without BN (the paper: "
                                    "'similar or larger'; 'similar' would need a margin, "
                                    "not tested): l2 ||G - G'||", "median_distance",
                                    "batch", "none", +1,
                                    {"layer": layer}, study.SANTURKAR_NOTE),
                verdicts.difference("... cos(G, G') (larger ICS = smaller cosine)",
                                    "median_cosine", "batch", "none", -1, {"layer": layer}),
                verdicts.difference("... ours: ||G - G'|| / ||G||", "median_relative_distance",
                                    "batch", "none", +1, {"layer": layer})]
    return out


def draw(ctx):
    """Accuracy, then per layer ||G - G'|| and cos(G, G') against the step (Figure 3)."""
    colors = study.colors(ctx.units)
    fig, axes = study.figure(1 + len(ctx.settings), 2, width=5.0, height=2.8)
    for scheme in ctx.units:
        epochs = ctx.rows(study.ACCURACY_CSV, scheme=scheme)
        for ax, key in zip(axes[0], ("train_acc", "test_acc")):
            study.band(ax, epochs, "epoch", key, ctx.seeds, scheme, colors[scheme], marker="o",
                       ms=3)
    axes[0][0].set(title="training accuracy", xlabel="epoch")
    axes[0][1].set(title="test accuracy", xlabel="epoch")
    axes[0][0].legend(fontsize=7)
    for row, layer in enumerate(ctx.settings, start=1):
        for scheme in ctx.units:
            mine = ctx.rows("ics.csv", scheme=scheme, layer=layer)
            for ax, key in zip(axes[row], ("distance", "cosine")):
                study.band(ax, mine, "step", key, ctx.seeds, scheme, colors[scheme], lw=1)
        axes[row][0].set(title=f"layer {layer}: ||G - G'||", xlabel="step", yscale="log")
        axes[row][1].set(title=f"layer {layer}: cos(G, G')", xlabel="step", ylim=(-1.05, 1.05))
    return {"ics.png": fig}


STUDY = study.Study(
    name="ics", define_flags=define_flags, check=check, run=run, summarize=summarize,
    draw=draw, summary_keys=("layer",), claims=claims,
    shared=study.shared(out_dir="runs/ics", seeds=5, epochs=5, batch_size=20,
                        optimizer="sgd", learning_rate=0.1, init_std=0.05, every=5, affine=True,
                        schemes="none,batch,layer,instance,noisybatch"))


def main(argv):
    study.main(STUDY, argv)


if __name__ == "__main__":
    study.define_flags(STUDY)
    cli.run(main)
