"""A run directory checked as one whole before a run resumes or is reused.

The checkpoint is the truth about how far a run got (it is the last thing an epoch
writes); ``metrics.csv`` must then hold rows 1..k for its epoch k, and ``records/`` a
readable record for every recorded epoch up to k. What is derived from those (panels,
GIFs, TensorBoard, ``status.json``) never blocks: missing or unreadable, it is redrawn.

``audit`` finds the last epoch whose files all agree and from which training can go on:
the latest checkpoint when everything is in order (the usual resume after a kill), else
the last intact epoch that still has a checkpoint, else epoch 0 (a fresh start: runs are
deterministic on one machine, so retraining recomputes exactly what was lost). Each such
repair is one line in ``Audit.repairs``. What cannot be repaired (an unreadable
config.json) is refused with ``RunDirError``, naming the file.

No TensorFlow here: ``compare`` audits every run it reuses without loading it.
"""

import collections
import math
import os
import re

from tfnorm import io, records

Audit = collections.namedtuple(
    "Audit", ["checkpoint_epoch", "resume_epoch", "complete", "repairs", "stale_derived"])
Audit.__doc__ = """checkpoint_epoch: the latest checkpoint's epoch (0: none); resume_epoch:
the epoch training goes on from (its checkpoint, or 0 for a fresh start); complete: all
``epochs`` are done and their files agree; repairs: one line per inconsistency found;
stale_derived: derived files (panels, GIFs) that are unreadable or belong to no record,
to be deleted and redrawn."""

_STATE_LATEST = re.compile(r'^model_checkpoint_path:\s*"(?:.*/)?ckpt-(\d+)"\s*$', re.M)
_CHECKPOINT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
_PANEL_NAME = re.compile(r"^layer(\d+)_epoch(\d+)\.png$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = (b"GIF87a", b"GIF89a")


def checkpoint_epochs(run_dir):
    """Epochs whose checkpoint files (index and data) are all there, ascending."""
    folder = os.path.join(run_dir, records.CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return []
    names = set(os.listdir(folder))
    found = []
    for name in names:
        match = _CHECKPOINT_INDEX.match(name)
        if match and any(n.startswith(f"ckpt-{match.group(1)}.data-") for n in names):
            found.append(int(match.group(1)))
    return sorted(found)


def latest_checkpoint_epoch(run_dir):
    """The epoch the checkpoint state file names as latest, or None when there is none."""
    path = os.path.join(run_dir, records.CHECKPOINT_DIR, "checkpoint")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            match = _STATE_LATEST.search(f.read())
    except FileNotFoundError:
        return None
    return int(match.group(1)) if match else None


def record_problem(path, epoch=None):
    """Why the record at ``path`` cannot be used (one phrase), or None if it can."""
    if not os.path.exists(path):
        return "missing"
    try:
        record = records.load_record(path)
    except records.RunDirError as error:
        return str(error).split(": ", 1)[-1]
    if epoch is not None and record.epoch != epoch:
        return f"holds epoch {record.epoch}, not {epoch}"
    return None


def image_readable(path):
    """True if ``path`` is a whole PNG or GIF (its signature, and for a PNG its end
    chunk; enough to tell a figure written through tfnorm.io from a damaged one)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    if data.startswith(_PNG_MAGIC):
        return data.endswith(b"IEND\xaeB`\x82")
    return data.startswith(_GIF_MAGIC) and data.endswith(b";")


def _intact_rows(run_dir, repairs):
    """The number j of rows of metrics.csv that are epochs 1..j in order and whole."""
    path = os.path.join(run_dir, records.METRICS_FILE)
    try:
        rows = records.read_metrics(run_dir)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError):
        repairs.append(f"{path}: unreadable")
        return 0
    intact = 0
    for row in rows:
        values = [v for k, v in row.items() if k != "epoch"]
        if (row.get("epoch") != intact + 1 or None in values
                or not all(isinstance(v, float) for v in values)
                or not math.isfinite(row["train_loss"])):
            repairs.append(f"{path}: row {intact + 1} is missing or damaged")
            break
        intact += 1
    return intact


def audit(run_dir, epochs, record_every):
    """Check ``run_dir`` as one whole (see the module docstring). Returns an Audit."""
    repairs = []
    latest = latest_checkpoint_epoch(run_dir)
    available = checkpoint_epochs(run_dir)
    if latest is not None and latest not in available:
        repairs.append(f"{os.path.join(run_dir, records.CHECKPOINT_DIR)}: the latest "
                       f"checkpoint (epoch {latest}) has lost its files")
        latest = max(available, default=0)
    latest = latest or 0
    intact = _intact_rows(run_dir, repairs) if latest else 0
    if latest and intact < latest and not repairs:
        repairs.append(f"{os.path.join(run_dir, records.METRICS_FILE)}: rows {intact + 1}-"
                       f"{latest} of the {latest} checkpointed epochs are missing")
    for epoch in range(1, min(latest, intact) + 1):
        if records.is_recorded_epoch(epoch, epochs, record_every):
            path = records.record_path(run_dir, epoch)
            problem = record_problem(path, epoch)
            if problem:
                repairs.append(f"{path}: {problem}")
                intact = epoch - 1
                break
    consistent = min(latest, intact)
    resume = max([e for e in available if e <= consistent], default=0)
    if repairs:
        repairs = [f"{line}; retraining from epoch {resume}" for line in repairs]
    complete = resume == latest == epochs
    return Audit(latest, resume, complete, repairs, _stale_derived(run_dir, resume))


def _stale_derived(run_dir, resume):
    """Panels that are unreadable or whose record is gone or later than ``resume``, and
    GIFs that are unreadable (any panel redrawn makes them stale too)."""
    folder = os.path.join(run_dir, records.PANELS_DIR)
    if not os.path.isdir(folder):
        return []
    kept_records = {e for e in records.record_epochs(run_dir) if e <= resume}
    stale = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        match = _PANEL_NAME.match(name)
        if match and (int(match.group(2)) not in kept_records or not image_readable(path)):
            stale.append(path)
        elif name.endswith(".gif") and not image_readable(path):
            stale.append(path)
    if stale:  # GIFs are made from the panels: redraw them with the panels
        stale += [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                  if n.endswith(".gif") and os.path.join(folder, n) not in stale]
    return stale


def is_finished(run_dir, config):
    """Nothing left to train in ``run_dir`` for ``config``: complete by its files, or
    diverged (status) with its files agreeing up to the epoch before."""
    if records.read_config(run_dir) is None:
        return False
    found = audit(run_dir, config["epochs"], config["record_every"])
    if found.complete:
        return True
    status = records.read_status(run_dir) or {}
    return (status.get("state") == "diverged" and not found.repairs
            and found.resume_epoch == found.checkpoint_epoch == status.get("epoch", 0) - 1)



def rewind(run_dir, epoch):
    """Go back to the end of ``epoch`` (the audit's resume_epoch): metrics.csv keeps its
    first ``epoch`` rows (they are intact: the audit checked them; what follows may not
    even parse), and the checkpoint of ``epoch`` becomes the latest (later ones deleted),
    or with epoch 0 every checkpoint goes (a fresh start). The checkpoint state file is
    written whole, the way ``tf.train.CheckpointManager`` writes it."""
    metrics = os.path.join(run_dir, records.METRICS_FILE)
    if os.path.exists(metrics):
        with open(metrics, "rb") as f:
            lines = f.read().split(b"\n")
        if epoch == 0:
            os.remove(metrics)
        elif len([line for line in lines[1:] if line]) > epoch:
            io.write_bytes(metrics, b"\n".join(lines[:epoch + 1]) + b"\n")
    folder = os.path.join(run_dir, records.CHECKPOINT_DIR)
    if not os.path.isdir(folder) or latest_checkpoint_epoch(run_dir) == epoch:
        return
    for name in os.listdir(folder):
        match = re.match(r"^ckpt-(\d+)\.", name)
        if name == "checkpoint" or (match and int(match.group(1)) > epoch):
            os.remove(os.path.join(folder, name))
    if epoch:
        io.write_text(os.path.join(folder, "checkpoint"),
                      f'model_checkpoint_path: "ckpt-{epoch}"\n'
                      f'all_model_checkpoint_paths: "ckpt-{epoch}"\n')
