r"""Train every scheme over several seeds, then compare them: means with 95% intervals,
paired differences against a baseline scheme with their verdicts, the accuracy and
non-zero-gradient figures (experiments/article/summary.py).

    python -m experiments.article.compare --out_dir=runs/compare --results_dir=results   # make demo
    python -m experiments.article.compare --dataset=stl10 --schemes=none,batch,layer,instance,boxcox \
        --stl10_archive=/path/to/stl10_binary.tar.gz --out_dir=runs/stl10

Runs go to <out_dir>/<scheme>/<seed> (tfnorm.analysis.compare_grid.run_dir; each an
experiments.article.train run directory). A run
already complete with the same configuration is reused (after an audit of its files,
tfnorm.run.rundir, which also rewrites its derived files: status, panels, TensorBoard); an
interrupted one resumes; one of another configuration is refused, or with --overwrite
trained again; one that diverged is reported, not retried (it would diverge again: runs
are deterministic). After a Ctrl-C or a failure the summary of what is complete is
written, then the one-line error and its exit code. One process trains a scheme's seeds
one after the other on the same compiled steps (tfnorm.run.runner.Builds): a seed costs its
epochs, not another start-up and tracing. --jobs=N splits the grid into N shards, each
trained by a worker process; --shard=K/N trains one shard (a cluster's job array) and
--summarize merges the finished runs. The results are the same in every arrangement.
"""

import os
import sys

from absl import flags, logging

from experiments import cli, workers
from experiments.article import summary
from tfnorm import catalog, errors
from tfnorm import config as run_config
from tfnorm.analysis import compare_grid, stats
from tfnorm.run import rundir, stopping

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    """The command line's flags (defined only when run as a script)."""
    fv = {"flag_values": flag_values}
    cli.define_run_flags(flag_values)
    cli.define_flags(("schemes", "seeds", "seed", "out_dir"),
                     dict(seeds=5, out_dir="runs/compare"), flag_values=flag_values)
    flags.DEFINE_string("results_dir", None, "Also copy the figures, summaries and the "
                        "last-epoch four-panel figure of every layer for each scheme here.",
                        **fv)
    flags.DEFINE_integer("jobs", 2, "Processes training at a time: 1 trains every run in "
                         "this process, N > 1 splits the grid into N shards trained by N "
                         "subprocesses (same results). Default 2, for 2 cores.", **fv)
    flags.DEFINE_string("shard", None, "K/N: train only shard K of N of the scheme x seed "
                        "grid (contiguous blocks) and write no summary, e.g. one task of a "
                        "cluster's job array; then --summarize merges the runs.", **fv)
    flags.DEFINE_boolean("summarize", False, "Train nothing: merge the finished runs of the "
                         "grid into the summary and figures (refused if any is missing).",
                         **fv)
    flags.DEFINE_string("baseline", "none", "The scheme every other is compared with, paired "
                        "by seed (summary.md's verdicts); one of --schemes (the default, "
                        "none, may be left out of --schemes: then nothing is paired).", **fv)
    flags.DEFINE_integer("panel_seeds", 1, "Draw the four-panel figures and GIFs for the "
                         "first N seeds of each scheme (the others keep their records: "
                         "experiments.article.panels draws them later).", **fv)


def plan(base, schemes, seeds, first_seed, panel_seeds=1):
    """The configuration of every run of the grid, scheme by scheme, each validated
    (before any work); panels only for the first ``panel_seeds`` seeds."""
    configs = []
    for scheme in schemes:
        for seed in range(first_seed, first_seed + seeds):
            config = dict(base, scheme=scheme, seed=seed,
                          out_dir=compare_grid.run_dir(base["out_dir"], scheme, seed),
                          panels=base["panels"] and seed < first_seed + panel_seeds)
            cli.validate(config)
            configs.append(config)
    return configs


def train_here(configs, progress, reused=()):
    """Rewrite the derived files of the ``reused`` runs (``runner.refresh``), then train
    ``configs`` one after the other in this process, sharing the traced steps of runs
    that differ only in their seed (``runner.Builds``). Returns after a Ctrl-C too, the
    run in progress stopped at a safe point."""
    # TensorFlow loads here, after every flag was checked
    from tfnorm.run import runner, shared_cores
    if shared_cores.shares_cores() and shared_cores.stop_spinning():
        logging.info("sharing the cores with other workers: thread pools do not spin")
    for config in reused:
        if stopping.requested():
            return
        runner.refresh(config)
    builds = runner.Builds()
    for config in configs:
        if stopping.requested():
            return
        try:
            runner.run(config, builds=builds)
        except errors.Divergence as error:
            logging.warning("%s", error)
        except errors.Interrupted:
            return
        progress.finished(config)


def train_all(configs, jobs, command_of_shard=None):
    """Train every run of ``configs`` that is not finished by its audited files
    (``rundir.view``): in this process with jobs=1, else in ``jobs`` worker processes
    (``command_of_shard(k, n)``: the command line training shard k of n, which also
    refreshes the finished runs of its shard). Raises errors.Interrupted after a SIGINT or
    SIGTERM, once the runs in progress stopped at a safe point, and the error of a failed
    worker (workers.run_shards); finished runs are kept."""
    todo = [c for c in configs if not rundir.is_finished(c["out_dir"], c)]
    reused = [c for c in configs if c not in todo]
    for config in reused:
        logging.info("reusing %s", config["out_dir"])
    jobs = max(1, min(jobs, len(todo)))
    progress = workers.Progress(len(configs), len(reused), jobs)
    if stopping.requested():  # a Ctrl-C while the grid was checked: start nothing
        pass
    elif jobs == 1:
        train_here(todo, progress, reused)
    else:
        workers.run_shards(lambda k: command_of_shard(k, jobs), jobs, todo, progress,
                           os.path.dirname(os.path.dirname(todo[0]["out_dir"])))
    if stopping.requested():
        raise errors.Interrupted(what=f"with {progress.done} of {progress.total} runs "
                                 "complete")


# The flags a worker gets from its parent (besides --shard, --jobs=1 and the run flags).
GRID_FLAGS = ("schemes", "seeds", "seed", "out_dir", "panel_seeds")


def check_flags(flag_values=FLAGS):
    """(base configuration, schemes, shard or None), every flag checked before any work."""
    base = cli.resolve(dict(cli.flag_values(flag_values, run_config.training_names()),
                            out_dir=flag_values.out_dir, seed=flag_values.seed))
    schemes = cli.parse_schemes(flag_values.schemes)
    check_baseline(flag_values, schemes)
    for name in ("seeds", "jobs"):
        if flag_values[name].value <= 0:
            raise cli.ConfigError(f"--{name}={flag_values[name].value}: must be a positive "
                                  "integer")
    if flag_values.panel_seeds < 0:
        raise cli.ConfigError(f"--panel_seeds={flag_values.panel_seeds}: must be 0 or more")
    if not base["out_dir"]:
        raise cli.ConfigError("--out_dir: required")
    shard = workers.parse_shard(flag_values.shard) if flag_values.shard else None
    if shard and flag_values.summarize:
        raise cli.ConfigError("--shard and --summarize: a shard trains, --summarize merges")
    cli.check_seed(flag_values.seed, count=flag_values.seeds)
    cli.validate(dict(base, scheme=schemes[0]), check_out_dir=False)
    return base, schemes, shard


def check_baseline(flag_values, schemes):
    """--baseline: one scheme, among --schemes unless it is the default left out of them."""
    baseline = flag_values.baseline
    names = cli.parse_schemes(baseline, flag="--baseline")
    if len(names) != 1 or baseline.strip() == "all":
        raise cli.ConfigError(f"--baseline={baseline}: name one scheme, the one every other "
                              "is paired with")
    if names[0] not in schemes and flag_values["baseline"].present:
        raise cli.ConfigError(f"--baseline={baseline}: not among --schemes "
                              f"({', '.join(schemes)})")


def worker_command(flag_values, index, count):
    """The command line of the worker training shard ``index`` of ``count``."""
    names = run_config.training_names() + GRID_FLAGS
    values = dict(cli.flag_values(flag_values, names), progress=False)
    return ([sys.executable, "-m", "experiments.article.compare", f"--shard={index}/{count}",
             "--jobs=1"] + cli.to_command_line(values, names))


def check_complete(configs):
    """--summarize: every run of the grid finished, or one line naming those that are not."""
    missing = [f"{c['scheme']} seed {c['seed']}" for c in configs
               if not rundir.is_finished(c["out_dir"], c)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise cli.ConfigError(f"--summarize: {len(missing)} of {len(configs)} runs are not "
                              f"finished ({shown}); train them first (the same command "
                              "without --summarize, or its shards)")


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    base, schemes, shard = check_flags(FLAGS)
    cli.check_writable(base["out_dir"], "--out_dir")
    if FLAGS.results_dir:
        cli.check_writable(FLAGS.results_dir, "--results_dir")
    configs = plan(base, schemes, FLAGS.seeds, FLAGS.seed, FLAGS.panel_seeds)
    if shard:
        train_all(workers.shard(configs, *shard), jobs=1)
        logging.info("shard %d/%d done; merge the shards with --summarize", *shard)
        return
    if FLAGS.summarize:
        check_complete(configs)
    else:
        try:
            train_all(configs, FLAGS.jobs, lambda k, n: worker_command(FLAGS, k, n))
        except errors.RunEnded:
            # Interrupted, or a run or a worker failed: what is complete is summarized (the
            # runs not finished show as such there), then the error's one line and code.
            try:
                summary.write(base, configs, FLAGS.baseline, FLAGS.results_dir)
            except (OSError, errors.RunEnded) as error:
                logging.warning("no summary written: %s", catalog.one_line(error))
            raise
    result = summary.write(base, configs, FLAGS.baseline, FLAGS.results_dir)
    for scheme, cells in result.per_scheme.items():
        logging.info("%-10s final test acc %s, epoch to 95%% train %s", scheme,
                     stats.format_interval(cells["final_test_acc"]),
                     stats.format_interval(cells["epoch_to_95"], digits=2))
    logging.info("summary: %s", os.path.join(base["out_dir"], summary.SUMMARY_MD))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
