import gzip

import numpy as np
import pytest

from digitlab.errors import DataError
from digitlab.idx import idx_bytes, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((5, 3, 4)) * 100).astype(dtype)
    path = write_idx(tmp_path / name, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(back, array)
    assert path.read_bytes().startswith(b"\x1f\x8b") == name.endswith(".gz")


def test_header_matches_mnist_magic():
    assert idx_bytes(np.zeros((2, 28, 28), np.uint8))[:4] == b"\x00\x00\x08\x03"
    assert idx_bytes(np.zeros(2, np.uint8))[:4] == b"\x00\x00\x08\x01"


def test_truncated_data(tmp_path):
    data = idx_bytes(np.ones((4, 28, 28), np.uint8))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(data[:-10], "x")


def test_trailing_bytes():
    with pytest.raises(DataError, match="trailing bytes"):
        parse_idx(idx_bytes(np.ones(4, np.uint8)) + b"\0", "x")


def test_wrong_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(DataError, match=r"not an IDX file.*0x12345678.*0x00000803"):
        read_idx(path)


def test_too_short(tmp_path):
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\0\0", "x")


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "images.gz"
    good = gzip.compress(idx_bytes(np.ones((50, 28, 28), np.uint8)))
    path.write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(DataError, match=r"images\.gz.*corrupt or truncated gzip"):
        read_idx(path)
    path.write_bytes(good[:10] + bytes(len(good) - 10))  # garbage after the header
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_write_is_atomic_on_error(tmp_path):
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x.idx", np.array(["a"]))
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path):
    import os

    path = write_idx(tmp_path / "x.idx", np.zeros(3, np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
