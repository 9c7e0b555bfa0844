"""A run directory checked as one whole before a run resumes or is reused or read.

The checkpoint is the truth about how far a run got (it is the last thing an epoch
writes); ``metrics.csv`` must then hold rows 1..k for its epoch k, each as written
(``records.parse_metrics``), and ``records/`` a record of this run for every recorded
epoch up to k. What is derived from those (panels, GIFs, TensorBoard, ``status.json``)
never blocks and is never believed: missing or unreadable, it is redrawn.

``audit`` finds the last epoch whose files all agree and from which training can go on:
the latest checkpoint when everything is in order (the usual resume after a kill), else
the last intact epoch that still has a checkpoint, else epoch 0 (a fresh start: runs are
deterministic on one machine, so retraining recomputes exactly what was lost). Each such
repair is one line in ``Audit.repairs``. ``view`` is what every reader of a run (compare,
its summary, the scripts) sees: the audited state and rows. What cannot be repaired (a
config.json that cannot be read, a checkpoint of another run, a file where a folder
belongs) is refused with ``RunDirError``, naming the file.

No TensorFlow here, except to read a checkpoint (``check_checkpoint``): compare audits
every run it reuses without loading it.
"""

import collections
import json
import math
import os
import re

from tfnorm.run import atomic, records, runid
from tfnorm.errors import DamagedFile, RunDirError
from tfnorm.measures import is_evaluated_epoch

Audit = collections.namedtuple(
    "Audit", ["checkpoint_epoch", "resume_epoch", "complete", "repairs", "stale_derived",
              "rows"])
Audit.__doc__ = """checkpoint_epoch: the latest checkpoint's epoch (0: none); resume_epoch:
the epoch training goes on from (its checkpoint, or 0 for a fresh start); complete: all
``epochs`` are done and their files agree; repairs: one line per inconsistency found;
stale_derived: derived files (panels, GIFs) that are unreadable or belong to no record,
to be deleted and redrawn; rows: metrics.csv's rows of epochs 1..resume_epoch."""

View = collections.namedtuple("View", ["state", "epoch", "rows", "message"])
View.__doc__ = """A run as its audited files show it. state: "complete", "diverged" (its
status says so, with this run's identity, at the epoch after its checkpoint),
"incomplete" (``epoch`` of them done and intact), "missing" (no run, or a run of another
configuration: ``message``) or "damaged" (refused: ``message``); rows: metrics.csv's
audited rows (epochs 1..``epoch``)."""
FINISHED = ("complete", "diverged")

_STATE_LATEST = re.compile(r'^model_checkpoint_path:\s*"(?:.*/)?ckpt-(\d+)"\s*$', re.M)
_CHECKPOINT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
_PANEL_NAME = re.compile(r"^layer(\d+)_epoch(\d+)\.png$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = (b"GIF87a", b"GIF89a")
# The checkpoint's entry holding the run's identity (runner.build's ``run`` variable).
CHECKPOINT_IDENTITY_KEY = "run/.ATTRIBUTES/VARIABLE_VALUE"


def check_layout(run_dir):
    """DamagedFile naming the first of a run's files that is a folder, or of its folders
    that is a file (nothing a run writes can then be trusted or even written)."""
    for name in records.RUN_FILES + (records.LOCK_FILE,):
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            raise DamagedFile(f"{path}: a folder where the run keeps a file; pass --overwrite "
                              "to start the run again (it removes it)")
    for name in records.RUN_DIRS:
        path = os.path.join(run_dir, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise DamagedFile(f"{path}: a file where the run keeps a folder; pass --overwrite "
                              "to start the run again (it removes it)")


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


def record_problem(path, epoch=None, run=None):
    """Why the record at ``path`` cannot be used for ``epoch`` of the run ``run`` (a
    RunIdentity) (one phrase), or None if it can."""
    if not os.path.exists(path):
        return "missing"
    try:
        record = records.load_record(path, run)
    except records.RunDirError as error:
        return str(error).split(": ", 1)[-1]
    if epoch is not None and record.epoch != epoch:
        return f"holds epoch {record.epoch}, not {epoch}"
    return None


def image_readable(path):
    """True if ``path`` is a whole PNG or GIF (its signature, and for a PNG its end
    chunk; enough to tell a figure written through tfnorm.run.atomic from a damaged one)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    if data.startswith(_PNG_MAGIC):
        return data.endswith(b"IEND\xaeB`\x82")
    return data.startswith(_GIF_MAGIC) and data.endswith(b";")


def audit(run_dir, config):
    """Check ``run_dir`` as one whole for the run ``config`` describes (see the module
    docstring). Returns an Audit; DamagedFile if the layout is broken."""
    check_layout(run_dir)
    run = runid.run_identity(config)
    epochs, record_every = config["epochs"], config["record_every"]
    repairs = []
    latest = latest_checkpoint_epoch(run_dir)
    available = checkpoint_epochs(run_dir)
    if latest is not None and latest not in available:
        repairs.append(f"{os.path.join(run_dir, records.CHECKPOINT_DIR)}: the latest "
                       f"checkpoint (epoch {latest}) has lost its files")
        latest = max(available, default=0)
    latest = latest or 0
    metrics = records.parse_metrics(run_dir) if latest else records.Metrics([], None, 0)
    intact = len(metrics.rows)
    path = os.path.join(run_dir, records.METRICS_FILE)
    if metrics.problem and intact < latest:
        repairs.append(f"{path}: {metrics.problem}")
    elif intact < latest and not repairs:
        repairs.append(f"{path}: rows {intact + 1}-{latest} of the {latest} checkpointed "
                       "epochs are missing")
    for row in metrics.rows[:min(latest, intact)]:  # a test pass leaves finite values
        if (is_evaluated_epoch(row["epoch"], epochs, config.get("eval_every", 1))
                and not all(math.isfinite(row[c]) for c in records.NOT_ALWAYS_MEASURED)):
            repairs.append(f"{path}: epoch {row['epoch']} had a test pass but holds no "
                           "finite test value")
            intact = row["epoch"] - 1
            break
    for epoch in range(1, min(latest, intact) + 1):
        if records.is_recorded_epoch(epoch, epochs, record_every):
            path = records.record_path(run_dir, epoch)
            problem = record_problem(path, epoch, run)
            if problem:
                repairs.append(f"{path}: {problem}")
                intact = epoch - 1
                break
    consistent = min(latest, intact)
    resume = max([e for e in available if e <= consistent], default=0)
    if repairs:
        repairs = [f"{line}; retraining from epoch {resume}" for line in repairs]
    complete = resume == latest == epochs
    return Audit(latest, resume, complete, repairs, _stale_derived(run_dir, resume),
                 metrics.rows[:resume])


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


def differing_flags(stored, config):
    """The identity flags whose value in ``stored`` (a config.json's flags) is not the one
    in ``config``, sorted; a flag added since the run was made has its old value."""
    stored = dict(runid.added_later(), **stored)
    wanted = runid.identity(config)
    return sorted(k for k in wanted if stored.get(k) != wanted[k])


def view(run_dir, config):
    """The run ``config`` describes as its files show it (a View); never raises for what
    the directory holds (a damaged run is the state "damaged")."""
    try:
        stored = records.read_config(run_dir)
        if stored is None:
            return View("missing", 0, [], None)
        differing = differing_flags(stored, config)
        if differing:
            return View("missing", 0, [], "holds a run of another configuration (--"
                        + ", --".join(differing[:3]) + ")")
        found = audit(run_dir, config)
    except RunDirError as error:
        return View("damaged", 0, [], str(error))
    if found.complete:
        return View("complete", found.resume_epoch, found.rows, None)
    status = records.read_status(run_dir) or {}
    if (status.get("state") == "diverged"
            and status.get("config_hash") == runid.config_hash(config)
            and not found.repairs and found.resume_epoch == found.checkpoint_epoch
            == status.get("epoch", 0) - 1):
        return View("diverged", found.resume_epoch, found.rows, status.get("message"))
    return View("incomplete", found.resume_epoch, found.rows, None)


def is_finished(run_dir, config):
    """Nothing left to train in ``run_dir`` for ``config``: complete by its files, or
    diverged (its status, with the run's identity) with its files agreeing up to the epoch
    before."""
    return view(run_dir, config).state in FINISHED


def rewind(run_dir, epoch):
    """Go back to the end of ``epoch`` (the audit's resume_epoch): metrics.csv keeps its
    first ``epoch`` rows (rewritten as written, when anything follows them: what follows
    may not even parse), and the checkpoint of ``epoch`` becomes the latest (later ones
    deleted), or with epoch 0 every checkpoint goes (a fresh start). The checkpoint state
    file is written whole, the way ``tf.train.CheckpointManager`` writes it."""
    metrics = os.path.join(run_dir, records.METRICS_FILE)
    if os.path.lexists(metrics):
        if epoch == 0:
            os.remove(metrics)
        else:
            found = records.parse_metrics(run_dir)
            if found.problem or len(found.rows) > epoch:
                records.write_metrics(run_dir, found.rows[:epoch], found.num_layers)
    folder = os.path.join(run_dir, records.CHECKPOINT_DIR)
    if not os.path.isdir(folder) or latest_checkpoint_epoch(run_dir) == epoch:
        return
    for name in os.listdir(folder):
        match = re.match(r"^ckpt-(\d+)\.", name)
        if name == "checkpoint" or (match and int(match.group(1)) > epoch):
            os.remove(os.path.join(folder, name))
    if epoch:
        atomic.write_text(os.path.join(folder, "checkpoint"),
                          f'model_checkpoint_path: "ckpt-{epoch}"\n'
                          f'all_model_checkpoint_paths: "ckpt-{epoch}"\n')


# ----------------------------------------------------------------------------
# Before any work: the directory can hold this run (TensorFlow only for the checkpoint).


def check_run_dir(run_dir, config, overwrite, checkpoint=True):
    """Refuse, before any work, a directory holding a run with another configuration
    (unless ``overwrite``: the run is replaced), a run's files without its config.json
    (its identity cannot be checked), a file where a folder belongs or the reverse, and
    (``checkpoint``) a corrupt checkpoint or one of another run."""
    if overwrite:
        return
    check_layout(run_dir)
    stored = records.read_config(run_dir)
    if stored is None:
        present = _run_files(run_dir)
        if present:
            raise DamagedFile(f"{os.path.join(run_dir, records.CONFIG_FILE)}: missing, but "
                              f"{run_dir} holds a run's {' and '.join(present)}: whose run "
                              "they are cannot be checked; pass --overwrite to start the run "
                              "again")
        return
    differing = differing_flags(stored, config)
    if differing:
        stored = dict(runid.added_later(), **stored)
        shown = ", ".join(f"--{k}={stored.get(k)} there, {config.get(k)} here"
                          for k in differing[:3])
        raise RunDirError(f"--out_dir {run_dir} holds a run with a different configuration "
                          f"({shown}); pass --overwrite to replace it or choose another "
                          "--out_dir")
    if checkpoint:
        check_checkpoint(run_dir, runid.run_identity(config))


def _run_files(run_dir):
    """The names of the results a run keeps (metrics, records, checkpoints) found here."""
    found = [records.METRICS_FILE] * os.path.lexists(os.path.join(run_dir,
                                                                  records.METRICS_FILE))
    if records.record_epochs(run_dir):
        found.append(f"{records.RECORDS_DIR}/")
    if checkpoint_epochs(run_dir) or latest_checkpoint_epoch(run_dir) is not None:
        found.append(f"{records.CHECKPOINT_DIR}/")
    return found


def check_checkpoint(run_dir, run=None):
    """Read every tensor of the latest checkpoint; DamagedFile naming the file if any
    fails, or if it is not of the run ``run`` (a RunIdentity). Returns its prefix."""
    import tensorflow as tf

    folder = os.path.join(run_dir, records.CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return None
    way_out = f"delete {folder} to restart the run from scratch, or pass --overwrite"
    state_file = os.path.join(folder, "checkpoint")
    try:
        state = tf.train.get_checkpoint_state(folder)
    except Exception as error:  # a damaged state file raises a protobuf parse error
        raise DamagedFile(f"checkpoint file {state_file} is corrupt "
                          f"({type(error).__name__}); {way_out}") from None
    if state is None or not state.model_checkpoint_path:
        # A kill during the first save is no checkpoint: the run starts from scratch
        # (remove_interrupted_writes clears the leftovers). Anything else is a real
        # checkpoint that lost its state file: refused, never silently restarted.
        if not all(records.INTERRUPTED_SAVE.search(name) or records.FIRST_CHECKPOINT.match(name)
                   for name in os.listdir(folder)):
            raise DamagedFile(f"checkpoint folder {folder} has no readable 'checkpoint' state "
                              f"file; {way_out}")
        return None
    prefix = state.model_checkpoint_path  # tf already put relative paths under folder
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # DataLossError, NotFoundError, OutOfRangeError, ...
        damaged = _damaged_checkpoint_file(prefix)
        raise DamagedFile(f"checkpoint {damaged} is corrupt or unreadable "
                          f"({type(error).__name__}); {way_out}") from None
    if run is not None:
        check_checkpoint_identity(reader, prefix, run)
    return prefix


def check_checkpoint_identity(reader, prefix, run):
    """DamagedFile unless the checkpoint ``prefix`` (read by ``reader``, a
    tf.train.CheckpointReader) holds the identity ``run``."""
    found = None
    if reader.has_tensor(CHECKPOINT_IDENTITY_KEY):
        try:
            stored = json.loads(reader.get_tensor(CHECKPOINT_IDENTITY_KEY).decode())
            found = runid.RunIdentity(stored["scheme"], stored["seed"],
                                        stored["config_hash"])
        except (ValueError, KeyError, TypeError, AttributeError):
            found = None
    mismatch = runid.identity_mismatch(found, run)
    if mismatch:
        raise DamagedFile(f"checkpoint {prefix} is not of this run: {mismatch}; pass "
                          "--overwrite to start the run again")


def restore_checkpoint(checkpoint, prefix, run):
    """Restore ``checkpoint`` (``runner.build``'s) from ``prefix`` once it is checked to be
    of the run ``run`` (a RunIdentity): before anything is restored, since a checkpoint of
    another scheme would be loaded in part, with TensorFlow's warnings. DamagedFile
    naming it otherwise."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise DamagedFile(f"checkpoint {prefix} cannot be read ({type(error).__name__}); "
                          "pass --overwrite to start the run again") from None
    check_checkpoint_identity(reader, prefix, run)
    try:
        checkpoint.restore(prefix).assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        raise DamagedFile(
            f"checkpoint {prefix} cannot be restored ({type(error).__name__}); delete "
            f"{os.path.dirname(prefix)} to restart, or pass --overwrite") from None


def identity_text(run):
    """The checkpoint's identity entry for ``run`` (what check_checkpoint_identity reads)."""
    return json.dumps(run._asdict(), sort_keys=True)


def _damaged_checkpoint_file(prefix):
    index = prefix + ".index"
    if not os.path.exists(index):
        return index
    folder = os.path.dirname(prefix)
    data_files = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                        if n.startswith(os.path.basename(prefix) + ".data-"))
    return data_files[0] if data_files else prefix + ".data-00000-of-00001"
