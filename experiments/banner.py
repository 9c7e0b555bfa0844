"""TensorFlow's start-up banner, and its C++ log lines about a failing kernel, kept off
the terminal.

TF 2.21 prints the banner through absl before TF_CPP_MIN_LOG_LEVEL applies, once per
native library that initializes absl logging: once at `import tensorflow` and again when
tensorflow-datasets (or another library) loads its own copy; how often depends on the
CPU (twice on an Intel AVX-512 machine, with a cpu_feature_guard pair). These lines say
nothing about the run. A kernel that fails (a full disk while a checkpoint is written,
a failed check in the forward pass) logs the failure in C++ ("OP_REQUIRES failed at",
"Local rendezvous is aborting with status"), continued on tab-indented lines, and
returns it as an error that Python raises: the script turns that into its one line
(or a traceback shows it), so the C++ copy is dropped. Everything else native code
prints still gets through.
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


# A C++ log line (either TF format) reporting a kernel's error, which Python raises too.
_KERNEL_ERROR = re.compile(
    r"^(?:[IWEF]\d{4} [\d:.]+ +\d+ |\d{4}-\d\d-\d\d [\d:.]+: [IWEF] \S+?)"
    r"(?:op_kernel\.cc:\d+\] OP_REQUIRES failed at |local_rendezvous\.cc:\d+\] Local "
    r"rendezvous is aborting with status: )")


def is_banner(line):
    """True for a line of TensorFlow's start-up banner (without its line ending)."""
    return any(pattern.match(line) for pattern in _BANNER_LINES)


def is_kernel_error(line):
    """True for the first line of TensorFlow's C++ log of a failing kernel."""
    return bool(_KERNEL_ERROR.match(line))


class _Dropper:
    """Which lines to drop: banner lines, kernel errors and their continuation lines."""

    def __init__(self):
        self.in_kernel_error = False

    def drop(self, line):
        if self.in_kernel_error and line.startswith("\t"):
            return True
        self.in_kernel_error = is_kernel_error(line)
        return self.in_kernel_error or is_banner(line)


def pump_filtered(read_fd, write_fd):
    """Copy bytes from ``read_fd`` to ``write_fd`` until end of file, dropping banner
    lines and kernel errors. Only native code writes here (its log lines end in a
    newline), so a partial line is held until its newline or the end of the file."""
    pending, dropper = b"", _Dropper()
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        kept = [line + b"\n" for line in lines
                if not dropper.drop(line.decode("utf-8", "replace").rstrip("\r"))]
        if kept:
            os.write(write_fd, b"".join(kept))
    if pending and not dropper.drop(pending.decode("utf-8", "replace")):
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
