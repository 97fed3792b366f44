"""Reading and writing IDX files, the format MNIST and its relatives are published in.

An IDX file is two zero bytes, a type code, the number of dimensions, each dimension as a
big-endian uint32, then the values in C order. Files may be gzip-compressed; we detect that by
the gzip magic bytes, not by the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from digitlab.errors import DataError
from digitlab.files import OutputError, atomic_write_bytes, describe_os_error

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
# The most data one IDX file may hold. The largest MNIST-format file published (EMNIST
# ByClass, 697,932 images) holds 547 MB; a header claiming more is damaged or forged, and
# reading it would only exhaust memory.
MAX_DATA_BYTES = 1 << 30
_BLOCK = 1 << 20


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip data; corrupt gzip raises DataError.

    The whole content is held in memory: for IDX files use `read_idx`, which stops at the
    size the header gives (a small gzip file may decompress to gigabytes)."""
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
        raise DataError(_corrupt_gzip(path, exc)) from exc


def _corrupt_gzip(path: Path, exc: BaseException) -> str:
    return (
        f"{path} is a corrupt or truncated gzip file ({exc}); delete it and download it "
        "again, or point --data-dir at a good copy"
    )


def is_idx_header(head: bytes) -> bool:
    """Whether `head` (a file's first bytes, at least 4) starts as an IDX file does: two zero
    bytes, a known type code and a dimension count of 1 or more."""
    return len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _DTYPES and head[3] > 0


def _read_header(
    read, source: str, max_bytes: int | None = None
) -> tuple[tuple[int, ...], np.dtype, int, int]:
    """(shape, file dtype, header length, data bytes) from `read(n)`, the file's first bytes.

    Raises DataError when they are not an IDX header, or (with `max_bytes`) when the header
    claims more data than that."""
    head = read(4)
    if len(head) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(head)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(
            f"{source}: not an IDX file (magic number 0x{int.from_bytes(head, 'big'):08X}; "
            "expected 0x00000801 for labels or 0x00000803 for images)"
        )
    dims = read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{source}: IDX header truncated")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = _DTYPES[code]
    # Python ints: a forged header's product must not wrap around as an int64 would.
    expected = dtype.itemsize
    for d in shape:
        expected *= d
    if max_bytes is not None and expected > max_bytes:
        raise DataError(
            f"{source}: IDX header says shape {shape} ({expected:,} bytes of data), more than "
            f"the {max_bytes:,} bytes digitlab reads from one file: the header is damaged or "
            "the file is not an MNIST-format file; replace it"
        )
    return shape, dtype, 4 + 4 * ndim, expected


def _size_error(
    source: str, shape: tuple, expected: int, got: int | None, dtype: np.dtype
) -> DataError:
    what = "truncated" if got is not None and got < expected else "has trailing bytes"
    has = f"file has {got}" if got is not None else "the file holds more (not read further)"
    return DataError(
        f"{source}: IDX file {what}: header says shape {shape} ({expected} bytes of data), "
        f"{has}{_damaged_header(shape, dtype, expected, got)}"
    )


def _damaged_header(shape: tuple, dtype: np.dtype, expected: int, got: int | None) -> str:
    """Why the size is off, when one damaged header byte explains it exactly: the data fit
    another type code, or fewer dimensions (the extra ones were read from the data). A file
    of the right length called "truncated" sent users looking for a short download."""
    if got is None:
        return ""
    count = expected // dtype.itemsize
    for code, other in _DTYPES.items():
        if other != dtype and count * other.itemsize == got:
            return (
                f"; its data fit type 0x{code:02X} ({other.name}), not the header's "
                f"{dtype.name}: the header's type byte looks damaged; replace the file"
            )
    for n in range(1, len(shape)):
        if math.prod(shape[:n]) * dtype.itemsize == got + 4 * (len(shape) - n):
            return (
                f"; its data fit {n} dimension{'s' if n > 1 else ''} {shape[:n]}, not the "
                f"header's {len(shape)}: the header's dimension byte looks damaged; replace "
                "the file"
            )
    return ""


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array (native byte order). Any inconsistency raises DataError."""
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        pos += n
        return data[pos - n : pos]

    shape, dtype, header, expected = _read_header(read, source)
    if len(data) - header != expected:
        raise _size_error(source, shape, expected, len(data) - header, dtype)
    # A writable native-order copy, as Keras gives: frombuffer alone would be read-only.
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _read_into(stream: IO[bytes], buffer: memoryview) -> int:
    """Fill `buffer` from `stream`; returns the bytes read (fewer only at the end of data)."""
    filled = 0
    if isinstance(stream, gzip.GzipFile):
        # In slices: GzipFile.readinto would inflate the whole request into a second buffer.
        while filled < len(buffer):
            block = stream.read(min(len(buffer) - filled, _BLOCK))
            if not block:
                break
            buffer[filled : filled + len(block)] = block
            filled += len(block)
        return filled
    while filled < len(buffer):
        n = stream.readinto(buffer[filled:])
        if not n:
            break
        filled += n
    return filled


def read_idx(path: str | Path, max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Read an IDX file (raw or gzip'd) into a numpy array (native byte order, writable).

    Gzip data are decompressed as a stream that stops where the header says the data end,
    so a small file that inflates to gigabytes (a gzip bomb) costs no more memory than the
    array the header describes. Raises DataError naming the file when it cannot be read, is
    corrupt gzip, is not IDX, claims more than `max_bytes` of data (1 GiB by default), or
    holds less or more data than its header says.
    """
    path = Path(path)
    source = str(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; the gzip stream wraps it
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        try:
            gz = handle.read(2) == _GZIP_MAGIC
            handle.seek(0)
            if not gz:
                # Raw bytes: the file's size tells truncation or trailing bytes before reading.
                shape, dtype, header, expected = _read_header(handle.read, source, max_bytes)
                got = os.fstat(handle.fileno()).st_size - header
                if got != expected:
                    raise _size_error(source, shape, expected, got, dtype)
                return _read_data(handle, source, shape, dtype, expected)
            with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                shape, dtype, _, expected = _read_header(stream.read, source, max_bytes)
                return _read_data(stream, source, shape, dtype, expected)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(_corrupt_gzip(path, exc)) from exc
        except OSError as exc:
            raise DataError(f"cannot read {path}: {describe_os_error(exc)}") from exc


def _read_data(
    stream: IO[bytes], source: str, shape: tuple, dtype: np.dtype, expected: int
) -> np.ndarray:
    """The data after the header: exactly `expected` bytes, then the end of the stream."""
    array = np.empty(shape, dtype=dtype)
    got = _read_into(stream, memoryview(array.reshape(-1).view(np.uint8)))
    if got < expected:
        raise _size_error(source, shape, expected, got, dtype)
    # One byte more is all we ask for: data running on past the header's size (a gzip bomb
    # is that) are refused without inflating the rest.
    if stream.read(1):
        raise _size_error(source, shape, expected, None, dtype)
    if not dtype.isnative:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise an array as IDX bytes."""
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big not in _CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = struct.pack(f">HBB{array.ndim}I", 0, _CODES[big], array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=big).tobytes()


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as an IDX file, gzip'd when `compress` (default: path ends in .gz).

    Raises ValueError for a dtype IDX cannot store, and OutputError naming the file when it
    cannot be written (a full disk, a read-only folder); the old file, if any, is kept."""
    path = Path(path)
    data = idx_bytes(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    try:
        return atomic_write_bytes(path, data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc, path)}") from exc
