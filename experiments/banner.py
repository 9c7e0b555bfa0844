"""TensorFlow's start-up banner kept off the terminal, however many times it is printed.

TF 2.21 prints it through absl before TF_CPP_MIN_LOG_LEVEL applies, once per native
library that initializes absl logging: once at `import tensorflow` and again when
tensorflow-datasets (or another library) loads its own copy; how often depends on the
CPU (twice on an Intel AVX-512 machine, with a cpu_feature_guard pair). These lines say
nothing about the run; everything else native code prints still gets through.
"""

import atexit
import os
import re
import sys
import threading

# TF_CPP_MIN_LOG_LEVEL applies, once per native library that initializes absl logging:
# once at `import tensorflow` and again when tensorflow-datasets (or another library)
# loads its own copy, how often depends on the CPU (twice on an Intel AVX-512 machine,
# with a cpu_feature_guard pair). These lines say nothing about the run.
_BANNER_LINES = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are "
               r"written to STDERR$"),
    re.compile(r"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\."),
    re.compile(r"^I\d{4} [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary "
               r"is optimized to use available CPU instructions"),
    re.compile(r"^To enable the following instructions: .*, in other operations, rebuild "
               r"TensorFlow with the appropriate compiler flags\.$"),
)


def is_banner(line):
    """True for a line of TensorFlow's start-up banner (without its line ending)."""
    return any(pattern.match(line) for pattern in _BANNER_LINES)


def pump_filtered(read_fd, write_fd):
    """Copy bytes from ``read_fd`` to ``write_fd`` until end of file, dropping banner
    lines. Only native code writes here (its log lines end in a newline), so a partial
    line is held until its newline or the end of the file."""
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        kept = [line + b"\n" for line in lines
                if not is_banner(line.decode("utf-8", "replace").rstrip("\r"))]
        if kept:
            os.write(write_fd, b"".join(kept))
    if pending and not is_banner(pending.decode("utf-8", "replace")):
        os.write(write_fd, pending)


_filter_state = {}


def filter_banner():
    """From now on, what native code writes to file descriptor 2 goes through a thread
    that drops the banner lines; Python's ``sys.stderr`` keeps writing to the terminal
    directly (so tqdm still sees a TTY, and a last error line can never be lost)."""
    if _filter_state:
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stderr = open(terminal, "w", buffering=1, encoding=sys.stderr.encoding,
                      errors=sys.stderr.errors, closefd=False)
    thread = threading.Thread(target=pump_filtered, args=(read_fd, terminal),
                              name="tensorflow-banner-filter", daemon=True)
    thread.start()
    _filter_state.update(terminal=terminal, thread=thread)
    atexit.register(_stop_filter)


def _stop_filter():
    """Point fd 2 back at the terminal, which closes the pipe's last writer here, and
    let the thread pass on what native code wrote last."""
    os.dup2(_filter_state["terminal"], 2)
    _filter_state["thread"].join(timeout=2.0)
