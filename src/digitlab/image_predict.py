"""Read the digits (or garments, or characters) in picture files with a saved CNN.

The library side of `digitlab cnn predict`: every file is read on its own, so one bad file
becomes one `ImageError` in its answer and the files after it are still read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.cnn import predict_proba
from digitlab.data import DATASETS
from digitlab.errors import DataError, ImageError
from digitlab.files import one_line, read_json_object, shown_name
from digitlab.preprocess import Prepared, prepare

DIGITS = tuple(str(d) for d in range(10))


@dataclass
class ImageAnswer:
    """One file's answer: `proba` (n_classes,) float32 and what preprocessing did, or `error`."""

    name: str
    prepared: Prepared | None = None
    proba: np.ndarray | None = None
    classes: tuple[str, ...] = DIGITS
    error: ImageError | None = None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most probable classes as (class name, probability), best first."""
        if self.proba is None:
            return []
        order = np.argsort(-self.proba, kind="stable")[:k]
        names = self.classes if len(self.classes) == len(self.proba) else None
        return [(names[i] if names else str(i), float(self.proba[i])) for i in order]

    def line(self, k: int = 3) -> str:
        """`name: 7 (99.1%), 1 (0.5%), 9 (0.2%)`, or the error's one line; the name as
        `files.shown_name` writes it (one line, whatever characters it holds)."""
        if self.error is not None:
            return one_line(str(self.error))
        return f"{shown_name(self.name)}: " + ", ".join(f"{c} ({p:.1%})" for c, p in self.top(k))


def model_classes(
    model_dir: str | Path, n_classes: int | None = None
) -> tuple[tuple[str, ...], str | None]:
    """The class names a saved CNN was trained on and its dataset's name, from metadata.json.

    Older models stored only the dataset's name: then its names come from the datasets table;
    with no metadata.json at all, the ten digits (or the outputs' indices). Raises DataError,
    one line naming the file, when metadata.json is there but damaged (not a JSON object, a
    dataset or class list of the wrong type) or names another number of classes than the
    network's `n_classes` (its answers would be labelled with the wrong names: an edited file
    once went unnoticed)."""
    path = Path(model_dir) / "metadata.json"
    if not path.exists():
        if n_classes is None or n_classes == len(DIGITS):
            return DIGITS, None
        return tuple(str(i) for i in range(n_classes)), None
    meta = read_json_object(path)
    dataset = meta.get("dataset")
    if dataset is not None and dataset not in DATASETS:  # its recipe and names depend on it
        raise DataError(
            f"{path}: 'dataset' must be one of {', '.join(DATASETS)} (the data the model was "
            f"trained on), got {dataset!r}"
        )
    classes = meta.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not classes:
            raise DataError(f"{path}: 'classes' must be a non-empty list of names")
        names = tuple(str(c) for c in classes)
    elif dataset in DATASETS:
        names = tuple(DATASETS[dataset].classes)
    else:
        names = DIGITS
    if n_classes is not None and len(names) != n_classes:
        raise DataError(
            f"{path} names {len(names)} classes but the network in {model_dir} has "
            f"{n_classes} outputs: restore the file from the training folder, or delete it "
            "(the outputs are then named by their index)"
        )
    return names, dataset


def recipe_for(dataset: str | None, classes: tuple[str, ...]) -> str:
    """'digit' (MNIST's crop, 20x20, centre by mass) for digit models, else 'object'."""
    return "digit" if dataset in (None, "mnist") and classes == DIGITS else "object"


def predict_images(
    model,
    sources: Iterable,
    *,
    classes: tuple[str, ...] = DIGITS,
    recipe: str = "digit",
    batch: int = 64,
) -> Iterator[ImageAnswer]:
    """One `ImageAnswer` per source (path, bytes, PIL image or array), in order.

    A source that cannot be read (not an image, truncated, blank, too small or too large)
    gives an answer with `error` set; the others are still read. Pictures go through
    `preprocess.prepare(recipe=...)` and the model in batches of `batch`.
    """
    pending: list[ImageAnswer] = []

    def flush() -> Iterator[ImageAnswer]:
        ready = [a for a in pending if a.error is None]
        if ready:
            proba = predict_proba(model, np.stack([a.prepared.image for a in ready]))
            for a, p in zip(ready, proba, strict=True):
                a.proba = p
        yield from pending
        pending.clear()

    for source in sources:
        path = isinstance(source, (str, Path))
        name = str(source) if path else "the image"
        answer = ImageAnswer(name=name, classes=classes)
        try:
            # Its errors name the file as the answer line does: a newline in the name split
            # the line (`name` stays as it is: predictions.csv quotes it itself).
            answer.prepared = prepare(
                source, recipe=recipe, name=shown_name(name) if path else None
            )
        except ImageError as exc:
            answer.error = exc
        pending.append(answer)
        if len(pending) >= batch:
            yield from flush()
    yield from flush()
