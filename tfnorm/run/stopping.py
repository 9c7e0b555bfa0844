"""Stopping at a safe point on the first SIGINT (Ctrl-C) or SIGTERM.

``install()`` (the scripts call it at start) replaces Python's KeyboardInterrupt with a
request: the training loop asks ``requested()`` before every step and stops there, the
directory left as after a kill between epochs (resumable, nothing finished lost), and
``compare`` starts no new run. A second signal stops at once: every file is written
whole and the checkpoint last, so even then the run directory stays resumable.
"""

import os
import signal
import sys

EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT

_received = []
_callbacks = []


def install(received=()):
    """From now on SIGINT and SIGTERM are requests (``requested``); ``received``: signals
    that came before (the scripts' package catches them from its first line)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handle)
    for signum in list(received):
        _handle(signum, None)


def _handle(signum, frame):
    if _received:
        sys.stderr.write("error: interrupted again: stopped at once; rerun the same command "
                         "to resume\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    _received.append(signum)
    for callback in list(_callbacks):
        callback(signum)


def requested():
    """True once a SIGINT or SIGTERM arrived."""
    return bool(_received)


def on_request(callback):
    """Call ``callback(signum)`` when the first signal arrives (compare passes it on to
    the runs it trains in subprocesses)."""
    _callbacks.append(callback)


def reset():
    """Forget a request (tests; a process that goes on after an interrupted run)."""
    _received.clear()
