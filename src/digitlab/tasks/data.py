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
# The course's own choices. Left as they are, they bend to data that cannot hold them (a small
# local folder, a set without some class) and say so in the data stage's record; set to
# anything else, they are the user's and are held to the data (refused, never replaced).
COURSE_INDEX = 22876
COURSE_DIGIT = 6


@dataclass
class DataConfig:
    """Which dataset, from where, and what the course's overview draws."""

    dataset: str = "mnist"
    data_dir: str | None = None  # None: $DIGITLAB_DATA, the cache, else download
    show_index: int = COURSE_INDEX
    gallery_digit: int = COURSE_DIGIT

    def validate(self, n_train: int | None = None) -> int:
        """Raise ConfigError for an unknown dataset or a bad index; return its training size
        (the datasets table's).

        Needs no data: the size comes from the datasets table, so every face can check the
        other settings against it before anything loads. `n_train`, the training images of the
        data as loaded (a local folder may hold fewer), holds `show_index` to them too, unless
        it is the course's own (`overview` then draws image 0 and says so).
        """
        spec = get_spec(self.dataset)
        # Beyond the dataset's table size it can never be shown (it was once silently image 0).
        n_table = spec.counts[0]
        if not (is_whole(self.show_index, 0) and self.show_index < n_table):
            raise ConfigError(
                f"show_index must be a whole number in 0..{n_table - 1}, got {self.show_index!r}"
            )
        if not (is_whole(self.gallery_digit, 0) and self.gallery_digit < len(spec.classes)):
            raise ConfigError(
                f"gallery_digit must be in 0..{len(spec.classes) - 1}, got {self.gallery_digit!r}"
            )
        chosen = self.show_index != COURSE_INDEX
        if n_train is not None and self.show_index >= n_train and chosen:
            # Beyond the data as loaded: it was once silently image 0 (`shown_index: 0`).
            raise ConfigError(
                f"show_index must be a whole number in 0..{n_train - 1} (the data hold "
                f"{n_train} training images), got {self.show_index!r}"
            )
        return n_table


def load(cfg: DataConfig, quiet: bool = False) -> Dataset:
    """The dataset `cfg` names (see `data.load_dataset`); DataError when it cannot be read."""
    return load_dataset(cfg.dataset, cfg.data_dir, quiet=quiet)


def split(ds: Dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the "train" or "test" split."""
    return (ds.x_test, ds.y_test) if name == "test" else (ds.x_train, ds.y_train)


def show(ds: Dataset, split_name: str, index: int, out: str | Path) -> tuple[Path, str]:
    """Draw image `index` of a split, titled with its label, to `out` (PNG).

    Returns the path and the label's class name; ConfigError for an index out of range or an
    `out` that names no picture format (matplotlib's traceback came after the drawing).
    """
    plots.check_figure_path(out)
    x, y = split(ds, split_name)
    if not (is_whole(index, 0) and index < len(x)):
        raise ConfigError(
            f"--index must be in 0..{len(x) - 1} for the {split_name} split, got {index}"
        )
    label = ds.classes[int(y[index])]
    figure = plots.digit(x[index], f"{split_name}[{index}]: label {label}")
    path = plots.save_marked(figure, out, "data show")  # marked: a rerun knows it as ours
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
    ConfigError for a class the split holds none of, or an `out` that names no picture format.
    """
    plots.check_figure_path(out)
    x, y = split(ds, split_name)
    check_gallery(len(ds.classes), digit, count)
    if digit is None:  # one row per class
        images, idx = rows_per_class(x, y, len(ds.classes), count, seed)
        titles = [f"#{i}: {ds.classes[int(y[i])]}" if i >= 0 else "" for i in idx]
        figure = plots.digits_grid(images, titles, ncols=count)
        return plots.save_marked(figure, out, "data gallery"), int(np.sum(idx >= 0))
    members = np.flatnonzero(y == digit)
    if not len(members):  # an empty figure said nothing (data without that class)
        held = ", ".join(ds.classes[c] for c in np.unique(y))
        raise ConfigError(
            f"the {split_name} split holds no image of {ds.classes[digit]!r}; it holds {held}"
        )
    if random:
        members = np.sort(np.random.default_rng(seed).permutation(members))
    idx = members[:count]
    titles = [f"#{i}: {ds.classes[int(y[i])]}" for i in idx]
    figure = plots.digits_grid(x[idx], titles, ncols=min(count, 10))
    return plots.save_marked(figure, out, "data gallery"), len(idx)


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
    seeded random images of every class, drawn into `out_dir` (names: `figures.DATA`).

    Raises ConfigError, before drawing anything, for a `show_index` beyond the data or a
    `gallery_digit` the training images hold none of, when the user chose them. The course's
    own choices bend instead (image 0; no figure of three), each with a line in the returned
    record's `notes`: with the course's defaults, a small local folder or a set without 6s
    still gets its overview, and nothing is drawn that is not what its title says.
    """
    out_dir = Path(out_dir)
    names = dict(figures.DATA)
    notes: list[str] = []
    n = len(ds.x_train)
    try:  # a chosen show_index beyond the data: refused, not image 0
        cfg.validate(n)
    except ConfigError as exc:
        raise ConfigError(f"[data] {exc}") from None
    i = cfg.show_index
    if i >= n:  # the course's own index, on data with fewer images
        notes.append(
            f"show_index {i} (the course's) is beyond the data's {n} training images: "
            f"image 0 is shown (set data.show_index=0..{n - 1} to choose)"
        )
        i = 0
    digit = cfg.gallery_digit
    members = np.flatnonzero(ds.y_train == digit)[:3]
    if not len(members):
        held = [ds.classes[c] for c in np.unique(ds.y_train)]
        # A demanding user who asked for a class wants to hear it is not there (the `data
        # gallery` command refuses the same request), not an empty figure titled "Three 6s".
        # The course's own choice must not make the default run unusable on such data: that
        # figure is left out, and the record says why.
        where = f"the training images hold no {ds.classes[digit]!r}; they hold {', '.join(held)}"
        if digit != COURSE_DIGIT:
            raise ConfigError(f"[data] gallery_digit {digit}: {where}")
        notes.append(
            f"gallery_digit {digit} (the course's): {where}; the figure of three is left out "
            "(set data.gallery_digit to one they hold)"
        )
        del names["three"]
    plots.save(
        plots.digit(ds.x_train[i], f"x_train[{i}]: label {ds.classes[ds.y_train[i]]}"),
        out_dir / figures.DATA["digit"],
    )
    if len(members):
        count = ("One", "Two", "Three")[len(members) - 1]
        plural = "s" if len(members) > 1 else ""
        plots.save(
            plots.digits_grid(
                ds.x_train[members],
                [f"#{j}" for j in members],
                ncols=3,
                size=1.8,
                suptitle=f"{count} {ds.classes[digit]}{plural}",
            ),
            out_dir / figures.DATA["three"],
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
        out_dir / figures.DATA["gallery"],
    )
    return {"summary": ds.summary(), "shown_index": int(i), "figures": names, "notes": notes}
