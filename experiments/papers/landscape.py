"""The loss landscape along the gradient (Santurkar et al. 2018, section 3.1, Figure 4).

Trains the article network under each scheme and seed with SGD (as the paper does) and,
every --every steps (steps 1, 1 + every, ...), before the step and on its batch, moves along the gradient at --points
step sizes spanning [0.5, 4] x --learning_rate (tfnorm.probes.landscape): the range of
the loss, the gradient predictiveness ||grad(x) - grad(x')|| and the effective
beta-smoothness max ||grad(x) - grad(x')|| / ||x - x'||. The weights are restored after
each probe and running statistics are never touched by it, so training goes on as if
the probe had not been there.

    python -m experiments.papers.landscape                # digits
    python -m experiments.papers.landscape --dataset=stl10 --stl10_archive=/path/stl10_binary.tar.gz

The paper's setting by default: BN before the ReLU with gamma/beta (--placement=before
--affine), SGD at lr 0.1. The loss range is given with L(x) itself (the paper's) and over
the line's points only.

Outputs in --out_dir: landscape.csv (one row per seed and probe), landscape_points.csv
(one row per point along each line), accuracy.csv, summary.csv (medians per scheme and
seed), summary_over_seeds.csv, verdicts.csv/md, config.json, landscape.png (mean over seeds).
"""

import numpy as np
from absl import flags

from experiments import cli, study
from tfnorm.analysis import verdicts


def define_flags(flag_values):
    flags.DEFINE_integer("points", 8, "Step sizes along the gradient, spread evenly over "
                         "[0.5, 4] x the learning rate.", flag_values=flag_values)
    study.define_placement_flag(flag_values)


def check(values):
    cli.check_positive(values, "every", "init_std")
    if not values["points"] >= 2:
        raise cli.ConfigError(f"--points={values['points']}: must be at least 2")


def run(ctx):
    from tfnorm.probes import landscape
    every = ctx.values["every"]
    sizes = landscape.step_sizes(ctx.values["learning_rate"], ctx.values["points"])
    network = ctx.build_network(ctx.unit, init_std=ctx.values["init_std"],
                                placement=ctx.values["placement"], affine=ctx.values["affine"])
    trainer = ctx.trainer(network)
    probe = landscape.NetworkLandscape(network)
    rows, point_rows = [], []

    def step_fn(step, epoch, images, labels):
        if (step - 1) % every == 0:
            line = probe.probe(images, labels, sizes)
            loss_min, loss_max = landscape.loss_range(line)
            # The paper's range along the line starts at x itself (step size 0).
            with_x_min, with_x_max = min(loss_min, float(line.loss)), max(loss_max, float(line.loss))
            predict_min, predict_max = landscape.predictiveness_range(line)
            rows.append(dict(step=step, epoch=epoch, loss=line.loss,
                             loss_min=loss_min, loss_max=loss_max,
                             loss_with_x_min=with_x_min, loss_with_x_max=with_x_max,
                             predictiveness_min=predict_min, predictiveness_max=predict_max,
                             smoothness=landscape.effective_smoothness(line),
                             gradient_norm=line.gradient_norm))
            for eta, loss, gradient_distance, distance in zip(
                    line.step_sizes, line.losses, line.gradient_distances, line.distances):
                point_rows.append(dict(step=step, step_size=float(eta), loss=float(loss),
                                       gradient_distance=float(gradient_distance),
                                       distance=float(distance)))
        return trainer.train_step(images, labels)

    ctx.train(trainer, step_fn=step_fn)
    ctx.add("landscape.csv", rows)
    ctx.add("landscape_points.csv", point_rows)


def draw(ctx):
    """Figure 4's three panels: loss band, predictiveness band, smoothness, per scheme
    (each the mean over seeds)."""
    colors = study.colors(ctx.units)
    fig, axes = study.figure(1, 3, width=4.6, height=3.4)
    panels = [("loss_with_x_min", "loss_with_x_max", "loss landscape (loss along the line, "
               "with L(x))", "linear"),
              ("predictiveness_min", "predictiveness_max",
               "gradient predictiveness ||g(x) - g(x')||", "log"),
              ("smoothness", None, "effective beta-smoothness", "log")]
    for ax, (low_key, high_key, title, scale) in zip(axes[0], panels):
        for scheme in ctx.units:
            mine = ctx.rows("landscape.csv", scheme=scheme)
            steps, low = study.per_seed(mine, "step", low_key, ctx.seeds)
            if high_key is None:
                ax.plot(steps, np.nanmean(low, axis=0), color=colors[scheme], label=scheme,
                        lw=1)
            else:
                _, high = study.per_seed(mine, "step", high_key, ctx.seeds)
                ax.fill_between(steps, np.nanmean(low, axis=0), np.nanmean(high, axis=0),
                                color=colors[scheme], alpha=0.35, lw=0, label=scheme)
        ax.set(title=title, xlabel="step", yscale=scale)
        ax.title.set_fontsize(9)
    axes[0][0].legend(fontsize=7)
    return {"landscape.png": fig}


def summarize(ctx):
    """Per scheme and seed, medians over the probes (the README's numbers)."""
    lines = []
    for scheme in ctx.units:
        for seed in ctx.seeds:
            mine = ctx.rows("landscape.csv", scheme=scheme, seed=seed)
            lines.append(dict(
                scheme=scheme, seed=seed, probes=len(mine),
                median_loss_spread=float(np.median([r["loss_max"] - r["loss_min"]
                                                    for r in mine])),
                median_loss_spread_with_x=float(np.median(
                    [r["loss_with_x_max"] - r["loss_with_x_min"] for r in mine])),
                median_predictiveness_max=float(np.median([r["predictiveness_max"]
                                                           for r in mine])),
                median_smoothness=float(np.median([r["smoothness"] for r in mine])),
                median_gradient_norm=float(np.median([r["gradient_norm"] for r in mine]))))
    return lines


def claims(ctx):
    """Santurkar et al., Figure 4: with BN the loss changes less along the gradient, the
    gradient is more predictive and the effective beta-smoothness is smaller."""
    if not {"batch", "none"} <= set(ctx.units):
        return []
    return [verdicts.difference("BN: smaller loss variation along the gradient (range over "
                                "the line, with L(x))", "median_loss_spread_with_x", "batch",
                                "none", -1, note=study.SANTURKAR_NOTE),
            verdicts.difference("... (range over the line's points only, ours)",
                                "median_loss_spread", "batch", "none", -1),
            verdicts.difference("BN: more predictive gradient (max ||g(x) - g(x')|| "
                                "smaller)", "median_predictiveness_max", "batch", "none", -1),
            verdicts.difference("BN: smaller effective beta-smoothness", "median_smoothness",
                                "batch", "none", -1)]


STUDY = study.Study(
    name="landscape", define_flags=define_flags, check=check, run=run, summarize=summarize,
    draw=draw, claims=claims,
    shared=study.shared(out_dir="runs/landscape", seeds=5, epochs=5, batch_size=20,
                        optimizer="sgd", learning_rate=0.1, init_std=0.05, every=10, affine=True,
                        schemes="none,batch,layer,instance,noisybatch"))


def main(argv):
    study.main(STUDY, argv)


if __name__ == "__main__":
    study.define_flags(STUDY)
    cli.run(main)
