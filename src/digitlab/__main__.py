"""`python -m digitlab ...` and the `digitlab` script: the command line (`digitlab.cli.main`).

`entry` imports the command line itself, so that Ctrl-C during the imports (PyTorch and
scikit-learn take seconds) is the same one line as Ctrl-C later, not a 47-line traceback.
"""

import sys


def entry() -> int:
    """Run the command line on sys.argv; its exit code (130 when interrupted)."""
    try:
        from digitlab.cli import main
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(entry())
