r"""The article's claims, each decided by the one verdict rule on a compare directory's
per-seed runs (runs.csv, paired by seed):

    python -m experiments.claims --compare_dir=runs/article --out_dir=results/article

Writes claims.md (a table: the article's sentence, the claim tested, our paired
difference with its 95% interval, the verdict) and claims.csv. Reads files only; no
TensorFlow. A claim whose schemes are not in the directory is left out and listed.
"""

import collections
import csv
import os

from absl import flags, logging

from experiments import cli, summary
from tfnorm import errors, io, records, stats

FLAGS = flags.FLAGS

Claim = collections.namedtuple("Claim", ["sentence", "metric", "better", "worse", "direction"])
Claim.__doc__ = """"``better`` beats ``worse`` on ``metric``" (direction +1: larger is
better; -1: smaller, e.g. epochs to a threshold), quoted from ``sentence``."""

FAST = ("When we use a normalization scheme such as batch/layer/instance normalization we "
        "can achieve +95% accuracy on training images by 130th epoch.. Meanwhile, the network "
        "with box-cox transformation as well as the network without any normalization scheme "
        "struggles even to pass +60% accuracy.")
NONZERO = ("This property of batch normalization, which increases the number of non-zero "
           "gradients, is the reason why training accelerates")
INSTANCE = ("I personally believe that the number of the non-zero gradient is maximized [with "
            "instance norm] when compared to other normalization schemes.")
BOXCOX = ("[Box-Cox:] When compared to the network that did not have any normalization scheme "
          "we can see that there are more non-zero elements in the gradient respect to each "
          "weight.. However, when compared to any other normalization scheme we can see that "
          "we still have a lot of zeros in our gradient.")
TEST = ("From the above plot we can conclude that surprisingly, the network without any "
        "normalization scheme did the best.")
LAYERS = range(1, 7)


def article_claims():
    claims = []
    for scheme in ("batch", "layer", "instance"):
        claims += [Claim(FAST, "epoch_to_95", scheme, "none", -1),
                   Claim(FAST, "final_train_acc", scheme, "none", +1)]
    claims += [Claim(FAST, "final_train_acc", "batch", "boxcox", +1)]
    for scheme in ("batch", "layer", "instance"):
        claims += [Claim(NONZERO, f"nonzero_{i}", scheme, "none", +1) for i in LAYERS]
    for other in ("batch", "layer"):
        claims += [Claim(INSTANCE, f"nonzero_{i}", "instance", other, +1) for i in LAYERS]
    claims += [Claim(BOXCOX, f"nonzero_{i}", "boxcox", "none", +1) for i in LAYERS]
    claims += [Claim(BOXCOX, f"nonzero_{i}", "batch", "boxcox", +1) for i in LAYERS]
    claims += [Claim(TEST, "final_test_acc", "none", s, +1)
               for s in ("batch", "layer", "instance", "boxcox")]
    return claims


def read_runs(compare_dir):
    """{scheme: {seed: row}} of runs.csv, numbers as floats (NaN: undefined). One line
    naming the file if it is missing, not compare's runs.csv, or holds no run."""
    path = os.path.join(compare_dir, summary.RUNS_CSV)
    if not os.path.isfile(path):
        raise cli.ConfigError(f"--compare_dir {compare_dir}: no {summary.RUNS_CSV} (run "
                              "experiments.compare there first)")
    way_out = "rerun experiments.compare there to write it again"
    try:
        rows = io.read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise errors.DamagedFile(f"{path}: unreadable ({type(error).__name__}); "
                                 f"{way_out}") from None
    if not rows:
        raise cli.ConfigError(f"{path}: holds no run; {way_out}")
    missing = [name for name in ("scheme", "seed") if name not in rows[0]]
    if missing:
        raise errors.DamagedFile(f"{path}: not compare's runs.csv (no column "
                                 f"{', '.join(missing)}); {way_out}")
    runs = collections.defaultdict(dict)
    for line, row in enumerate(rows, start=2):
        try:
            values = {k: (float(v) if v not in ("", None) else float("nan"))
                      for k, v in row.items() if k not in ("scheme", "state")}
            seed = int(values.pop("seed"))
        except (TypeError, ValueError):
            raise errors.DamagedFile(f"{path}: line {line} is damaged (not numbers); "
                                     f"{way_out}") from None
        if seed in runs[row["scheme"]]:
            raise errors.DamagedFile(f"{path}: {row['scheme']} seed {seed} is given twice; "
                                     f"{way_out}")
        runs[row["scheme"]][seed] = values
    return runs


def grid_config(compare_dir, runs):
    """The configuration the grid shares (every flag but the scheme and seed): the first
    run's config.json that is there. One line if no run of runs.csv has one."""
    for scheme, seeds in runs.items():
        for seed in sorted(seeds):
            config = cli.stored_config(os.path.join(compare_dir, scheme, f"seed_{seed}"))
            if config is not None:
                return config
    raise cli.ConfigError(f"--compare_dir {compare_dir}: none of the runs of "
                          f"{summary.RUNS_CSV} is there (<scheme>/seed_<k>/"
                          f"{records.CONFIG_FILE}); run experiments.compare there first")


def decide(claim, runs, epochs):
    """The Interval of the paired difference better - worse and its verdict."""
    seeds = sorted(set(runs[claim.better]) & set(runs[claim.worse]))
    censored = epochs + 1 if claim.metric.startswith("epoch_to_") else None
    nan = float("nan")  # a metric runs.csv lacks (no run complete): undefined
    difference = stats.paired_difference([runs[claim.better][s].get(claim.metric, nan)
                                          for s in seeds],
                                         [runs[claim.worse][s].get(claim.metric, nan)
                                          for s in seeds],
                                         seeds_a=seeds, seeds_b=seeds, censored_at=censored)
    return difference, stats.verdict(difference, claim.direction)


def table(claims, runs, epochs):
    """The quoted sentences, labelled [A], [B], ..., then one row per claim."""
    labels = {}
    for claim in claims:
        labels.setdefault(claim.sentence, "ABCDEFGH"[len(labels)])
    lines = [f"[{label}] \"{sentence}\"\n" for sentence, label in labels.items()]
    lines += ["| article | claim tested (paired by seed) | difference [95% CI] | seeds | "
              "verdict |", "|---|---|---|---|---|"]
    rows = []
    for claim in claims:
        difference, decided = decide(claim, runs, epochs)
        sign = ">" if claim.direction > 0 else "<"
        tested = f"{claim.metric}: {claim.better} {sign} {claim.worse}"
        lines.append(f"| [{labels[claim.sentence]}] | {tested} | "
                     f"{stats.format_interval(difference)} | {difference.n} | {decided} |")
        rows.append(dict(claim=tested, sentence=claim.sentence, verdict=decided,
                         **difference._asdict()))
    return rows, "\n".join(lines) + "\n"


def define_flags(flag_values=FLAGS):
    flags.DEFINE_string("compare_dir", None, "An experiments.compare --out_dir (runs.csv).",
                        flag_values=flag_values)
    flags.DEFINE_string("out_dir", None, "Where claims.md and claims.csv go (default: "
                        "--compare_dir).", flag_values=flag_values)


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.compare_dir:
        raise cli.ConfigError("--compare_dir: required")
    runs = read_runs(FLAGS.compare_dir)
    config = grid_config(FLAGS.compare_dir, runs)
    out_dir = FLAGS.out_dir or FLAGS.compare_dir
    cli.check_writable(out_dir, "--out_dir")
    claims = [c for c in article_claims() if c.better in runs and c.worse in runs]
    left_out = sorted({s for c in article_claims() for s in (c.better, c.worse)} - set(runs))
    rows, markdown = table(claims, runs, config["epochs"])
    header = (f"# The article's claims on {config['dataset']}, {config['image_size']} px, "
              f"{config['epochs']} epochs, {config['optimizer']} at {config['learning_rate']}"
              f", batch {config['batch_size']}\n\nFrom `{FLAGS.compare_dir}/runs.csv` "
              f"({len(next(iter(runs.values())))} seeds per scheme). Each claim is the "
              "article's sentence made testable: the paired difference (first scheme minus "
              "second, seed by seed) with its 95% Student t interval; *supported* if the "
              "interval excludes 0 on the claimed side, *contradicted* if on the other, "
              "*inconclusive* otherwise. epoch_to_95: first epoch at 95% train accuracy "
              f"('never' counts as {config['epochs'] + 1}). nonzero_i: non-zero fraction of "
              "layer i's weight gradient, averaged over training.\n\n")
    if left_out:
        header += f"Left out (not in this directory): claims about {', '.join(left_out)}.\n\n"
    io.write_text(os.path.join(out_dir, "claims.md"), header + markdown)
    io.write_csv(os.path.join(out_dir, "claims.csv"), rows)
    counts = collections.Counter(row["verdict"] for row in rows)
    logging.info("%d claims: %s; %s", len(rows), dict(counts),
                 os.path.join(out_dir, "claims.md"))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
