r"""The article's test-accuracy sentences decided where they can be: an over-fitting regime
on digits. His setting (96 px, his Adam at 0.0008, batch 20, his file order) on a small
stratified training set (``--train_per_class`` images of each class, drawn per seed) with
every other image as the test set, the five schemes he trained over seeds, with and
without his evaluation quirk (--per_position_running_stats):

    python -m experiments.article.overfit --out_dir=runs/overfit --results_dir=results/overfit

Trains through experiments.article.compare, once per quirk setting (<out_dir>/quirk_off: every
scheme; <out_dir>/quirk_on: only the schemes the quirk changes, which the registry names:
the others compute the same thing with it, so their quirk_off runs serve both settings),
then writes into --results_dir: each setting's compare outputs (quirk_off/, quirk_on/:
runs.csv, summary.md, figures), accuracy.png (both settings), claims.md and claims.csv
(his sentences decided by the one rule in both settings, with every scheme's
train-minus-test gap), config.json and commands.txt (each command with its wall and CPU
time). A rerun reuses the finished runs. This process imports no TensorFlow.
"""

import os
import resource
import subprocess
import sys
import time

from absl import flags, logging

from experiments import cli
from experiments.article import claims, compare, sentences
from tfnorm import catalog, schemes
from tfnorm.analysis import compare_grid, stats
from tfnorm.run import atomic, rundir

FLAGS = flags.FLAGS
# His setting (REFERENCE.md); the regime's own knobs are flags.
SETTING = dict(dataset="digits", image_size=96, optimizer="article_adam", learning_rate=0.0008,
               batch_size=20, shuffle=False)
SCHEMES = ("none", "batch", "layer", "instance", "boxcox")
QUIRK = "per_position_running_stats"
SIDES = ("quirk_off", "quirk_on")
VIEWS = {"quirk_off": "without the quirk", "quirk_on": "with the quirk"}


def define_flags(flag_values=FLAGS):
    fv = {"flag_values": flag_values}
    cli.define_flags(
        ("seeds", "seed", "out_dir", "train_per_class", "epochs", "eval_every"),
        dict(seeds=5, out_dir="runs/overfit", train_per_class=6, epochs=200, eval_every=10),
        flag_values, helps=dict(
            train_per_class="Training images of each class (drawn with each run's seed); "
                            "10 x N must be whole batches of 20.",
            epochs="Training epochs (his: 200).",
            eval_every="The test pass every N epochs and at the last."))
    flags.DEFINE_integer("jobs", 2, "Processes training at a time "
                         "(experiments.article.compare).", **fv)
    flags.DEFINE_string("results_dir", "results/overfit", "Where the results go.", **fv)


def quirk_schemes():
    """The schemes the quirk changes: those whose registry row takes the option."""
    return [s for s in SCHEMES if QUIRK in schemes.get(s).hyperparameters]


def base_config(flag_values):
    """The runs' shared configuration (every flag but the scheme, seed and out_dir)."""
    return cli.resolve(dict(SETTING, train_per_class=flag_values.train_per_class,
                            epochs=flag_values.epochs, eval_every=flag_values.eval_every,
                            record_every=flag_values.epochs, panels=False, progress=False,
                            seed=flag_values.seed, out_dir=flag_values.out_dir))


def check_flags(flag_values=FLAGS):
    """Every flag checked before any work (one line each); returns the base config."""
    counts = ("seeds", "jobs", "epochs", "eval_every")
    cli.check_positive(cli.flag_values(flag_values, counts), *counts)
    cli.check_seed(flag_values.seed, count=flag_values.seeds)
    base = base_config(flag_values)
    for scheme in SCHEMES:
        cli.validate(dict(base, scheme=scheme), check_out_dir=False)
    for name in ("out_dir", "results_dir"):
        if not flag_values[name].value:
            raise cli.ConfigError(f"--{name}: required")
        cli.check_writable(flag_values[name].value, f"--{name}")
    return base


# What each compare gets: his setting, the regime's flags, the quirk; the rest defaults.
PASSED = ("dataset", "image_size", "optimizer", "learning_rate", "batch_size", "shuffle",
          "epochs", "train_per_class", "eval_every", "record_every", QUIRK, "panels",
          "progress", "schemes", "seeds", "seed", "jobs", "out_dir", "results_dir")


def compare_args(flag_values, side):
    """experiments.article.compare's arguments for one quirk setting (after ``python -m``)."""
    values = dict(base_config(flag_values), **{QUIRK: side == "quirk_on"},
                  schemes=",".join(SCHEMES if side == "quirk_off" else quirk_schemes()),
                  seeds=flag_values.seeds, jobs=flag_values.jobs,
                  out_dir=os.path.join(flag_values.out_dir, side),
                  results_dir=os.path.join(flag_values.results_dir, side))
    return ["experiments.article.compare"] + cli.to_command_line(values, PASSED)


def side_configs(flag_values, side):
    """The configuration of every run of one quirk setting (as compare plans them)."""
    base = dict(base_config(flag_values), **{QUIRK: side == "quirk_on"})
    folder = os.path.join(flag_values.out_dir, side)
    return [dict(base, scheme=scheme, seed=seed, out_dir=compare_grid.run_dir(folder, scheme, seed))
            for scheme in (SCHEMES if side == "quirk_off" else quirk_schemes())
            for seed in range(flag_values.seed, flag_values.seed + flag_values.seeds)]


def timed(args):
    """Run ``python -m args``; (exit code, wall seconds, CPU seconds of it and its workers)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    code = subprocess.run([sys.executable, "-m"] + args).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return code, time.perf_counter() - start, cpu


def views(out_dir):
    """{setting: runs} of both quirk settings: quirk_on takes the quirk_off runs of the
    schemes the quirk does not change. Runs carry sentences.GAP."""
    off = sentences.with_derived(compare_grid.read_runs(os.path.join(out_dir, "quirk_off")))
    on = sentences.with_derived(compare_grid.read_runs(os.path.join(out_dir, "quirk_on")))
    return {"quirk_off": off, "quirk_on": dict(off, **{s: on[s] for s in quirk_schemes()})}


def train_unchanged(found):
    """The largest |train accuracy with - without the quirk| over the runs (0: as built)."""
    off, on = found["quirk_off"], found["quirk_on"]
    return max(abs(on[s][k]["final_train_acc"] - off_row["final_train_acc"])
               for s in quirk_schemes() for k, off_row in off[s].items())


def gap_table(found, epochs):
    """Per setting and scheme: final train, final and best test accuracy, the gap."""
    f = stats.format_interval
    lines = ["| setting | scheme | final train acc | final test acc | best test acc | "
             "gap: train - test | seeds |", "|---|---|---|---|---|---|---|"]
    for side, runs in found.items():
        for scheme in SCHEMES if side == "quirk_off" else quirk_schemes():
            cells = [stats.interval([row[m] for row in runs[scheme].values()])
                     for m in ("final_train_acc", "final_test_acc", "best_test_acc",
                               sentences.GAP)]
            lines.append(f"| {VIEWS[side]} | {scheme} | " + " | ".join(map(f, cells))
                         + f" | {cells[0].n} |")
    (decided,) = compare_grid.decide_runs([sentences.OVERFITS], found["quirk_off"], epochs)
    gap, decided = decided.tested, decided.verdict
    return decided, "\n".join(lines) + (
        f"\n\nThe regime: batch norm's gap minus {sentences.OVERFIT_GAP} is {f(gap)}: {decided} "
        f"(over-fitting is called only where it lies above 0).\n")


def ranking(rows):
    """Which settings support his ranking in full (every pattern claim supported)."""
    pattern = {sentences.PATTERN_TEST.text, sentences.PATTERN_GAP.text}
    verdicts = {}
    for row in rows:
        if row["sentence"] in pattern:
            verdicts.setdefault(row["setting"], []).append(row["verdict"])
    full = [s for s, v in verdicts.items() if all(x == stats.SUPPORTED for x in v)]
    which = " and ".join(full) if full else "neither setting"
    return (f"His ranking (test accuracy batch > layer > instance and the gap batch < layer "
            f"< instance, all four claims supported) holds {which}.")


def write_results(flag_values, base, found, timings):
    results = flag_values.results_dir
    epochs, classes = base["epochs"], catalog.DIGITS_CLASSES
    regime, gaps = gap_table(found, epochs)
    view = {VIEWS[side]: runs for side, runs in found.items()}
    rows, table = claims.side_by_side(sentences.overfit_claims(), view, epochs)
    seeds = sorted(next(iter(found["quirk_off"].values())))
    header = (
        f"# His test-accuracy sentences in an over-fitting regime\n\n"
        f"digits at his setting: {base['image_size']} px, {base['optimizer']} at "
        f"{base['learning_rate']}, batch {base['batch_size']}, file order, {epochs} epochs; "
        f"training set {base['train_per_class']} images of each class "
        f"({classes * base['train_per_class']}, drawn with each run's seed, the same for every "
        f"scheme's seed k), test set every other image "
        f"({catalog.DATASET_IMAGES['digits'] - classes * base['train_per_class']}); the "
        f"test pass every "
        f"{base['eval_every']} epochs and at the last (best test accuracy: the best of "
        f"those). Seeds {', '.join(map(str, seeds))}, paired by seed. With the quirk: layer "
        f"and instance norm evaluated as his notebook did (--{QUIRK}); the other schemes "
        "compute the same with it (their runs serve both settings), and it changes no "
        f"training (largest |train accuracy with - without| over the runs: "
        f"{train_unchanged(found):g}).\n\n"
        "Cells: mean over seeds [95% Student t interval]. Claims (tfnorm.analysis.verdicts): a "
        "difference tests the paired difference (first scheme minus second, seed by seed), "
        "a threshold the scheme's value minus the threshold, each with its 95% interval; "
        "*supported* if it excludes 0 on the claimed side, *contradicted* if on the other, "
        f"*inconclusive* otherwise. epoch_to_95 < 131: reached by epoch 130 ('never' counts "
        f"as {epochs + 1}). {sentences.GAP}: final train minus final test accuracy. His counting "
        "of statistics per layer: batch 16 < layer 20 < instance 320.\n\n")
    text = (header + "## Train - test gap\n\n" + gaps + "\n## The article's sentences\n\n"
            + table + "\n" + ranking(rows) + "\n")
    if regime != stats.SUPPORTED:
        text += ("\nBatch norm's gap is not above 0.2 here: this setting is not the "
                 "over-fitting regime, and cannot decide his test-accuracy sentences.\n")
    atomic.write_text(os.path.join(results, "claims.md"), text)
    atomic.write_csv(os.path.join(results, "claims.csv"), rows)
    atomic.write_json(os.path.join(results, "config.json"),
                      {"flags": {k: v for k, v in cli.identity(base).items()
                                 if k not in ("scheme", "seed")},
                       "seeds": seeds, "schemes": {"quirk_off": list(SCHEMES),
                                                   "quirk_on": quirk_schemes()}})
    given = cli.command_as_given("experiments.article.overfit", flag_values,
                                 ("train_per_class", "epochs", "eval_every", "seeds", "seed",
                                  "jobs", "out_dir", "results_dir"))
    lines = [f"# The over-fitting regime, run from the repository root; {os.cpu_count()} cores, "
             f"load average {timings['load'][0]:.1f} at the start, {os.getloadavg()[0]:.1f} "
             "at the end. CPU: the process and its workers.", given,
             f"# wall {timings['wall']:.0f} s, CPU {timings['cpu']:.0f} s; it ran:"]
    for args, wall, cpu, todo, runs in timings["commands"]:
        lines += [f"python -m {' '.join(args)}",
                  f"# wall {wall:.0f} s, CPU {cpu:.0f} s, {todo} of {runs} runs trained"]
    path = os.path.join(results, "commands.txt")
    if any(command[3] for command in timings["commands"]) or not os.path.exists(path):
        atomic.write_text(path, "\n".join(lines) + "\n")
    else:  # every run reused: the times of the invocation that trained them stay
        logging.info("every run was reused: %s keeps the times of their training", path)
    return regime, rows


def accuracy_figure(flag_values, base):
    """Train and test accuracy of every scheme without the quirk and of the schemes it
    changes with it, from the runs' metrics.csv."""
    import matplotlib.pyplot as plt

    from experiments.article import summary
    from tfnorm.analysis import figures
    curves, dashed = {}, {}
    for side in SIDES:
        configs = side_configs(flag_values, side)
        views = [rundir.view(config["out_dir"], config) for config in configs]
        for scheme, curve in summary.curves(configs, views).items():
            name = scheme if side == "quirk_off" else f"{scheme} with the quirk"
            curves[name] = curve
            if side == "quirk_on":
                dashed[name] = scheme
    figure = figures.accuracy_figure(curves, f"digits, {base['train_per_class']} per class, "
                                     f"mean and 95% interval over {flag_values.seeds} seeds",
                                     dashed=dashed)
    atomic.save_figure(figure, os.path.join(flag_values.results_dir, "accuracy.png"), dpi=100)
    plt.close(figure)


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    base = check_flags(FLAGS)
    load, start = os.getloadavg(), time.perf_counter()
    commands = []
    for side in SIDES:
        configs = side_configs(FLAGS, side)
        todo = sum(not rundir.is_finished(c["out_dir"], c) for c in configs)
        args = compare_args(FLAGS, side)
        code, wall, cpu = timed(args)
        if code:
            cli.fail(f"python -m {' '.join(args)} exited with {code}", code)
        commands.append((args, wall, cpu, todo, len(configs)))
    timings = dict(load=load, commands=commands, wall=time.perf_counter() - start,
                   cpu=sum(command[2] for command in commands))
    found = views(FLAGS.out_dir)
    accuracy_figure(FLAGS, base)
    regime, rows = write_results(FLAGS, base, found, timings)
    logging.info("regime (%s): %s; %s", sentences.OVERFITS.sentence, regime, ranking(rows))
    logging.info("claims: %s", os.path.join(FLAGS.results_dir, "claims.md"))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
