"""compare's runs in worker processes: with --jobs=N, N subprocesses each train one
shard of the grid (``compare --shard=K/N``, runs in a row sharing their traced steps),
while this process watches the run directories and prints one progress line per
finished run. A Ctrl-C here is passed on to each worker, which stops at a safe point;
if this process dies, however it dies, the workers die with it (PR_SET_PDEATHSIG) and
a rerun resumes them.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

from absl import logging

from tfnorm import errors
from tfnorm.run import records, rundir, shared_cores, stopping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_SECONDS = 0.5


def shard(configs, index, count):
    """Shard ``index`` (1..count) of ``configs``: a contiguous block, so that a scheme's
    seeds mostly stay in one process and share its traced steps; sizes differ by <= 1."""
    start = len(configs) * (index - 1) // count
    return configs[start:len(configs) * index // count]


def parse_shard(text):
    """'K/N' -> (K, N) with 1 <= K <= N; errors.ConfigError otherwise."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise errors.ConfigError(f"--shard={text}: expected K/N, e.g. 2/8") from None
    if not 1 <= index <= count:
        raise errors.ConfigError(f"--shard={text}: K must be between 1 and N")
    return index, count


class Progress:
    """One line per finished run: [k/N], scheme, seed, final test accuracy, the run's
    training seconds, and an estimate of the time left (the mean seconds of the runs
    finished so far, times those left, over the runs trained at a time)."""

    def __init__(self, total, done, jobs):
        self.total, self.done, self.jobs = total, done, jobs
        self.seconds = []

    def finished(self, config):
        rows = rundir.view(config["out_dir"], config).rows
        seconds = sum(row["seconds"] for row in rows)
        self.done += 1
        self.seconds.append(seconds)
        left = (self.total - self.done) * sum(self.seconds) / len(self.seconds) / self.jobs
        logging.info("[%d/%d] %s seed %d: final test acc %s, %.0f s; about %.0f s left",
                     self.done, self.total, config["scheme"], config["seed"],
                     f"{rows[-1]['test_acc']:.3f}" if rows else "-", seconds, left)


def _die_with_parent():
    """A preexec_fn that makes a worker get SIGKILL when this process dies, however it
    dies (Linux's prctl PR_SET_PDEATHSIG); None where there is no prctl. The worker
    loses nothing: rerunning compare resumes its runs from their last checkpoints."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    death_signal = ctypes.c_ulong(signal.SIGKILL)

    def set_death_signal():
        # Between fork and exec, with other threads' locks possibly held: only the
        # system calls, everything prepared in the parent.
        prctl(PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return set_death_signal


def run_shards(command_of, count, todo, progress, log_dir):
    """Start ``count`` workers (``command_of(k)`` is the command of shard k of count) and
    wait for them, printing progress as the runs of ``todo`` finish. Raises
    errors.Interrupted after a SIGINT/SIGTERM here (passed on), WorkerFailed naming every
    shard whose worker failed (``failure``)."""
    workers = {}

    def pass_on(signum):
        for process, _ in workers.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)

    stopping.on_request(pass_on)
    for index in range(1, count + 1):
        log = open(os.path.join(log_dir, f"shard_{index}_of_{count}.log"), "w")
        # Its own session: a Ctrl-C at the terminal reaches this process only, which
        # passes one SIGINT on to each worker, so that each stops at a safe point.
        # The workers share the cores: their thread pools must not spin (tfnorm.run.shared_cores).
        env = dict(os.environ, **{shared_cores.SHARED_CORES: str(count)})
        workers[index] = (subprocess.Popen(command_of(index), cwd=ROOT, stdout=log, env=env,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           preexec_fn=_die_with_parent()), log)
        if stopping.requested():  # it came while the workers started: pass it on now
            pass_on(signal.SIGINT)
    waiting = list(todo)
    while any(process.poll() is None for process, _ in workers.values()):
        time.sleep(POLL_SECONDS)
        waiting = _report_ended(waiting, progress)
    _report_ended(waiting, progress, final=True)
    for _, log in workers.values():
        log.close()
    failed = failure({f"{index}/{count}": (process.returncode, log.name)
                      for index, (process, log) in workers.items()},
                     interrupted=stopping.requested())
    if failed:
        raise failed
    if stopping.requested() or any(p.returncode == errors.Interrupted.exit_code
                                   for p, _ in workers.values()):
        raise errors.Interrupted(what=f"with {progress.done} of {progress.total} runs "
                                 "complete")


def failure(ended, interrupted=False):
    """The WorkerFailed for workers that neither finished nor stopped on a Ctrl-C, or None.
    ``ended``: shard "K/N" -> (exit code, log path); ``interrupted``: this process passed a
    Ctrl-C on (a worker it reached before its handler was set ended by the signal). A
    worker's own error (its last ``error:`` line) comes first and gives the exit code; a
    worker killed by a signal is named with the signal (exit code 128 + its number, as a
    shell reports it)."""
    errors_first, killed = [], []
    stopped = {0, errors.Interrupted.exit_code} | (
        {-signal.SIGINT, -signal.SIGTERM} if interrupted else set())
    for shard, (code, log) in ended.items():
        if code in stopped:
            continue
        if code < 0:
            killed.append((128 - code, f"the worker of shard {shard} was killed by "
                                       f"{_signal_name(-code)} (log: {log})"))
        else:
            errors_first.append((code, f"shard {shard} failed, exit {code}: "
                                       f"{_last_error(log)} (log: {log})"))
    found = errors_first + killed
    if not found:
        return None
    return errors.WorkerFailed("; ".join(message for _, message in found), found[0][0])


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_error(log):
    """The worker's one-line error (``error: ...``) from its log, or a note that it
    printed none."""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.startswith("error: ")]
    except OSError:
        lines = []
    return lines[-1] if lines else "no error line in its log"


def _report_ended(waiting, progress, final=False):
    """Progress lines for the runs of ``waiting`` that are finished; the rest. While the
    workers run, a run's status.json (cheap) says when to audit it; at the end
    (``final``) every run left is audited."""
    ended = [c for c in waiting if (final or _status_says_finished(c))
             and rundir.is_finished(c["out_dir"], c)]
    for config in ended:
        progress.finished(config)
    return [c for c in waiting if c not in ended]


def _status_says_finished(config):
    status = records.read_status(config["out_dir"]) or {}
    return status.get("state") in rundir.FINISHED
