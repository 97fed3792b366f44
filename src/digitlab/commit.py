"""A run folder's results change together: its commit, written down as a journal first.

A run's stages write their figures, models and record under `.staged/<stage>/`. When the run
finishes, its config, metrics and report are written in full under `.staged/commit/`, then the
moves that put all of it in place are written down (`.staged/commit.json`), done with Ctrl-C
and SIGTERM held back, and the journal is removed. A run killed (or failing: a full disk, a
folder on another device) between the two leaves the journal; the next run, or
`digitlab report`, does the rest of its moves first (each step can be done twice), so a
folder is never left holding two runs' files.

Without the journal, a SIGKILL after three figures had moved left them beside the old
metrics, and the next run then deleted them (they were no longer where it looked).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from digitlab import figures
from digitlab.errors import DataError
from digitlab.files import atomic_write_json, atomic_write_text, read_json_object, signals_deferred

STAGED = ".staged"
RECORD = "record.json"
JOURNAL = "commit.json"

#: One move of a commit: (kind, source, target). "move" a file, "swap" a folder into place
#: (the old one set aside, then removed), "delete" a file.
Step = tuple[str, str, str]


def staged(folder: Path, stage: str) -> Path:
    """Where `stage` of the run in `folder` writes its outputs until they are committed."""
    return folder / STAGED / stage


def stage_steps(folder: Path, stage: str) -> list[Step]:
    """The moves that put a finished staged stage's figures, models and record in place; a
    figure the stage no longer makes (a GAN stage now skipped) is deleted, not left over."""
    source = staged(folder, stage)
    steps: list[Step] = []
    made = set()
    shown = source / "figures"
    for path in sorted(shown.rglob("*")) if shown.is_dir() else []:
        if path.is_file():
            name = path.relative_to(shown).as_posix()
            steps.append(("move", str(path), str(folder / "figures" / name)))
            made.add(name)
    for name in figures.BY_STAGE.get(stage, {}).values():
        if name not in made:
            steps.append(("delete", "", str(folder / "figures" / name)))
    models = source / "models"
    for model in sorted(models.iterdir()) if models.is_dir() else []:
        steps.append(("swap", str(model), str(folder / "models" / model.name)))
    steps.append(("move", str(source / RECORD), str(folder / "stages" / f"{stage}.json")))
    return steps


def aside_steps(folder: Path, stage: str) -> list[Step]:
    """The moves that take a committed stage left out of the new results (made with other
    settings: `--stages` without it) back under `.staged/<stage>/`: the folder then shows
    only the new run's files, and a run with the old settings reuses the stage from there."""
    record = folder / "stages" / f"{stage}.json"
    if not record.is_file():
        return []
    target = staged(folder, stage)
    shutil.rmtree(target, ignore_errors=True)  # an unfinished attempt of other settings
    steps: list[Step] = []
    for name in figures.BY_STAGE.get(stage, {}).values():
        if (folder / "figures" / name).is_file():
            steps.append(("move", str(folder / "figures" / name), str(target / "figures" / name)))
    if stage == "cnn" and (folder / "models" / "cnn").is_dir():
        steps.append(("swap", str(folder / "models" / "cnn"), str(target / "models" / "cnn")))
    steps.append(("move", str(record), str(target / RECORD)))
    return steps


def commit(folder: Path, texts: dict[str, str], steps: list[Step]) -> None:
    """Write `texts` (file name -> content: config, metrics, report) in full, write the
    journal of `steps` and their moves, then do them with Ctrl-C and SIGTERM held back and
    remove the journal. Raises OSError (a full disk before the journal: nothing changed; a
    failing move after it: `finish` completes the commit later)."""
    parts = folder / STAGED / "commit"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    for name, text in texts.items():
        atomic_write_text(parts / name, text)
    steps = [*steps, *(("move", str(parts / n), str(folder / n)) for n in texts)]
    # Paths relative to the folder (it may be moved, or the next command started elsewhere:
    # paths relative to where this one started once finished nothing, or another folder), and
    # each file's digest, to tell a file already moved from one lost.
    journal = [
        [kind, _inside(folder, src), _inside(folder, dst), _digest(Path(src))]
        for kind, src, dst in steps
    ]
    atomic_write_json(folder / STAGED / JOURNAL, {"steps": journal})
    with signals_deferred():
        _apply(folder, journal)


def finish(folder: Path) -> bool:
    """Complete a commit a killed or failed run left half done (its journal is there), and
    tidy after it; True if there was one. Raises DataError (one line, with the way out) when
    the journal is damaged or a file it still needs is gone, OSError when a move fails."""
    journal = folder / STAGED / JOURNAL
    if not journal.is_file():
        return False
    steps = read_json_object(journal).get("steps")
    if not isinstance(steps, list) or not all(_well_formed(step) for step in steps):
        raise DataError(
            f"{journal} is damaged: delete it and rerun with --force (the folder's files may "
            "belong to two runs until then)"
        )
    for kind, src, dst, digest in steps:
        if kind == "move" and not (folder / src).is_file() and digest != _digest(folder / dst):
            raise DataError(
                f"{journal} cannot be completed: {folder / src} is gone and {folder / dst} is "
                "not what it was to become; delete the journal and rerun with --force"
            )
    with signals_deferred():
        _apply(folder, steps)
        tidy(folder, [])
    return True


@contextlib.contextmanager
def outputs_together(
    folder: str | Path, replaces: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """A fresh folder (`.staged/next/`) for a command's output files, moved into `folder` as
    one journalled commit when the block ends normally and removed when it fails or is
    interrupted, so `folder` keeps the last finished command's files whole (a killed
    `knn --out D` rerun once left k=5's figures beside k=3's metrics.json). A commit a killed
    command left half done is finished first. `replaces(path)`: the folder's earlier files
    of this command, deleted in the same commit unless a new file takes their name (for
    outputs whose names change from one run to the next: `cnn predict --out`'s pictures).
    Hold the folder's lock around it (`folders.claim`)."""
    folder = Path(folder)
    finish(folder)
    stage = folder / STAGED / "next"
    shutil.rmtree(stage, ignore_errors=True)  # a killed command's leftovers
    stage.mkdir(parents=True)
    try:
        yield stage
        files = [p for p in sorted(stage.rglob("*")) if p.is_file()]
        steps = [("move", str(p), str(folder / p.relative_to(stage))) for p in files]
        if replaces is not None:
            new = {folder / p.relative_to(stage) for p in files}
            old = [p for p in sorted(folder.iterdir()) if p.is_file() and p not in new]
            steps = [("delete", "", str(p)) for p in old if replaces(p)] + steps
        commit(folder, {}, steps)
    finally:
        if not (folder / STAGED / JOURNAL).exists():  # else its files wait for `finish`
            shutil.rmtree(stage, ignore_errors=True)
            shutil.rmtree(folder / STAGED / "commit", ignore_errors=True)
            with contextlib.suppress(OSError):
                (folder / STAGED).rmdir()  # only when empty: a run's staged stages stay


def tidy(folder: Path, committed: list[str]) -> None:
    """After a commit: the folders it set aside, its written texts and its committed stages'
    leftovers go, and so do emptied folders under `.staged/`. Other staged stages stay (an
    unfinished CNN's checkpoint resumes; a stage of other settings is reused by a run with
    them)."""
    shutil.rmtree(folder / STAGED / "commit", ignore_errors=True)
    for old in (folder / "models").glob(".*.old"):
        shutil.rmtree(old, ignore_errors=True)
    for stage in committed:
        shutil.rmtree(staged(folder, stage), ignore_errors=True)
    root = folder / STAGED
    for sub in [*sorted(root.rglob("*"), reverse=True), root] if root.is_dir() else []:
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()


def _apply(folder: Path, steps: list) -> None:
    """Do a journal's steps ([kind, source, target, digest], paths relative to `folder`);
    each can be done twice (a source already gone was moved), then remove the journal."""
    for kind, source, target, _digest_of in steps:
        src, dst = folder / source, folder / target
        if kind == "delete":
            dst.unlink(missing_ok=True)
        elif kind == "move" and src.is_file():  # gone: done by an earlier attempt
            _move(src, dst)
        elif kind == "swap" and src.is_dir():
            old = dst.parent / f".{dst.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if dst.exists():
                os.replace(dst, old)
            _move(src, dst)
    (folder / STAGED / JOURNAL).unlink(missing_ok=True)


def _inside(folder: Path, path: str) -> str:
    """`path` relative to `folder` (where every step of a commit stays)."""
    return os.path.relpath(path, folder) if path else ""


def _well_formed(step) -> bool:
    """A journal step as `commit` writes it, its paths inside the folder."""
    if not (isinstance(step, list) and len(step) == 4):
        return False
    kind, src, dst, digest = step
    paths_ok = all(
        isinstance(p, str) and not os.path.isabs(p) and ".." not in Path(p).parts
        for p in (src, dst)
    )
    return kind in ("move", "swap", "delete") and paths_ok and isinstance(digest, str)


def _digest(path: Path) -> str:
    """sha256 of a file ("" for a folder or nothing): small files (figures, records, texts)."""
    if not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _move(src: Path, dst: Path) -> None:
    """Rename `src` (a file or folder) to `dst`; across devices (a folder mounted elsewhere:
    EXDEV) copied beside `dst` first, then renamed into place."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        near = dst.parent / f".{dst.name}.copy"
        shutil.rmtree(near, ignore_errors=True)
        near.unlink(missing_ok=True)
        if src.is_dir():
            shutil.copytree(src, near)
            os.replace(near, dst)
            shutil.rmtree(src)
        else:
            shutil.copy2(src, near)
            os.replace(near, dst)
            src.unlink()
