"""The download path against a real HTTP server on 127.0.0.1 (no mocking)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_COUNTS
from digitlab import data
from digitlab.data import data_home, get_spec, load_dataset
from digitlab.download import download
from digitlab.errors import DataError


class Server:
    """Serves `files` (name -> bytes); names in `corrupt` are served with flipped bytes."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.corrupt: set[str] = set()
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.hits.append(self.path)
                if name not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[name]
                if name in outer.corrupt:
                    body = bytes(b ^ 0x55 for b in body[:64]) + body[64:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server({"hello.bin": b"hello world" * 1000})
    yield s
    s.close()


def _dead_url() -> str:
    # A port that was just free: connection refused, as with a mirror that is down.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def test_download_verifies_and_renames(server, tmp_path):
    md5 = hashlib.md5(server.files["hello.bin"]).hexdigest()
    path = download("hello.bin", md5, [server.url], tmp_path, quiet=True)
    assert path.read_bytes() == server.files["hello.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["hello.bin"]


def test_download_falls_back_to_next_mirror(server, tmp_path):
    md5 = hashlib.md5(server.files["hello.bin"]).hexdigest()
    path = download("hello.bin", md5, [_dead_url(), server.url], tmp_path, quiet=True, retries=1)
    assert path.is_file()


def test_download_rejects_bad_checksum_and_keeps_nothing(server, tmp_path):
    server.corrupt.add("hello.bin")
    md5 = hashlib.md5(server.files["hello.bin"]).hexdigest()
    with pytest.raises(DataError, match="checksum mismatch"):
        download("hello.bin", md5, [server.url], tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_download_404(server, tmp_path):
    with pytest.raises(DataError, match="could not download nope.bin.*404|Not Found"):
        download("nope.bin", "0" * 32, [server.url], tmp_path, quiet=True)


@pytest.fixture
def mnist_server(mnist_dir) -> Iterator[Server]:
    s = Server({p.name: p.read_bytes() for p in mnist_dir.glob("*.gz")})
    yield s
    s.close()


@pytest.mark.real_data
def test_mnist_download_cache_and_reuse(mnist_server, tmp_path):
    home = tmp_path / "home"
    ds = load_dataset("mnist", home=home, mirrors=[_dead_url(), mnist_server.url])
    assert np.bincount(ds.y_test).tolist() == TEST_COUNTS
    spec = get_spec("mnist")
    raw = home / "mnist" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(spec.filename(p) for p in spec.md5)
    assert (home / "mnist" / "mnist-v1.npz").is_file()
    # Second load: from the fast cache, without the network.
    hits = len(mnist_server.hits)
    mnist_server.close()
    again = load_dataset("mnist", home=home, mirrors=[_dead_url()])
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    assert len(mnist_server.hits) == hits


@pytest.mark.real_data
def test_mnist_corrupt_download_is_not_cached(mnist_server, tmp_path):
    mnist_server.corrupt.add("t10k-images-idx3-ubyte.gz")
    home = tmp_path / "home"
    with pytest.raises(DataError, match="checksum mismatch.*t10k-images"):
        load_dataset("mnist", home=home, mirrors=[mnist_server.url])
    raw = home / "mnist" / "raw"
    names = {p.name for p in raw.iterdir()}
    assert "t10k-images-idx3-ubyte.gz" not in names
    assert not any(n.endswith(".part") for n in names)
    assert not (home / "mnist" / "mnist-v1.npz").exists()
    # Once the mirror serves good bytes, only the missing file is fetched.
    mnist_server.corrupt.clear()
    before = len(mnist_server.hits)
    load_dataset("mnist", home=home, mirrors=[mnist_server.url])
    assert [h.rsplit("/", 1)[-1] for h in mnist_server.hits[before:]] == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


@pytest.mark.real_data
def test_damaged_cache_is_rebuilt(mnist_server, tmp_path):
    home = tmp_path / "home"
    load_dataset("mnist", home=home, mirrors=[mnist_server.url])
    cache = home / "mnist" / "mnist-v1.npz"
    cache.write_bytes(cache.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=r"cache .*mnist-v1\.npz is damaged .*rebuilt"):
        ds = load_dataset("mnist", home=home, mirrors=[mnist_server.url])
    assert len(ds.x_train) == 60000 and cache.stat().st_size > 50_000_000
    assert (cache.parent / "mnist-v1.npz.damaged").stat().st_size == 1000


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.real_data
def test_a_damaged_cache_that_cannot_be_rebuilt_is_named_and_kept(
    mnist_server, tmp_path, monkeypatch, capsys
):
    """A flipped byte in the cache, its raw files gone and the mirror down: the cache was
    deleted in silence and the error said MNIST was not cached at all."""
    from digitlab.cli import main

    home = tmp_path / "h2"
    load_dataset("mnist", home=home, mirrors=[mnist_server.url])
    for raw in (home / "mnist" / "raw").iterdir():
        raw.unlink()
    cache = home / "mnist" / "mnist-v1.npz"
    _flip_byte(cache, 30_000_000)
    damaged = cache.read_bytes()
    monkeypatch.setenv("DIGITLAB_HOME", str(home))
    monkeypatch.setenv("DIGITLAB_MIRRORS", _dead_url())
    # Only that mirror: the published ones would rebuild it where the internet is reachable.
    spec = dataclasses.replace(get_spec("mnist"), mirrors=(), npz_url=None)
    monkeypatch.setitem(data.DATASETS, "mnist", spec)
    assert main(["data", "info"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"digitlab: error: the MNIST cache {cache} is damaged (")
    assert "it was moved aside to mnist-v1.npz.damaged" in err[0]
    assert "rebuilding it failed" in err[0] and "could not be downloaded" in err[0]
    assert (cache.parent / "mnist-v1.npz.damaged").read_bytes() == damaged  # kept, not deleted
    assert not cache.exists()


def test_environment_mirror_is_tried_first(monkeypatch, server, tmp_path):
    monkeypatch.setenv("DIGITLAB_MIRRORS", server.url)
    with pytest.raises(DataError):
        load_dataset("kmnist", home=tmp_path)  # our server has no KMNIST files
    assert server.hits and server.hits[0].endswith("train-images-idx3-ubyte.gz")


def test_offline_error_says_what_to_do(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", home=tmp_path, mirrors=[_dead_url()])
    message = str(info.value)
    assert "not cached" in message and "--data-dir" in message and "DIGITLAB_DATA" in message
    assert "train-images-idx3-ubyte.gz" in message
    assert not any(Path(tmp_path).rglob("*.part"))


def test_no_download_when_disabled(tmp_path):
    with pytest.raises(DataError, match="downloading is off"):
        load_dataset("mnist", home=tmp_path, download_if_missing=False)


def test_data_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITLAB_HOME", str(tmp_path / "h"))
    assert data_home() == tmp_path / "h"


def test_a_second_damaged_cache_keeps_the_first_copy(tmp_path):
    """Damaged twice, the cache is set aside as .damaged and then .damaged-2 (the second
    once replaced the first copy in silence)."""
    from digitlab.data import _set_aside, get_spec
    from digitlab.errors import DataError

    cache = tmp_path / "mnist-v1.npz"
    for content in (b"first", b"second"):
        cache.write_bytes(content)
        said = _set_aside(cache, DataError(f"{cache}: bad CRC"), get_spec("mnist"))
        assert "is damaged (bad CRC)" in said
    assert (tmp_path / "mnist-v1.npz.damaged").read_bytes() == b"first"
    assert (tmp_path / "mnist-v1.npz.damaged-2").read_bytes() == b"second"
    assert "moved aside to mnist-v1.npz.damaged-2" in said and not cache.exists()
