"""The largest learning rate at which each scheme trains (Santurkar et al. 2018; seed 003:
with batch norm "a larger learning rate can be used to train the model").

For each scheme (default none and batch), seed and rate of the grid --learning_rates,
trains the article network --epochs epochs from the seed's init and batch order (the
same for every rate) and records whether it trained: no non-finite loss, gradient or
weight at any step (the run stops at the first one: diverged) and a last-epoch train
accuracy of at least --min_train_acc. Per scheme and seed, the largest rate of the grid
at which it trained; the claim "BN's largest rate is above none's", paired by seed, on
log2 of the rate (the factor-2 grid evenly spaced). A seed that trains at the top of the
grid has a largest rate of at least that: censored there (tfnorm.analysis.stats: the verdict
stands only if the censoring cannot change it); one that trains at no rate of the grid
is put one grid step below its bottom.

    python -m experiments.papers.lr_range                 # digits
    python -m experiments.papers.lr_range --dataset=stl10 --stl10_archive=/path/stl10_binary.tar.gz

Defaults, fixed before the runs: the paper's setting as far as we run it (BN before the
ReLU with gamma/beta, plain SGD, batch 20), init 0.15 (the project's SGD setting: at the
article's 0.05 'none' does not move under SGD), 3 epochs, the rates 0.05 .. 3.2 by
factors of 2 (half the paper's 0.1 up to 32x it, its 0.5 between 0.4 and 0.8), and
"trains" = last-epoch train accuracy >= 0.5 (five times chance for ten classes; 'none'
at lr 0.1 passes it in its second epoch in results/noisy_bn).

Outputs in --out_dir: grid.csv (per scheme, seed and rate: the step it diverged at (0:
none), last-epoch train and test accuracy (NaN if it diverged), trains 0/1), accuracy.csv
(the epochs of the runs that did not diverge, with their rate), summary.csv (per scheme
and seed: the largest rate that trained, its log2, the number of rates that trained),
summary_over_seeds.csv, verdicts.csv/md, config.json, lr_range.png.
"""

import math

from absl import flags, logging

from experiments import cli, study
from tfnorm.analysis import verdicts

GRID_CSV = "grid.csv"
METRIC = "log2_largest_lr"


def define_flags(flag_values):
    flags.DEFINE_string("learning_rates", "0.05,0.1,0.2,0.4,0.8,1.6,3.2",
                        "Comma-separated learning rates, increasing (the grid).",
                        flag_values=flag_values)
    flags.DEFINE_float("min_train_acc", 0.5, "A run trains if its last-epoch train accuracy "
                       "is at least this and no step was non-finite.",
                       flag_values=flag_values)
    study.define_placement_flag(flag_values)


def parse_rates(text):
    """'0.1,0.2' -> (0.1, 0.2): positive finite numbers, strictly increasing, at least two."""
    try:
        rates = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise cli.ConfigError(f"--learning_rates: expected comma-separated numbers, got "
                              f"{text!r}") from None
    if not all(math.isfinite(r) and r > 0 for r in rates):
        raise cli.ConfigError(f"--learning_rates: every rate must be positive and finite, "
                              f"got {text!r}")
    if len(rates) < 2 or any(b <= a for a, b in zip(rates, rates[1:])):
        raise cli.ConfigError(f"--learning_rates: need at least two rates, strictly "
                              f"increasing, got {text!r}")
    return rates


def check(values):
    cli.check_positive(values, "init_std", "epochs")
    if not 0 <= values["min_train_acc"] <= 1:
        raise cli.ConfigError(f"--min_train_acc={values['min_train_acc']}: must be in [0, 1]")
    return parse_rates(values["learning_rates"])


class Diverged(Exception):
    """A step whose loss, gradients or weights are not finite (at global ``step``)."""

    def __init__(self, step):
        super().__init__(f"not finite at step {step}")
        self.step = step


def checked_step(trainer):
    """A ``loop.train_epoch`` step_fn: ``trainer``'s step, raising Diverged at the first
    non-finite one (a study's own NonFinite would end the whole study)."""
    import numpy as np

    def step(global_step, epoch, images, labels):
        out = trainer.train_step(images, labels)
        if not (np.isfinite(float(out["loss"])) and out["finite"].numpy().all()):
            raise Diverged(global_step)
        return out
    return step


def run(ctx):
    import tfnorm
    from tfnorm import training
    rows = []
    for rate in ctx.settings:
        network = ctx.build_network(ctx.unit, init_std=ctx.values["init_std"],
                                    placement=ctx.values["placement"],
                                    affine=ctx.values["affine"])
        trainer = training.Trainer(network,
                                   tfnorm.make_optimizer(ctx.values["optimizer"], rate))
        row = dict(learning_rate=rate, diverged_at_step=0, final_train_acc=math.nan,
                   final_test_acc=math.nan, trains=0)
        try:
            ctx.train(trainer, step_fn=checked_step(trainer), tag={"learning_rate": rate})
        except Diverged as error:
            row["diverged_at_step"] = error.step
            logging.info("%s seed %d lr %g: diverged at step %d", ctx.unit, ctx.seed, rate,
                         error.step)
        else:
            last = ctx.rows(study.ACCURACY_CSV, scheme=ctx.unit, seed=ctx.seed,
                            learning_rate=rate)[-1]
            row.update(final_train_acc=last["train_acc"], final_test_acc=last["test_acc"],
                       trains=int(last["train_acc"] >= ctx.values["min_train_acc"]))
        rows.append(row)
    ctx.add(GRID_CSV, rows)


def largest_rate(grid_rows, rates):
    """(the largest rate at which a run of ``grid_rows`` trained, or 0 if none did; its
    log2 for the claim: NaN when it is the grid's top (censored: the true largest rate is
    at least that), log2 of the bottom rate / 2 when none trained (below the grid))."""
    trained = [r["learning_rate"] for r in grid_rows if r["trains"]]
    if not trained:
        return 0.0, math.log2(rates[0] / 2)
    largest = max(trained)
    return largest, math.nan if largest >= rates[-1] else math.log2(largest)


def summarize(ctx):
    out = []
    for unit in ctx.units:
        for seed in ctx.seeds:
            mine = ctx.rows(GRID_CSV, scheme=unit, seed=seed)
            if mine:
                largest, log2 = largest_rate(mine, ctx.settings)
                out.append(dict(scheme=unit, seed=seed, largest_lr=largest, **{METRIC: log2},
                                rates_trained=sum(r["trains"] for r in mine)))
    return out


def extra_verdicts(ctx):
    """Seed 003 (Santurkar et al.): BN allows a larger learning rate; censored at the
    grid's top (decided here, not by ``claims``, which takes no censoring)."""
    summary = ctx.tables.get(study.SUMMARY_CSV) or []
    if not summary or not {"batch", "none"} <= set(ctx.units):
        return []
    values, top = ctx.values, ctx.settings[-1]
    claim = verdicts.difference(
        "BN allows a larger learning rate (its largest training rate above none's)", METRIC,
        "batch", "none", +1,
        note=f"log2 of the largest rate of {values['learning_rates']} at which a run "
             f"trains ({values['optimizer']}, {values['epochs']} epochs, last-epoch train "
             f"accuracy >= {values['min_train_acc']:g}, no non-finite step); 'never' = "
             f"trains at every rate: at least {top:g}, censored; {study.SANTURKAR_NOTE}")
    return verdicts.decide([claim], summary, censored_at={METRIC: math.log2(top)})


def draw(ctx):
    """Per scheme against the rate: last-epoch train accuracy (mean over the seeds that
    did not diverge) and the fraction of seeds that train."""
    import numpy as np
    colors = study.colors(ctx.units)
    fig, axes = study.figure(1, 2, width=4.6, height=3.4)
    for unit in ctx.units:
        rows = ctx.rows(GRID_CSV, scheme=unit)
        rates = list(ctx.settings)
        accuracy = [np.mean([r["final_train_acc"] for r in rows if r["learning_rate"] == x
                             and not r["diverged_at_step"]] or [math.nan]) for x in rates]
        trains = [np.mean([r["trains"] for r in rows if r["learning_rate"] == x]) for x in rates]
        axes[0][0].plot(rates, accuracy, marker="o", color=colors[unit], label=unit)
        axes[0][1].plot(rates, trains, marker="o", color=colors[unit], label=unit)
    axes[0][0].axhline(ctx.values["min_train_acc"], color="grey", lw=0.8, ls="--")
    axes[0][0].set(title="last-epoch train accuracy (seeds that did not diverge)",
                   xlabel="learning rate", xscale="log", ylim=(0, 1))
    axes[0][1].set(title="fraction of seeds that train", xlabel="learning rate",
                   xscale="log", ylim=(-0.05, 1.05))
    for ax in axes[0]:
        ax.title.set_fontsize(9)
    axes[0][1].legend(fontsize=7)
    return {"lr_range.png": fig}


STUDY = study.Study(
    name="lr_range", define_flags=define_flags, check=check, run=run, summarize=summarize,
    draw=draw, extra_verdicts=extra_verdicts,
    shared=study.shared(training=False, out_dir="runs/lr_range", seeds=5, epochs=3,
                        batch_size=20, optimizer="sgd", init_std=0.15, affine=True,
                        schemes="none,batch"))


def main(argv):
    study.main(STUDY, argv)


if __name__ == "__main__":
    study.define_flags(STUDY)
    cli.run(main)
