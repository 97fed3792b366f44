"""`python -m digitlab ...` and the `digitlab` script: the command line (`digitlab.cli.main`).

`entry` imports the command line itself, so that Ctrl-C during start-up (PyTorch and
scikit-learn take seconds to import) is the same one line as Ctrl-C later, not a traceback.
"""

import os
import signal
import sys
import threading


def _stop_at_once(signum, frame):
    """Ctrl-C during start-up: one line and exit 130 now. Start-up (the imports, the parser)
    writes nothing, so nothing is lost. A KeyboardInterrupt raised here instead landed inside
    a C extension's initialisation (matplotlib's ft2font: "initialization failed", then a
    fatal error and SIGABRT at exit) or importlib's weakref callback ("Exception ignored ...
    Traceback"), or left NumPy half imported."""
    os.write(2, b"digitlab: interrupted\n")
    os._exit(128 + signum)


def entry() -> int:
    """Run the command line on sys.argv; its exit code (130 when interrupted).

    `main` puts its own handlers in place once the command is parsed (a KeyboardInterrupt
    then, so that a command stops through its clean-up) and gives this one back when done.
    """
    previous = None
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # a background job's
    ):
        previous = signal.signal(signal.SIGINT, _stop_at_once)
    try:
        from digitlab.cli import main

        return main()
    except KeyboardInterrupt:  # without our handler (not the main thread)
        print("digitlab: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(entry())
