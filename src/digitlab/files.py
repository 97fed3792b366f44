"""Atomic file writes: a reader never sees half a file, an interruption leaves the old one."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from digitlab.errors import DataError, DigitlabError


class OutputError(DigitlabError):
    """An output place cannot be written (read-only, not a folder, no such device...)."""


class FolderBusy(DigitlabError):
    """Another live process holds the lock of an output folder."""


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def _part_file(path: Path, mode: str) -> Iterator[tuple[IO[Any], str]]:
    """A temporary file beside `path` (handle, its name), fsync'd with the usual permissions
    when the block ends; removed if the block fails. The caller renames it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    remove_stale_parts(path)
    # The writer's pid is in the temporary name, so a later writer can tell a dead one's leftover
    # (removed) from a live one's file in progress (kept).
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent
        )
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle, tmp
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; give the file the usual permissions
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            # A write, flush or fsync that fails (a full disk: ENOSPC) names no file, and the
            # one-line message (describe_os_error) must say which one could not be written.
            exc.filename = str(path)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on success it is fsync'd and renamed over `path`."""
    path = Path(path)
    with _part_file(path, mode) as (handle, tmp):
        yield handle
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def replace_together(contents: dict[Path, str], first: Callable[[], None] | None = None) -> None:
    """Write several text files so that they change together: every one is written in full
    beside its place first (a full disk or a failure leaves all the old ones), then all are
    renamed into place with SIGINT held back until the last is in (renames take microseconds;
    only a SIGKILL or a power cut in between can split them). `first()`, when given, runs in
    that same held-back moment before the renames (a run's moves of its staged figures and
    models); if it raises, none of the files is replaced.

    A run's config.json, config.toml, metrics.json and report.html were four separate atomic
    writes: an interrupt between them paired one run's settings with another's results.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in contents.items():
            with _part_file(path, "w") as (handle, tmp):
                handle.write(text)
            staged.append((tmp, path))
        with signals_deferred():
            if first is not None:
                first()
            for tmp, path in staged:
                os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM held back for the block and delivered after it.

    Their handlers are swapped for one that only notes the signal: Python runs signal
    handlers in the main thread whichever thread the OS gave the signal to (blocking SIGINT
    with pthread_sigmask in the main thread alone let the lock's heartbeat thread take it, and
    the interrupt then struck mid-commit anyway). Outside the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented, standard JSON to `path` atomically (through `jsonable`: an
    infinite or NaN float is written as null); returns the path."""
    return atomic_write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """`obj` as indented, standard JSON text (through `jsonable`), ending in a newline.

    Python's json writes inf and NaN as `Infinity`/`NaN`, which other JSON readers (a
    browser's JSON.parse, jq, most languages) refuse; `allow_nan=False` makes sure none
    slips through.
    """
    return json.dumps(jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def read_json_object(path: str | Path) -> dict:
    """The JSON object (a dict) in `path`, as `atomic_write_json` writes them.

    Raises DataError, one line naming the file, when it cannot be read, is not JSON text or
    holds something else than an object (a hand-edited or damaged config, metrics or record
    file once surfaced as a traceback)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({describe_os_error(exc)})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise DataError(f"{path} holds JSON of another shape ({kind}), not an object")
    return data


def save_metrics(path: str | Path, metrics: dict) -> Path:
    """metrics.json, atomically; numpy values become plain JSON numbers and lists."""
    return atomic_write_json(path, jsonable(metrics))


def jsonable(obj: Any) -> Any:
    """`obj` with numpy arrays/scalars and paths turned into plain JSON values (keys as str),
    and every infinite or NaN float into None (null: standard JSON has no such numbers; a
    kNN margin is infinite where the training subset holds no image of the true digit)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# A temporary file without a pid in its name (written before pids were recorded) is taken as
# abandoned once it is this old: no single write of digitlab's takes an hour.
_OLD_PART_S = 3600.0


def remove_stale_parts(path: str | Path) -> list[Path]:
    """Remove the `.NAME.*.part` files a killed writer of `path` left beside it; returns them.

    A leftover is stale when the pid in its name is not alive, or, without a pid, when it is
    over an hour old. Files of live writers are kept. Errors are ignored (best effort).
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".part")):
            continue
        rest = name[len(prefix) :]  # "PID.RANDOM.part", or "RANDOM.part" from older versions
        pid_text = rest.split(".", 1)[0]
        try:
            stale = (
                not pid_alive(int(pid_text))
                if pid_text.isdigit() and rest.count(".") >= 2
                else time.time() - entry.stat().st_mtime > _OLD_PART_S
            )
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def shown_name(name: str | os.PathLike[str]) -> str:
    """A file name (or any name a user gave) as a message or an answer line shows it: as it
    is, or, when it holds a character that prints as nothing or as a line break (a newline, a
    tab, an escape) or starts with a quote, as Python writes it: quoted, with `\\n` for a
    newline. On one line either way, and never taken for another name.

    A picture whose name held a newline split `cnn predict`'s answer over two lines, the
    second reading as an answer of its own."""
    text = os.fspath(name)
    if not text.isprintable() or text[:1] in ("'", '"'):
        return repr(text)
    return text


def one_line(text: str) -> str:
    """`text` with every character that prints as nothing or breaks the line written as its
    escape (`\\n`, `\\x1b`): a message stays one line whatever file names it holds."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe_os_error(exc: OSError, path: str | Path | None = None) -> str:
    """One line for an OS error: what failed and on which path.

    The path is the error's own (both, for a rename), else `path`, the file the caller was
    working on: a write or fsync on an open file that fails (a full disk, ENOSPC) carries no
    file name, and "No space left on device" alone does not say which disk or file."""
    what = exc.strerror or str(exc) or exc.__class__.__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    if len(paths) == 2 and str(paths[0]).endswith(".part"):
        # Renaming our temporary file into place: its name means nothing to the user (a
        # report.html that is a folder once read ".report.html.9780.2oepu333.part -> ...").
        paths = paths[1:]
    if not paths and path is not None:
        paths = [path]
    names = [shown_name(p) if isinstance(p, (str, os.PathLike)) else str(p) for p in paths]
    return f"{what}: {' -> '.join(names)}" if names else what


def check_writable(folder: str | Path, create: bool = False) -> Path:
    """Prove a file can be written in `folder`, before any work is done.

    A folder that does not exist yet is not made (a command refused later for a bad setting
    leaves nothing behind): the nearest existing folder above it must take a file instead,
    since the writers make the missing folders. With `create`, the folder is made first and
    proved itself. Returns the folder. Raises OutputError naming the path and the reason.
    """
    folder = Path(folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        probe_in = folder
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(probe_in))
        fd, probe = tempfile.mkstemp(prefix=".digitlab-write-check.", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"cannot write to {folder}: {reason}") from None
    return folder


def check_writable_file(path: str | Path) -> Path:
    """`check_writable` for the folder of output file `path`; also refuses a folder as `path`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder, give a file name")
    check_writable(path.parent if str(path.parent) else Path("."))
    return path


LOCK_NAME = ".digitlab.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "folder") -> Iterator[Path]:
    """Hold `folder/.digitlab.lock` (pid, host, start time) while the block runs.

    Taken with O_CREAT|O_EXCL, so two processes cannot both hold it. A lock left by a process
    that is dead (same host, pid gone) is taken over; so is one of another host that has not
    been refreshed for 10 minutes (the holder touches it every 30 s while it works, so a crashed
    machine's lock does not stay held forever). Raises FolderBusy naming the holder.
    """
    folder = check_writable(folder, create=True)
    lock = folder / LOCK_NAME
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if _lock_is_stale(lock, holder):
                _take_over(lock, holder)
                continue
            who = (
                f"process {holder.get('pid')} on {holder.get('host')} "
                f"(since {holder.get('started')})"
                if holder
                else "another process"
            )
            raise FolderBusy(
                f"{folder} is in use by {who}: wait for it, or choose another {what}; "
                f"if that process is gone, remove {lock}"
            ) from None
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
        except OSError:
            # A full disk: no empty lock left behind to block the folder for a minute.
            with contextlib.suppress(OSError):
                os.unlink(lock)
            raise
        break
    else:
        raise FolderBusy(f"could not take the lock {lock}; try again")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lock, stop), daemon=True)
    beat.start()
    try:
        yield lock
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(OSError):
            if _read_lock(lock).get("pid") == os.getpid():
                os.unlink(lock)


def _take_over(lock: Path, stale: dict) -> None:
    """Remove `lock`, judged stale with holder record `stale`, unless it changed meanwhile.

    Two processes can judge one dead holder's lock stale at once; the first removes it and
    takes a fresh lock, and the second, removing "the stale lock", would delete that fresh one
    and take its own: two holders. So removal runs under a guard file (O_EXCL) and only while
    the lock still holds the record judged stale. A guard left by a crash is cleared after a
    minute; a guard in use means wait a moment and look again.
    """
    guard = lock.with_name(lock.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - guard.stat().st_mtime > 60:
                os.unlink(guard)
        time.sleep(0.05)
        return
    try:
        if _read_lock(lock) == stale and _lock_is_stale(lock, stale):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(guard)


_HEARTBEAT_S = 30.0
_OTHER_HOST_STALE_S = 600.0


def _heartbeat(lock: Path, stop: threading.Event) -> None:
    while not stop.wait(_HEARTBEAT_S):
        with contextlib.suppress(OSError):
            os.utime(lock)


def _read_lock(lock: Path) -> dict:
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _lock_is_stale(lock: Path, holder: dict) -> bool:
    if not holder:
        # Being written this instant (keep it), or left empty by a process killed between
        # creating and writing it (take it over once it is a minute old).
        try:
            return time.time() - lock.stat().st_mtime > 60
        except OSError:
            return False
    if holder.get("host") != socket.gethostname():
        # Another machine's process: alive while it keeps refreshing the lock.
        try:
            return time.time() - lock.stat().st_mtime > _OTHER_HOST_STALE_S
        except OSError:
            return False
    pid = holder.get("pid")
    return isinstance(pid, int) and not pid_alive(pid)
