r"""Does the article notebook's evaluation quirk lower the test accuracy? Pairs two compare
directories trained with the same seeds, one without and one with
--per_position_running_stats, seed by seed, and decides per scheme the claim "the quirk
lowers the scheme's final test accuracy" on the 95% interval of the paired difference
(on - off; tfnorm.analysis.stats.paired_difference and verdict).

    python -m experiments.article.compare --schemes=batch,layer,instance --seeds=5 \
        --image_size=96 --optimizer=article_adam --learning_rate=0.0008 --epochs=20 \
        --out_dir=runs/quirk_off
    python -m experiments.article.compare ... --per_position_running_stats --out_dir=runs/quirk_on
    python -m experiments.article.quirk --off_dir=runs/quirk_off --on_dir=runs/quirk_on \
        --out_dir=results/quirk

Reads each directory's runs.csv (tfnorm.analysis.compare_grid) and the runs' config.json (to
check that the two sides differ in that flag alone); writes quirk.md, quirk.csv (one row
per scheme and metric) and quirk_runs.csv (the per-seed values). Imports no TensorFlow.
"""

import math
import os

from absl import flags

from experiments import cli
from tfnorm.analysis import compare_grid, stats
from tfnorm.errors import RunDirError
from tfnorm.run import atomic, records

FLAGS = flags.FLAGS
FLAG = "per_position_running_stats"
# The claim per metric: the quirk lowers test accuracy; train accuracy is a check (the
# option changes only the evaluation, so every difference must be exactly 0).
METRICS = (("final_test_acc", -1), ("best_test_acc", -1), ("final_train_acc", -1))
IGNORED = ("out_dir", "overwrite", "progress", "panels", "tensorboard", FLAG)


def define_flags(flag_values=flags.FLAGS):
    flags.DEFINE_string("off_dir", "runs/quirk_off", "compare directory without the quirk.",
                        flag_values=flag_values)
    flags.DEFINE_string("on_dir", "runs/quirk_on", "compare directory with "
                        "--per_position_running_stats, the same schemes and seeds.",
                        flag_values=flag_values)
    cli.define_flags(("out_dir",), dict(out_dir="results/quirk"), flag_values,
                     helps=dict(out_dir="Where quirk.md and the CSVs go."))


def read_runs(directory, flag):
    """{(scheme, seed): row} of ``directory``'s runs.csv (as written), and each run's
    stored flags."""
    runs, configs = {}, {}
    for row in compare_grid.read_rows(directory, f"--{flag}"):
        key = (row["scheme"], int(row["seed"]))
        runs[key] = row
        run_dir = compare_grid.run_dir(directory, *key)
        try:
            configs[key] = records.read_config(run_dir)
        except RunDirError:
            configs[key] = None
        if configs[key] is None:
            raise cli.ConfigError(f"--{flag}={directory}: "
                                  f"{os.path.join(run_dir, records.CONFIG_FILE)} missing or "
                                  "damaged")
    return runs, configs


def check_pairing(off, on, off_configs, on_configs):
    """Same runs on both sides, differing in --per_position_running_stats alone."""
    if set(off) != set(on):
        raise cli.ConfigError(f"--off_dir and --on_dir hold different runs: "
                              f"{sorted(set(off) ^ set(on))[:3]}")
    for key in sorted(off):
        a, b = off_configs[key], on_configs[key]
        if a.get(FLAG, False) or not b.get(FLAG, False):
            raise cli.ConfigError(f"{key[0]} seed {key[1]}: --off_dir must be trained without "
                                  f"--{FLAG} and --on_dir with it")
        differing = sorted(k for k in set(a) | set(b) if k not in IGNORED
                           and a.get(k) != b.get(k))
        if differing:
            raise cli.ConfigError(f"{key[0]} seed {key[1]}: the two sides differ in "
                                  f"--{differing[0]} ({a.get(differing[0])} against "
                                  f"{b.get(differing[0])}), not only in --{FLAG}")


def value(row, metric):
    text = row.get(metric, "")
    return float(text) if text not in ("", None) else math.nan


def compare(off, on):
    """Per scheme and metric: (interval off, interval on, paired difference, verdict)."""
    results = []
    for scheme in dict.fromkeys(scheme for scheme, _ in sorted(off, key=lambda k: k[1])):
        seeds = sorted(seed for s, seed in off if s == scheme)
        for metric, direction in METRICS:
            a = [value(on[(scheme, s)], metric) for s in seeds]
            b = [value(off[(scheme, s)], metric) for s in seeds]
            difference = stats.paired_difference(a, b, seeds_a=seeds, seeds_b=seeds)
            results.append(dict(scheme=scheme, metric=metric, seeds=seeds,
                                off=stats.interval(b), on=stats.interval(a),
                                difference=difference,
                                verdict=stats.verdict(difference, direction),
                                max_abs=max((abs(x - y) for x, y in zip(a, b)), default=0.0)))
    return results


def markdown(results, settings, off_dir, on_dir):
    f = stats.format_interval
    lines = ["# His evaluation quirk, measured", "",
             f"{settings['dataset']}, image size {settings['image_size']}, "
             f"{settings['epochs']} epochs, batch {settings['batch_size']}, "
             f"{settings['optimizer']} at {settings['learning_rate']:g}, shuffle "
             f"{settings['shuffle']}; seeds {', '.join(map(str, results[0]['seeds']))}, the "
             f"same on both sides ({off_dir} without, {on_dir} with "
             f"--{FLAG}).", "",
             "With the quirk, layer and instance norm are evaluated as the article's notebook "
             "did: with running averages (0.9 old + 0.1 batch) of the per-sample statistics "
             "kept per position of a training batch, test image i standardized with position "
             "i mod 20. Batch norm does not take the option (a control: its difference must be "
             "exactly 0). Training is the same on both sides, so train accuracy must not move.",
             "",
             "Cells: mean over seeds [95% Student t interval]; the difference is on - off, "
             "paired by seed. Claim: the quirk lowers the metric (on < off): *supported* if "
             "the interval lies below 0, *contradicted* if above, *inconclusive* otherwise.",
             "", "| scheme | metric | without | with the quirk | on - off [95% CI] | "
             "max abs diff | verdict |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['scheme']} | {r['metric']} | {f(r['off'])} | {f(r['on'])} | "
                     f"{f(r['difference'])} | {r['max_abs']:.3g} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def flat(results):
    rows = []
    for r in results:
        row = dict(scheme=r["scheme"], metric=r["metric"], n=r["difference"].n,
                   mean_off=r["off"].mean, mean_on=r["on"].mean,
                   difference=r["difference"].mean, low=r["difference"].low,
                   high=r["difference"].high, max_abs_difference=r["max_abs"],
                   claim="on < off", verdict=r["verdict"])
        rows.append(row)
    return rows


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    off, off_configs = read_runs(FLAGS.off_dir, "off_dir")
    on, on_configs = read_runs(FLAGS.on_dir, "on_dir")
    if not off:
        raise cli.ConfigError(f"--off_dir={FLAGS.off_dir}: {compare_grid.RUNS_CSV} lists no run")
    check_pairing(off, on, off_configs, on_configs)
    cli.check_writable(FLAGS.out_dir)
    results = compare(off, on)
    settings = next(iter(off_configs.values()))
    atomic.write_text(os.path.join(FLAGS.out_dir, "quirk.md"),
                      markdown(results, settings, FLAGS.off_dir, FLAGS.on_dir))
    atomic.write_csv(os.path.join(FLAGS.out_dir, "quirk.csv"), flat(results))
    atomic.write_csv(os.path.join(FLAGS.out_dir, "quirk_runs.csv"),
                     [dict(side=side, **row) for side, runs in (("off", off), ("on", on))
                  for _, row in sorted(runs.items())])
    for r in results:
        if r["metric"] == "final_test_acc":
            print(f"{r['scheme']:9s} final test acc on - off {stats.format_interval(r['difference'])}"
                  f": {r['verdict']}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
