"""Writing files so that a crash or a kill never leaves a half-written one: every
write goes to a temporary file in the same directory, is flushed to disk, then
renamed over the target (rename is atomic on POSIX)."""

import contextlib
import csv
import io
import json
import os
import re
import tempfile

import numpy as np

from tfnorm import faults


# atomic_open's temporary files: ".<target's name>.<mkstemp's 8 random characters>.tmp".
_TEMPORARY_PREFIX, _TEMPORARY_SUFFIX = ".", ".tmp"
_TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _default_mode():
    """The permissions open() would give a new file (mkstemp's are owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Like open(path, mode) for writing, but the file appears whole or not at all."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMPORARY_PREFIX + os.path.basename(path) + ".",
                               suffix=_TEMPORARY_SUFFIX, dir=directory)
    try:
        os.chmod(tmp, _default_mode())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        faults.point("write", os.path.basename(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def remove_temporary_files(directory):
    """Delete the temporary files that writes killed halfway left in ``directory`` (not
    its subfolders). Only when nothing writes there: a live write's file is in use."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if _TEMPORARY_NAME.match(name) and os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def write_text(path, text):
    with atomic_open(path, "w") as f:
        f.write(text)


def write_bytes(path, data):
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_csv(path, rows, fieldnames=None):
    """rows: list of dicts. Columns: ``fieldnames`` or the keys of the first row, in order."""
    if fieldnames is None:
        fieldnames = list(rows[0].keys()) if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def save_npz(path, **arrays):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def save_figure(fig, path, **kwargs):
    """Save a matplotlib figure atomically, the format from the path's extension."""
    buffer = io.BytesIO()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    fig.savefig(buffer, format=fmt, **kwargs)
    write_bytes(path, buffer.getvalue())
