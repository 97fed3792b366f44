"""Shared fixtures: the real MNIST files when present, small synthetic IDX folders otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from digitlab.idx import write_idx

ROOT = Path(__file__).resolve().parents[1]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _real_mnist_dir() -> Path | None:
    for candidate in (os.environ.get("DIGITLAB_TEST_DATA"), ROOT.parent / "shared/data/mnist"):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache, or inherits their data folder."""
    monkeypatch.setenv("DIGITLAB_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("DIGITLAB_DATA", raising=False)
    monkeypatch.delenv("DIGITLAB_MIRRORS", raising=False)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = _real_mnist_dir()
    if path is None:
        pytest.skip("real MNIST files not found (../shared/data/mnist or DIGITLAB_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from digitlab.data import load_dataset

    return load_dataset("mnist", mnist_dir)


def make_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny fake 'digits': class c lights up a block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(y)
    x = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(y):
        r, col = 2 + (c // 5) * 12, 2 + (c % 5) * 5
        x[i, r : r + 10, col : col + 5] = 200 + rng.integers(0, 55)
    return x, y


def write_fake_idx(folder: Path, n_train: int = 200, n_test: int = 50, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr = make_digits(n_train, 1)
    xte, yte = make_digits(n_test, 2)
    ext = ".gz" if gz else ""
    # Raw names carry no published checksum, so the structure checks are what is exercised.
    write_idx(folder / f"train-images-idx3-ubyte{ext}", xtr)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", ytr)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", xte)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", yte)
    return folder


@pytest.fixture
def fake_dir(tmp_path) -> Path:
    return write_fake_idx(tmp_path / "fake")
