"""What a run records, and the layout of a run directory.

A run directory (``--out_dir`` of ``experiments.article.train``) holds::

    config.json            every flag (dataset defaults filled in), library versions, seed,
                           the network's trainable numbers per layer
    metrics.csv            one row per epoch: METRICS_COLUMNS, then per layer i = 1..L the
                           LAYER_STATS and EPOCH_STATS columns named <stat>_<i>;
                           test_loss and test_acc are nan at an epoch without a test pass
                           (--eval_every, ``tfnorm.measures.is_evaluated_epoch``)
    records/epoch_0007.npz per recorded epoch: the four quantities of every layer at the
                           epoch's last step as fixed-bin histograms plus summary statistics
    checkpoints/           tf.train.CheckpointManager (network, statistics, optimizer, epoch)
    panels/                layer<i>_epoch<NNNN>.png four-panel figures, layer<i>.gif
    status.json            running with the last completed epoch (after each), then
                           complete, or diverged with the message
    tensorboard/           only with --tensorboard
    run.lock               flock-ed by the process training the run (``lock_run_dir``)

Epochs count from 1: the row and the record of epoch e describe the state after e
passes over the training set (the article's epoch 199 is our epoch 200).

Every file is written whole or not at all (``tfnorm.run.atomic``). After a kill the checkpoint
is the truth: rows and records of later epochs are dropped on resume
(``truncate_to_epoch``), because the checkpoint is always the last thing an epoch writes.
"""

import collections
import contextlib
import csv
import math
import os
import re
import shutil

import numpy as np

from tfnorm.errors import DamagedFile, RunDirError
from tfnorm.measures import EPOCH_STATS, LAYER_STATS, QUANTITIES, SUMMARY_STATS
from tfnorm.run import atomic, runid

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
STATUS_FILE = "status.json"
RECORDS_DIR = "records"
PANELS_DIR = "panels"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = "run.lock"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, STATUS_FILE)
RUN_DIRS = (RECORDS_DIR, PANELS_DIR, CHECKPOINT_DIR, TENSORBOARD_DIR)

# What a killed tf.train.CheckpointManager.save leaves in the checkpoint folder: the
# shards' folder <prefix>_temp (older TF: <prefix>_temp_<hex>), tensor_bundle's
# <file>.tempstate<n>, the state file's checkpoint.tmp<hex>. TF says they "can be safely
# removed"; they are never a checkpoint.
INTERRUPTED_SAVE = re.compile(
    r"^.+_temp(_[0-9a-f]+)?$|\.tempstate\d+$|^checkpoint\.tmp[0-9a-f]+$")
# train's first save, the initial state (epoch 0): its files without a state file mean
# the save was killed after writing them, before the state file (written last).
FIRST_CHECKPOINT = re.compile(r"^ckpt-0\.(index|data-\d+-of-\d+)$")

METRICS_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
# Columns of metrics.csv that may hold NaN ("not measured at that epoch": the test pass
# runs every --eval_every epochs, ``tfnorm.measures.is_evaluated_epoch``); every other
# value must be a finite number. The audit (``tfnorm.run.rundir``) requires them finite at evaluated epochs.
NOT_ALWAYS_MEASURED = ("test_loss", "test_acc")
_RECORD_NAME = re.compile(r"^epoch_(\d{4,})\.npz$")

Record = collections.namedtuple(
    "Record", ["epoch", "step", "scheme", "counts", "ranges", "summaries", "layer_stats",
               "magnitude_counts", "magnitude_ranges", "seed", "config_hash"])
Record.__doc__ = """One recorded epoch (its last training step), for L layers:
counts int64 (L, 4, bins) and ranges float64 (L, 4, 2) [low, high] of the histograms of
QUANTITIES (weight_gradient, passed_gradient, weights before the step, update),
summaries float64 (L, 4, len(SUMMARY_STATS)), layer_stats float64 (L, len(LAYER_STATS))
of that step; magnitude_counts int64 (L, 4, bins) and magnitude_ranges float64 (L, 4, 2)
[low, high]: the histograms of log10 |x| over each quantity's non-zero entries (x = 0 is
in no bin: nonzero_frac tells how many are). step counts training steps from 1 over the
whole run; scheme, seed and config_hash: the run that wrote it (``runid.RunIdentity``)."""


@contextlib.contextmanager
def lock_run_dir(run_dir):
    """Hold an exclusive lock on ``run_dir`` for the ``with`` block, so that two processes
    never train into the same directory; RunDirError if another process holds it.

    flock on LOCK_FILE: the OS releases it when its holder dies, however it dies, so a
    killed run never leaves a stale lock behind (the file itself stays: deleting it
    would let a waiting process and a new one each lock a different file)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, LOCK_FILE), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            who = f"another process (pid {holder})" if holder.isdigit() else "another process"
            raise RunDirError(f"--out_dir {run_dir}: in use by {who} training this run; wait "
                              "for it to end or stop it, or choose another --out_dir") from None
        # The holder's pid, only for the message above.
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def metrics_columns(num_layers):
    return list(METRICS_COLUMNS) + [f"{stat}_{layer}" for layer in range(1, num_layers + 1)
                                    for stat in LAYER_STATS + EPOCH_STATS]


def num_layers_of(columns):
    return sum(1 for c in columns if c.startswith(LAYER_STATS[0] + "_"))


def write_metrics(run_dir, rows, num_layers):
    """rows: dicts with the metrics columns; floats written with repr (exact round trip)."""
    formatted = [{k: (repr(float(v)) if isinstance(v, (float, np.floating)) else v)
                  for k, v in row.items()} for row in rows]
    atomic.write_csv(os.path.join(run_dir, METRICS_FILE), formatted, metrics_columns(num_layers))


Metrics = collections.namedtuple("Metrics", ["rows", "problem", "num_layers"])
Metrics.__doc__ = """metrics.csv read back: ``rows``, the leading rows that are whole
(epochs 1..j in order, the declared columns, numbers as written), as dicts (epoch int,
everything else float); ``problem``: why the rest is not (one phrase), or None;
``num_layers``: of its header (0 when unreadable)."""


def parse_metrics(run_dir, may_be_nan=NOT_ALWAYS_MEASURED):
    """metrics.csv checked row by row against what ``write_metrics`` writes (Metrics). The
    columns must be exactly ``metrics_columns(L)``; a row must have a value in each, every
    value a finite number (NaN allowed in the columns ``may_be_nan``: a training run's
    NOT_ALWAYS_MEASURED; a Keras model observed by tfnorm.keras.PanelRecorder leaves
    whatever Keras does not report NaN), epochs 1, 2, ... in order.
    Blank lines are no rows (as for any CSV reader): the audit and the rewind
    (``tfnorm.run.rundir``) both count rows through this function, never lines."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.lexists(path):
        return Metrics([], None, 0)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return Metrics([], f"unreadable ({type(error).__name__})", 0)
    if not lines:
        return Metrics([], "empty, no header", 0)
    header = lines[0]
    num_layers = num_layers_of(header)
    if header != metrics_columns(num_layers):
        return Metrics([], "its columns are not those written (metrics_columns)", 0)
    rows = []
    for number, fields in enumerate(lines[1:], start=2):
        if not fields:
            continue
        row = _metrics_row(header, fields, len(rows) + 1, may_be_nan)
        if row is None:
            return Metrics(rows, f"line {number} (epoch {len(rows) + 1}) is missing or "
                                 "damaged", num_layers)
        rows.append(row)
    return Metrics(rows, None, num_layers)


def _metrics_row(header, fields, epoch, may_be_nan):
    """The row of ``epoch`` from its CSV fields, or None if they are not what was written."""
    if len(fields) != len(header) or fields[0] != str(epoch):
        return None
    row = {"epoch": epoch}
    for name, text in zip(header[1:], fields[1:]):
        try:
            value = float(text)
        except ValueError:
            return None
        if not (math.isfinite(value) or (math.isnan(value) and name in may_be_nan)):
            return None
        row[name] = value
    return row


def read_metrics(run_dir, may_be_nan=NOT_ALWAYS_MEASURED):
    """Rows of metrics.csv as dicts: epoch int, everything else float. [] if none yet.
    DamagedFile naming it if any row is not what was written (``parse_metrics``; the
    audit, ``tfnorm.run.rundir``, repairs such a file before a run reads it)."""
    found = parse_metrics(run_dir, may_be_nan)
    if found.problem:
        raise DamagedFile(f"{os.path.join(run_dir, METRICS_FILE)}: {found.problem}")
    return found.rows


def write_config(run_dir, config, versions, parameters=None):
    """``parameters``: per layer, the network's trainable numbers (Network.parameter_counts)."""
    atomic.write_json(os.path.join(run_dir, CONFIG_FILE),
                      {"flags": dict(config), "versions": versions, "seed": config.get("seed"),
                   "parameters": parameters})


def read_config(run_dir):
    """The stored flags of a run, or None if the directory holds no run. A config.json
    that is not the JSON object write_config writes is refused (RunDirError naming it):
    without it the run's identity cannot be checked."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        stored = atomic.read_json(path)
    except PermissionError:
        raise RunDirError(f"{path}: permission denied") from None
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise DamagedFile(f"{path}: damaged, not JSON ({type(error).__name__}); pass "
                          "--overwrite to start the run again") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("flags"), dict):
        raise DamagedFile(f"{path}: damaged, no 'flags' object; pass --overwrite to start "
                          "the run again")
    return stored["flags"]


def read_parameter_count(run_dir):
    """The run's network's trainable numbers in all (config.json), or None when it does not
    say (no run, or one of an older tfnorm)."""
    try:
        counts = atomic.read_json(os.path.join(run_dir, CONFIG_FILE)).get("parameters")
    except (OSError, ValueError, AttributeError):
        return None
    return sum(counts) if isinstance(counts, list) else None


def write_status(run_dir, state, **details):
    atomic.write_json(os.path.join(run_dir, STATUS_FILE), dict(state=state, **details))


def read_status(run_dir):
    """status.json as a dict, or None when it is missing or damaged: it is derived (the
    run directory's audit decides, ``tfnorm.run.rundir``), and the run rewrites it."""
    try:
        status = atomic.read_json(os.path.join(run_dir, STATUS_FILE))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def record_path(run_dir, epoch):
    return os.path.join(run_dir, RECORDS_DIR, f"epoch_{epoch:04d}.npz")


def save_record(run_dir, epoch, step, run, outputs):
    """outputs: the numpy values of Trainer.record_step's counts, ranges, summaries,
    layer_stats, magnitude_counts and magnitude_ranges; ``run``: the RunIdentity of the
    run writing it."""
    atomic.save_npz(record_path(run_dir, epoch), epoch=np.int64(epoch), step=np.int64(step),
                    scheme=np.array(run.scheme), seed=np.int64(run.seed),
                    config_hash=np.array(run.config_hash), quantities=np.array(QUANTITIES),
                    summary_stats=np.array(SUMMARY_STATS), layer_stat_names=np.array(LAYER_STATS),
                    counts=np.asarray(outputs["counts"], np.int64),
                    ranges=np.asarray(outputs["ranges"], np.float64),
                    summaries=np.asarray(outputs["summaries"], np.float64),
                    layer_stats=np.asarray(outputs["layer_stats"], np.float64),
                    magnitude_counts=np.asarray(outputs["magnitude_counts"], np.int64),
                    magnitude_ranges=np.asarray(outputs["magnitude_ranges"], np.float64))


def load_record(path, run=None):
    """The Record stored at ``path``; RunDirError naming the file if it is not one, or
    (DamagedFile) if it is not of the run ``run`` (a RunIdentity; None: not checked)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            record = Record(int(stored["epoch"]), int(stored["step"]), str(stored["scheme"]),
                            stored["counts"], stored["ranges"], stored["summaries"],
                            stored["layer_stats"], stored["magnitude_counts"],
                            stored["magnitude_ranges"],
                            int(stored["seed"]) if "seed" in stored.files else None,
                            str(stored["config_hash"]) if "config_hash" in stored.files
                            else None)
    except PermissionError:
        raise RunDirError(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing") from None
    except KeyError as error:  # an older tfnorm's record lacks the arrays added since
        raise DamagedFile(f"{path}: not a record this version of tfnorm writes "
                          f"({error.args[0] if error.args else 'a key is missing'})") from None
    except Exception as error:  # BadZipFile, a pickled or truncated member, a lost key
        raise DamagedFile(f"{path}: damaged, not a record ({type(error).__name__})") from None
    layers = record.counts.shape[0] if record.counts.ndim == 3 else -1
    if (layers < 1 or record.counts.shape[1] != len(QUANTITIES)
            or record.ranges.shape != (layers, len(QUANTITIES), 2)
            or record.summaries.shape != (layers, len(QUANTITIES), len(SUMMARY_STATS))
            or record.layer_stats.shape != (layers, len(LAYER_STATS))
            or record.magnitude_counts.shape != record.counts.shape
            or record.magnitude_ranges.shape != record.ranges.shape):
        raise DamagedFile(f"{path}: damaged, not a record (arrays of the wrong shape)")
    if run is not None:
        written_by = (None if record.seed is None else
                      runid.RunIdentity(record.scheme, record.seed, record.config_hash))
        mismatch = runid.identity_mismatch(written_by, run)
        if mismatch:
            raise DamagedFile(f"{path}: not a record of this run: {mismatch}")
    return record


def record_epochs(run_dir):
    """Epochs that have a record, ascending."""
    folder = os.path.join(run_dir, RECORDS_DIR)
    if not os.path.isdir(folder):
        return []
    return sorted(int(m.group(1)) for m in map(_RECORD_NAME.match, os.listdir(folder)) if m)


def histogram_edges(record, layer, quantity):
    """Bin edges of the histogram of ``quantity`` (index into QUANTITIES) of ``layer`` (0-based)."""
    low, high = record.ranges[layer, quantity]
    return np.linspace(low, high, record.counts.shape[-1] + 1)


def is_recorded_epoch(epoch, epochs, record_every):
    """The first and last epochs, and every ``record_every``-th."""
    return epoch == 1 or epoch == epochs or epoch % record_every == 0


def truncate_to_epoch(run_dir, epoch, num_layers, may_be_nan=NOT_ALWAYS_MEASURED):
    """Forget what epochs after ``epoch`` wrote (a kill after their files, before their
    checkpoint): their metrics rows, records and panels. They will be computed again."""
    stored = read_metrics(run_dir, may_be_nan)
    rows = [row for row in stored if row["epoch"] <= epoch]
    if len(rows) < len(stored):
        write_metrics(run_dir, rows, num_layers)
    for later in (e for e in record_epochs(run_dir) if e > epoch):
        os.remove(record_path(run_dir, later))
    panels = os.path.join(run_dir, PANELS_DIR)
    if os.path.isdir(panels):
        for name in os.listdir(panels):
            match = re.search(r"_epoch_?(\d+)\.png$", name)
            if match and int(match.group(1)) > epoch:
                os.remove(os.path.join(panels, name))


def clear_run(run_dir):
    """Remove a previous run's files (only the names a run writes, never anything else),
    whatever they are: a directory where a file belongs goes too, and the reverse."""
    for name in RUN_FILES + RUN_DIRS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def remove_interrupted_writes(run_dir):
    """Delete what writes killed halfway left in ``run_dir``: tfnorm.run.atomic's temporary files
    in the folders a run writes through it, and the temporary files of checkpoint saves.
    Only under ``lock_run_dir``: a live run's are in use."""
    for folder in (run_dir, os.path.join(run_dir, RECORDS_DIR),
                   os.path.join(run_dir, PANELS_DIR)):
        atomic.remove_temporary_files(folder)
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if INTERRUPTED_SAVE.search(name):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
