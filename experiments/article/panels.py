"""Redraw every four-panel figure and GIF of a run from its saved records alone.

    python -m experiments.article.panels --run_dir=runs/batch
"""

import os

from absl import flags, logging

from experiments import cli
from tfnorm.run import records, rundir, runid

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    flags.DEFINE_string("run_dir", None, "A run directory written by experiments.article.train.",
                        flag_values=flag_values)


def redraw(run_dir, epochs=None):
    """The panels of ``epochs`` (default: every recorded one), then the GIFs. Returns
    (panel PNG paths, GIF paths)."""
    from tfnorm.run import four_panels  # matplotlib loads here, once the flags and files are good
    epochs = records.record_epochs(run_dir) if epochs is None else epochs
    paths, figure = [], four_panels.FourPanels()
    for epoch in epochs:
        paths += four_panels.draw_epoch_panels(run_dir, epoch, figure)
    figure.close()
    return paths, four_panels.write_gifs(run_dir)


def checked_epochs(run_dir):
    """The recorded epochs to draw, each record checked against the run (one line, exit 6,
    naming a record that is damaged or not of it): with a config.json, the records of this
    run up to its checkpoint's epoch (a later one is of an epoch the run will redo);
    without a checkpoint, records only, all of one run."""
    config = cli.stored_config(run_dir)
    run, epochs = None, records.record_epochs(run_dir)
    # A directory with checkpoints is a training run: its audit says how far it got. One
    # without (tfnorm.keras.PanelRecorder's) holds records only, all of one run.
    if config is not None and rundir.checkpoint_epochs(run_dir):
        run = runid.run_identity(config)
        last = rundir.audit(run_dir, config).checkpoint_epoch
        epochs = [e for e in epochs if e <= last]
        if not epochs:
            cli.fail(f"--run_dir {run_dir}: holds no record of an epoch its checkpoint holds "
                     f"(epoch {last})")
    for epoch in epochs:  # a damaged record: one line, before drawing
        record = records.load_record(records.record_path(run_dir, epoch), run)
        run = run or runid.RunIdentity(record.scheme, record.seed, record.config_hash)
    return epochs


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
    panels, gifs = redraw(run_dir, checked_epochs(run_dir))
    logging.info("drew %d panels and %d GIFs in %s", len(panels), len(gifs),
                 os.path.join(run_dir, records.PANELS_DIR))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
