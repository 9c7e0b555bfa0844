"""The driver's part of the shared epoch loop (``tfnorm.loop.run_epochs``): what a run
directory gains each epoch (records, panels, metrics.csv, TensorBoard, the checkpoint and
status.json, in an order a kill cannot break; the layout is ``tfnorm.run.records``'s), the
progress bar, and a divergence located by replaying its step from the last checkpoint.
``tfnorm.run.runner`` sets the run up and hands these hooks to the loop.
"""

import os
import sys

from absl import logging
import tqdm

from tfnorm import faults, loop
from tfnorm.errors import Divergence
from tfnorm.measures import EPOCH_STATS, LAYER_STATS
from tfnorm.run import four_panels, records, runid, tensorboard_log
from tfnorm.run.divergence import locate_bound, locate_divergence


def save_checkpoint(manager, checkpoint, epoch):
    """The checkpoint of ``epoch``, its files first and its state file last (``manager``);
    tests (tfnorm.faults) can kill the process between the two."""
    if faults.ENVIRONMENT_VARIABLE in os.environ:
        checkpoint.write(os.path.join(manager.directory, f"ckpt-{epoch}"))
        faults.point("checkpoint", epoch)
    manager.save(checkpoint_number=epoch)



class DriverHooks(loop.EpochHooks):
    """The driver's part of the epoch loop (``loop.run_epochs``): a progress bar, the
    epoch's weight movement and per-layer statistics in its metrics row, then records,
    panels, metrics.csv, TensorBoard and the checkpoint, in an order a kill cannot break;
    a divergence replayed from the last checkpoint to locate its layer."""

    def __init__(self, config, network, trainer, checkpoint, manager, epoch_done, rows,
                 writer, steps, loss_bound, epoch_batches):
        self.config, self.out_dir = config, config["out_dir"]
        self.network, self.trainer = network, trainer
        self.checkpoint, self.manager, self.epoch_done = checkpoint, manager, epoch_done
        self.rows, self.writer, self.steps = rows, writer, steps
        self.loss_bound, self.epoch_batches = loss_bound, epoch_batches
        self.num_layers = len(network.blocks)
        self.panels = four_panels.FourPanels() if config["panels"] else None  # one figure, redrawn
        self.progress = self.start_weights = None

    def before_epoch(self, epoch):
        config = self.config
        self.progress = tqdm.tqdm(total=self.steps, desc=f"{config['scheme']} epoch {epoch}/"
                                  f"{config['epochs']}", leave=False, file=sys.stderr,
                                  disable=None if config["progress"] else True,
                                  dynamic_ncols=True)
        # The weights at the end of the epoch before, for the epoch's weight movement.
        self.start_weights = loop.effective_weights(self.network)

    def on_step(self):
        self.progress.update()

    def after_steps(self, epoch):
        self.progress.close()

    def interrupted(self, epoch):
        records.write_status(self.out_dir, "interrupted", epoch=epoch - 1)

    def diverged(self, epoch, step, finite=None, what=None):
        """Replay the epoch up to the failing step from the last checkpoint (runs are
        deterministic), find where the first non-finite value appears on that step's
        batch (for a loss past the bound, ``what``: the first output past it), and stop.
        ``step`` None: the test pass after the epoch's steps."""
        config, network, out_dir = self.config, self.network, self.out_dir
        layer = None
        if step is not None:
            restored = self.checkpoint.restore(self.manager.latest_checkpoint)
            restored.assert_existing_objects_matched()
            for replayed, (images, labels) in enumerate(self.epoch_batches(epoch), start=1):
                if replayed == step:
                    break
                self.trainer.train_step(images, labels)
            if what is None:
                layer, what = locate_divergence(network, images, labels, finite)
            else:
                layer, size = locate_bound(network, images, self.loss_bound)
                what += f" (layer {layer}'s outputs reach {size:.3g})"
        kept = (f"epochs 1-{epoch - 1} are kept in {out_dir}" if epoch > 1
                else f"no epoch was completed in {out_dir}")
        where = (f"step {step} of {self.steps}" if step else "the test pass")
        where += f", layer {layer}" if layer else ""
        message = (f"scheme {config['scheme']} diverged at epoch {epoch}, {where}: {what}; "
                   f"the run stopped, {kept} (a smaller --learning_rate, or for boxcox "
                   "--boxcox_lambda, may help)")
        records.write_status(out_dir, "diverged", epoch=epoch, step=step, layer=layer,
                             message=message, config_hash=runid.config_hash(config))
        raise Divergence(message)

    def after_epoch(self, epoch, row, result):
        config, out_dir, num_layers = self.config, self.out_dir, self.num_layers
        epoch_stats = {"weight_movement": loop.weight_movement(
            self.start_weights, loop.effective_weights(self.network))}
        for layer in range(num_layers):
            for index, name in enumerate(LAYER_STATS):
                row[f"{name}_{layer + 1}"] = float(result.layer_stats[layer, index])
            for name in EPOCH_STATS:
                row[f"{name}_{layer + 1}"] = float(epoch_stats[name][layer])
        self.rows.append(row)

        # Write order: records, panels, metrics, then the checkpoint last, so a kill in
        # between leaves a checkpoint of an earlier epoch and the resume redoes this one.
        record = None
        if records.is_recorded_epoch(epoch, config["epochs"], config["record_every"]):
            records.save_record(out_dir, epoch, epoch * self.steps,
                                runid.run_identity(config), result.recorded)
            if config["panels"]:
                four_panels.draw_epoch_panels(out_dir, epoch, self.panels)
            if self.writer is not None:
                record = records.load_record(records.record_path(out_dir, epoch))
        records.write_metrics(out_dir, self.rows, num_layers)
        if self.writer is not None:
            tensorboard_log.write_epoch(self.writer, row, record, num_layers)
        self.epoch_done.assign(epoch)
        save_checkpoint(self.manager, self.checkpoint, epoch)
        # After the checkpoint: the status never claims an epoch a resume would redo.
        records.write_status(out_dir, "running", epoch=epoch)
        logging.info("%s epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | "
                     "%.1fs", config["scheme"], epoch, config["epochs"], row["train_loss"],
                     row["train_acc"], row["test_loss"], row["test_acc"], row["seconds"])
