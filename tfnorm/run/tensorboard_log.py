"""TensorBoard's view of a run directory (``--tensorboard``): per epoch the scalars of
metrics.csv and, for recorded epochs, the records' histograms. Everything here is derived
from those files, so the folder is rebuilt whole whenever a run starts."""

import math
import os
import shutil

import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from tfnorm.run import records
from tfnorm.measures import EPOCH_STATS, LAYER_STATS, QUANTITIES


def write_epoch(writer, row, record, num_layers):

    step = row["epoch"]
    with writer.as_default():
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            if not math.isnan(row[key]):  # nan: no test pass that epoch (--eval_every)
                tf.summary.scalar(key, row[key], step=step)
        for layer in range(1, num_layers + 1):
            for stat in LAYER_STATS + EPOCH_STATS:
                tf.summary.scalar(f"layer{layer}/{stat}", row[f"{stat}_{layer}"], step=step)
        if record is not None:
            # The records already hold fixed-bin histograms: write them as TensorBoard's
            # [bins, 3] (left edge, right edge, count) histogram tensors.
            for layer in range(num_layers):
                for q, name in enumerate(QUANTITIES):
                    edges = records.histogram_edges(record, layer, q)
                    buckets = tf.stack([edges[:-1], edges[1:],
                                        record.counts[layer, q].astype("float64")], axis=1)
                    tag = f"layer{layer + 1}/{name}"
                    tf.summary.write(tag, buckets, step=step,
                                     metadata=histogram_metadata.create_summary_metadata(
                                         tag, ""))
    writer.flush()


def rebuild(out_dir, rows, num_layers):
    """A new tensorboard folder holding the completed epochs (``rows``, from metrics.csv,
    and their records), and its writer for the epochs to come. Event files can only be
    appended to, so writing on after a resume would show the redone epochs twice; every
    value there comes from metrics.csv and the records, so rewriting it loses nothing
    (and fills it in for a run started without --tensorboard)."""

    folder = os.path.join(out_dir, records.TENSORBOARD_DIR)
    shutil.rmtree(folder, ignore_errors=True)
    writer = tf.summary.create_file_writer(folder)
    recorded = set(records.record_epochs(out_dir))
    for row in rows:
        record = (records.load_record(records.record_path(out_dir, row["epoch"]))
                  if row["epoch"] in recorded else None)
        write_epoch(writer, row, record, num_layers)
    return writer
