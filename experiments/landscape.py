"""The loss landscape along the gradient (Santurkar et al. 2018, section 3.1, Figure 4).

Trains the article network under each scheme with SGD (as the paper does) and, every
--every steps, before the step and on its batch, moves along the gradient at --points
step sizes spanning [0.5, 4] x --learning_rate (tfnorm.probes.landscape): the range of
the loss, the gradient predictiveness ||grad(x) - grad(x')|| and the effective
beta-smoothness max ||grad(x) - grad(x')|| / ||x - x'||. The weights are restored after
each probe and running statistics are never touched by it, so training goes on as if
the probe had not been there.

    python -m experiments.landscape                # digits, ~2 minutes on 2 cores
    python -m experiments.landscape --dataset=stl10 --stl10_archive=/path/stl10_binary.tar.gz

Outputs in --out_dir: landscape.csv (one row per probe), landscape_points.csv (one row
per point along each line), accuracy.csv, summary.csv, config.json, landscape.png.
"""

import numpy as np
from absl import app, logging

from experiments import study
from tfnorm import optimizers
from tfnorm.probes import landscape

FLAGS = study.FLAGS

study.define_data_flags(out_dir="runs/landscape")
study.define_training_flags(epochs=5, batch_size=20, optimizer="sgd", learning_rate=0.1,
                            schemes="none,batch,layer,instance,noisybatch")
study.flags.DEFINE_integer("points", 8, "Step sizes along the gradient, spread evenly over "
                           "[0.5, 4] x the learning rate.")
study.flags.DEFINE_float("init_std", 0.05, "Std of the weights' normal init (0.05: the "
                        "article's; without normalization SGD then barely moves).")
study.flags.DEFINE_integer("every", 10, "Probe every this many training steps.")


def run_scheme(scheme, dataset, sizes):
    network = study.build_network(scheme, dataset, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                  init_std=FLAGS.init_std)
    trainer = study.make_trainer(network, optimizers.make_optimizer(FLAGS.optimizer,
                                                                    FLAGS.learning_rate))
    probe = landscape.NetworkLandscape(network)
    rows, point_rows = [], []

    def step_fn(step, epoch, images, labels):
        if step % FLAGS.every == 0:
            line = probe.probe(images, labels, sizes)
            loss_min, loss_max = landscape.loss_range(line)
            predict_min, predict_max = landscape.predictiveness_range(line)
            rows.append(dict(scheme=scheme, step=step, epoch=epoch, loss=line.loss,
                             loss_min=loss_min, loss_max=loss_max,
                             predictiveness_min=predict_min, predictiveness_max=predict_max,
                             smoothness=landscape.effective_smoothness(line),
                             gradient_norm=line.gradient_norm))
            for eta, loss, gradient_distance, distance in zip(
                    line.step_sizes, line.losses, line.gradient_distances, line.distances):
                point_rows.append(dict(scheme=scheme, step=step, step_size=float(eta),
                                       loss=float(loss), gradient_distance=float(gradient_distance),
                                       distance=float(distance)))
        return trainer.train_step(images, labels)

    _, epoch_rows = study.train_and_evaluate(scheme, trainer, dataset, epochs=FLAGS.epochs,
                                             batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                             log=logging.info, step_fn=step_fn)
    return rows, point_rows, epoch_rows


def draw(rows, schemes):
    """Figure 4's three panels: loss band, predictiveness band, smoothness, per scheme."""
    colors = study.scheme_colors(schemes)
    fig, axes = study.figure(1, 3, width=4.6, height=3.4)
    panels = [("loss_min", "loss_max", "loss landscape (loss along the line)", "linear"),
              ("predictiveness_min", "predictiveness_max",
               "gradient predictiveness ||g(x) - g(x')||", "log"),
              ("smoothness", None, "effective beta-smoothness", "log")]
    for ax, (low_key, high_key, title, scale) in zip(axes[0], panels):
        for scheme in schemes:
            mine = [r for r in rows if r["scheme"] == scheme]
            steps = [r["step"] for r in mine]
            low = np.array([r[low_key] for r in mine])
            if high_key is None:
                ax.plot(steps, low, color=colors[scheme], label=scheme, lw=1)
            else:
                high = np.array([r[high_key] for r in mine])
                ax.fill_between(steps, low, high, color=colors[scheme], alpha=0.35, lw=0,
                                label=scheme)
        ax.set(title=title, xlabel="step", yscale=scale)
        ax.title.set_fontsize(9)
    axes[0][0].legend(fontsize=7)
    return fig


def summarize(rows, schemes):
    """Per scheme, medians over the probes (the README's numbers)."""
    lines = []
    for scheme in schemes:
        mine = [r for r in rows if r["scheme"] == scheme]
        lines.append(dict(
            scheme=scheme, probes=len(mine),
            median_loss_spread=float(np.median([r["loss_max"] - r["loss_min"] for r in mine])),
            median_predictiveness_max=float(np.median([r["predictiveness_max"] for r in mine])),
            median_smoothness=float(np.median([r["smoothness"] for r in mine])),
            median_gradient_norm=float(np.median([r["gradient_norm"] for r in mine]))))
    return lines


def check_flags():
    schemes = study.check_training_flags()
    study.check_data_flags()
    study.require_positive(FLAGS.every, "--every")
    study.require_positive(FLAGS.init_std, "--init_std")
    study.require(FLAGS.points is not None and FLAGS.points >= 2,
                  f"--points must be at least 2, got {FLAGS.points}")
    return schemes


def main(argv):
    if len(argv) > 1:
        study.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    schemes = study.run_checked(check_flags)
    dataset = study.run_checked(study.load_data)
    study.write_config(FLAGS.out_dir)
    sizes = landscape.step_sizes(FLAGS.learning_rate, FLAGS.points)
    rows, point_rows, epoch_rows = [], [], []
    for scheme in schemes:
        scheme_rows, scheme_points, scheme_epochs = study.run_checked(run_scheme, scheme,
                                                                      dataset, sizes)
        rows += scheme_rows
        point_rows += scheme_points
        epoch_rows += scheme_epochs
    study.write_csv(FLAGS.out_dir, "landscape.csv", rows)
    study.write_csv(FLAGS.out_dir, "landscape_points.csv", point_rows)
    study.write_csv(FLAGS.out_dir, "accuracy.csv", epoch_rows)
    summary = summarize(rows, schemes)
    study.write_csv(FLAGS.out_dir, "summary.csv", summary)
    for line in summary:
        logging.info("%-10s median loss spread %.3g, predictiveness %.3g, smoothness %.3g, "
                     "|g| %.3g", line["scheme"], line["median_loss_spread"],
                     line["median_predictiveness_max"], line["median_smoothness"],
                     line["median_gradient_norm"])
    path = study.save_figure(draw(rows, schemes), FLAGS.out_dir, "landscape.png")
    logging.info("wrote %s", path)


if __name__ == "__main__":
    app.run(main)
