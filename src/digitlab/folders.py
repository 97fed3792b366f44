"""Output folders: each holds one command's output, written by one process at a time.

Every command that writes a folder (`run`, `knn`, `knn sweep`, `cluster`, `cnn train`,
`cnn eval --out`, `cnn predict --out`, `gan train`, `sweep`) claims it first. The claim refuses a
folder holding another command's output (their files once replaced each other's metrics.json,
and a report was then built from another command's), takes the folder's lock (a second writer
is refused, naming the first), and records the command in `.digitlab-folder.json`. Folders
written before that record are told by their files (a run's config.json, a training run's
checkpoint or saved model).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

from digitlab.errors import DataError
from digitlab.files import (
    LOCK_NAME,
    OutputError,
    atomic_write_json,
    check_writable,
    folder_lock,
    read_json_object,
)
from digitlab.run_kinds import RUN_KINDS

MARKER = ".digitlab-folder.json"
_OURS = (MARKER, LOCK_NAME)  # files of the claim itself: a folder holding only these is free


def owner(folder: str | Path) -> str | None:
    """The command whose output `folder` holds ("run", "knn", "cnn train", ...), "a saved
    model" for a model's own folder, or None: no folder, an empty one, or one whose output
    cannot be told (another program's files are not ours to judge)."""
    folder = Path(folder)
    if not folder.is_dir() or all(p.name in _OURS for p in folder.iterdir()):
        return None
    if (command := recorded(folder)) is not None:
        return command
    # Folders written before the record: told by what they hold.
    with contextlib.suppress(DataError):
        config = read_json_object(folder / "config.json")
        if "run_format" in config:
            return "run"
        if "model" in config:
            return "a saved model"
    for kind in RUN_KINDS:
        if kind.made(folder):
            return kind.command.removeprefix("digitlab ")
    return None


# Commands whose folders hold other commands' folders by design: a sweep's trials are runs.
# Only the command itself makes them (`working_for`): a plain `digitlab run --out` into a
# sweep's folder once replaced a trial's results, and the sweep's statistics then mixed runs.
_NESTED = {"sweep": {"run"}}
_working_for: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "digitlab_working_for", default=None
)


@contextlib.contextmanager
def working_for(command: str) -> Iterator[None]:
    """Inside the block, folders are claimed on behalf of `command` (a sweep's trial makes its
    run folder in the sweep's folder, which `refuse_others` refuses to anyone else)."""
    token = _working_for.set(command)
    try:
        yield
    finally:
        _working_for.reset(token)


def refuse_others(folder: str | Path, command: str, one_file: bool = False) -> None:
    """OutputError if `folder` holds another command's output, or lies inside one (a run's
    figures/ or models/cnn/ once took `knn` or `cnn train` output, and its report then showed
    another run's figure), before any work is done. Inside a sweep's folder only the sweep's
    own trials (claimed within `working_for("sweep")`) may make runs.

    `one_file`: `folder` is where `command` writes one file (`gan generate --out x.png`),
    which may go into any folder but another command's. Otherwise `folder` is the command's
    own, and one already holding files of no command is refused too: claiming it (`--out .`
    in a working folder, `--out /`) mixed our output with the user's, and every later
    command's folder anywhere below it was then refused (`/tmp/x lies inside /`)."""
    folder = Path(folder)
    held = owner(folder)
    if held is not None and held != command:
        what = held if held == "a saved model" else f"the output of `digitlab {held}`"
        writes = (
            "writes a single file, and none into another command's output: choose a path outside it"
            if one_file
            else "writes its own folder: choose another --out"
        )
        raise OutputError(f"{folder} holds {what}; `digitlab {command}` {writes}")
    # Above it only the record counts: files of other programs there are not ours to judge.
    for above in folder.absolute().parents:
        found = recorded(above)
        if found is None:
            continue
        if command not in _NESTED.get(found, ()):
            raise OutputError(
                f"{folder} lies inside {above}, which holds the output of `digitlab {found}`; "
                "choose an --out outside it"
            )
        if _working_for.get() != found:
            raise OutputError(
                f"{folder} lies inside {above}, which holds the output of `digitlab {found}`: "
                f"only its own trials run there; choose an --out outside it"
            )
    # A sweep's trial folder holds the sweep's record of the trial (trial.json) before the
    # trial's run claims it: the sweep made it, inside its own folder.
    if not one_file and held is None and folder.is_dir() and _working_for.get() is None:
        others = sorted(p.name for p in folder.iterdir() if p.name not in _OURS)
        if others:
            shown = ", ".join(map(repr, others[:2])) + (", ..." if len(others) > 2 else "")
            raise OutputError(
                f"{folder} already holds {len(others):,d} other file(s) ({shown}); `digitlab "
                f"{command}` writes its output into a folder of its own: choose a new or "
                "empty --out"
            )


def recorded(folder: Path) -> str | None:
    """The command `folder`'s record names, or None (no record, or an unreadable one)."""
    with contextlib.suppress(DataError):
        command = read_json_object(folder / MARKER).get("command")
        return command if isinstance(command, str) else None
    return None


@contextlib.contextmanager
def claim(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold `folder` for `command` while the block runs: refused (OutputError) if it holds
    another command's output or files of no command, (FolderBusy) while another process holds
    it; made if missing, and recorded as `command`'s. Yields the folder."""
    folder = Path(folder)
    check_writable(folder)
    refuse_others(folder, command)
    with folder_lock(folder, "--out"):
        refuse_others(folder, command)  # again, now that no other process can claim it
        atomic_write_json(folder / MARKER, {"command": command})
        yield folder
