"""Test-only fault injection: ``TFNORM_FAULT`` names points at which this process kills
itself with SIGKILL, so that a test puts a kill exactly where it means to (a sleep-based
kill can land anywhere, and a test that passes either way proves nothing).

    TFNORM_FAULT="step:2:3"             before step 3 of epoch 2
    TFNORM_FAULT="checkpoint:2"         epoch 2's checkpoint files written, its state file not
    TFNORM_FAULT="write:metrics.csv@2"  the 2nd write of metrics.csv: temporary file
                                        complete, not yet renamed over the target

Several points are separated by commas; without the variable nothing happens (one
dictionary lookup per point).
"""

import collections
import os
import signal

ENVIRONMENT_VARIABLE = "TFNORM_FAULT"


def _armed():
    spec = os.environ.get(ENVIRONMENT_VARIABLE, "")
    armed = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("@")
        armed[name] = int(count or 1)
    return armed


_ARMED = _armed()
_seen = collections.Counter()


def point(*parts):
    """A named point (``point("step", epoch, step)`` is "step:E:S"): SIGKILL here if armed."""
    if not _ARMED:
        return
    name = ":".join(str(part) for part in parts)
    if name in _ARMED:
        _seen[name] += 1
        if _seen[name] == _ARMED[name]:
            os.kill(os.getpid(), signal.SIGKILL)
