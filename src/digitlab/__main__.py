"""`python -m digitlab ...`: the same command line as the `digitlab` script."""

import sys

from digitlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
