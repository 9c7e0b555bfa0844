"""How a training process uses the machine's cores when it shares them.

TensorFlow's thread pools spin for a while before they sleep when they run out of work:
in one process alone that saves a wake-up per op, but when compare's workers share the
cores (``--jobs=N``, one worker per core), one worker's spinning threads take the cores
the others' ops are waiting for. Measured on 2 cores (none, batch, layer, 5 seeds, 2
workers): 92 CPU-s with spinning, 77 without, the same bits (spinning decides only how a
thread waits, never how the work is split); alone, one process at 96 px steps ~14%
slower without it, so only processes that share the cores turn it off.

``SHARED_CORES``: the environment variable by which compare tells its workers that they
share the cores (its value: how many workers); a cluster task that shares a machine with
others can set it too.
"""

import os

SHARED_CORES = "TFNORM_SHARED_CORES"


def shares_cores(environ=os.environ):
    return environ.get(SHARED_CORES, "") not in ("", "0", "1")


def stop_spinning():
    """Make TensorFlow's thread pools sleep as soon as they are idle. Must run before the
    first TensorFlow op (the pools are created then); returns False, changing nothing, if
    they exist already (then they spin, which changes no result, only the speed).

    TensorFlow 2 has no public switch for this: the eager context is given a ConfigProto
    with ``experimental.disable_thread_spinning`` before it is initialized."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    ctx = context.context()
    if getattr(ctx, "_context_handle", None) is not None or not hasattr(ctx, "_config"):
        return False
    config = config_pb2.ConfigProto()
    if ctx._config is not None:
        config.CopyFrom(ctx._config)
    config.experimental.disable_thread_spinning = True
    ctx._config = config
    return True
