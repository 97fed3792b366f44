"""What the web app does, as plain functions: arrays in, results out; no web framework here.

Every handler turns bad input (an empty canvas, a huge or non-image upload, a digit out of
range) into a message for the page instead of an exception, so a worker never dies on it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitlab import figures
from digitlab.cnn import predict_proba
from digitlab.data import load_dataset, random_subset
from digitlab.errors import ConfigError, DigitlabError, ImageError
from digitlab.gan import generate
from digitlab.loaders import load_cnn, load_gan_generator
from digitlab.neighbors import KNeighborsClassifier
from digitlab.preprocess import prepare
from digitlab.tasks.gan import morph as write_morph


@dataclass
class Models:
    """The models the app answers with; any of them may be missing (then that part says so)."""

    cnn: object | None = None
    knn: object | None = None
    knn_images: np.ndarray | None = None  # the kNN's training images, to show neighbours
    knn_labels: np.ndarray | None = None
    generator: object | None = None
    dataset: object | None = None
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_models(
    data_dir=None,
    generator_dir=None,
    cnn_dir=None,
    run_dir=None,
    knn_size: int = 20000,
    seed: int = 0,
) -> Models:
    """The shipped CNN (or `cnn_dir`), a kNN on a seeded MNIST subset, the generator (the
    shipped one, or `generator_dir`: a `gan train` folder or its generator/)."""
    m = Models(run_dir=Path(run_dir) if run_dir else None)
    try:
        m.cnn = load_cnn(cnn_dir)
    except DigitlabError as exc:
        m.notes.append(f"CNN unavailable: {exc}")
    try:
        m.dataset = load_dataset("mnist", data_dir)
        size = min(knn_size, len(m.dataset.x_train))
        x, y = random_subset(m.dataset.x_train, m.dataset.y_train, size, seed)
        m.knn = KNeighborsClassifier(3).fit(x.reshape(len(x), -1), y)
        m.knn_images, m.knn_labels = x, y
    except DigitlabError as exc:
        m.notes.append(f"kNN and the dataset browser unavailable: {exc}")
    try:
        m.generator = load_gan_generator(generator_dir)
    except DigitlabError as exc:
        m.notes.append(f"generator unavailable: {exc}")
    return m


def prepare_drawing(image):
    """`preprocess.prepare` of a drawing or upload (gradio's sketchpad dict, path, bytes, PIL
    or array): the `Prepared` (28x28 and what was done), or None and the reason for the page.
    Uploads over 20 MB or 4096x4096 pixels are refused before they are decoded."""
    if isinstance(image, dict):  # gradio ImageEditor / Sketchpad value
        image = image.get("composite", image.get("image"))
    if image is None:
        return None, "Draw a digit (or upload a picture of one) first."
    name = Path(image).name if isinstance(image, (str, Path)) else "the drawing"
    try:
        return prepare(image, name=name), ""
    except ImageError as exc:
        if "no digit found" in str(exc):
            return None, "No digit found: the canvas is empty or the picture is blank."
        return None, str(exc)


def read_drawing(image) -> tuple[np.ndarray | None, str]:
    """MNIST-style 28x28 of a drawing or upload, or None and the reason for the page."""
    prepared, message = prepare_drawing(image)
    return (None if prepared is None else prepared.image), message


def classify(models: Models, image) -> dict:
    """The 28x28 the models saw, the CNN's ten probabilities, the kNN's vote and neighbours."""
    prepared, message = prepare_drawing(image)
    seen = None if prepared is None else prepared.image
    out: dict = {"seen": seen, "message": message, "cnn": None, "knn": None}
    if prepared is None:
        return out
    out["preprocessing"] = prepared.describe()  # e.g. "dark ink on light paper, inverted; ..."
    if models.cnn is not None:
        with models.lock:  # one forward pass at a time keeps CPU threads from thrashing
            p = predict_proba(models.cnn, seen)[0]
        out["cnn"] = {str(d): float(p[d]) for d in range(len(p))}
    if models.knn is not None:
        with models.lock:
            dist, idx = models.knn.kneighbors(seen.reshape(1, -1), 3)
        labels = models.knn_labels[idx[0]]
        votes = np.bincount(labels, minlength=10)
        out["knn"] = {
            "vote": int(np.argmax(votes)),
            "votes": votes.tolist(),
            "neighbours": [
                (models.knn_images[i], int(lab), float(d))
                for i, lab, d in zip(idx[0], labels, dist[0], strict=True)
            ],
        }
    return out


def generate_digits(models: Models, digit, count, seed) -> tuple[np.ndarray | None, str]:
    """`count` (1..64) generated images of `digit`, uint8 (count, 28, 28), or None and why."""
    if models.generator is None:
        return None, "No generator is loaded (start the app with --model DIR)."
    try:
        count = int(count)
        if not 1 <= count <= 64:
            raise ConfigError(f"count must be in 1..64, got {count}")
        with models.lock:
            return generate(models.generator, int(digit), count, seed=int(seed)), ""
    except (ConfigError, TypeError, ValueError) as exc:
        return None, str(exc)


def morph(models: Models, start, end, steps, out_dir: Path) -> tuple[Path | None, str]:
    """The interpolation from `start` to `end` as a GIF file in `out_dir`."""
    if models.generator is None:
        return None, "No generator is loaded (start the app with --model DIR)."
    try:
        steps = int(steps)
        if not 2 <= steps <= 60:
            raise ConfigError(f"steps must be in 2..60, got {steps}")
        path = Path(out_dir) / f"morph-{int(start)}-{int(end)}-{steps}.gif"
        with models.lock:
            write_morph(models.generator, int(start), int(end), steps, path, size=168, fps=8)
        return path, ""
    except (ConfigError, TypeError, ValueError) as exc:
        return None, str(exc)


def browse(models: Models, digit, count: int = 24, seed: int = 0) -> tuple[np.ndarray | None, str]:
    """Seeded random training images of one digit."""
    if models.dataset is None:
        return None, "No dataset is loaded (start the app with --data-dir DIR)."
    try:
        digit = int(digit)
        if not 0 <= digit <= 9:
            raise ValueError(f"digit must be in 0..9, got {digit}")
    except (TypeError, ValueError) as exc:
        return None, str(exc)
    members = np.flatnonzero(models.dataset.y_train == digit)
    pick = np.random.default_rng(seed).choice(members, size=min(count, len(members)), replace=False)
    return models.dataset.x_train[np.sort(pick)], ""


def run_figures(models: Models) -> list[tuple[Path, str]]:
    """Confusion matrices and misclassified galleries from a run folder, if one was given."""
    if models.run_dir is None:
        return []
    wanted = [
        (figures.KNN["confusion_matrix"], "kNN confusion matrix"),
        (figures.KNN["misclassified"], "kNN: misclassified test digits"),
        (figures.CNN["confusion_matrix"], "CNN confusion matrix"),
        (figures.CNN["misclassified_confident"], "CNN: most confidently wrong"),
    ]
    return [
        (models.run_dir / "figures" / name, caption)
        for name, caption in wanted
        if (models.run_dir / "figures" / name).is_file()
    ]
