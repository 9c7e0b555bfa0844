"""The skeleton of the study scripts (experiments/papers/ics.py, landscape.py, noisy_bn.py,
weightnorm.py, shattered.py, saturation.py). A study is one ``Study``:

- ``shared``: the flags of cli's vocabulary it uses, name -> its default
  (cli.STUDY_FLAGS always, cli.TRAINING_STUDY_FLAGS when it trains);
- ``define_flags(flag_values)``: its own flags;
- ``check(values)`` -> its parsed settings (raises cli.ConfigError; imports no TensorFlow);
- ``run(ctx)``: what it measures in one run, unit x seed (``ctx.unit``, ``ctx.seed``),
  adding rows with ``ctx.add(file, rows)`` and training with ``ctx.train(trainer)``;
- ``summarize(ctx)`` -> per-seed rows of summary.csv (optional);
- ``draw(ctx)`` -> {file: matplotlib figure} (optional); ``finish(ctx)`` after the runs;
- ``claims(ctx)`` -> [tfnorm.analysis.verdicts.Claim] decided on summary.csv, and
  ``extra_verdicts(ctx)`` -> [tfnorm.analysis.verdicts.Decided] decided on other tables (a fit,
  timing rounds): verdicts.csv and verdicts.md, both from files only, so
  ``redo_verdicts`` redoes that step from a finished directory.

The skeleton does the rest, the same way for every study: checks every flag before
TensorFlow is imported (one line and exit 2 for a bad one), writes config.json first
(``tfnorm.run.records.write_config``'s layout: flags, library versions, seed), loads the data,
loops unit x seed (seeds --seed .. --seed + --seeds - 1), trains through ``tfnorm.loop``
(epochs and steps from 1, the batch order keyed on (seed, epoch) as in the driver),
tags every row with the unit and its seed, rewrites the CSV files after each run (so an
interrupted study keeps what it finished), writes accuracy.csv, summary.csv and
summary_over_seeds.csv (``over_seeds``), draws, and logs one line per epoch and per run.

Nothing here imports TensorFlow at import time; the runs import it once the flags passed.
"""

import collections
import os
import time

from absl import flags, logging

from experiments import cli
from tfnorm.analysis import verdicts
from tfnorm.run import atomic, records
from tfnorm import schemes as registry

FLAGS = flags.FLAGS
ACCURACY_CSV = "accuracy.csv"
SUMMARY_CSV = "summary.csv"
OVER_SEEDS_CSV = "summary_over_seeds.csv"
VERDICTS_CSV, VERDICTS_MD = "verdicts.csv", "verdicts.md"
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")


def _none(ctx):
    return None


Study = collections.namedtuple(
    "Study", ["name", "shared", "define_flags", "check", "run", "summarize", "draw", "finish",
              "key", "allowed", "units", "summary_keys", "needs_data", "claims",
              "extra_verdicts"],
    defaults=[_none, _none, _none, "scheme", None, None, (), True, None, None])
Study.__doc__ = """One study (see the module's docstring). key: the column naming the unit
(scheme, or architecture for shattered); allowed: the names --schemes may take (default
tfnorm.SCHEMES); units(ctx) -> the units when they are not --schemes; summary_keys: the
columns besides ``key`` that identify a row of summary.csv; needs_data(values): whether
the dataset is loaded; claims, extra_verdicts: see the module's docstring (extra
verdicts come first in verdicts.csv and verdicts.md)."""


class Context:
    """What a study's functions see: ``values`` (every flag, dataset defaults filled in),
    ``settings`` (its ``check``'s result), ``units``, ``seeds``, ``dataset``, ``tables``
    (file -> rows); during a run also ``unit``, ``seed`` and ``cache`` (a dict kept across
    the seeds of one unit, e.g. for a compiled step)."""

    def __init__(self, study, values, settings, units):
        self.study, self.values, self.settings, self.units = study, values, settings, units
        self.seeds = list(range(values["seed"], values["seed"] + values["seeds"]))
        self.out_dir = values["out_dir"]
        self.dataset, self.unit, self.seed, self.cache = None, None, None, None
        self.caches = collections.defaultdict(dict)
        self.tables = collections.OrderedDict()

    def add(self, name, rows):
        """Rows of ``name`` (a CSV file) measured in this run, tagged with unit and seed."""
        tag = {self.study.key: self.unit, "seed": self.seed}
        self.tables.setdefault(name, []).extend(dict(tag, **row) for row in rows)

    def rows(self, name, **where):
        return [r for r in self.tables.get(name, [])
                if all(r[k] == v for k, v in where.items())]

    def train(self, trainer, step_fn=None, on_epoch=None, tag=None):
        """Train this run's --epochs through tfnorm.loop; returns the step rows (step from
        1 over the run) and adds the epoch rows to accuracy.csv. step_fn: see
        ``loop.train_epoch`` (its images are scaled floats); on_epoch(epoch) after each;
        tag: columns put before the epoch's (e.g. an init std), and named in the log."""
        from tfnorm import loop
        epochs = self.values["epochs"]

        def logged(epoch, row, result):
            logging.info("%s%s seed %d epoch %d/%d: train acc %.3f, test acc %.3f (%.1f s)",
                         self.unit, "".join(f" {k} {v}" for k, v in (tag or {}).items()),
                         self.seed, epoch, epochs, row["train_acc"], row["test_acc"],
                         result.seconds)
            if on_epoch is not None:
                on_epoch(epoch)

        hooks = loop.CollectRows(f"{self.unit} seed {self.seed}", tag, logged)
        loop.run_epochs(trainer, self.dataset, range(1, epochs + 1), epochs,
                        batch_size=self.values["batch_size"], seed=self.seed, hooks=hooks,
                        record=False, step_fn=step_fn)
        self.add(ACCURACY_CSV, hooks.epoch_rows)
        return hooks.step_rows

    def build_network(self, scheme, **options):
        """The article network of this run's seed for the dataset (options go to
        tfnorm.article_network), weight-normalized layers initialized from the first
        batch of epoch 1 (Salimans & Kingma's data-dependent init; else a no-op)."""
        from tfnorm import network as networks
        network = networks.dataset_network(scheme, self.dataset, seed=self.seed, **options)
        network.initialize_from_batch(self.first_batch()[0])
        return network

    def first_batch(self):
        """The first training batch of epoch 1 (scaled float32 images, labels)."""
        import tensorflow as tf
        from tfnorm import loop
        return next(iter(loop.train_batches(self.dataset, self.values["batch_size"], 1,
                                            self.seed, dtype=tf.float32)))

    def trainer(self, network):
        """A tfnorm.training.Trainer of ``network`` with the flags' optimizer."""
        from tfnorm import training
        return training.Trainer(network, self.optimizer())

    def optimizer(self):
        import tfnorm
        return tfnorm.make_optimizer(self.values["optimizer"], self.values["learning_rate"])


# ----------------------------------------------------------------------------
# Flags and the run


def shared(training=True, also=(), **defaults):
    """A study's shared flags with its ``defaults`` (the vocabulary's for the others):
    cli.STUDY_FLAGS, cli.TRAINING_STUDY_FLAGS when it trains, and any other flag of the
    vocabulary named in ``also`` or in ``defaults``."""
    names = cli.STUDY_FLAGS + (cli.TRAINING_STUDY_FLAGS if training else ())
    names += tuple(name for name in tuple(also) + tuple(defaults) if name not in names)
    unknown = set(names) - set(cli.flag_names())
    assert not unknown, f"not in the flag vocabulary: {unknown}"
    return {name: defaults.get(name, cli.flag_spec(name)[1]) for name in names}


def define_flags(study, flag_values=FLAGS):
    """The study's flags: the shared ones from cli's vocabulary, then its own."""
    cli.define_flags([name for name in cli.flag_names() if name in study.shared],
                     study.shared, flag_values)
    if study.define_flags is not None:
        study.define_flags(flag_values)


def prepare(study, flag_values=FLAGS):
    """Check every flag (no TensorFlow); returns the Context. Raises cli.ConfigError."""
    values = {f.name: f.value for module, defined in flag_values.flags_by_module_dict().items()
              if not module.startswith("absl") for f in defined}
    return _context(study, values)


def _context(study, values):
    values, schemes = cli.check_study(values, study.allowed or registry.SCHEMES)
    settings = study.check(values) if study.check is not None else None
    ctx = Context(study, values, settings, schemes or [])
    if study.units is not None:
        ctx.units = study.units(ctx)
    return ctx


def main(study, argv, flag_values=FLAGS):
    """Everything after the flags are parsed: check, config.json, the runs, the files."""
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        ctx = prepare(study, flag_values)
    except cli.ConfigError as error:
        cli.fail(str(error))
    from tfnorm.run import runner  # TensorFlow loads here, once the flags are good
    records.write_config(ctx.out_dir, ctx.values, runner.versions())
    if study.needs_data is True or (study.needs_data and study.needs_data(ctx.values)):
        try:
            ctx.dataset = runner.load_data(dict(cli.resolve(ctx.values), **ctx.values))
        except cli.ConfigError as error:
            cli.fail(str(error))
    runs = [(unit, seed) for unit in ctx.units for seed in ctx.seeds]
    logging.info("%s: %d runs (%d x %d seeds) into %s", study.name, len(runs),
                 len(ctx.units), len(ctx.seeds), ctx.out_dir)
    started = time.perf_counter()
    for done, (unit, seed) in enumerate(runs, start=1):
        ctx.unit, ctx.seed, ctx.cache = unit, seed, ctx.caches[unit]
        run_started = time.perf_counter()
        study.run(ctx)
        write_tables(ctx)
        elapsed = time.perf_counter() - started
        logging.info("[%d/%d] %s seed %d: %.1f s, about %.0f s left", done, len(runs), unit,
                     seed, time.perf_counter() - run_started,
                     elapsed / done * (len(runs) - done))
    ctx.unit = ctx.seed = ctx.cache = None
    study.finish(ctx)
    summary = study.summarize(ctx)
    if summary:
        ctx.tables[SUMMARY_CSV] = summary
        ctx.tables[OVER_SEEDS_CSV] = over_seeds(summary, (study.key,) + tuple(study.summary_keys))
        for row in ctx.tables[OVER_SEEDS_CSV]:
            logging.info("%s", ", ".join(f"{k} {_short(v)}" for k, v in row.items()
                                         if not k.endswith(("_low", "_high"))))
    write_verdicts(ctx)
    write_tables(ctx)
    for name, fig in (study.draw(ctx) or {}).items():
        save_figure(fig, ctx.out_dir, name)
    logging.info("wrote %s", os.path.abspath(ctx.out_dir))


def write_tables(ctx):
    for name, rows in ctx.tables.items():
        if rows:
            atomic.write_csv(os.path.join(ctx.out_dir, name), rows)


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------
# Summaries over seeds


def over_seeds(rows, keys):
    """The per-unit summaries, computed from per-seed rows: one row per value of ``keys``
    with the number of seeds and, for every other numeric column, its mean over the seeds
    and the 95% Student t interval of that mean (``tfnorm.analysis.stats.interval``: columns
    _mean, _low, _high; NaN seeds are left out, counted in _missing: blank if none)."""
    from tfnorm.analysis import stats
    groups = collections.OrderedDict()
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    columns = [c for c, v in rows[0].items() if c not in keys and c != "seed"
               and isinstance(v, (int, float)) and not isinstance(v, bool)]
    out, undefined = [], {c for c in columns for r in rows if r[c] != r[c]}  # NaN
    for key, group in groups.items():
        row = dict(zip(keys, key), seeds=len({r["seed"] for r in group}))
        for column in columns:
            value = stats.interval([r[column] for r in group])
            row.update({f"{column}_mean": value.mean, f"{column}_low": value.low,
                        f"{column}_high": value.high})
            if column in undefined:  # in every row, so that the CSV has one header
                row[f"{column}_missing"] = value.missing or ""
        out.append(row)
    return out


def write_verdicts(ctx):
    """verdicts.csv (in ctx.tables) and verdicts.md: the study's extra_verdicts, then its
    claims decided on ctx.tables[summary.csv]. Returns the rows of verdicts.csv ([]: none)."""
    study = ctx.study
    decided = list(study.extra_verdicts(ctx)) if study.extra_verdicts is not None else []
    if study.claims is not None and ctx.tables.get(SUMMARY_CSV):
        decided += verdicts.decide(study.claims(ctx), ctx.tables[SUMMARY_CSV], study.key)
    rows = verdicts.rows(decided)
    if rows:
        ctx.tables[VERDICTS_CSV] = rows
        atomic.write_text(os.path.join(ctx.out_dir, VERDICTS_MD), verdicts.markdown(rows))
    return rows


def redo_verdicts(study, results_dir, out_dir=None):
    """The verdict step alone, from a finished study directory's own files (config.json's
    flags, summary.csv, the tables extra_verdicts reads): verdicts.csv and verdicts.md into
    ``out_dir`` (default ``results_dir``); no training, no TensorFlow. Returns the rows."""
    ctx = _context(study, dict(records.read_config(results_dir),
                               out_dir=out_dir or results_dir))
    ctx.tables = _TablesOnDisk(results_dir)
    rows = write_verdicts(ctx)
    if rows:
        atomic.write_csv(os.path.join(ctx.out_dir, VERDICTS_CSV), rows)
    return rows


class _TablesOnDisk(dict):
    """ctx.tables of a finished directory: a CSV file read (numbers parsed) when first asked
    for, so the verdicts skip the tables they never read (histograms.csv: 4.5 MB)."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def __missing__(self, name):
        path = os.path.join(self.directory, name)
        if name == VERDICTS_CSV or not os.path.exists(path):
            raise KeyError(name)
        self[name] = [{k: _number(v) for k, v in row.items()} for row in atomic.read_csv(path)]
        return self[name]

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default


def _number(text):
    """A CSV cell as the study wrote it: int, float (repr round-trips), else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def accuracy_summary(ctx):
    """Per unit and seed: final train and test accuracy, best test accuracy."""
    out = []
    for unit in ctx.units:
        for seed in ctx.seeds:
            mine = ctx.rows(ACCURACY_CSV, **{ctx.study.key: unit, "seed": seed})
            if mine:
                out.append({ctx.study.key: unit, "seed": seed,
                            "final_train_acc": mine[-1]["train_acc"],
                            "final_test_acc": mine[-1]["test_acc"],
                            "best_test_acc": max(r["test_acc"] for r in mine)})
    return out


def per_seed(rows, x, y, seeds):
    """(xs, values[seeds, xs]) of column ``y`` against ``x`` in ``rows``, one line per
    seed (NaN where a seed has no row), for ``tfnorm.analysis.figures.band``."""
    import numpy as np
    xs = sorted({r[x] for r in rows})
    values = np.full((len(seeds), len(xs)), np.nan)
    for r in rows:
        values[seeds.index(r["seed"]), xs.index(r[x])] = r[y]
    return xs, values


# ----------------------------------------------------------------------------
# Figures


def figure(rows=1, cols=1, width=4.5, height=3.2, **kwargs):
    """A matplotlib figure and axes grid (always 2-D: axes[row][col])."""
    import matplotlib.pyplot as plt
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                        **kwargs)


def colors(names):
    from tfnorm.analysis import figures
    return figures.scheme_colors(names)


def band(ax, rows, x, y, seeds, label, color, **kwargs):
    """Mean over seeds of ``y`` against ``x`` with its 95% t interval band (``figures.band``)."""
    from tfnorm.analysis import figures
    xs, values = per_seed(rows, x, y, seeds)
    figures.band(ax, xs, values, label, color, **kwargs)


def save_figure(fig, out_dir, name):
    """Save ``fig`` to out_dir/name atomically and close it; returns the path."""
    import matplotlib.pyplot as plt
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------
# Santurkar et al.'s setting (ics, landscape, noisy_bn)

SANTURKAR_NOTE = "(article net on digits, not VGG on CIFAR-10: neither is available offline)"


def define_placement_flag(flag_values, default="before"):
    """--placement: where the normalization sits; Santurkar et al.'s VGG (and BN's own
    paper) has conv -> BN -> ReLU ('before'), the article conv -> ReLU -> norm ('after')."""
    flags.DEFINE_enum("placement", default, ["before", "after"],
                      "Normalization before the activation (conv -> norm -> ReLU, the "
                      "papers') or after it (the article's).", flag_values=flag_values)
