"""`digitlab report RUN_DIR`: rebuild a run folder's report.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from digitlab import commit
from digitlab.cli.commands import COMMANDS
from digitlab.cli.common import add_quiet
from digitlab.errors import DataError
from digitlab.files import folder_lock, shown_name
from digitlab.report import write_report


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild report.html of a run folder."""
    folder = Path(args.run_dir)
    if not folder.is_dir():  # before the lock, which would make it
        raise DataError(f"{folder} is not a folder: give a run folder (`digitlab run --out`)")
    # A run writing the folder holds its lock: a report built meanwhile mixed two runs.
    with folder_lock(folder, "moment"):
        if commit.finish(folder) and not args.quiet:
            print("finished putting in place the results of the run stopped while it did")
        path, lost = write_report(folder)
    if lost:  # shown as lost on the page too; not silently dropped or embedded broken
        print(
            f"note: {len(lost)} figure(s) of this run are missing or damaged ({', '.join(lost)}): "
            "the report says so where they belong; `digitlab run --out "
            f"{shown_name(folder)}` with its settings draws them again",
            file=sys.stderr,
        )
    if not args.quiet:
        print(f"wrote {shown_name(path)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `report`."""
    r = sub.add_parser(
        "report",
        help=COMMANDS["report"].help,
        description="Rebuild the self-contained report.html of a run folder.",
    )
    r.add_argument("run_dir", type=Path, help="a folder written by `digitlab run`")
    add_quiet(r)
    r.set_defaults(func=cmd_report)
