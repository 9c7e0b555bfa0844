"""One layer at one epoch, the four quantities of every scheme side by side, drawn from
the records of an experiments.compare directory alone (no training, no TensorFlow):

    python -m experiments.crosspanels --compare_dir=runs/compare --layer=2 \\
        --out=results/crosspanels_layer2.png

Bad input is one line ``error: ...`` on stderr naming the flag or file, exit 2, before
anything is drawn. It does not import experiments.common, which loads TensorFlow.
"""

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
EXIT_BAD_INPUT = 2


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("compare_dir", None, "An experiments.compare --out_dir: "
                        "<dir>/<scheme>/seed_<k>/records/epoch_NNNN.npz.", **fv)
    flags.DEFINE_integer("layer", None, "The layer to show, 1-based.", **fv)
    flags.DEFINE_integer("epoch", None, "The epoch to show; default: the last epoch every "
                         "run recorded.", **fv)
    flags.DEFINE_integer("seed", 0, "Which seed's runs to show.", **fv)
    flags.DEFINE_list("schemes", None, "Schemes to show, e.g. none,batch; default: every "
                      "scheme found, in tfnorm.SCHEMES order.", **fv)
    flags.DEFINE_string("out", None, "The PNG to write; default: "
                        "<compare_dir>/crosspanels/layer<L>_epoch<NNNN>_seed<k>.png.", **fv)


def fail(message):
    """One line on stderr, exit 2 (no traceback, no usage text)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(EXIT_BAD_INPUT)


def parse_flags_or_fail(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])


def check_flags():
    """The checks that need no file: one failing line per problem, the first one wins."""
    if not FLAGS.compare_dir:
        fail("--compare_dir: required")
    if not os.path.isdir(FLAGS.compare_dir):
        fail(f"--compare_dir {FLAGS.compare_dir}: no such directory")
    if FLAGS.layer is None:
        fail("--layer: required (1-based)")
    if FLAGS.layer < 1:
        fail(f"--layer {FLAGS.layer}: layers count from 1")
    if FLAGS.epoch is not None and FLAGS.epoch < 1:
        fail(f"--epoch {FLAGS.epoch}: epochs count from 1")
    if FLAGS.seed < 0:
        fail(f"--seed {FLAGS.seed}: must be >= 0")
    if FLAGS.out is not None and not FLAGS.out.lower().endswith(".png"):
        fail(f"--out {FLAGS.out}: must be a .png path")


def main(argv):
    from tfnorm import crossplots

    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    check_flags()
    out = FLAGS.out or os.path.join(FLAGS.compare_dir, "crosspanels",
                                    f"layer{FLAGS.layer}_epoch{{epoch:04d}}_seed{FLAGS.seed}.png")
    # Everything draw_cross_panels refuses it refuses before drawing: the runs, the
    # epoch, the layer and every record are checked first.
    try:
        runs = crossplots.find_runs(FLAGS.compare_dir, FLAGS.seed, FLAGS.schemes)
        epochs = crossplots.common_epochs(runs)
        epoch = FLAGS.epoch if FLAGS.epoch is not None else (epochs[-1] if epochs else None)
        path, epoch, shown = crossplots.draw_cross_panels(
            FLAGS.compare_dir, FLAGS.layer, out.format(epoch=epoch or 0), epoch=epoch,
            seed=FLAGS.seed, wanted=FLAGS.schemes)
    except crossplots.CrossPanelError as error:
        fail(str(error))
    except OSError as error:
        fail(f"--out {out.format(epoch=epoch or 0)}: cannot write ({error})")
    logging.info("layer %d, epoch %d, %d schemes (%s): %s", FLAGS.layer, epoch, len(shown),
                 ", ".join(shown), path)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags_or_fail)
