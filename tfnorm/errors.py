"""Every way a run can end early, each with the exit code its command line gives it.

A script prints ``error: <message>`` (one line, naming the flag or file) and exits with
the error's ``exit_code``; in every case the run directory stays resumable and keeps
what was finished. No TensorFlow here: the scripts catch these before loading it.
"""


class RunEnded(Exception):
    """Base: the message is the one line the user sees."""
    exit_code = 1


class ConfigError(RunEnded):
    """Bad input: a flag, a file named by a flag, a run directory used as it cannot be."""
    exit_code = 2


class DataError(ConfigError):
    """The data cannot be had; the message says why and what to do."""


class RunDirError(ConfigError):
    """The run directory cannot be used as asked; the message names the file and the way out."""


class Divergence(RunEnded):
    """NaN or Inf, or a loss past the bound, in training or in the test pass; the message
    names the epoch, step, layer and scheme."""
    exit_code = 3


class NoSpace(RunEnded):
    """The disk is full; the message names the file being written (status.json says so)."""
    exit_code = 4


class OutOfMemory(RunEnded):
    """Memory ran out, or would: the message names the flags that need less."""
    exit_code = 5


class DamagedFile(RunDirError):
    """A file of the run directory is damaged and cannot be repaired from the others."""
    exit_code = 6


class Interrupted(RunEnded):
    """A SIGINT or SIGTERM stopped the run at a safe point (between two steps)."""
    exit_code = 130

    def __init__(self, epoch=None, step=None, what=None):
        super().__init__(f"interrupted {what or f'at epoch {epoch}'}; rerun the same command "
                         "to resume")
        self.epoch, self.step = epoch, step


class WorkerFailed(RunEnded):
    """A worker process (compare --jobs=N) ended without finishing its shard: the message
    names each such shard with the worker's own error line, or the signal that killed
    it; the exit code is the first worker's own (128 + N for a signal N, as a shell
    reports a process a signal killed)."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code
