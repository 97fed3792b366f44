"""Reading and writing IDX files, the format MNIST and its relatives are published in.

An IDX file is two zero bytes, a type code, the number of dimensions, each dimension as a
big-endian uint32, then the values in C order. Files may be gzip-compressed; we detect that by
the gzip magic bytes, not by the file name.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from digitlab.errors import DataError
from digitlab.files import atomic_write_bytes

# IDX type code -> numpy dtype (multi-byte types are big-endian in the file).
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder(">") if dt.itemsize > 1 else dt: code for code, dt in _DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip data; corrupt gzip raises DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(
            f"{path} is a corrupt or truncated gzip file ({exc}); delete it and download it "
            "again, or point --data-dir at a good copy"
        ) from exc


def is_idx_header(head: bytes) -> bool:
    """Whether `head` (a file's first bytes, at least 4) starts as an IDX file does: two zero
    bytes, a known type code and a dimension count of 1 or more."""
    return len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _DTYPES and head[3] > 0


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array (native byte order). Any inconsistency raises DataError."""
    if len(data) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(
            f"{source}: not an IDX file (magic number 0x{int.from_bytes(data[:4], 'big'):08X}; "
            "expected 0x00000801 for labels or 0x00000803 for images)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: IDX header truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX file {what}: header says shape {shape} ({expected} bytes of data), "
            f"file has {got}"
        )
    # A writable native-order copy, as Keras gives: frombuffer alone would be read-only.
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip'd) into a numpy array."""
    path = Path(path)
    return parse_idx(read_bytes(path), source=str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise an array as IDX bytes."""
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big not in _CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = struct.pack(f">HBB{array.ndim}I", 0, _CODES[big], array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=big).tobytes()


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as an IDX file, gzip'd when `compress` (default: path ends in .gz)."""
    path = Path(path)
    data = idx_bytes(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)
