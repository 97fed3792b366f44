"""Downloading a file from a list of mirrors: retry, progress, checksum, atomic rename.

The pattern is scikit-learn's dataset fetchers': download to a temporary file in the target
folder, verify the checksum, and only then rename it into place, so the cache never holds a
partial or corrupt file.
"""

from __future__ import annotations

import contextlib
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


def _fetch_once(url: str, dest: Path, checksum: str, timeout: float, quiet: bool) -> None:
    algorithm = _checksum_algorithm(checksum)
    h = hashlib.new(algorithm)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name, disable=quiet, leave=False
            ) as bar:
                while block := resp.read(_CHUNK):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
            if total is not None and out.tell() != total:
                raise OSError(f"connection closed after {out.tell()} of {total} bytes")
        if h.hexdigest() != checksum:
            raise DataError(
                f"checksum mismatch for {url}: {algorithm} {h.hexdigest()}, expected {checksum}"
            )
        os.replace(tmp, dest)
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
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
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
