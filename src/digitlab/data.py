"""MNIST-format datasets: where they come from, how they are verified, cached and split.

Sources, in order: an explicit folder (argument or the DIGITLAB_DATA environment variable)
holding the four IDX files (gzip'd or raw) or a Keras-style `<name>.npz`; the cache in the data
home; a download from the public mirrors (torchvision's and Keras'), verified by checksum.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import math
import os
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitlab.download import download, file_digest
from digitlab.errors import ConfigError, DataError
from digitlab.files import OutputError, atomic_open
from digitlab.idx import MAX_DATA_BYTES, is_idx_header, read_idx

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
# The cache's record of itself, one more npz member: the dataset and the CRC-32 of each array
# member as written from verified files. The zip keeps its own CRC-32 of each member and
# zipfile checks the bytes against it as they are read (a changed byte fails there), so a
# cache re-saved with other arrays is told by comparing the two sets of CRCs: a few
# microseconds, where hashing the 55 MB of MNIST again would double a 30 ms load.
_RECORD = "digitlab_record"


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
    """The table entry of dataset `name` (any case). Raises ConfigError naming the choices for
    an unknown name or one that is not a string (a model's hand-edited metadata)."""
    try:
        return DATASETS[name.lower()]
    except (KeyError, AttributeError):
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


def _validate(
    arrays: dict[str, np.ndarray],
    source: str,
    spec: DatasetSpec,
    names: dict[str, str] | None = None,
) -> None:
    """Shapes, dtypes, label ranges and split sizes an MNIST-format dataset must have.

    `names` (part -> file or array name) lets the messages say which files are meant. Raises
    DataError, naming `source`, on the first thing that is wrong."""
    _check_not_swapped(arrays, source, spec, names or {p: _NPZ_KEYS[p] for p in PARTS})
    n_classes = len(spec.classes)
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


def _check_not_swapped(
    arrays: dict[str, np.ndarray], source: str, spec: DatasetSpec, names: dict[str, str]
) -> None:
    """Refuse train and test files given for each other, told by the table's split sizes.

    Only the exact swap is refused (the train file holding the test split's published count
    and the test file the train split's): your own data under these names may have any
    other sizes."""
    n_train, n_test = spec.counts
    if n_train == n_test:
        return
    swapped = [
        kind
        for kind in ("images", "labels")
        if len(arrays[f"train_{kind}"]) == n_test and len(arrays[f"test_{kind}"]) == n_train
    ]
    if not swapped:
        return
    pairs = ", ".join(f"{names[f'train_{k}']} <-> {names[f'test_{k}']}" for k in swapped)
    raise DataError(
        f"{source}: the train {' and '.join(swapped)} hold {n_test:,} items and the test "
        f"{' and '.join(swapped)} {n_train:,}, but {spec.title} has {n_train:,} training and "
        f"{n_test:,} test images: the train and test files look swapped ({pairs}); swap "
        "their names back"
    )


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


def _published_as(digest: str, part: str) -> tuple[DatasetSpec, str, str] | None:
    """(dataset, form, part) whose published md5 this is; form is "gzip'd" or "uncompressed".

    The same part of any dataset is looked for first, then the other parts (a test file given
    under a train name)."""
    for other_part in (part, *(p for p in PARTS if p != part)):
        for other in DATASETS.values():
            if other.md5[other_part] == digest:
                return other, "gzip'd", other_part
            if other.raw_md5.get(other_part) == digest:
                return other, "uncompressed", other_part
    return None


def _split_of(part: str) -> str:
    return part.split("_")[0]


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
    if known is not None and known[2] != part:
        other, form, other_part = known
        swap = (
            "the train and test files look swapped; swap their names back"
            if _split_of(other_part) != _split_of(part)
            else "the images and labels files are under each other's names; rename them"
        )
        raise DataError(
            f"{path}: md5 {digest} is the published md5 of the {form} {other.title} file "
            f"{_STEMS[other_part]} ({_split_of(other_part)} split), not of {_STEMS[part]}: "
            f"{swap}"
        )
    if known is not None and known[0].name != spec.name:
        other, form, _ = known
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


class _CacheChanged(DataError):
    """The cache's arrays are not the ones it was written with (`edited`), or it has no record
    of them (written by an older digitlab)."""

    def __init__(self, message: str, edited: bool = True):
        super().__init__(message)
        self.edited = edited


def _read_npz(path: Path, spec: DatasetSpec | None = None) -> dict[str, np.ndarray]:
    """The four arrays of a Keras-style npz. Raises DataError naming the file when it cannot
    be read, lacks an array or holds one larger than digitlab reads (a zip bomb). With
    `spec`, the file is our cache and must also match its record: _CacheChanged if not."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _NPZ_KEYS.values() if k not in f.files]
            if missing:
                raise DataError(
                    f"{path}: npz lacks arrays {missing}; expected x_train, y_train, "
                    "x_test, y_test as in Keras' mnist.npz"
                )
            members = {info.filename: info for info in f.zip.infolist()}
            for info in members.values():
                # A compressed member inflates to its declared size: refuse a huge one unread.
                if info.file_size > MAX_DATA_BYTES + 4096:
                    raise DataError(
                        f"{path}: {info.filename} would unpack to {info.file_size:,} bytes, "
                        f"more than the {MAX_DATA_BYTES:,} digitlab reads from one array; it "
                        "is damaged or not an MNIST-format npz, replace it"
                    )
            if spec is not None:
                _check_record(path, f, members, spec)
            # zipfile checks each member against its CRC-32 as it is read: an edited byte
            # raises BadZipFile here.
            return {part: f[key] for part, key in _NPZ_KEYS.items()}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, MemoryError) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc}); delete or replace it") from exc


def _check_record(path: Path, f, members: dict[str, zipfile.ZipInfo], spec: DatasetSpec) -> None:
    """Raise _CacheChanged unless the cache's record matches its arrays' CRC-32s."""
    if _RECORD not in f.files:
        raise _CacheChanged(
            f"{path} has no record of its arrays (an older digitlab wrote it)", edited=False
        )
    try:
        record = json.loads(f[_RECORD].item())
    except (ValueError, TypeError, AttributeError) as exc:
        raise _CacheChanged(f"{path}: its record is unreadable ({exc})") from exc
    crcs = {key: members[key + ".npy"].CRC for key in _NPZ_KEYS.values()}
    extra = sorted(set(f.files) - {*_NPZ_KEYS.values(), _RECORD})
    if (
        not isinstance(record, dict)
        or record.get("dataset") != spec.name
        or record.get("crc32") != crcs
        or extra
    ):
        raise _CacheChanged(
            f"{path}: its arrays were changed after it was written from the verified "
            f"{spec.title} files (their CRC-32s no longer match its record)"
        )


def read_folder(
    folder: str | Path, spec: DatasetSpec, verify: bool = True
) -> dict[str, np.ndarray]:
    """Read a dataset from a folder of IDX files or a Keras-style npz.

    With `verify`, a file that carries its published name with .gz must match the published
    md5; anything else is checked for structure (magic numbers, sizes, counts) only. Raises
    DataError naming the file: missing, unreadable, corrupt or oversized (a gzip or zip
    bomb), a checksum mismatch, files of another dataset, or train and test files swapped
    (by checksum, or by the table's split sizes when there is none to compare).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"data folder {folder} is not readable (check its permissions)")
    partial: tuple[Path, list[str]] | None = None  # the first folder with some files, not all
    for candidate in _candidate_folders(folder, spec):
        found = {part: _find_idx(candidate, part) for part in PARTS}
        if any(found.values()) and not all(found.values()) and partial is None:
            partial = (candidate, [part for part, path in found.items() if path is None])
        if all(found.values()):
            arrays = {}
            for part, path in found.items():
                if verify:
                    _verify(path, spec, part)
                arrays[part] = read_idx(path)
            names = {part: path.name for part, path in found.items()}
            _validate(arrays, str(candidate), spec, names)
            return arrays
        npz = candidate / f"{spec.name}.npz"
        if npz.is_file():
            arrays = _read_npz(npz)
            _validate(arrays, str(npz), spec)
            return arrays
    if partial is not None:
        # "no files" for a folder holding three of the four sent users hunting for a wrong path;
        # naming the missing ones says which file to fetch again.
        where, missing = partial
        names = " and ".join(f"{_STEMS[part]}(.gz)" for part in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise DataError(
            f"{where} has {len(PARTS) - len(missing)} of the {len(PARTS)} {spec.title} files: "
            f"{names} {verb} missing"
        )
    some = ", ".join(spec.filename(p) for p in PARTS)
    raise DataError(
        f"no {spec.title} files in {folder}: expected the four IDX files ({some}; gzip'd or "
        f"not) or a Keras-style {spec.name}.npz"
    )


def _cache_path(home: Path, spec: DatasetSpec) -> Path:
    return home / spec.name / f"{spec.name}-v{_CACHE_VERSION}.npz"


def _write_cache(path: Path, arrays: dict[str, np.ndarray], spec: DatasetSpec) -> None:
    """The fast cache: a Keras-style npz plus its record (see _RECORD), written atomically.

    Raises OutputError naming the file when it cannot be written (a full disk, a read-only
    data home); the previous cache file, if any, is kept."""
    try:
        # Uncompressed on purpose: loading it is a memory copy, well under a second for 70,000.
        # Written member by member as np.savez does, to learn each member's CRC-32 for the
        # record.
        with (
            atomic_open(path, "wb") as handle,
            zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as zf,
        ):
            crcs = {}
            for part, key in _NPZ_KEYS.items():
                with zf.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(arrays[part]), allow_pickle=False)
                crcs[key] = zf.getinfo(key + ".npy").CRC
            record = json.dumps({"dataset": spec.name, "crc32": crcs})
            with zf.open(_RECORD + ".npy", "w") as member:
                np.lib.format.write_array(member, np.array(record), allow_pickle=False)
    except OSError as exc:
        full = "free some space there or " if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise OutputError(
            f"cannot write the {spec.title} cache {path}: {exc.strerror or exc}; "
            f"{full}set DIGITLAB_HOME to another folder"
        ) from exc


def _verified_raw(spec: DatasetSpec, home: Path) -> dict[str, np.ndarray] | None:
    """The dataset from the files an earlier download left in the data home, each checked
    against its published checksum again; None unless all are there and good."""
    raw_dir = home / spec.name / "raw"
    paths = {part: raw_dir / spec.filename(part) for part in PARTS}
    if all(p.is_file() and file_digest(p) == spec.md5[part] for part, p in paths.items()):
        return {part: read_idx(path) for part, path in paths.items()}
    if spec.npz_url and spec.npz_sha256:
        npz = raw_dir / spec.npz_url.rsplit("/", 1)[1]
        if npz.is_file() and file_digest(npz, "sha256") == spec.npz_sha256:
            return _read_npz(npz)
    return None


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


def _from_cache(
    cache: Path,
    home: Path,
    spec: DatasetSpec,
    mirrors: Sequence[str] | None,
    download_if_missing: bool,
    quiet: bool,
) -> dict[str, np.ndarray]:
    """The arrays from the cache, or from the verified sources when the cache is missing,
    damaged or changed since it was written (it is then rebuilt from them).

    A changed cache is never used: rebuilding it from the published files (those left in
    the data home by the first download, checked against their published checksums again,
    else downloaded afresh) gives back exactly the verified data without the user's help; a
    warning says it happened. A damaged one (unreadable, or not MNIST-shaped) is moved aside
    to `<name>.damaged` first. Raises DataError when it cannot be rebuilt (offline, or
    downloads off), naming the changed or damaged cache, and OutputError when it cannot be
    written."""
    changed, edited = None, False
    if cache.is_file():
        try:
            arrays = _read_npz(cache, spec)
            _validate(arrays, str(cache), spec)
            return arrays
        except _CacheChanged as exc:
            changed, edited = str(exc), exc.edited  # kept until a rebuild replaces it
        except DataError as exc:
            # Rebuilt, not trusted; kept aside rather than deleted, and named in what follows:
            # deleted in silence, a failed rebuild then said nothing had been cached.
            changed, edited = _set_aside(cache, exc, spec), True
    arrays = _verified_raw(spec, home)
    if arrays is None:
        if not download_if_missing:
            if changed:
                raise DataError(
                    f"{changed}; it is not used, and its source files are not in "
                    f"{cache.parent / 'raw'} to rebuild it with downloading off: load once "
                    "with downloading on (the published files are fetched and verified "
                    "again), or pass --data-dir DIR"
                )
            raise DataError(
                f"{spec.title} is not cached in {home} and downloading is off; pass "
                "--data-dir DIR (or set DIGITLAB_DATA) to a folder with the IDX files"
            )
        try:
            arrays = _download_all(spec, home, mirrors, quiet)
        except DataError as exc:
            if changed:
                raise DataError(
                    f"{changed}; it is not used, and rebuilding it failed: {exc}"
                ) from exc
            raise
    _validate(arrays, spec.name, spec)
    _write_cache(cache, arrays, spec)
    if edited:  # an older digitlab's cache is rebuilt quietly: nobody changed it
        warnings.warn(
            f"{changed}; it was not used, and was rebuilt from the published {spec.title} "
            "files (checksums verified)",
            stacklevel=3,
        )
    return arrays


def _set_aside(cache: Path, exc: DataError, spec: DatasetSpec) -> str:
    """Move the damaged `cache` to `<name>.damaged` (`.damaged-2` and so on beside an older
    one: a second damage once replaced the first copy in silence) and say so: the sentence
    that begins every later message about it."""
    reason = str(exc.__cause__ or exc).removeprefix(f"{cache}: ")
    names = itertools.chain([".damaged"], (f".damaged-{n}" for n in itertools.count(2)))
    aside = next(a for a in (cache.with_name(cache.name + x) for x in names) if not a.exists())
    try:
        os.replace(cache, aside)
    except OSError as err:  # a read-only home: the rebuild's atomic write replaces it anyway
        where = f"it could not be moved aside ({err.strerror or err})"
    else:
        where = f"it was moved aside to {aside.name}"
    return f"the {spec.title} cache {cache} is damaged ({reason}); {where}"


def _mirrors_for(spec: DatasetSpec) -> tuple[str, ...]:
    # DIGITLAB_MIRRORS (comma-separated base URLs) is tried first: a local or company mirror.
    extra = [m.strip() for m in os.environ.get("DIGITLAB_MIRRORS", "").split(",") if m.strip()]
    return (*extra, *spec.mirrors)


def _mirror_list(mirrors) -> tuple[str, ...] | None:
    """`mirrors` as a tuple of base URLs (None: the spec's own and DIGITLAB_MIRRORS').

    Raises ConfigError for anything but a string or a sequence of strings (an int once
    surfaced as Python's "object is not iterable")."""
    if mirrors is None:
        return None
    if isinstance(mirrors, str):
        mirrors = (mirrors,)
    if not isinstance(mirrors, (list, tuple)) or not all(
        isinstance(m, str) and m.strip() for m in mirrors
    ):
        raise ConfigError(f"mirrors must be a list of base URLs, got {mirrors!r}")
    return tuple(mirrors)  # empty: nothing to download from (the cache or a folder only)


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
    """Load an MNIST-format dataset from a folder, the cache, or the mirrors (in that order).

    Raises DataError (one line naming the file and what to do) when the data cannot be read
    or are not what they claim: a corrupt, truncated or oversized file, a checksum mismatch,
    train and test files swapped, a cache changed since it was written that cannot be
    rebuilt, or nothing to download from; OutputError when the cache cannot be written; and
    ConfigError for an unknown dataset name, an empty `data_dir` string, or `mirrors` that
    are not base URLs (one URL given as a string is taken as a list of one)."""
    spec = get_spec(name)
    mirrors = _mirror_list(mirrors)
    if isinstance(data_dir, str) and not data_dir.strip():
        # Path("") is ".": an unset variable or `data.data_dir = ""` once searched the
        # current folder and blamed it for holding no data.
        raise ConfigError(
            "data_dir: an empty path names no folder; give a path (or None for the cache)"
        )
    data_dir = data_dir if data_dir is not None else os.environ.get("DIGITLAB_DATA") or None
    if data_dir is not None:
        arrays = read_folder(data_dir, spec, verify=verify)
        source = str(Path(data_dir).expanduser())
    else:
        home_path = data_home(home)
        cache = _cache_path(home_path, spec)
        arrays = _from_cache(cache, home_path, spec, mirrors, download_if_missing, quiet)
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
    n: int,
    test_fraction: float,
    n_classes: int,
    name: str = "val_fraction",
    size_name: str = "train_size",
) -> int:
    """How many of `n` samples a stratified split with `test_fraction` holds out.

    Raises ConfigError for a fraction outside (0, 1) (named `name`), or where either side
    would have fewer samples than there are classes (it needs one of each); the message says
    what to raise or lower (`size_name`: the setting that sizes the `n` samples)."""
    n_val = held_out_count(n, test_fraction, name)
    if n < 2 * n_classes:
        raise ConfigError(
            f"{n:,} training images cannot be split for validation: each side needs at least "
            f"one of each of the {n_classes} classes, so at least {2 * n_classes} images; "
            f"raise {size_name}"
        )
    if n_val < n_classes:
        raise ConfigError(
            f"{name} {test_fraction} holds out {n_val} of {n:,} training images, but the "
            f"validation split needs at least one of each of the {n_classes} classes: raise "
            f"{name} (to at least {_least_fraction(n, n_classes)}) or {size_name}"
        )
    if n - n_val < n_classes:
        raise ConfigError(
            f"{name} {test_fraction} leaves {n - n_val} of {n:,} training images to fit on, "
            f"but that side needs at least one of each of the {n_classes} classes: lower {name}"
        )
    return n_val


def _least_fraction(n: int, n_classes: int) -> float:
    """The smallest fraction of three significant digits that holds out `n_classes` of `n`
    (as held_out_count rounds), for the message: a shown value that still fails misleads."""
    least = (n_classes - 0.5) / n
    step = 10.0 ** (math.floor(math.log10(least)) - 2)  # one unit in the third digit
    value = math.ceil(least / step) * step
    while held_out_count(n, float(f"{value:.3g}")) < n_classes:
        value += step
    return float(f"{value:.3g}")


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
