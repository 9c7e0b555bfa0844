r"""The article's sentences (experiments.sentences), each decided by the one verdict rule
on the per-seed runs (runs.csv, paired by seed) of one compare directory, or of several
settings side by side:

    python -m experiments.article.claims --compare_dir=runs/compare --out_dir=results
    python -m experiments.article.claims --setting=article=runs/article \
        --setting=overfitting=runs/overfit/quirk_off --out_dir=results/article

A --setting is name=DIR, or name=DIR+BASE: DIR's runs, and BASE's for the schemes DIR
lacks (the over-fitting grid with his quirk holds only the schemes the quirk changes).
Writes claims.md: the settings (and whether each over-fits), the sentences with what of
each no claim tests and why, a summary (one row per comparison, its per-layer verdicts
collapsed), then every claim with its tested interval and verdict per setting; and
claims.csv, one row per claim and setting. A sentence about test accuracy or over-fitting
is not decided where batch norm does not over-fit: its rows say so beside the rule's
verdict. Reads files only; no TensorFlow. Claims whose schemes no setting has are left
out and listed.
"""

import collections
import re

from absl import flags, logging

from experiments import cli
from experiments.article import sentences
from tfnorm.analysis import compare_grid, stats, verdicts
from tfnorm.measures import NEARZERO_TAU
from tfnorm.run import records

FLAGS = flags.FLAGS


def grid_config(compare_dir, runs):
    """The configuration the grid shares (every flag but the scheme and seed): the first
    run's config.json that is there. One line if no run of runs.csv has one."""
    for scheme, seeds in runs.items():
        for seed in sorted(seeds):
            config = cli.stored_config(compare_grid.run_dir(compare_dir, scheme, seed))
            if config is not None:
                return config
    raise cli.ConfigError(f"--compare_dir {compare_dir}: none of the runs of "
                          f"{compare_grid.RUNS_CSV} is there ({compare_grid.LAYOUT}/"
                          f"{records.CONFIG_FILE}); run experiments.article.compare there "
                          "first")


NOT_DECIDED = "not decided: no over-fitting"
MISSING = "not run"
# A measure the setting's runs did not record (a grid run before it existed).
NOT_RECORDED = "not recorded"


def _label(index):
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[index]


Setting = collections.namedtuple("Setting", ["name", "runs", "config", "overfits", "source"])
Setting.__doc__ = """A grid the claims are decided on: its runs ({scheme: {seed: row}}, the
derived measures added), its shared config.json, the Decided of sentences.OVERFITS on it,
and its directories as given (relative to the repository)."""


def load_setting(name, spec):
    """The Setting of ``spec`` ("DIR" or "DIR+BASE")."""
    first, _, base = spec.partition("+")
    own = compare_grid.read_runs(first)
    config = grid_config(first, own)
    runs = dict(compare_grid.read_runs(base), **own) if base else own
    runs = sentences.with_derived(runs)
    (overfits,) = compare_grid.decide_runs([sentences.OVERFITS], runs, config["epochs"]) \
        if "batch" in runs else (None,)
    source = " + ".join(cli.repo_path(d) for d in (first, base) if d)
    return Setting(name, runs, config, overfits, source)


def describe_setting(setting):
    """One line: the setting's data and training, its seeds, whether it over-fits."""
    c = setting.config
    text = (f"{c['dataset']}, {c['image_size']} px, {c['optimizer']} at {c['learning_rate']}, "
            f"batch {c['batch_size']}, {c['epochs']} epochs")
    text += ", shuffled" if c.get("shuffle", True) else ", file order"
    if c.get("train_per_class"):
        text += f", {c['train_per_class']} training images per class (the rest: test)"
    if c.get("per_position_running_stats"):
        text += ", his evaluation quirk"
    seeds = sorted({seed for runs in setting.runs.values() for seed in runs})
    text += f"; seeds {', '.join(map(str, seeds))}; from `{setting.source}`"
    if setting.overfits is not None:
        text += (f". Batch norm's gap minus {sentences.OVERFIT_GAP}: "
                 f"{stats.format_interval(setting.overfits.tested)}, so it "
                 + ("over-fits" if setting.overfits.verdict == stats.SUPPORTED
                    else "does not over-fit (its test-accuracy sentences are not decided "
                         "here)"))
    return text


def decide_settings(claims, settings):
    """{setting name: [(Decided or None if a scheme is missing, verdict label)]}."""
    out = {}
    for setting in settings:
        present = [i for i, c in enumerate(claims) if c.a in setting.runs
                   and (c.b is None or c.b in setting.runs)]
        decided = dict(zip(present, compare_grid.decide_runs(
            [claims[i] for i in present], setting.runs, setting.config["epochs"])))
        overfits = (setting.overfits is not None
                    and setting.overfits.verdict == stats.SUPPORTED)
        cells = []
        for index, claim in enumerate(claims):
            if index not in decided:
                cells.append((None, MISSING))
                continue
            verdict = decided[index].verdict if decided[index].tested.n else NOT_RECORDED
            if sentences.sentence_of(claim.sentence).needs_overfitting and not overfits:
                verdict = f"{NOT_DECIDED} ({verdict})"
            cells.append((decided[index], verdict))
        out[setting.name] = cells
    return out


def _family(claim):
    """The claim with its layer taken out of the metric: (key, layer or None)."""
    match = re.fullmatch(r"(.*)_(\d)", claim.metric)
    metric, layer = (match.group(1) + "_i", int(match.group(2))) if match else (
        claim.metric, None)
    return verdicts.describe(claim._replace(metric=metric)), layer


def _collapse(verdicts_by_layer):
    """"supported" if one verdict, else "supported at 1-4; inconclusive at 5, 6"."""
    if len(set(v for _, v in verdicts_by_layer)) == 1:
        return verdicts_by_layer[0][1]
    parts = collections.OrderedDict()
    for layer, verdict in verdicts_by_layer:
        parts.setdefault(verdict, []).append(str(layer))
    return "; ".join(f"{verdict} at {', '.join(layers)}" for verdict, layers in parts.items())


def _opening(text, words=9):
    """The sentence's first words, quoted."""
    cut = text.split()
    return "\"" + " ".join(cut[:words]) + (" ...\"" if len(cut) > words else "\"")


def _count(labels):
    """"S 3 · C 1 · I 2" over verdict labels; "not recorded"/"not run" if all are."""
    if len(set(labels)) == 1 and labels[0] in (MISSING, NOT_RECORDED):
        return labels[0]
    short = collections.Counter(
        "N" if label.startswith(NOT_DECIDED) else {stats.SUPPORTED: "S",
                                                   stats.CONTRADICTED: "C"}.get(label, "I")
        for label in labels if label not in (MISSING, NOT_RECORDED))
    return " · ".join(f"{k} {short[k]}" for k in "SCIN" if short[k])


def tables(claims, settings):
    """(claims.csv rows, the markdown after the header): the sentences, the summary table
    and the full table."""
    labels = {s.text: _label(i) for i, s in enumerate(sentences.SENTENCES)}
    decided = decide_settings(claims, settings)
    names = [s.name for s in settings]
    testable = {c.sentence for c in sentences.article_claims()}
    shown = [s for s in sentences.SENTENCES if s.text not in testable
             or any(c.sentence == s.text for c in claims)]
    lines = ["## The sentences", ""]
    for sentence in shown:
        untested = f" *Not tested: {sentence.untested}.*" if sentence.untested else ""
        lines.append(f"- [{labels[sentence.text]}] \"{sentence.text}\"{untested}")
    lines += ["", "## Verdicts, per sentence", "",
              "Per setting, how many of the sentence's claims (the rows below) are supported "
              "(S), contradicted (C), inconclusive (I), or not decided for want of "
              "over-fitting (N).", "",
              "| | the article says | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for sentence in shown:
        mine = [i for i, c in enumerate(claims) if c.sentence == sentence.text]
        cells = [_count([decided[name][i][1] for i in mine]) if mine else "not testable here"
                 for name in names]
        lines.append(f"| [{labels[sentence.text]}] | {_opening(sentence.text)} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## Verdicts, per comparison (layers i = 1..6 collapsed)", "",
              "| | kind | claim | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    groups = collections.OrderedDict()
    for index, claim in enumerate(claims):
        key, layer = _family(claim)
        groups.setdefault((claim.sentence, key), []).append((index, layer))
    for (sentence, key), members in groups.items():
        claim = claims[members[0][0]]
        kind = verdicts.kind_label(claim.kind, verdicts.reference(claim))
        cells = [_collapse([(layer, decided[name][i][1]) for i, layer in members])
                 for name in names]
        lines.append(f"| [{labels[sentence]}] | {kind} | {key} | " + " | ".join(cells) + " |")
    for sentence in shown:
        if sentence.text not in testable:
            lines.append(f"| [{labels[sentence.text]}] | not testable here | "
                         f"{sentence.untested} |" + " |" * len(names))
    lines += ["", "## Every claim", "",
              "| | kind | claim | " + " | ".join(f"{n}: tested [95% CI], n | {n}: verdict"
                                                for n in names) + " |",
              "|---|---|---|" + "---|---|" * len(names)]
    rows = []
    for index, claim in enumerate(claims):
        kind = verdicts.kind_label(claim.kind, verdicts.reference(claim))
        cells = []
        for setting in settings:
            found, verdict = decided[setting.name][index]
            if found is None:
                cells.append(f"{MISSING} | {MISSING}")
                continue
            tested = found.tested
            cells.append(f"{stats.format_interval(tested)}, n={tested.n} | {verdict}")
            rows.append(dict(setting=setting.name, label=labels[claim.sentence],
                             claim=verdicts.describe(claim), sentence=claim.sentence,
                             kind=claim.kind, margin_or_value=verdicts.reference(claim),
                             verdict=verdict, **tested._asdict()))
        lines.append(f"| [{labels[claim.sentence]}] | {kind} | {verdicts.describe(claim)} | "
                     + " | ".join(cells) + " |")
    return rows, "\n".join(lines) + "\n"


def side_by_side(claims, views, epochs):
    """``tables`` for settings given as {name: runs} (runs carrying the derived measures),
    all trained for ``epochs``."""
    settings = []
    for name, runs in views.items():
        (overfits,) = compare_grid.decide_runs([sentences.OVERFITS], runs, epochs) \
            if "batch" in runs else (None,)
        settings.append(Setting(name, runs, {"epochs": epochs}, overfits, name))
    return tables(claims, settings)


def define_flags(flag_values=FLAGS):
    cli.define_flags(("compare_dir", "out_dir"), flag_values=flag_values, helps=dict(
        compare_dir="An experiments.article.compare --out_dir (runs.csv): the one setting.",
        out_dir="Where claims.md and claims.csv go (default: --compare_dir)."))
    flags.DEFINE_multi_string("setting", [], "name=DIR or name=DIR+BASE: a setting decided "
                              "beside the others (instead of --compare_dir).",
                              flag_values=flag_values)


def parse_settings(flag_values):
    """[(name, spec)] from --setting, or the one --compare_dir; one line if neither or
    both, or a --setting is not name=DIR."""
    if bool(flag_values.compare_dir) == bool(flag_values.setting):
        raise cli.ConfigError("give --compare_dir or --setting (name=DIR), one of the two")
    if flag_values.compare_dir:
        return [("this grid", flag_values.compare_dir)]
    out = []
    for given in flag_values.setting:
        name, _, spec = given.partition("=")
        if not name or not spec or name in dict(out):
            raise cli.ConfigError(f"--setting {given}: expected a new name=DIR[+BASE]")
        out.append((name, spec))
    return out


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    given = parse_settings(FLAGS)
    out_dir = FLAGS.out_dir or FLAGS.compare_dir
    if not out_dir:
        raise cli.ConfigError("--out_dir: required with --setting")
    cli.check_writable(out_dir, "--out_dir")
    settings = [load_setting(name, spec) for name, spec in given]
    everywhere = set().union(*(s.runs for s in settings))
    claims = [c for c in sentences.article_claims()
              if c.a in everywhere and (c.b is None or c.b in everywhere)]
    left_out = sorted({s for c in sentences.article_claims() for s in (c.a, c.b)
                       if s is not None} - everywhere)
    rows, markdown = tables(claims, settings)
    header = ["# The article's sentences, decided", ""]
    header += [f"- **{s.name}**: {describe_setting(s)}." for s in settings]
    header += ["", "Each sentence is tested by the question it asks (tfnorm.analysis.verdicts): a "
               "difference tests the paired difference (first scheme minus second, seed by "
               "seed), a threshold the scheme's value minus the threshold, an equivalence the "
               "paired difference against its margin, each with its 95% Student t interval: "
               "*supported* if it excludes 0 on the claimed side (lies inside the margin), "
               "*contradicted* if on the other (outside), *inconclusive* otherwise. "
               "epoch_to_95: first epoch at 95% train accuracy ('never' counts as epochs + 1, "
               "and a verdict stands only if that censoring cannot change it). nonzero_i: "
               "non-zero fraction of layer i's weight gradient; nearzero_i: its fraction "
               f"within {NEARZERO_TAU:g} x the layer's RMS gradient; update_freq_i: "
               "the fraction of its weights whose step is above a small share of the RMS step; "
               "movement_i: ||W_e - W_(e-1)|| / ||W_(e-1)|| per epoch; each averaged over "
               f"training. {sentences.MIDDLE_MOVEMENT}: layers 2-4's mean movement minus "
               f"layers 1, 5, 6's. {sentences.GAP}: final train minus final test accuracy. "
               "parameters: the network's trainable numbers.", ""]
    if left_out:
        header += [f"Left out (in no setting): claims about {', '.join(left_out)}.", ""]
    path = compare_grid.write_claims(out_dir, "\n".join(header) + "\n", rows, markdown)
    counts = collections.Counter(row["verdict"] for row in rows)
    logging.info("%d claims: %s; %s", len(rows), dict(counts), path)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
