"""Downloading a file from a list of mirrors: retry, progress, checksum, atomic rename.

The pattern is scikit-learn's dataset fetchers': download to a temporary file in the target
folder, verify the checksum, and only then rename it into place, so the cache never holds a
partial or corrupt file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from digitlab.errors import DataError
from digitlab.files import OutputError, describe_os_error

_CHUNK = 1 << 16


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksum_algorithm(checksum: str) -> str:
    # The published MNIST-family checksums are md5 (32 hex digits); Keras' npz uses sha256.
    return {32: "md5", 64: "sha256"}[len(checksum)]


def _cannot_write(dest: Path, exc: OSError, url: str) -> OutputError:
    # A full disk or a read-only cache is ours, not the mirror's: no other mirror or retry
    # will help, and the message must name the file and what to do.
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        todo = f"free some space in {dest.parent} or set DIGITLAB_HOME to a folder with room"
    else:
        todo = "set DIGITLAB_HOME to a folder you can write"
    return OutputError(
        f"cannot write {dest} while downloading {url}: {exc.strerror or exc}; {todo}"
    )


def _fetch_once(url: str, dest: Path, checksum: str, timeout: float, quiet: bool) -> None:
    algorithm = _checksum_algorithm(checksum)
    h = hashlib.new(algorithm)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise _cannot_write(dest, exc, url) from exc
    try:
        # Unbuffered: a write that fails (a full disk) fails here, where it is told from a
        # network error, not again in close() where it would replace the first error.
        with (
            os.fdopen(fd, "wb", buffering=0) as out,
            urllib.request.urlopen(url, timeout=timeout) as resp,
        ):
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name, disable=quiet, leave=False
            ) as bar:
                while block := resp.read(_CHUNK):
                    try:
                        view = memoryview(block)
                        while view:  # a raw write may take only part of the block
                            view = view[out.write(view) :]
                    except OSError as exc:
                        raise _cannot_write(dest, exc, url) from exc
                    h.update(block)
                    bar.update(len(block))
            if total is not None and out.tell() != total:
                raise OSError(f"connection closed after {out.tell()} of {total} bytes")
        if h.hexdigest() != checksum:
            raise DataError(
                f"checksum mismatch for {url}: {algorithm} {h.hexdigest()}, expected {checksum}"
            )
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise _cannot_write(dest, exc, url) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def download(
    filename: str,
    checksum: str,
    mirrors: Sequence[str],
    dest_dir: str | Path,
    *,
    retries: int = 2,
    timeout: float = 30.0,
    quiet: bool = False,
) -> Path:
    """Fetch `filename` from the first mirror that serves it with the right checksum.

    Each mirror (a base URL) is tried `retries` times for network errors; a checksum mismatch
    moves straight on to the next mirror. Returns the verified file's path in `dest_dir`.
    Raises DataError when no mirror served the right bytes, and OutputError naming the file
    when it cannot be written here (a full disk, a read-only folder): no mirror can fix that.
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot make the download folder {dest_dir} ({describe_os_error(exc, dest_dir)}); "
            "set DIGITLAB_HOME to a folder you can write"
        ) from exc
    dest = dest_dir / filename
    failures: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        for attempt in range(retries):
            try:
                _fetch_once(url, dest, checksum, timeout, quiet)
                return dest
            except DataError as exc:  # wrong bytes: retrying the same mirror will not help
                failures.append(str(exc))
                break
            except (urllib.error.URLError, OSError, ValueError) as exc:
                final = attempt + 1 == retries or (
                    isinstance(exc, urllib.error.HTTPError) and exc.code == 404
                )
                if final:
                    failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
                    break
                time.sleep(0.5 * (attempt + 1))
    raise DataError(f"could not download {filename}; tried: " + "; ".join(failures))
