"""`python -m digitlab ...` and the `digitlab` script: the command line (`digitlab.cli.main`).

`entry` imports the command line itself, so that Ctrl-C during start-up (PyTorch and
scikit-learn take seconds to import) is the same one line as Ctrl-C later, not a traceback.
"""

import os
import signal
import sys
import threading


def _stop_at_once(signum, frame):
    """Ctrl-C or SIGTERM during start-up: one line and exit 130 (143) now. Start-up (the
    imports, the parser) writes nothing, so nothing is lost. A KeyboardInterrupt raised here
    instead landed inside a C extension's initialisation (matplotlib's ft2font:
    "initialization failed", then a fatal error and SIGABRT at exit) or importlib's weakref
    callback ("Exception ignored ... Traceback"), or left NumPy half imported.

    The interpreter's own start-up and this module's import (some 30-50 ms, longer on a
    busy machine) come before any handler: a signal then gets Python's default."""
    os.write(2, b"digitlab: interrupted\n")
    os._exit(128 + signum)


def entry() -> int:
    """Run the command line on sys.argv; its exit code (130 when interrupted, 143 when
    terminated).

    `main` puts its own handlers in place once the command is parsed (a KeyboardInterrupt
    then, so that a command stops through its clean-up) and gives this one back when done.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # SIGTERM too: start-up takes seconds (a command's modules load PyTorch), and a
        # `kill` then ended the process with no word (-15, nothing on stderr).
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # a background job's stays so
                previous[sig] = signal.signal(sig, _stop_at_once)
    try:
        from digitlab.cli import main

        return main()
    except KeyboardInterrupt:  # without our handler (not the main thread)
        print("digitlab: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(entry())
