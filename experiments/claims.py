r"""The article's claims, each decided by the one verdict rule on a compare directory's
per-seed runs (runs.csv, paired by seed):

    python -m experiments.claims --compare_dir=runs/article --out_dir=results/article

Writes claims.md (a table: the article's sentence, the claim tested, our paired
difference with its 95% interval, the verdict) and claims.csv. Reads files only; no
TensorFlow. A claim whose schemes are not in the directory is left out and listed.
"""

import collections
import os

from absl import flags, logging

from experiments import cli, summary
from tfnorm import io, records, stats

FLAGS = flags.FLAGS

Claim = collections.namedtuple("Claim", ["sentence", "metric", "better", "worse", "direction",
                                         "threshold"], defaults=(None,))
Claim.__doc__ = """"``better`` beats ``worse`` on ``metric``" (direction +1: larger is
better; -1: smaller, e.g. epochs to a threshold), quoted from ``sentence``. With ``worse``
None, a threshold: "``better``'s metric is above (+1) or below (-1) ``threshold``",
decided by the same rule on the interval over seeds of metric - threshold."""

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
PATTERN_TEST = ("we can see a pattern emerging, as the number of parameters in which we "
                "calculate the mean and the standard deviation decreases, testing accuracy "
                "increases")
PATTERN_GAP = ("As the number of parameters, we are calculating the mean and standard "
               "deviation increases, the model tends to over-fit.")
LAYERS = range(1, 7)
# The over-fitting gap of a run: final train accuracy minus final test accuracy.
GAP = "final_gap"
# His count of the statistics each scheme computes per layer (REFERENCE.md), fewest first:
# batch 16 (per channel) < layer 20 (per sample) < instance 320 (per sample and channel).
BY_STATISTICS = ("batch", "layer", "instance")


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


def overfit_claims(epochs):
    """His sentences about test accuracy and over-fitting, and his train-accuracy ones, as
    decided in an over-fitting regime of ``epochs`` epochs (experiments.overfit). "95% by
    the 130th epoch" only with 130 epochs or more: a 'never' of a shorter run says nothing
    about epoch 130."""
    others = ("batch", "layer", "instance", "boxcox")
    claims = []
    for scheme in ("batch", "layer", "instance"):
        claims += [Claim(FAST, "epoch_to_95", scheme, "none", -1),
                   Claim(FAST, "final_train_acc", scheme, "none", +1)]
        if epochs >= 130:  # reached by epoch 130: the first epoch at 95% below 131
            claims.append(Claim(FAST, "epoch_to_95", scheme, None, -1, 131))
    claims += [Claim(FAST, "final_train_acc", scheme, None, -1, 0.6)
               for scheme in ("boxcox", "none")]
    claims += [Claim(TEST, metric, "none", scheme, +1)
               for metric in ("final_test_acc", "best_test_acc") for scheme in others]
    pairs = list(zip(BY_STATISTICS, BY_STATISTICS[1:]))
    claims += [Claim(PATTERN_TEST, "final_test_acc", fewer, more, +1) for fewer, more in pairs]
    claims += [Claim(PATTERN_GAP, GAP, fewer, more, -1) for fewer, more in pairs]
    return claims


def with_gap(runs):
    """``runs`` ({scheme: {seed: row}}) with each row's GAP added."""
    return {scheme: {seed: dict(row, **{GAP: row["final_train_acc"] - row["final_test_acc"]})
                     for seed, row in seeds.items()} for scheme, seeds in runs.items()}


def read_runs(compare_dir):
    """{scheme: {seed: row}} of runs.csv, numbers as floats."""
    path = os.path.join(compare_dir, summary.RUNS_CSV)
    if not os.path.exists(path):
        raise cli.ConfigError(f"--compare_dir {compare_dir}: no {summary.RUNS_CSV} (run "
                              "experiments.compare there first)")
    runs = collections.defaultdict(dict)
    for row in io.read_csv(path):
        values = {k: (float(v) if v not in ("", None) else float("nan"))
                  for k, v in row.items() if k not in ("scheme", "state")}
        runs[row["scheme"]][int(values.pop("seed"))] = values
    return runs


def decide(claim, runs, epochs):
    """The Interval of the paired difference better - worse (a threshold claim: of
    better's metric - threshold) and its verdict."""
    censored = epochs + 1 if claim.metric.startswith("epoch_to_") else None
    if claim.worse is None:
        seeds = sorted(runs[claim.better])
        shifted = stats.interval(
            [runs[claim.better][s][claim.metric] - claim.threshold for s in seeds],
            censored_at=None if censored is None else censored - claim.threshold)
        return shifted, stats.verdict(shifted, claim.direction)
    seeds = sorted(set(runs[claim.better]) & set(runs[claim.worse]))
    difference = stats.paired_difference([runs[claim.better][s][claim.metric] for s in seeds],
                                         [runs[claim.worse][s][claim.metric] for s in seeds],
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
        tested = claim_text(claim)
        lines.append(f"| [{labels[claim.sentence]}] | {tested} | "
                     f"{stats.format_interval(difference)} | {difference.n} | {decided} |")
        rows.append(dict(claim=tested, sentence=claim.sentence, verdict=decided,
                         **difference._asdict()))
    return rows, "\n".join(lines) + "\n"


def claim_text(claim):
    """"metric: better > worse", or for a threshold "metric: better < threshold"."""
    sign = ">" if claim.direction > 0 else "<"
    other = claim.worse if claim.worse is not None else f"{claim.threshold:g}"
    return f"{claim.metric}: {claim.better} {sign} {other}"


def side_by_side(claims, views, epochs):
    """One table deciding every claim in each setting of ``views`` ({name: runs}): a
    column of difference [95% CI] and verdict per setting. Returns (CSV rows, one per
    claim and setting, and the markdown)."""
    labels = {}
    for claim in claims:
        labels.setdefault(claim.sentence, "ABCDEFGH"[len(labels)])
    lines = [f"[{label}] \"{sentence}\"\n" for sentence, label in labels.items()]
    lines += ["| article | claim tested | " + " | ".join(
        f"{name}: difference [95% CI], seeds | verdict" for name in views) + " |",
        "|---|---|" + "---|---|" * len(views)]
    rows = []
    for claim in claims:
        cells = []
        for name, runs in views.items():
            difference, decided = decide(claim, runs, epochs)
            cells.append(f"{stats.format_interval(difference)}, n={difference.n} | {decided}")
            rows.append(dict(setting=name, claim=claim_text(claim), sentence=claim.sentence,
                             verdict=decided, **difference._asdict()))
        lines.append(f"| [{labels[claim.sentence]}] | {claim_text(claim)} | "
                     + " | ".join(cells) + " |")
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
    scheme = next(iter(runs))
    # The grid shares every flag but the scheme and seed: any run's config.json tells.
    config = records.read_config(os.path.join(FLAGS.compare_dir, scheme,
                                              f"seed_{min(runs[scheme])}"))
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
