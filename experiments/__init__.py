"""The command lines of tfnorm: one absl script per command
(``python -m experiments.<group>.<name>``, the groups article/, papers/, bench/); the modules
at this level are their shared support (cli, banner, workers, study).

Run as a script, this package is imported before anything of the script: from its first
line on, a SIGINT (Ctrl-C) or SIGTERM is a request to stop at a safe point
(``tfnorm.run.stopping``), never a KeyboardInterrupt traceback from the middle of an import.
Imported as a library (tests, another program), it leaves the signals alone.
"""

import signal
import sys

_argv = getattr(sys, "orig_argv", sys.argv)
if any(arg == "-m" and following.startswith("experiments.")
       for arg, following in zip(_argv, _argv[1:])):
    _early = []  # signals that come while tfnorm.run.stopping is imported: passed on to it
    for _signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signum, lambda signum, frame: _early.append(signum))
    from tfnorm.run import stopping

    stopping.install(received=_early)
