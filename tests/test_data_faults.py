"""Bad input to the data layer: gzip bombs, full disks, edited caches, swapped train/test files.

Each fault must end in one line naming the file (DataError / OutputError, or an OSError that
carries the path), quickly and with bounded memory, and lose nothing.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import write_fake_idx
from digitlab.cli import main
from digitlab.data import load_dataset
from digitlab.download import download
from digitlab.errors import DataError
from digitlab.files import OutputError, atomic_write_json, describe_os_error
from digitlab.idx import idx_bytes, read_idx, write_idx

# --- gzip bombs -------------------------------------------------------------------------------


def _gzip_bomb(path: Path, shape: tuple[int, ...], zeros: int) -> Path:
    """A gzip'd IDX file whose header says `shape` (uint8), followed by `zeros` zero bytes,
    compressed as a stream (a few hundred KB on disk, never the whole in memory)."""
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    with open(path, "wb") as out:
        out.write(c.compress(struct.pack(f">HBB{len(shape)}I", 0, 8, len(shape), *shape)))
        for _ in range(zeros // len(block)):
            out.write(c.compress(block))
        out.write(c.flush())
    return path


def test_gzip_bomb_is_refused_at_the_headers_size_with_bounded_memory(tmp_path):
    """28 MB that inflated to 6 GB was decompressed in full before the size check: now the
    stream stops one byte past what the header gives."""
    bomb = _gzip_bomb(tmp_path / "train-images.idx3-ubyte.gz", (100, 28, 28), 128 << 20)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataError) as info:
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 8 << 20, f"{peak:,} bytes held for a 78,400-byte array"  # 128 MB before
    message = str(info.value)
    assert str(bomb) in message and "has trailing bytes" in message
    assert "header says shape (100, 28, 28) (78400 bytes of data)" in message


@pytest.mark.parametrize("gz", [True, False])
def test_a_header_claiming_more_than_the_cap_is_refused_unread(tmp_path, gz):
    path = tmp_path / ("big.idx.gz" if gz else "big.idx")
    header = struct.pack(">HBB3I", 0, 8, 3, 2_000_000, 28, 28)  # 1.57 GB of pixels
    path.write_bytes(zlib.compress(header, wbits=31) if gz else header + bytes(100))
    with pytest.raises(DataError, match=r"big\.idx(\.gz)?: IDX header says shape") as info:
        read_idx(path)
    assert "more than the 1,073,741,824 bytes" in str(info.value)


@pytest.mark.parametrize("cut", [-5, 3])
def test_gzip_short_data_or_trailing_bytes_are_named(tmp_path, cut):
    data = idx_bytes(np.ones((4, 28, 28), np.uint8))
    path = tmp_path / "x.idx.gz"
    path.write_bytes(zlib.compress(data[:cut] if cut < 0 else data + bytes(cut), wbits=31))
    what = "truncated" if cut < 0 else "has trailing bytes"
    with pytest.raises(DataError, match=rf"x\.idx\.gz: IDX file {what}"):
        read_idx(path)


def test_a_bomb_in_a_data_folder_is_one_line(tmp_path, capsys):
    folder = write_fake_idx(tmp_path / "d")
    (folder / "train-images-idx3-ubyte").unlink()
    _gzip_bomb(folder / "train-images.idx3-ubyte.gz", (200, 28, 28), 64 << 20)
    assert main(["data", "info", "--data-dir", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "train-images.idx3-ubyte.gz: IDX file has trailing bytes" in err


# --- full disks -------------------------------------------------------------------------------


class _FullFile(io.FileIO):
    """A file on a disk that fills up after `room` bytes: writes then fail with ENOSPC, as
    the OS reports it (the error names no file)."""

    room = 0

    def write(self, b):
        if self.tell() + len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(b)


def _disk_full(monkeypatch, room: int = 1000) -> None:
    """Every file opened for writing by fd (what mkstemp-based writers use) fills at `room`."""
    real = os.fdopen

    def fdopen(fd, mode="r", buffering=-1, *args, **kwargs):
        if "w" not in mode:
            return real(fd, mode, buffering, *args, **kwargs)
        raw = type("Full", (_FullFile,), {"room": room})(fd, "wb")
        if buffering == 0:
            return raw
        buffered = io.BufferedWriter(raw)
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding="utf-8")

    monkeypatch.setattr(os, "fdopen", fdopen)


def test_describe_os_error_names_the_path_the_error_lacks(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device")
    assert describe_os_error(full, tmp_path / "a") == f"No space left on device: {tmp_path / 'a'}"
    assert describe_os_error(full) == "No space left on device"
    own = FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y")
    assert describe_os_error(own, "/other") == "No such file or directory: /x/y"


def test_a_run_file_on_a_full_disk_names_itself(tmp_path, monkeypatch):
    """metrics.json and the other run files: "[Errno 28] No space left on device" named
    neither the file nor the disk."""
    target = tmp_path / "run" / "metrics.json"
    _disk_full(monkeypatch)
    with pytest.raises(OSError) as info:
        atomic_write_json(target, {"x": "y" * 5000})
    assert describe_os_error(info.value) == f"No space left on device: {target}"
    assert not list((tmp_path / "run").iterdir())  # no half file, no .part left


def test_an_idx_file_on_a_full_disk_names_itself(tmp_path, monkeypatch):
    target = tmp_path / "x.idx"
    _disk_full(monkeypatch)
    with pytest.raises(OutputError, match=rf"cannot write {target}: No space left on device"):
        write_idx(target, np.zeros((10, 28, 28), np.uint8))
    assert not list(tmp_path.iterdir())


def test_a_download_onto_a_full_disk_names_the_file_and_stops(tmp_path, monkeypatch):
    """A full disk was taken for a network error: retried, every mirror tried, and the
    message named the mirror, not the file or the folder to free."""
    from test_download import Server

    server = Server({"hello.bin": b"hello world" * 1000})
    try:
        _disk_full(monkeypatch)
        dest = tmp_path / "raw" / "hello.bin"
        with pytest.raises(
            OutputError,
            match=rf"cannot write {dest} while downloading .*: No space left on device; "
            rf"free some space in {dest.parent}",
        ):
            download("hello.bin", "0" * 32, [server.url, server.url], dest.parent, quiet=True)
        assert len(server.hits) == 1  # no retry, no other mirror: neither can help
        assert not list(dest.parent.iterdir())
    finally:
        server.close()


def _home_with_raw(mnist_dir: Path, home: Path) -> Path:
    raw = home / "mnist" / "raw"
    raw.mkdir(parents=True)
    for f in mnist_dir.glob("*.gz"):
        (raw / f.name).symlink_to(f)
    return raw


@pytest.mark.real_data
def test_the_cache_on_a_full_disk_names_itself(mnist_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    _home_with_raw(mnist_dir, home)
    _disk_full(monkeypatch, room=1 << 20)
    cache = home / "mnist" / "mnist-v1.npz"
    with pytest.raises(OutputError) as info:
        load_dataset("mnist", home=home, mirrors=[])
    assert str(info.value) == (
        f"cannot write the MNIST cache {cache}: No space left on device; free some space "
        "there or set DIGITLAB_HOME to another folder"
    )
    assert sorted(p.name for p in cache.parent.iterdir()) == ["raw"]


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.real_data
def test_a_real_full_disk_under_the_cache_is_one_line(mnist_dir, tmp_path):
    """The real thing where user namespaces allow it: a 12 MB tmpfs as the data home's
    dataset folder, the downloaded files in it and no room for the 55 MB cache."""
    if not _can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs without root here (no user namespaces)")
    home = tmp_path / "home"
    (home / "mnist").mkdir(parents=True)
    script = (
        f"mount -t tmpfs -o size=12m tmpfs {home / 'mnist'} && mkdir {home / 'mnist/raw'} && "
        f"cp {mnist_dir}/*.gz {home / 'mnist/raw'} && "
        f"DIGITLAB_HOME={home} {sys.executable} -m digitlab data info"
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    cache = home / "mnist" / "mnist-v1.npz"
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        f"digitlab: error: cannot write the MNIST cache {cache}: No space left on device; "
        "free some space there or set DIGITLAB_HOME to another folder"
    )


# --- edited caches ----------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("keep_record", [True, False])
def test_an_edited_cache_is_not_used_but_rebuilt(mnist, mnist_dir, tmp_path, keep_record):
    """A cache whose arrays were changed after it was written was served as MNIST."""
    home = tmp_path / "home"
    _home_with_raw(mnist_dir, home)
    load_dataset("mnist", home=home, mirrors=[])
    cache = home / "mnist" / "mnist-v1.npz"
    with np.load(cache) as f:
        members = {k: f[k] for k in f.files if keep_record or k.startswith(("x_", "y_"))}
    members["y_train"] = members["y_train"].copy()
    members["y_train"][:100] = 0  # relabelled: still valid arrays, no longer MNIST
    np.savez(cache, **members)
    if keep_record:
        with pytest.warns(UserWarning) as caught:
            ds = load_dataset("mnist", home=home, mirrors=[])
        assert [str(w.message) for w in caught] == [
            f"{cache}: its arrays were changed after it was written from the verified MNIST "
            "files (their CRC-32s no longer match its record); it was not used, and was "
            "rebuilt from the published MNIST files (checksums verified)"
        ]
    else:  # as an older digitlab's cache, without the record: rebuilt without a word
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = load_dataset("mnist", home=home, mirrors=[])
    np.testing.assert_array_equal(ds.y_train, mnist.y_train)
    again = load_dataset("mnist", home=home, mirrors=[], download_if_missing=False)
    np.testing.assert_array_equal(again.y_train, mnist.y_train)


@pytest.mark.real_data
def test_an_edited_cache_without_its_sources_is_refused(mnist_dir, tmp_path, capsys):
    home = tmp_path / "home"
    raw = _home_with_raw(mnist_dir, home)
    load_dataset("mnist", home=home, mirrors=[])
    shutil.rmtree(raw)
    cache = home / "mnist" / "mnist-v1.npz"
    with np.load(cache) as f:
        members = {k: f[k] for k in f.files}
    members["x_test"] = members["x_test"][::-1].copy()
    np.savez(cache, **members)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", home=home, download_if_missing=False)
    assert str(info.value) == (
        f"{cache}: its arrays were changed after it was written from the verified MNIST "
        "files (their CRC-32s no longer match its record); it is not used, and its source "
        f"files are not in {raw} to rebuild it with downloading off: load once with "
        "downloading on (the published files are fetched and verified again), or pass "
        "--data-dir DIR"
    )
    assert cache.is_file()  # nothing deleted: the message names it


# --- swapped train and test files -------------------------------------------------------------


def _swapped(mnist_dir: Path, folder: Path) -> Path:
    folder.mkdir()
    for f in mnist_dir.glob("*.gz"):
        name = f.name.replace("train", "TMP").replace("t10k", "train").replace("TMP", "t10k")
        (folder / name).symlink_to(f)
    return folder


@pytest.mark.real_data
def test_swapped_published_files_are_named(mnist_dir, tmp_path, capsys):
    folder = _swapped(mnist_dir, tmp_path / "d")
    with pytest.raises(DataError, match="the train and test files look swapped") as info:
        load_dataset("mnist", folder)
    assert "published md5 of the gzip'd MNIST file t10k-" in str(info.value)
    assert main(["data", "info", "--data-dir", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "look swapped" in err and str(folder) in err


@pytest.mark.real_data
def test_swapped_files_are_told_by_their_sizes(mnist_dir, tmp_path):
    """Without checksums (verify=False, or your own copies), the table's split sizes tell."""
    folder = _swapped(mnist_dir, tmp_path / "d")
    with pytest.raises(DataError) as info:
        load_dataset("mnist", folder, verify=False)
    assert str(info.value) == (
        f"{folder}: the train images and labels hold 10,000 items and the test images and "
        "labels 60,000, but MNIST has 60,000 training and 10,000 test images: the train and "
        "test files look swapped (train-images-idx3-ubyte.gz <-> t10k-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz <-> t10k-labels-idx1-ubyte.gz); swap their names back"
    )


@pytest.mark.real_data
def test_swapped_arrays_in_an_npz_are_named(mnist, tmp_path):
    np.savez(
        tmp_path / "mnist.npz",
        x_train=mnist.x_test,
        y_train=mnist.y_test,
        x_test=mnist.x_train,
        y_test=mnist.y_train,
    )
    with pytest.raises(DataError, match=r"look swapped \(x_train <-> x_test, y_train <-> y_test"):
        load_dataset("mnist", tmp_path)


def test_other_sizes_under_mnist_names_are_still_read(tmp_path):
    """Your own data may have any sizes, a larger test split included: only the exact
    published sizes, swapped, are refused."""
    ds = load_dataset("mnist", write_fake_idx(tmp_path / "d", n_train=50, n_test=200))
    assert len(ds.x_train) == 50 and len(ds.x_test) == 200


@pytest.mark.real_data
def test_the_command_line_shows_a_rebuilt_cache_as_one_warning_line(
    mnist_dir, tmp_path, monkeypatch, capsys
):
    """Python's warning format printed the warning's source file, line and code line."""
    from digitlab.cli import main

    home = tmp_path / "home"
    _home_with_raw(mnist_dir, home)
    monkeypatch.setenv("DIGITLAB_HOME", str(home))
    monkeypatch.setenv("DIGITLAB_MIRRORS", "http://127.0.0.1:9/")
    load_dataset("mnist", home=home, mirrors=[])
    cache = home / "mnist" / "mnist-v1.npz"
    with np.load(cache) as f:
        members = {k: f[k] for k in f.files}
    members["y_test"] = members["y_test"][::-1].copy()
    np.savez(cache, **members)
    assert main(["data", "info", "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"digitlab: warning: {cache}: its arrays were")


def test_file_names_a_console_cannot_show_are_escaped(tmp_path):
    """A picture named in another script, on an ASCII console, printed a UnicodeEncodeError
    traceback after reading it."""
    from conftest import ROOT
    from digitlab.shipped import CNN as SHIPPED_CNN

    picture = tmp_path / "zwei_ü_☃.png"
    shutil.copy(ROOT / "tests" / "fixtures" / "images" / "thin_2.png", picture)
    proc = subprocess.run(
        [sys.executable, "-m", "digitlab", "cnn", "predict", str(SHIPPED_CNN), str(picture)],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"zwei_\\xfc_\\u2603.png: 2 (" in proc.stdout and b"Traceback" not in proc.stderr


# --- a folder missing some of its files --------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, removed, said",
    [
        (
            "mnist",
            ["t10k-labels-idx1-ubyte"],
            "has 3 of the 4 MNIST files: t10k-labels-idx1-ubyte(.gz) is missing",
        ),
        (
            "mnist",
            ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"],
            "has 2 of the 4 MNIST "
            "files: train-images-idx3-ubyte(.gz) and t10k-images-idx3-ubyte(.gz) are missing",
        ),
        (
            "fashion-mnist",
            ["train-labels-idx1-ubyte"],
            "has 3 of the 4 Fashion-MNIST files: train-labels-idx1-ubyte(.gz) is missing",
        ),
    ],
)
def test_a_folder_missing_some_files_names_them(tmp_path, dataset, removed, said):
    """Three of the four files once got "no MNIST files in d7", as if the path were wrong."""
    folder = write_fake_idx(tmp_path / "d7")
    for stem in removed:
        (folder / stem).unlink()
    with pytest.raises(DataError) as info:
        load_dataset(dataset, folder)
    assert str(info.value) == f"{folder} {said}"


def test_a_partial_subfolder_is_named_and_an_empty_folder_keeps_its_message(tmp_path, capsys):
    """The per-dataset subfolder is searched too: a partial one there is the one named; a
    folder with none of the files still says it has none, on one line from the command."""
    folder = write_fake_idx(tmp_path / "top" / "mnist")
    (folder / "train-labels-idx1-ubyte").unlink()
    assert main(["data", "info", "--data-dir", str(tmp_path / "top")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"digitlab: error: {folder} has 3 of the 4 MNIST files: "
        "train-labels-idx1-ubyte(.gz) is missing\n"
    )
    (tmp_path / "empty").mkdir()
    assert main(["data", "info", "--data-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert f"no MNIST files in {tmp_path / 'empty'}: expected the four IDX files" in err
    assert err.count("\n") == 1


def test_a_complete_subfolder_wins_over_a_partial_folder(tmp_path):
    """A stray file beside a complete per-dataset subfolder is no reason to refuse it."""
    write_fake_idx(tmp_path / "mnist")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    assert len(load_dataset("mnist", tmp_path).x_train) == 200


def test_an_empty_data_dir_string_is_refused(tmp_path, monkeypatch):
    """load_dataset(data_dir="") read the current folder (Path("") is ".")."""
    write_fake_idx(tmp_path)  # a dataset in "." that must not be read
    monkeypatch.chdir(tmp_path)
    from digitlab.errors import ConfigError

    for empty in ("", "  "):
        with pytest.raises(ConfigError, match="an empty path names no folder"):
            load_dataset("mnist", empty)


@pytest.mark.parametrize(
    ("name", "byte", "value", "cause"),
    [
        ("t10k-images-idx3-ubyte", 2, 0x0D, "type 0x08 (uint8), not the header's float32"),
        ("t10k-labels-idx1-ubyte", 2, 0x0C, "type 0x08 (uint8), not the header's int32"),
        ("t10k-images-idx3-ubyte", 3, 5, "3 dimensions (40, 28, 28), not the header's 5"),
    ],
)
def test_a_damaged_header_byte_is_named(tmp_path, capsys, name, byte, value, cause):
    """One damaged byte of an IDX header (the type code, the dimension count) was reported as
    "truncated" or "trailing bytes", true of the header's arithmetic but sending users to
    look for a short download: the line now names the byte."""
    data = write_fake_idx(tmp_path / "d", n_train=100, n_test=40)
    for path in data.iterdir():  # uncompressed, as a user's own files may be
        if path.suffix == ".gz":
            path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
            path.unlink()
    target = data / name
    raw = bytearray(target.read_bytes())
    raw[16:24] = bytes(8)  # MNIST's first pixels are blank paper: read as two 0 dimensions
    raw[byte] = value
    target.write_bytes(bytes(raw))
    argv = ["knn", "--data-dir", str(data), "--train-size", "50", "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and name in err and cause in err, err
    assert "byte looks damaged" in err
