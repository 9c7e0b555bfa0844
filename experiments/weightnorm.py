"""Weight normalization (Salimans & Kingma 2016) against batch norm and none.

Trains the article network as 'weight' (every conv w = g v/||v|| + b, initialized from
the first batch so each layer's output starts standardized), 'meanonly' (weight norm
plus mean-only batch norm with its bias b, t - mean_B(t) + b, the paper's best), 'batch',
'none', and 'none+ddi' (the init-only ablation: weight norm's data-dependent init copied
into a plain conv with bias, trained without the reparameterization), and draws the
accuracy curves. The paper's placement by default: the normalization before the ReLU
(--placement=before), BN with gamma/beta and mean-only BN with its bias (--affine). Then times one training step of each trained network, interleaved
(every round runs each scheme's steps in a rotated order) on a fixed batch of
--timing_size images, and reports the median time per step relative to 'none' and to
'weight' (the paper: batch norm about 16% slower per step than weight norm).

    python -m experiments.weightnorm               # digits
    python -m experiments.weightnorm --dataset=stl10 --stl10_archive=/path/stl10_binary.tar.gz

Each scheme trains with --seeds seeds; the timing uses the last seed's networks.
Outputs in --out_dir: accuracy.csv (per seed and epoch), steps.csv, summary.csv (final
and best accuracy per scheme and seed), summary_over_seeds.csv, timing.csv (per round and
scheme), timing_summary.csv (median ms per step, relative to none and to weight),
config.json, weightnorm.png.
"""

import time

import numpy as np
from absl import flags

from experiments import cli, study
from tfnorm import schemes as registry
from tfnorm import verdicts

# The init-only ablation: a plain network given weight norm's data-dependent init (the
# kernel g v/||v|| and bias b of the initialized 'weight' network), then trained without
# the reparameterization. It tells the init's share of weight norm's effect.
INIT_ONLY = "none+ddi"


def define_flags(flag_values):
    flags.DEFINE_integer("timing_size", 96, "Image size of the timed steps (96: STL-10's, "
                         "the article's).", flag_values=flag_values)
    flags.DEFINE_integer("timing_rounds", 20, "Interleaved timing rounds.",
                         flag_values=flag_values)
    study.define_placement_flag(flag_values)
    flags.DEFINE_integer("timing_steps", 5, "Timed steps per scheme in each round.",
                         flag_values=flag_values)


def check(values):
    if "none" not in cli.parse_schemes(values["schemes"], VARIANTS):
        raise cli.ConfigError("--schemes: must include none, the timing baseline")
    cli.check_positive(values, "timing_size", "timing_rounds", "timing_steps")
    if INIT_ONLY in cli.parse_schemes(values["schemes"], VARIANTS) and \
            "weight" not in cli.parse_schemes(values["schemes"], VARIANTS):
        raise cli.ConfigError(f"--schemes: {INIT_ONLY} needs weight (it copies its init)")


def build(ctx, scheme):
    return ctx.build_network(scheme, placement=ctx.values["placement"],
                             affine=ctx.values["affine"])


def init_only_network(ctx):
    """A plain network (kernel and bias) holding the data-dependent init of this seed's
    'weight' network: kernel = g v/||v||, bias = b."""
    from tfnorm import norms
    initialized = build(ctx, "weight")
    network = ctx.build_network("none", use_bias=True, placement=ctx.values["placement"])
    for block, source in zip(network.blocks, initialized.blocks):
        layer = source.layer
        kernel, _ = norms.weight_norm_forward(layer.v, layer.g, layer.norm_axes)
        block.layer.kernel.assign(kernel)
        block.layer.bias.assign(layer.bias)
    return network


def run(ctx):
    network = init_only_network(ctx) if ctx.unit == INIT_ONLY else build(ctx, ctx.unit)
    trainer = ctx.trainer(network)
    ctx.add("steps.csv", ctx.train(trainer))
    ctx.cache["trainer"] = trainer  # the last seed's, timed by ``finish``


def time_steps(ctx):
    """Per round and scheme, the mean seconds per training step over --timing_steps steps.

    Every scheme's (last seed's, trained) trainer steps on the same random batch; the
    order of schemes rotates from round to round so that a slow moment of the machine is
    shared out."""
    import tensorflow as tf
    values, schemes = ctx.values, ctx.units
    trainers = {scheme: ctx.caches[scheme]["trainer"] for scheme in schemes}
    rng = np.random.default_rng(values["seed"])
    size, batch_size = values["timing_size"], values["batch_size"]
    images = tf.constant(rng.uniform(0, 1, (batch_size, size, size, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, ctx.dataset.num_classes, batch_size), tf.int32)
    for scheme in schemes:
        for _ in range(3):  # tracing for this image size, and warm-up
            float(trainers[scheme].train_step(images, labels)["loss"])
    rows = []
    for round_index in range(values["timing_rounds"]):
        shift = round_index % len(schemes)
        for scheme in schemes[shift:] + schemes[:shift]:
            start = time.perf_counter()
            for _ in range(values["timing_steps"]):
                out = trainers[scheme].train_step(images, labels)
            float(out["loss"])  # the step has finished
            seconds = (time.perf_counter() - start) / values["timing_steps"]
            rows.append(dict(round=round_index, scheme=scheme, seed=ctx.seeds[-1],
                             seconds_per_step=seconds))
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


def finish(ctx):
    """The timing of the trained networks: timing.csv and timing_summary.csv."""
    rows = ctx.tables["timing.csv"] = time_steps(ctx)
    timing = relative_times(rows, ctx.units, "none")
    # The paper's comparison: each scheme's step time over weight norm's, paired by round.
    against_weight = (relative_times(rows, ctx.units, "weight") if "weight" in ctx.units
                      else {s: (None, float("nan"), []) for s in ctx.units})
    ctx.tables["timing_summary.csv"] = [
        dict(scheme=scheme, seed=ctx.seeds[-1], median_ms_per_step=1000 * timing[scheme][0],
             time_relative_to_none=timing[scheme][1],
             time_relative_to_weight=against_weight[scheme][1]) for scheme in ctx.units]


def timing_verdicts(ctx):
    """The paper: BN about 16% slower per step than weight norm; paired by timing round
    (timing.csv)."""
    if not {"batch", "weight"} <= set(ctx.units):
        return []
    per_round = [dict(r, seed=r["round"]) for r in ctx.tables["timing.csv"]]
    claim = verdicts.difference(
        "BN is slower per step than weight norm (paper: ~16%, CIFAR-10 net on GPU)",
        "seconds_per_step", "batch", "weight", +1,
        note="(pairs: interleaved timing rounds, not seeds; "
             f"{ctx.values['timing_size']}x{ctx.values['timing_size']} images, CPU)")
    return verdicts.decide([claim], per_round)


def claims(ctx):
    """Salimans & Kingma: WN + mean-only BN has the best CIFAR-10 test error (7.31% against
    BN's 8.05%); weight norm trains faster than the plain network; and ours: does the
    reparameterization help beyond its init (weight against the init-only ablation)?"""
    have, out = set(ctx.units), []
    pairs = [("meanonly", "batch", "final_test_acc",
              "WN + mean-only BN has a better test accuracy than BN"),
             ("weight", "none", "final_train_acc", "Weight norm trains faster than none"),
             ("weight", INIT_ONLY, "final_train_acc",
              "ours: weight norm beats its own init without the reparameterization"),
             ("weight", INIT_ONLY, "final_test_acc", "... test accuracy")]
    for a, b, metric, sentence in pairs:
        if {a, b} <= have:
            note = ("(article net on digits, 10 epochs; not the paper's CIFAR-10 net: "
                    "not available offline)") if not out else ""
            out.append(verdicts.difference(sentence, metric, a, b, +1, note=note))
    return out


def draw(ctx):
    colors = study.colors(ctx.units)
    timing = relative_times(ctx.tables["timing.csv"], ctx.units, "none")
    fig, axes = study.figure(1, 3, width=4.6, height=3.4)
    for scheme in ctx.units:
        mine = ctx.rows(study.ACCURACY_CSV, scheme=scheme)
        for ax, key in zip(axes[0], ("train_acc", "test_acc")):
            study.band(ax, mine, "epoch", key, ctx.seeds, scheme, colors[scheme], marker="o",
                       ms=3)
    axes[0][0].set(title="training accuracy", xlabel="epoch", ylim=(0, 1))
    axes[0][1].set(title="test accuracy", xlabel="epoch", ylim=(0, 1))
    axes[0][0].legend(fontsize=7)
    ax = axes[0][2]
    ax.boxplot([timing[s][2] for s in ctx.units], showfliers=False)
    ax.set_xticks(range(1, len(ctx.units) + 1), ctx.units)
    for i, scheme in enumerate(ctx.units, start=1):
        ax.annotate(f"{timing[scheme][1]:.2f}", (i, timing[scheme][1]), xytext=(8, 0),
                    textcoords="offset points", fontsize=8, va="center")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    size = ctx.values["timing_size"]
    ax.set(title=f"time per step / none's (interleaved rounds, {size}x{size})")
    for a in axes[0]:
        a.title.set_fontsize(9)
    return {"weightnorm.png": fig}


VARIANTS = registry.SCHEMES + (INIT_ONLY,)

STUDY = study.Study(
    name="weightnorm", define_flags=define_flags, check=check, run=run, finish=finish,
    summarize=study.accuracy_summary, draw=draw, allowed=VARIANTS, claims=claims,
    extra_verdicts=timing_verdicts,
    shared=study.shared(out_dir="runs/weightnorm", seeds=5, epochs=10, batch_size=20,
                        optimizer="article_adam", learning_rate=0.0008, affine=True,
                        schemes=f"weight,meanonly,batch,none,{INIT_ONLY}"))


def main(argv):
    study.main(STUDY, argv)


if __name__ == "__main__":
    study.define_flags(STUDY)
    cli.run(main)
