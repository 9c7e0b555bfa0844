"""Redraw every four-panel figure and GIF of a run from its saved records alone.

    python -m experiments.panels --run_dir=runs/batch
"""

import os

from absl import flags, logging

from experiments import cli
from tfnorm import plots, records

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    flags.DEFINE_string("run_dir", None, "A run directory written by experiments.train.",
                        flag_values=flag_values)


def redraw(run_dir):
    """Returns (panel PNG paths, GIF paths)."""
    paths, figure = [], plots.FourPanels()
    for epoch in records.record_epochs(run_dir):
        paths += plots.draw_epoch_panels(run_dir, epoch, figure)
    figure.close()
    return paths, plots.write_gifs(run_dir)


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    run_dir = FLAGS.run_dir
    if not run_dir:
        cli.fail("--run_dir: required")
    if not os.path.isdir(run_dir):
        cli.fail(f"--run_dir {run_dir}: no such directory")
    if not records.record_epochs(run_dir):
        cli.fail(f"--run_dir {run_dir}: holds no records "
                 f"({os.path.join(run_dir, records.RECORDS_DIR)}/epoch_NNNN.npz)")
    for epoch in records.record_epochs(run_dir):  # a damaged record: one line, before drawing
        records.load_record(records.record_path(run_dir, epoch))
    panels, gifs = redraw(run_dir)
    logging.info("drew %d panels and %d GIFs in %s", len(panels), len(gifs),
                 os.path.join(run_dir, records.PANELS_DIR))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
