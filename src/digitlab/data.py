"""MNIST-format datasets: where they come from, how they are verified, cached and split.

Sources, in order: an explicit folder (argument or the DIGITLAB_DATA environment variable)
holding the four IDX files (gzip'd or raw) or a Keras-style `<name>.npz`; the cache in the data
home; a download from the public mirrors (torchvision's and Keras'), verified by checksum.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitlab.download import download, file_digest
from digitlab.errors import ConfigError, DataError
from digitlab.files import atomic_open
from digitlab.idx import is_idx_header, read_idx

PARTS = ("train_images", "train_labels", "test_images", "test_labels")
_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# The fast cached form is a plain (uncompressed) npz with Keras' key names.
_NPZ_KEYS = {
    "train_images": "x_train",
    "train_labels": "y_train",
    "test_images": "x_test",
    "test_labels": "y_test",
}
_CACHE_VERSION = 1


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the datasets table."""

    name: str
    title: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]  # base URLs serving the four gzip'd IDX files
    md5: dict[str, str]  # part -> md5 of its .gz file, as published
    # part -> md5 of the uncompressed IDX file, where published (MNIST: LeCun's files;
    # Fashion-MNIST: the values TensorFlow Datasets and others check). Lets raw bytes kept
    # under a .gz name (decompressed in transit by a browser) be recognised and verified.
    raw_md5: dict[str, str] = field(default_factory=dict)
    npz_url: str | None = None  # a Keras-style npz holding all four arrays, tried last
    npz_sha256: str | None = None
    counts: tuple[int, int] = (60000, 10000)
    # What the images are, in one sentence for a reader (the report's data section).
    description: str = ""

    def filename(self, part: str) -> str:
        return _STEMS[part] + ".gz"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            title="MNIST",
            description="70,000 handwritten digits (0-9), 28×28 gray pixels (0 = white paper, "
            "255 = full ink), split into 60,000 training and 10,000 test images",
            classes=tuple(str(d) for d in range(10)),
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
            md5={
                "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
                "test_images": "9fb629c4189551a2d022fa330f9573f3",
                "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
            },
            raw_md5={
                "train_images": "6bbc9ace898e44ae57da46a324031adb",
                "train_labels": "a25bea736e30d166cdddb491f175f624",
                "test_images": "2646ac647ad5339dbf082846283269ea",
                "test_labels": "27ae3e4e09519cfbb04c329615203637",
            },
            npz_url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
            npz_sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
        ),
        DatasetSpec(
            name="fashion-mnist",
            title="Fashion-MNIST",
            description="70,000 pictures of clothing, shoes and bags from Zalando's catalogue "
            "in 10 classes, 28×28 gray pixels (0 = background, 255 = brightest), split into "
            "60,000 training and 10,000 test images",
            classes=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            mirrors=(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            ),
            md5={
                "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
                "test_images": "bef4ecab320f06d8554ea6380940ec79",
                "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
            },
            raw_md5={
                "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
                "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
                "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
            },
        ),
        DatasetSpec(
            name="kmnist",
            title="Kuzushiji-MNIST",
            description="70,000 handwritten cursive Japanese (Kuzushiji) characters, one "
            "hiragana per class in 10 classes, 28×28 gray pixels (0 = paper, 255 = full ink), "
            "split into 60,000 training and 10,000 test images",
            classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            md5={
                "train_images": "bdb82020997e1d708af4cf47b453dcf7",
                "train_labels": "e144d726b3acfaa3e44228e80efcd344",
                "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
                "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
            },
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        ) from None


def data_home(path: str | Path | None = None) -> Path:
    """Where downloads and the fast cache live: `path`, $DIGITLAB_HOME, or ~/.cache/digitlab."""
    if path is None:
        path = os.environ.get("DIGITLAB_HOME") or (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digitlab"
        )
    return Path(path).expanduser()


@dataclass
class Dataset:
    """The four arrays of an MNIST-format dataset, with its class names and where it came from."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str = ""
    extra: dict = field(default_factory=dict)

    def identity(self) -> dict:
        """{"dataset": name, "digest": hex}: what a checkpoint records of the data it was made on.

        The digest is BLAKE2b over all four arrays (their bytes, shapes and dtypes): the same
        files give the same digest whatever folder or form (gzip'd, raw, npz) they came from,
        and any changed pixel or label gives another. About 0.1 s for MNIST; computed once.
        """
        if "identity" not in self.extra:
            h = hashlib.blake2b(digest_size=16)
            for a in (self.x_train, self.y_train, self.x_test, self.y_test):
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(memoryview(a).cast("B"))
            self.extra["identity"] = {"dataset": self.name, "digest": h.hexdigest()}
        return dict(self.extra["identity"])

    def as_tuple(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """`(x_train, y_train), (x_test, y_test)`, as `keras.datasets.mnist.load_data()`."""
        return (self.x_train, self.y_train), (self.x_test, self.y_test)

    def summary(self) -> dict:
        """Shapes, dtypes, pixel range and per-class counts of both splits (JSON-friendly)."""
        out: dict = {"dataset": self.name, "source": self.source, "classes": list(self.classes)}
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            out[split] = {
                "images_shape": list(x.shape),
                "images_dtype": str(x.dtype),
                "labels_shape": list(y.shape),
                "labels_dtype": str(y.dtype),
                "pixel_min": int(x.min()),
                "pixel_max": int(x.max()),
                "pixel_mean": round(float(x.mean(dtype=np.float64)), 4),
                "class_counts": np.bincount(y, minlength=len(self.classes)).tolist(),
            }
        return out


def _validate(arrays: dict[str, np.ndarray], source: str, n_classes: int) -> None:
    """Shapes, dtypes and label ranges an MNIST-format dataset must have."""
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise DataError(
                f"{source}: {split} images have shape {x.shape} and dtype {x.dtype}; "
                "expected (N, 28, 28) uint8"
            )
        if y.ndim != 1 or y.dtype != np.uint8:
            raise DataError(
                f"{source}: {split} labels have shape {y.shape} and dtype {y.dtype}; "
                "expected (N,) uint8"
            )
        if len(x) != len(y):
            raise DataError(
                f"{source}: {len(x)} {split} images but {len(y)} {split} labels; "
                "the files do not belong together"
            )
        if not len(x):  # every step needs some: an empty test split once crashed each command
            raise DataError(f"{source}: the {split} split holds no images")
        if int(y.max()) >= n_classes:
            raise DataError(f"{source}: {split} label {int(y.max())} is not in 0..{n_classes - 1}")


def _find_idx(folder: Path, part: str) -> Path | None:
    stem = _STEMS[part]
    # Names as published (.gz), unpacked, and the original site's dotted spelling.
    names = (stem + ".gz", stem, stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz")
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _head(path: Path) -> bytes:
    """A file's first 8 bytes (what tells gzip, IDX and anything else apart)."""
    with open(path, "rb") as handle:
        return handle.read(8)


def _is_gzip(path: Path) -> bool:
    return _head(path)[:2] == b"\x1f\x8b"


def _published_as(digest: str, part: str) -> tuple[DatasetSpec, str] | None:
    """The dataset and form ("gzip'd" or "uncompressed") whose published md5 for `part` this is."""
    for other in DATASETS.values():
        if other.md5[part] == digest:
            return other, "gzip'd"
        if other.raw_md5.get(part) == digest:
            return other, "uncompressed"
    return None


def _verify(path: Path, spec: DatasetSpec, part: str) -> None:
    """Check a file against the published checksums; say what it is when it is something else.

    A file with the published .gz name must have the published md5 of the .gz file or, when
    it holds raw IDX bytes (browsers and download tools may decompress in transit and keep the
    name), the published md5 of the uncompressed file. A file of another known dataset, under
    any name, is refused with the --dataset flag that reads it. Other unpacked files carry no
    checksum to compare: only their structure is checked (by the reader).
    """
    gz_name = path.name == spec.filename(part)
    digest = file_digest(path, "md5")
    raw = not _is_gzip(path)
    if digest == spec.md5[part] or (raw and digest == spec.raw_md5.get(part)):
        return
    known = _published_as(digest, part)
    if known is not None and known[0].name != spec.name:
        other, form = known
        raise DataError(
            f"{path}: md5 {digest} is the published md5 of the {form} {other.title} file "
            f"{_STEMS[part]}, not of {spec.title}: these are {other.title} files; add "
            f"--dataset {other.name} (dataset={other.name!r} in Python)"
        )
    if not gz_name:
        return  # an unpacked file of unknown origin: checked for structure when read
    if raw and not is_idx_header(_head(path)):
        raise DataError(
            f"{path}: is neither gzip nor IDX data (it starts {_head(path)[:8]!r}; a web page "
            f"or an error message saved under the name?): not the {spec.title} file; delete it "
            "and download it again, or point --data-dir at a good copy"
        )
    if raw:
        published = spec.raw_md5.get(part)
        expected = (
            f"the published md5 of the uncompressed {spec.title} file is {published}"
            if published
            else f"no md5 of the uncompressed {spec.title} file is published to compare it with"
        )
        raise DataError(
            f"{path}: holds uncompressed IDX bytes under a .gz name (decompressed in transit?), "
            f"md5 {digest}; {expected}, so it is corrupt or not the original: download it again "
            f"(or, for your own data, drop .gz from its name)"
        )
    raise DataError(
        f"{path}: md5 {digest} does not match the published {spec.md5[part]} and is not the "
        "md5 of any dataset digitlab knows; the file is corrupt or not the original, replace it"
    )


def _candidate_folders(folder: Path, spec: DatasetSpec) -> list[Path]:
    # The folder itself, a per-dataset subfolder, and torchvision's <Title>/raw layout.
    return [folder, folder / spec.name, folder / spec.title / "raw", folder / spec.title]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _NPZ_KEYS.values() if k not in f.files]
            if missing:
                raise DataError(
                    f"{path}: npz lacks arrays {missing}; expected x_train, y_train, "
                    "x_test, y_test as in Keras' mnist.npz"
                )
            return {part: f[key] for part, key in _NPZ_KEYS.items()}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc}); delete or replace it") from exc


def read_folder(
    folder: str | Path, spec: DatasetSpec, verify: bool = True
) -> dict[str, np.ndarray]:
    """Read a dataset from a folder of IDX files or a Keras-style npz.

    With `verify`, a file that carries its published name with .gz must match the published
    md5; anything else is checked for structure (magic numbers, sizes, counts) only.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"data folder {folder} is not readable (check its permissions)")
    for candidate in _candidate_folders(folder, spec):
        found = {part: _find_idx(candidate, part) for part in PARTS}
        if all(found.values()):
            arrays = {}
            for part, path in found.items():
                if verify:
                    _verify(path, spec, part)
                arrays[part] = read_idx(path)
            _validate(arrays, str(candidate), len(spec.classes))
            return arrays
        npz = candidate / f"{spec.name}.npz"
        if npz.is_file():
            arrays = _read_npz(npz)
            _validate(arrays, str(npz), len(spec.classes))
            return arrays
    some = ", ".join(spec.filename(p) for p in PARTS)
    raise DataError(
        f"no {spec.title} files in {folder}: expected the four IDX files ({some}; gzip'd or "
        f"not) or a Keras-style {spec.name}.npz"
    )


def _cache_path(home: Path, spec: DatasetSpec) -> Path:
    return home / spec.name / f"{spec.name}-v{_CACHE_VERSION}.npz"


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(path, "wb") as handle:
        # Uncompressed on purpose: loading it is a memory copy, well under a second for 70,000.
        np.savez(handle, **{key: arrays[part] for part, key in _NPZ_KEYS.items()})


def _download_all(
    spec: DatasetSpec, home: Path, mirrors: Sequence[str] | None, quiet: bool
) -> dict[str, np.ndarray]:
    raw_dir = home / spec.name / "raw"
    # The Keras npz is a fallback of the default mirrors only: explicit mirrors are all we try.
    npz_fallback = mirrors is None and spec.npz_url and spec.npz_sha256
    mirrors = tuple(mirrors) if mirrors is not None else _mirrors_for(spec)
    errors: list[str] = []
    paths: dict[str, Path] = {}
    for part in PARTS:
        name = spec.filename(part)
        existing = raw_dir / name
        if existing.is_file() and file_digest(existing) == spec.md5[part]:
            paths[part] = existing
            continue
        try:
            paths[part] = download(name, spec.md5[part], mirrors, raw_dir, quiet=quiet)
        except DataError as exc:
            errors.append(str(exc))
            break  # the other parts would fail the same way; go to the fallback
    if not errors:
        return {part: read_idx(path) for part, path in paths.items()}
    if npz_fallback:
        base, name = spec.npz_url.rsplit("/", 1)
        try:
            return _read_npz(download(name, spec.npz_sha256, [base], raw_dir, quiet=quiet))
        except DataError as exc:
            errors.append(str(exc))
    needed = ", ".join(spec.filename(p) for p in PARTS)
    raise DataError(
        f"{spec.title} is not cached in {home} and could not be downloaded ({errors[0]}). "
        f"Put {needed} (from any MNIST mirror) in a folder and pass --data-dir DIR or set "
        "DIGITLAB_DATA=DIR"
    )


def _mirrors_for(spec: DatasetSpec) -> tuple[str, ...]:
    # DIGITLAB_MIRRORS (comma-separated base URLs) is tried first: a local or company mirror.
    extra = [m.strip() for m in os.environ.get("DIGITLAB_MIRRORS", "").split(",") if m.strip()]
    return (*extra, *spec.mirrors)


def load_dataset(
    name: str = "mnist",
    data_dir: str | Path | None = None,
    *,
    home: str | Path | None = None,
    download_if_missing: bool = True,
    mirrors: Sequence[str] | None = None,
    verify: bool = True,
    quiet: bool = True,
) -> Dataset:
    """Load an MNIST-format dataset from a folder, the cache, or the mirrors (in that order)."""
    spec = get_spec(name)
    data_dir = data_dir if data_dir is not None else os.environ.get("DIGITLAB_DATA") or None
    if data_dir is not None:
        arrays = read_folder(data_dir, spec, verify=verify)
        source = str(Path(data_dir).expanduser())
    else:
        home_path = data_home(home)
        cache = _cache_path(home_path, spec)
        arrays = None
        if cache.is_file():
            try:
                arrays = _read_npz(cache)
                _validate(arrays, str(cache), len(spec.classes))
            except DataError:
                cache.unlink(missing_ok=True)  # a damaged cache is rebuilt, not trusted
                arrays = None
        if arrays is None:
            if not download_if_missing:
                raise DataError(
                    f"{spec.title} is not cached in {home_path} and downloading is off; pass "
                    "--data-dir DIR (or set DIGITLAB_DATA) to a folder with the IDX files"
                )
            arrays = _download_all(spec, home_path, mirrors, quiet)
            _validate(arrays, spec.name, len(spec.classes))
            _write_cache(cache, arrays)
        source = str(cache)
    return Dataset(
        name=spec.name,
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"],
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"],
        classes=spec.classes,
        source=source,
    )


def load_data(name: str = "mnist", data_dir: str | Path | None = None, **kwargs):
    """`(x_train, y_train), (x_test, y_test)` as uint8 arrays, like Keras' `load_data()`."""
    return load_dataset(name, data_dir, **kwargs).as_tuple()


def random_subset(
    x: np.ndarray, y: np.ndarray, size: int | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of `size` rows (all rows, in order, when size is None or len(x))."""
    n = len(x)
    if size is None or size == n:
        return x, y
    if not 0 < size <= n:
        raise ConfigError(f"subset size must be between 1 and {n}, got {size}")
    idx = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return x[idx], y[idx]


def held_out_count(n: int, fraction: float, name: str = "val_fraction") -> int:
    """How many of `n` samples a split with `fraction` holds out: round(n * fraction).

    The one place this is worked out (the k sweep's settings check it before any data is
    read; `stratified_split` makes the split). Raises ConfigError unless `fraction` is a number
    in (0, 1), naming it as `name`."""
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.integer, np.floating))
        or not 0 < fraction < 1
    ):
        raise ConfigError(f"{name} must be in (0, 1), got {fraction!r}")
    return round(n * fraction)


def validation_count(
    n: int, test_fraction: float, n_classes: int, name: str = "val_fraction"
) -> int:
    """How many of `n` samples a stratified split with `test_fraction` holds out.

    Raises ConfigError for a fraction outside (0, 1) (named `name`), or where either side
    would have fewer samples than there are classes (it needs one of each)."""
    n_val = held_out_count(n, test_fraction, name)
    if n_val < n_classes or n - n_val < n_classes:
        raise ConfigError(
            f"cannot split {n} samples of {n_classes} classes with fraction "
            f"{test_fraction}: each side needs at least one sample per class"
        )
    return n_val


def stratified_split(
    y: np.ndarray, test_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) keeping each class's share; seeded and reproducible."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes, y_idx = np.unique(y, return_inverse=True)
    n_val_total = validation_count(len(y), test_fraction, len(classes), "test_fraction")
    counts = np.bincount(y_idx)
    # Largest-remainder allocation: exact total, each class's share as close as possible.
    quota = counts * n_val_total / len(y)
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n_val_total - take.sum()]] += 1
    val_parts = []
    for c in range(len(classes)):
        members = np.flatnonzero(y_idx == c)
        val_parts.append(rng.permutation(members)[: take[c]])
    val = np.sort(np.concatenate(val_parts))
    train = np.setdiff1d(np.arange(len(y)), val, assume_unique=True)
    return train, val
