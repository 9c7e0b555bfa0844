r"""Train the article's network under one normalization scheme, record its gradients and
draw the four-panel figures.

    python -m experiments.article.train --scheme=batch --out_dir=runs/batch            # digits
    python -m experiments.article.train --dataset=stl10 --scheme=batch --out_dir=runs/stl10_batch \
        --stl10_archive=/path/to/stl10_binary.tar.gz                           # the article

With --dataset=stl10 the defaults are the article's: batch 20, learning rate 0.0008,
his Adam ('article_adam': constant bias correction, eps 1e-9), 200 epochs, file order,
no augmentation. Rerunning the same command after a kill resumes from the last
checkpoint and ends with the same metrics.csv (all but the wall-clock 'seconds').
The run directory's layout is described in tfnorm/run/records.py. --strategy=mirrored
(local GPUs, or --cpu_devices=N) and --strategy=multiworker (TF_CONFIG) split each batch
over replicas with the same results (tfnorm/distributed.py).
"""

from absl import flags

from experiments import cli
from tfnorm import config as run_config
from tfnorm.run import runid

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    """The command line's flags (defined only when run as a script, so that compare can
    import ``run`` and define its own)."""
    cli.define_run_flags(flag_values)
    cli.define_flags(("scheme", "seed", "out_dir"), flag_values=flag_values, helps=dict(
        seed="Seed of the initial weights, the data order and the noise.",
        out_dir="Run directory (created; resumed if it holds this run)."))
    flags.DEFINE_enum("strategy", "none", list(cli.STRATEGIES),
                      "Where the steps run (tfnorm.distributed): none, one device; mirrored, "
                      "one replica per local GPU (or per --cpu_devices); multiworker, the "
                      "machines of TF_CONFIG. Same results, the batch split over replicas.",
                      flag_values=flag_values)
    flags.DEFINE_integer("cpu_devices", 0, "With --strategy=mirrored: split the CPU into N "
                         "logical devices, one replica each (0: the local GPUs).",
                         flag_values=flag_values)


def make_strategy(name, cpu_devices, batch_size):
    """The tf.distribute strategy of --strategy (None for 'none'), its flags checked.
    Imports TensorFlow: call it after the flags are checked, and before any other
    TensorFlow work (logical CPU devices and the multi-worker runtime must be set up
    before TensorFlow initializes its devices)."""
    from tfnorm import distributed  # TensorFlow loads here, once the flags are good
    try:
        strategy = distributed.make_strategy(name, cpu_devices)
        if batch_size:
            distributed.check_global_batch(batch_size, strategy.num_replicas_in_sync)
    except ValueError as error:
        raise cli.ConfigError(str(error)) from None
    return None if name == "none" else strategy


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config = cli.resolve(cli.flag_values(FLAGS, run_config.names()))
    cli.validate(config, check_out_dir=False)
    cli.check_strategy_flags(FLAGS.strategy, FLAGS.cpu_devices)
    if FLAGS.strategy != "none" and config["per_position_running_stats"]:
        raise cli.ConfigError(f"--per_position_running_stats: not supported with "
                              f"--strategy={FLAGS.strategy} (train on one device)")
    # Everything about --out_dir that needs no TensorFlow, before it loads (a bad --out_dir
    # is refused at once); its checkpoint after make_strategy, which must come first.
    cli.validate_out_dir(config, checkpoint=False)
    strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_devices, config["batch_size"])
    from tfnorm.run import rundir, runner  # TensorFlow is loaded by now (make_strategy)
    if not config["overwrite"]:
        rundir.check_checkpoint(config["out_dir"], runid.run_identity(config))
    placement = (dict(strategy=FLAGS.strategy, cpu_devices=FLAGS.cpu_devices)
                 if strategy else None)
    runner.run(config, strategy, placement)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
