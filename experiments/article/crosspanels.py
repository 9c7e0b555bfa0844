"""One layer at one epoch, the four quantities of every scheme side by side, drawn from
the records of an experiments.article.compare directory alone (no training, no TensorFlow):

    python -m experiments.article.crosspanels --compare_dir=runs/compare --layer=2 \\
        --out=results/crosspanels_layer2.png

Bad input is one line ``error: ...`` on stderr naming the flag or file, exit 2, before
anything is drawn.
"""

import os

from absl import flags, logging

from experiments import cli

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define_flags(("compare_dir", "seed", "schemes"), flag_values=flag_values, helps=dict(
        compare_dir="An experiments.article.compare --out_dir (each run's "
                    "records/epoch_NNNN.npz).",
        seed="Which seed's runs to show.",
        schemes="Schemes to show, e.g. none,batch; default: every scheme found, in "
                "tfnorm.SCHEMES order."))
    flags.DEFINE_integer("layer", None, "The layer to show, 1-based.", **fv)
    flags.DEFINE_integer("epoch", None, "The epoch to show; default: the last epoch every "
                         "run recorded.", **fv)
    flags.DEFINE_string("out", None, "The PNG to write; default: "
                        "<compare_dir>/crosspanels/layer<L>_epoch<NNNN>_seed<k>.png.", **fv)


def check_flags():
    """The checks that need no file: one failing line per problem, the first one wins."""
    if not FLAGS.compare_dir:
        cli.fail("--compare_dir: required")
    if not os.path.isdir(FLAGS.compare_dir):
        cli.fail(f"--compare_dir {FLAGS.compare_dir}: no such directory")
    if FLAGS.layer is None:
        cli.fail("--layer: required (1-based)")
    if FLAGS.layer < 1:
        cli.fail(f"--layer {FLAGS.layer}: layers count from 1")
    if FLAGS.epoch is not None and FLAGS.epoch < 1:
        cli.fail(f"--epoch {FLAGS.epoch}: epochs count from 1")
    if FLAGS.seed < 0:
        cli.fail(f"--seed {FLAGS.seed}: must be >= 0")
    if FLAGS.out is not None and not FLAGS.out.lower().endswith(".png"):
        cli.fail(f"--out {FLAGS.out}: must be a .png path")
    try:
        return None if FLAGS.schemes is None else cli.parse_schemes(FLAGS.schemes)
    except cli.ConfigError as error:
        cli.fail(str(error))


def main(argv):

    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    wanted = check_flags()
    from tfnorm.analysis import crosspanels  # matplotlib loads here, once the flags are good
    out = FLAGS.out or os.path.join(FLAGS.compare_dir, "crosspanels",
                                    f"layer{FLAGS.layer}_epoch{{epoch:04d}}_seed{FLAGS.seed}.png")
    # Everything draw_cross_panels refuses it refuses before drawing: the runs, the
    # epoch, the layer and every record are checked first.
    try:
        runs = crosspanels.find_runs(FLAGS.compare_dir, FLAGS.seed, wanted)
        epochs = crosspanels.common_epochs(runs)
        epoch = FLAGS.epoch if FLAGS.epoch is not None else (epochs[-1] if epochs else None)
        path, epoch, shown = crosspanels.draw_cross_panels(
            FLAGS.compare_dir, FLAGS.layer, out.format(epoch=epoch or 0), epoch=epoch,
            seed=FLAGS.seed, wanted=wanted)
    except crosspanels.CrossPanelError as error:
        cli.fail(str(error))
    except OSError as error:
        cli.fail(f"--out {out.format(epoch=epoch or 0)}: cannot write ({error})")
    logging.info("layer %d, epoch %d, %d schemes (%s): %s", FLAGS.layer, epoch, len(shown),
                 ", ".join(shown), path)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
