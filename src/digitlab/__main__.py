"""`python -m digitlab ...` and the `digitlab` script: the command line (`digitlab.cli.main`).

`entry` imports the command line itself, so that Ctrl-C during the imports (PyTorch and
scikit-learn take seconds) is the same one line as Ctrl-C later, not a 47-line traceback.
"""

import signal
import sys
import threading


def entry() -> int:
    """Run the command line on sys.argv; its exit code (130 when interrupted)."""
    # Ctrl-C during the imports stops them at once, and is also noted: a KeyboardInterrupt
    # raised inside one can come out as another error (NumPy left half imported: the next
    # import's RecursionError traceback) or be taken for a missing optional library.
    noted: list[int] = []

    def interrupted(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    def unraisable(info) -> None:
        # The handler's KeyboardInterrupt can land where Python cannot raise it (a weakref
        # callback in importlib's module locks, a __del__): it then printed "Exception
        # ignored in ..." with a traceback. It is noted above, and raised once the import ends.
        if not (noted and isinstance(info.exc_value, KeyboardInterrupt)):
            previous_hook(info)

    previous = None
    previous_hook = sys.unraisablehook
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # a background job's
    ):
        previous = signal.signal(signal.SIGINT, interrupted)
        sys.unraisablehook = unraisable
    try:
        try:
            from digitlab.cli import main
        except BaseException:
            if noted:
                raise KeyboardInterrupt from None
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
                sys.unraisablehook = previous_hook
        if noted:
            raise KeyboardInterrupt
        # main() turns a signal into its exit code once its handlers are in place; before
        # that (parsing the arguments) Ctrl-C is Python's KeyboardInterrupt, caught here.
        return main()
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(entry())
