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
from tfnorm import errors, io, records, stats, verdicts

FLAGS = flags.FLAGS

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
    claim, claims = verdicts.difference, []
    for scheme in ("batch", "layer", "instance"):
        claims += [claim(FAST, "epoch_to_95", scheme, "none", -1),
                   claim(FAST, "final_train_acc", scheme, "none", +1)]
    claims += [claim(FAST, "final_train_acc", "batch", "boxcox", +1)]
    for scheme in ("batch", "layer", "instance"):
        claims += [claim(NONZERO, f"nonzero_{i}", scheme, "none", +1) for i in LAYERS]
    for other in ("batch", "layer"):
        claims += [claim(INSTANCE, f"nonzero_{i}", "instance", other, +1) for i in LAYERS]
    claims += [claim(BOXCOX, f"nonzero_{i}", "boxcox", "none", +1) for i in LAYERS]
    claims += [claim(BOXCOX, f"nonzero_{i}", "batch", "boxcox", +1) for i in LAYERS]
    claims += [claim(TEST, "final_test_acc", "none", s, +1)
               for s in ("batch", "layer", "instance", "boxcox")]
    return claims


def overfit_claims():
    """His sentences about test accuracy and over-fitting, and his train-accuracy ones, as
    decided in an over-fitting regime (experiments.overfit): "95% by the 130th epoch" and
    "struggles to pass 60%" as thresholds, the rest as differences."""
    difference, threshold = verdicts.difference, verdicts.threshold
    claims = []
    for scheme in ("batch", "layer", "instance"):
        claims += [difference(FAST, "epoch_to_95", scheme, "none", -1),
                   threshold(FAST, "epoch_to_95", scheme, 131, -1),  # reached by epoch 130
                   difference(FAST, "final_train_acc", scheme, "none", +1)]
    claims += [threshold(FAST, "final_train_acc", scheme, 0.6, -1)
               for scheme in ("boxcox", "none")]
    claims += [difference(TEST, metric, "none", scheme, +1)
               for metric in ("final_test_acc", "best_test_acc")
               for scheme in ("batch", "layer", "instance", "boxcox")]
    pairs = list(zip(BY_STATISTICS, BY_STATISTICS[1:]))
    claims += [difference(PATTERN_TEST, "final_test_acc", fewer, more, +1)
               for fewer, more in pairs]
    claims += [difference(PATTERN_GAP, GAP, fewer, more, -1) for fewer, more in pairs]
    return claims


def with_gap(runs):
    """``runs`` ({scheme: {seed: row}}) with each row's GAP added."""
    return {scheme: {seed: dict(row, **{GAP: row["final_train_acc"] - row["final_test_acc"]})
                     for seed, row in seeds.items()} for scheme, seeds in runs.items()}


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


def decide_runs(claims, runs, epochs):
    """tfnorm.verdicts.decide on ``runs`` ({scheme: {seed: row}}), epoch_to_* censored at
    epochs + 1; a metric runs.csv lacks (no run of the grid complete) is undefined."""
    undefined = {c.metric: float("nan") for c in claims}
    per_seed = [dict(undefined, **values, scheme=scheme, seed=seed)
                for scheme, seeds in runs.items() for seed, values in seeds.items()]
    censored = {c.metric: epochs + 1 for c in claims if c.metric.startswith("epoch_to_")}
    return verdicts.decide(claims, per_seed, censored_at=censored)


def _sentences(claims):
    """{sentence: label} ([A], [B], ... in first-seen order) and the quoted sentences."""
    labels = {}
    for claim in claims:
        labels.setdefault(claim.sentence, "ABCDEFGH"[len(labels)])
    return labels, [f"[{label}] \"{sentence}\"\n" for sentence, label in labels.items()]


def side_by_side(claims, views, epochs):
    """One table deciding every claim in each setting of ``views`` ({name: runs}): the
    claim's kind, then per setting the tested interval [95% CI] with its seeds and the
    verdict. Returns (CSV rows, one per claim and setting, and the markdown)."""
    labels, lines = _sentences(claims)
    lines += ["| article | kind | claim tested | " + " | ".join(
        f"{name}: tested [95% CI], seeds | verdict" for name in views) + " |",
        "|---|---|---|" + "---|---|" * len(views)]
    decided = {name: decide_runs(claims, runs, epochs) for name, runs in views.items()}
    rows = []
    for index, claim in enumerate(claims):
        cells = []
        for name in views:
            tested, verdict = decided[name][index].tested, decided[name][index].verdict
            cells.append(f"{stats.format_interval(tested)}, n={tested.n} | {verdict}")
            rows.append(dict(setting=name, claim=verdicts.describe(claim),
                             sentence=claim.sentence, kind=claim.kind,
                             margin_or_value=verdicts.reference(claim), verdict=verdict,
                             **tested._asdict()))
        kind = verdicts.kind_label(claim.kind, verdicts.reference(claim))
        lines.append(f"| [{labels[claim.sentence]}] | {kind} | {verdicts.describe(claim)} | "
                     + " | ".join(cells) + " |")
    return rows, "\n".join(lines) + "\n"


def table(claims, runs, epochs):
    """The quoted sentences, labelled [A], [B], ..., then one row per claim (its kind and
    margin or value, the claim tested, the tested interval, its verdict by
    tfnorm.verdicts.decide; epoch_to_* censored at epochs + 1)."""
    labels, lines = _sentences(claims)
    lines += ["| article | kind | claim tested (paired by seed) | difference [95% CI] | seeds | "
              "verdict |", "|---|---|---|---|---|---|"]
    rows = []
    for decided in decide_runs(claims, runs, epochs):
        claim, tested = decided.claim, decided.tested
        kind = verdicts.kind_label(claim.kind, verdicts.reference(claim))
        lines.append(f"| [{labels[claim.sentence]}] | {kind} | {verdicts.describe(claim)} | "
                     f"{stats.format_interval(tested)} | {tested.n} | {decided.verdict} |")
        rows.append(dict(claim=verdicts.describe(claim), sentence=claim.sentence,
                         kind=claim.kind, margin_or_value=verdicts.reference(claim),
                         verdict=decided.verdict, **tested._asdict()))
    return rows, "\n".join(lines) + "\n"


def define_flags(flag_values=FLAGS):
    cli.define_flags(("compare_dir", "out_dir"), flag_values=flag_values, helps=dict(
        compare_dir="An experiments.compare --out_dir (runs.csv).",
        out_dir="Where claims.md and claims.csv go (default: --compare_dir)."))


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
    claims = [c for c in article_claims() if c.a in runs and c.b in runs]
    left_out = sorted({s for c in article_claims() for s in (c.a, c.b)} - set(runs))
    rows, markdown = table(claims, runs, config["epochs"])
    header = (f"# The article's claims on {config['dataset']}, {config['image_size']} px, "
              f"{config['epochs']} epochs, {config['optimizer']} at {config['learning_rate']}"
              f", batch {config['batch_size']}\n\nFrom "
              f"`{os.path.join(cli.repo_path(FLAGS.compare_dir), summary.RUNS_CSV)}` "
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
