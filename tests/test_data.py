import shutil

import numpy as np
import pytest

from conftest import TEST_COUNTS, TRAIN_COUNTS, make_digits, write_fake_idx
from digitlab.data import (
    DATASETS,
    get_spec,
    load_data,
    load_dataset,
    random_subset,
    read_folder,
    stratified_split,
)
from digitlab.errors import ConfigError, DataError
from digitlab.idx import write_idx


@pytest.mark.real_data
def test_real_mnist_counts(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.y_test.dtype == np.uint8
    assert np.bincount(mnist.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.y_test).tolist() == TEST_COUNTS
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert int(mnist.x_train.sum(dtype=np.int64)) == 1_567_298_545
    (xtr, _ytr), (_xte, yte) = mnist.as_tuple()
    assert xtr is mnist.x_train and yte is mnist.y_test
    assert mnist.classes == tuple("0123456789")


@pytest.mark.real_data
def test_real_mnist_from_environment_and_keras_npz(mnist, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITLAB_DATA", str(mnist_dir))
    (xtr, _), _ = load_data()
    np.testing.assert_array_equal(xtr, mnist.x_train)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=mnist.x_train,
        y_train=mnist.y_train,
        x_test=mnist.x_test,
        y_test=mnist.y_test,
    )
    ds = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(ds.y_test, mnist.y_test)


@pytest.mark.real_data
def test_published_checksum_is_checked_in_a_folder(mnist_dir, tmp_path):
    for f in mnist_dir.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[-9] ^= 0xFF  # still valid gzip framing up to the CRC; the md5 catches it first
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: md5 .* does not match"):
        load_dataset("mnist", tmp_path)


def test_fake_folder_raw_and_gz(tmp_path):
    raw = load_dataset("mnist", write_fake_idx(tmp_path / "raw"))
    # Published names with .gz are md5-checked; our fake files are not the originals.
    gz = load_dataset("mnist", write_fake_idx(tmp_path / "gz", gz=True), verify=False)
    np.testing.assert_array_equal(raw.x_train, gz.x_train)
    assert raw.x_train.shape == (200, 28, 28) and raw.y_test.shape == (50,)
    assert raw.summary()["train"]["class_counts"] == [20] * 10


def test_torchvision_layout(tmp_path):
    write_fake_idx(tmp_path / "MNIST" / "raw")
    assert len(load_dataset("mnist", tmp_path).x_test) == 50


def test_counts_disagree(fake_dir):
    write_idx(fake_dir / "t10k-labels-idx1-ubyte", np.zeros(49, np.uint8))
    with pytest.raises(DataError, match="50 test images but 49 test labels"):
        load_dataset("mnist", fake_dir)


def test_wrong_image_shape(fake_dir):
    write_idx(fake_dir / "t10k-images-idx3-ubyte", np.zeros((50, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"shape \(50, 32, 32\).*expected \(N, 28, 28\) uint8"):
        load_dataset("mnist", fake_dir)


def test_label_out_of_range(fake_dir):
    write_idx(fake_dir / "t10k-labels-idx1-ubyte", np.full(50, 12, np.uint8))
    with pytest.raises(DataError, match="label 12 is not in 0..9"):
        load_dataset("mnist", fake_dir)


def test_wrong_magic_in_folder(fake_dir):
    (fake_dir / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(50))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", fake_dir)


def test_missing_files_say_what_is_needed(tmp_path):
    with pytest.raises(DataError, match=r"no MNIST files in .*train-images-idx3-ubyte\.gz.*npz"):
        load_dataset("mnist", tmp_path)


def test_not_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        load_dataset("mnist", tmp_path / "file")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", tmp_path / "missing")


def test_corrupt_npz(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"mnist\.npz: not a readable npz"):
        read_folder(tmp_path, get_spec("mnist"))


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'; choose one of: mnist"):
        load_dataset("cifar")


def test_table_has_the_mnist_family():
    assert {"mnist", "fashion-mnist", "kmnist"} <= set(DATASETS)
    for spec in DATASETS.values():
        assert len(spec.classes) == 10 and len(spec.md5) == 4 and spec.mirrors
        assert all(len(v) == 32 for v in spec.md5.values())


def test_random_subset_is_seeded():
    x, y = make_digits(100)
    a = random_subset(x, y, 30, seed=1)
    b = random_subset(x, y, 30, seed=1)
    c = random_subset(x, y, 30, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    assert random_subset(x, y, None)[0] is x
    with pytest.raises(ConfigError, match="between 1 and 100"):
        random_subset(x, y, 101)


def test_stratified_split_keeps_class_shares():
    y = np.repeat(np.arange(10), np.arange(10, 110, 10))  # 10, 20, ..., 100 of each class
    tr, va = stratified_split(y, 0.1, seed=3)
    assert len(va) == round(len(y) * 0.1) and len(np.intersect1d(tr, va)) == 0
    assert len(tr) + len(va) == len(y)
    np.testing.assert_array_equal(np.bincount(y[va]), np.arange(1, 11))
    np.testing.assert_array_equal(stratified_split(y, 0.1, seed=3)[1], va)
    with pytest.raises(ConfigError):
        stratified_split(y, 1.5)
    with pytest.raises(ConfigError, match="at least one of each of the 10 classes"):
        stratified_split(np.arange(10), 0.1)


@pytest.mark.real_data
def test_raw_idx_bytes_under_gz_names_are_accepted(mnist, mnist_dir, tmp_path):
    """A browser that decompresses in transit keeps the .gz name: the raw md5 is published."""
    import gzip

    for f in mnist_dir.glob("*.gz"):
        (tmp_path / f.name).write_bytes(gzip.decompress(f.read_bytes()))
    ds = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(ds.x_train, mnist.x_train)
    np.testing.assert_array_equal(ds.y_test, mnist.y_test)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # still a valid IDX file, no longer the original
    bad.write_bytes(bytes(data))
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte\.gz: holds uncompressed IDX bytes under a \.gz name.*"
        r"published md5 of the uncompressed MNIST file is 27ae3e4e09519cfbb04c329615203637",
    ):
        load_dataset("mnist", tmp_path)


@pytest.mark.real_data
@pytest.mark.parametrize("content", [b"<html><body>Not Found</body></html>", b"", b"\0\0"])
def test_neither_gzip_nor_idx_under_a_gz_name_is_said_so(mnist_dir, tmp_path, content):
    """A web page saved under the .gz name was diagnosed as "uncompressed IDX bytes"."""
    import shutil

    for f in mnist_dir.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(content)
    with pytest.raises(DataError, match=r"ubyte\.gz: is neither gzip nor IDX data") as info:
        load_dataset("mnist", tmp_path)
    assert "download it again" in str(info.value)


def test_raw_bytes_under_gz_name_without_published_raw_md5(tmp_path):
    """KMNIST publishes only the .gz md5: say exactly that the raw file cannot be verified."""
    folder = write_fake_idx(tmp_path / "k")
    for f in list(folder.iterdir()):
        f.rename(f.with_name(f.name + ".gz"))
    with pytest.raises(DataError, match="no md5 of the uncompressed Kuzushiji-MNIST file"):
        load_dataset("kmnist", folder)


@pytest.mark.real_data
@pytest.mark.parametrize("unpack", [False, True])
@pytest.mark.parametrize("asked", ["fashion-mnist", "kmnist"])
def test_files_of_another_dataset_are_named(mnist_dir, tmp_path, capsys, asked, unpack):
    """MNIST files read as another dataset: say they are MNIST and which flag reads them."""
    import gzip

    from digitlab.cli import main

    for f in mnist_dir.glob("*.gz"):
        if unpack:
            (tmp_path / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(DataError, match=r"these are MNIST files; add --dataset mnist"):
        load_dataset(asked, tmp_path)
    assert main(["data", "info", "--data-dir", str(tmp_path), "--dataset", asked]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dataset mnist" in err and "Traceback" not in err


@pytest.mark.parametrize("empty", ["train", "test"])
def test_an_empty_split_is_one_data_error(tmp_path, empty):
    """A Keras-style npz whose train or test split holds no images: one DataError as it
    loads (an empty test split once crashed every command in its own way)."""
    from conftest import make_digits

    x, y = make_digits(300, 1)
    parts = {"x_train": x[:200], "y_train": y[:200], "x_test": x[200:], "y_test": y[200:]}
    parts[f"x_{empty}"], parts[f"y_{empty}"] = x[:0], y[:0]
    np.savez(tmp_path / "mnist.npz", **parts)
    with pytest.raises(DataError, match=f"the {empty} split holds no images"):
        load_dataset("mnist", tmp_path)
