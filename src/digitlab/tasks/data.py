"""The data step: load a dataset, describe it, draw its digits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab import figures, plots
from digitlab.data import Dataset, get_spec, load_dataset
from digitlab.errors import ConfigError
from digitlab.validation import is_whole

MAX_GALLERY = 1000  # digits in one figure: beyond this a figure takes minutes and gigabytes


@dataclass
class DataConfig:
    """Which dataset, from where, and what the course's overview draws."""

    dataset: str = "mnist"
    data_dir: str | None = None  # None: $DIGITLAB_DATA, the cache, else download
    show_index: int = 22876
    gallery_digit: int = 6

    def validate(self) -> int:
        """Raise ConfigError for an unknown dataset or a bad index; return its training size.

        Needs no data: the size comes from the datasets table, so every face can check the
        other settings against it before anything loads.
        """
        spec = get_spec(self.dataset)
        # Beyond the dataset's table size it can never be shown (it was once silently image 0);
        # local data with fewer images still falls back to image 0 for the default index.
        n_train = spec.counts[0]
        if not (is_whole(self.show_index, 0) and self.show_index < n_train):
            raise ConfigError(
                f"show_index must be a whole number in 0..{n_train - 1}, got {self.show_index!r}"
            )
        if not (is_whole(self.gallery_digit, 0) and self.gallery_digit < len(spec.classes)):
            raise ConfigError(
                f"gallery_digit must be in 0..{len(spec.classes) - 1}, got {self.gallery_digit!r}"
            )
        return spec.counts[0]


def load(cfg: DataConfig, quiet: bool = False) -> Dataset:
    """The dataset `cfg` names (see `data.load_dataset`); DataError when it cannot be read."""
    return load_dataset(cfg.dataset, cfg.data_dir, quiet=quiet)


def split(ds: Dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the "train" or "test" split."""
    return (ds.x_test, ds.y_test) if name == "test" else (ds.x_train, ds.y_train)


def show(ds: Dataset, split_name: str, index: int, out: str | Path) -> tuple[Path, str]:
    """Draw image `index` of a split, titled with its label, to `out` (PNG).

    Returns the path and the label's class name; ConfigError for an index out of range.
    """
    x, y = split(ds, split_name)
    if not (is_whole(index, 0) and index < len(x)):
        raise ConfigError(
            f"--index must be in 0..{len(x) - 1} for the {split_name} split, got {index}"
        )
    label = ds.classes[int(y[index])]
    path = plots.save(plots.digit(x[index], f"{split_name}[{index}]: label {label}"), out)
    return path, label


def check_gallery(n_classes: int, digit: int | None, count: int) -> None:
    """ConfigError unless `count` images (of `digit`, or of every class) fit one figure."""
    limit = MAX_GALLERY if digit is not None else MAX_GALLERY // n_classes
    if not is_whole(count) or count > limit:
        if not is_whole(count):
            raise ConfigError(f"--count must be at least 1, got {count}")
        raise ConfigError(f"--count must be at most {limit} (digits in one figure), got {count}")
    if digit is not None and not (is_whole(digit, 0) and digit < n_classes):
        raise ConfigError(f"--digit must be in 0..{n_classes - 1}, got {digit}")


def gallery(
    ds: Dataset,
    split_name: str,
    digit: int | None,
    count: int,
    random: bool,
    seed: int,
    out: str | Path,
) -> tuple[Path, int]:
    """`count` images of class `digit` (the first, or seeded random ones), or `count` of every
    class (seeded random, one row each), drawn to `out`. Returns the path and the number drawn.
    """
    x, y = split(ds, split_name)
    check_gallery(len(ds.classes), digit, count)
    if digit is None:  # one row per class
        images, idx = rows_per_class(x, y, len(ds.classes), count, seed)
        titles = [f"#{i}: {ds.classes[int(y[i])]}" if i >= 0 else "" for i in idx]
        figure = plots.digits_grid(images, titles, ncols=count)
        return plots.save(figure, out), int(np.sum(idx >= 0))
    members = np.flatnonzero(y == digit)
    if not len(members):  # an empty figure said nothing (data without that class)
        raise ConfigError(f"the {split_name} split holds no image of {ds.classes[digit]!r}")
    if random:
        members = np.sort(np.random.default_rng(seed).permutation(members))
    idx = members[:count]
    titles = [f"#{i}: {ds.classes[int(y[i])]}" for i in idx]
    return plots.save(plots.digits_grid(x[idx], titles, ncols=min(count, 10)), out), len(idx)


def rows_per_class(
    x: np.ndarray, y: np.ndarray, n_classes: int, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` seeded random images of each class, one row per class in class order:
    images (n_classes * count, H, W) of x's dtype, blank where a class has fewer, and their
    indices (int64, -1 at the blanks). Data without some class once stopped the data stage
    with numpy's sampling error."""
    rng = np.random.default_rng(seed)
    idx = np.full((n_classes, count), -1, np.int64)
    for c in range(n_classes):
        members = np.flatnonzero(y == c)
        take = min(count, len(members))
        idx[c, :take] = rng.choice(members, size=take, replace=False)
    idx = idx.ravel()
    images = np.zeros((len(idx), *x.shape[1:]), x.dtype)
    images[idx >= 0] = x[idx[idx >= 0]]
    return images, idx


def overview(ds: Dataset, cfg: DataConfig, seed: int, out_dir: str | Path) -> dict:
    """The course's first step: the dataset's summary, one digit, three of a class, and ten
    seeded random images of every class, drawn into `out_dir` (names: `figures.DATA`)."""
    out_dir = Path(out_dir)
    names = figures.DATA
    i = cfg.show_index if 0 <= cfg.show_index < len(ds.x_train) else 0
    plots.save(
        plots.digit(ds.x_train[i], f"x_train[{i}]: label {ds.classes[ds.y_train[i]]}"),
        out_dir / names["digit"],
    )
    members = np.flatnonzero(ds.y_train == cfg.gallery_digit)[:3]
    plots.save(
        plots.digits_grid(
            ds.x_train[members],
            [f"#{j}" for j in members],
            ncols=3,
            size=1.8,
            suptitle=f"Three {ds.classes[cfg.gallery_digit]}s",
        ),
        out_dir / names["three"],
    )
    images, _ = rows_per_class(ds.x_train, ds.y_train, len(ds.classes), 10, seed)
    plots.save(
        plots.digits_grid(
            images,
            None,
            ncols=10,
            size=0.9,
            suptitle="Ten random training images of every class",
        ),
        out_dir / names["gallery"],
    )
    return {"summary": ds.summary(), "shown_index": int(i), "figures": dict(names)}
