"""What the web app does, as plain functions: arrays in, results out; no web framework here.

Every handler turns bad input (an empty canvas, a huge or non-image upload, a digit out of
range) into a message for the page instead of an exception, so a worker never dies on it.
"""

from __future__ import annotations

import math
import queue
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitlab import figures
from digitlab.cnn import predict_proba
from digitlab.data import load_dataset, random_subset
from digitlab.errors import ConfigError, DigitlabError, ImageError
from digitlab.files import describe_os_error
from digitlab.gan import generate
from digitlab.image_predict import DIGITS, model_classes, recipe_for
from digitlab.loaders import cnn_folder, load_cnn, load_gan_generator
from digitlab.neighbors import KNeighborsClassifier
from digitlab.preprocess import prepare
from digitlab.tasks.gan import morph as write_morph
from digitlab.validation import check_seed, shown_value

# The limits of the app's inputs, used by the page's sliders and by the handlers' checks alike
# (the count slider once stopped at 32 while the message said 1..64).
GENERATE_COUNT = (1, 64)  # images per Generate
MORPH_STEPS = (2, 60)  # frames per Morph
# The digit choices as the page's dropdowns send them: text, as their API schema says (a
# dropdown of ints was described as Literal['0', ..., '9'] yet refused '3').
DIGIT_CHOICES = tuple(str(d) for d in range(10))


@dataclass
class Models:
    """The models the app answers with; any of them may be missing (then that part says so)."""

    cnn: object | None = None
    # The CNN's class names (its metadata.json) and the preprocessing its data needs: a
    # Fashion-MNIST model's answers were once labelled 0-9 and its pictures read as digits.
    cnn_classes: tuple[str, ...] = DIGITS
    cnn_recipe: str = "digit"
    knn: object | None = None
    knn_images: np.ndarray | None = None  # the kNN's training images, to show neighbours
    knn_labels: np.ndarray | None = None
    generator: object | None = None
    dataset: object | None = None
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    batcher: PredictionBatcher | None = field(default=None, repr=False)

    def predictions(self) -> PredictionBatcher:
        """The one batcher that answers this app's CNN and kNN questions (started on first use)."""
        with self.lock:
            if self.batcher is None:
                self.batcher = PredictionBatcher(self)
            return self.batcher


class PredictionBatcher:
    """Answers CNN and kNN questions from many concurrent requests in batches.

    A class drawing at once sends dozens of requests within a second. One forward pass or one
    neighbour search over 40 digits costs little more than over one (the training images are
    read once either way), so instead of serialising requests behind a lock, each request puts
    its 28x28 on a queue and waits; one worker thread takes everything that is waiting (up to
    `max_batch`), runs one CNN pass and one kNN search for the lot, and hands each request its
    row. A lone request waits at most `wait_s` for company.

    `predict(seen, cnn_seen=None)`: seen uint8 (28, 28) for the kNN, and for the CNN too
    unless `cnn_seen` (its own recipe's 28x28) is given -> {"proba": float32 (n_classes,) or
    None, "knn": (distances float (k,), indices int (k,)) or None}. Raises what the models
    raise.
    """

    def __init__(self, models: Models, max_batch: int = 64, wait_s: float = 0.002):
        self.models = models
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.batch_sizes: list[int] = []  # what the worker actually batched (for tests/benchmarks)
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="digitlab-batcher", daemon=True)
        self._worker.start()

    def predict(
        self, seen: np.ndarray, cnn_seen: np.ndarray | None = None, timeout: float | None = 60.0
    ) -> dict:
        future: Future = Future()
        seen = np.asarray(seen, np.uint8).reshape(28, 28)
        cnn_seen = seen if cnn_seen is None else np.asarray(cnn_seen, np.uint8).reshape(28, 28)
        self._queue.put((seen, cnn_seen, future))
        return future.result(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:  # everything already waiting, and whatever arrives within wait_s
                while len(batch) < self.max_batch:
                    batch.append(self._queue.get(timeout=self.wait_s))
            except queue.Empty:
                pass
            live = [item for item in batch if item[-1].set_running_or_notify_cancel()]
            if not live:
                continue
            images = np.stack([img for img, _, _ in live])
            cnn_images = np.stack([img for _, img, _ in live])
            futures = [f for _, _, f in live]
            self.batch_sizes.append(len(futures))
            try:
                results = self._answer(images, cnn_images)
            except Exception as exc:
                for f in futures:
                    f.set_exception(exc)
                continue
            for f, r in zip(futures, results, strict=True):
                f.set_result(r)

    def _answer(self, images: np.ndarray, cnn_images: np.ndarray) -> list[dict]:
        m = self.models
        proba = dist = idx = None
        # The lock keeps the GAN (Generate/Morph) and the batch from fighting for the cores.
        with m.lock:
            if m.cnn is not None:
                proba = predict_proba(m.cnn, cnn_images)
            if m.knn is not None:
                # Never a one-row search: KNeighborsClassifier.kneighbors on a single query row
                # returned wrong neighbours (distance 0) in this version (reported; the
                # search internals belong to the speed work). Two identical rows are exact.
                rows = images if len(images) > 1 else np.concatenate([images, images])
                dist, idx = m.knn.kneighbors(rows.reshape(len(rows), -1), 3)
        return [
            {
                "proba": None if proba is None else proba[i],
                "knn": None if idx is None else (dist[i], idx[i]),
            }
            for i in range(len(images))
        ]


def load_models(
    data_dir: str | Path | None = None,
    generator_dir: str | Path | None = None,
    cnn_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    knn_size: int = 20000,
    seed: int = 0,
) -> Models:
    """The shipped CNN (or `cnn_dir`), a kNN on a seeded MNIST subset, the generator (the
    shipped one, or `generator_dir`: a `gan train` folder or its generator/). A CNN trained
    on another dataset answers with its own class names (its metadata.json) and reads pictures
    with that dataset's recipe; the kNN stays on MNIST's digits, and the page says so.

    Whatever cannot be loaded or used (a missing model, no data, a bad `knn_size` or `seed`,
    a `run_dir` with no run's figures) is left out and said in `notes`; nothing raises."""
    m = Models()
    try:
        cnn = load_cnn(cnn_dir)
        # A damaged metadata.json leaves the app without a CNN, as a damaged model does.
        classes, trained_on = model_classes(cnn_folder(cnn_dir), cnn.cfg.n_classes)
        # One blank prediction now: the CNN's compiled first stage loads here (0.3-0.6 s once
        # per process), not during the first visitor's request.
        predict_proba(cnn, np.zeros((1, 28, 28), np.uint8))
        m.cnn, m.cnn_classes = cnn, classes
        m.cnn_recipe = recipe_for(trained_on, classes)
        if classes != DIGITS:
            m.notes.append(
                f"The CNN was trained on {trained_on or 'other classes'}: it answers with its "
                f"classes ({', '.join(classes[:3])}, ...); the kNN reads MNIST digits."
            )
    except DigitlabError as exc:
        m.notes.append(f"CNN unavailable: {exc}")
    try:
        # Checked before the data loads: a negative seed raised NumPy's bare "expected
        # non-negative integer" out of random_subset, after the dataset was read.
        seed = check_seed(seed)
        dataset = load_dataset("mnist", data_dir)
        size = min(knn_size, len(dataset.x_train))
        x, y = random_subset(dataset.x_train, dataset.y_train, size, seed)
        knn = KNeighborsClassifier(3).fit(x.reshape(len(x), -1), y)
        # Set together, only once all succeeded: the note below says the browser is
        # unavailable, and a dataset set before a bad knn_size failed left it working.
        m.dataset, m.knn, m.knn_images, m.knn_labels = dataset, knn, x, y
    except DigitlabError as exc:
        m.notes.append(f"kNN and the dataset browser unavailable: {exc}")
    try:
        m.generator = load_gan_generator(generator_dir)
    except DigitlabError as exc:
        m.notes.append(f"generator unavailable: {exc}")
    if run_dir is not None:
        _use_run_dir(m, Path(run_dir))
    return m


def _use_run_dir(m: Models, run_dir: Path) -> None:
    """Set `m.run_dir` when `run_dir` holds a run's figures; otherwise a note says why not (a
    mistyped --run was accepted silently and the page only said to give one)."""
    if not run_dir.is_dir():
        m.notes.append(
            f"run figures unavailable: {run_dir} is not a folder; give a run folder "
            "(`digitlab run --out`) with --run"
        )
        return
    m.run_dir = run_dir
    if not run_figures(m):
        m.run_dir = None  # nothing to show, so nothing there for the web server to allow
        m.notes.append(
            f"run figures unavailable: {run_dir} holds none of a run's figures "
            "(figures/*.png); give a run folder (`digitlab run --out`) with --run"
        )


def prepare_drawing(image):
    """`preprocess.prepare` of a drawing or upload (gradio's sketchpad dict, path, bytes, PIL
    or array): the `Prepared` (28x28 and what was done), or None and the reason for the page.
    Uploads over 100 MB or 12,000 x 12,000 pixels are refused before they are decoded."""
    image = _picture(image)
    if image is None:
        return None, "Draw a digit (or upload a picture of one) first."
    name = Path(image).name if isinstance(image, (str, Path)) else "the drawing"
    try:
        return prepare(image, name=name), ""
    except ImageError as exc:
        if exc.reason == "no_digit":
            return None, "No digit found: nothing in the picture stands out as a digit."
        if exc.reason == "blank":
            return None, "No digit found: the canvas is empty or the picture is blank."
        return None, str(exc)


def _picture(image):
    """The picture inside a gradio ImageEditor / Sketchpad value; anything else as it is."""
    if isinstance(image, dict):
        return image.get("composite", image.get("image"))
    return image


def read_drawing(image) -> tuple[np.ndarray | None, str]:
    """MNIST-style 28x28 of a drawing or upload, or None and the reason for the page."""
    prepared, message = prepare_drawing(image)
    return (None if prepared is None else prepared.image), message


def classify(models: Models, image) -> dict:
    """The 28x28 the models saw, the CNN's probabilities by class name, the kNN's vote and
    neighbours."""
    prepared, message = prepare_drawing(image)
    seen = None if prepared is None else prepared.image
    out: dict = {"seen": seen, "message": message, "cnn": None, "knn": None}
    if prepared is None:
        return out
    out["preprocessing"] = prepared.describe()  # e.g. "dark ink on light paper, inverted; ..."
    if models.cnn is None and models.knn is None:
        return out
    cnn_seen = None
    if models.cnn is not None and models.cnn_recipe != "digit":
        try:
            cnn_seen = prepare(_picture(image), name="the picture", recipe=models.cnn_recipe)
            cnn_seen = cnn_seen.image
        except ImageError as exc:  # read as a digit, but not by the CNN's recipe
            out["message"] = f"CNN: {exc}"
    answer = models.predictions().predict(seen, cnn_seen)
    if answer["proba"] is not None and (cnn_seen is not None or models.cnn_recipe == "digit"):
        p, names = answer["proba"], models.cnn_classes
        if len(names) != len(p):  # a model set on Models by hand, without its names
            names = tuple(str(d) for d in range(len(p)))
        out["cnn"] = {names[d]: float(p[d]) for d in range(len(p))}
    if answer["knn"] is not None:
        dist, idx = answer["knn"]
        labels = models.knn_labels[idx]
        votes = np.bincount(labels, minlength=10)
        out["knn"] = {
            "vote": int(np.argmax(votes)),
            "votes": votes.tolist(),
            "neighbours": [
                (models.knn_images[i], int(lab), float(d))
                for i, lab, d in zip(idx, labels, dist, strict=True)
            ],
        }
    return out


def ui_whole(name: str, value, low: int, high: int | None = None) -> int:
    """A whole number from the UI's inputs (an int, a float with no fraction, or decimal
    digits as text, which the digit dropdowns send) in low..high, as an int; ConfigError
    otherwise. Infinity once raised OverflowError out of the handlers, a fraction was silently
    truncated (digit 3.7 drew 3s), and a count of 0 divided by zero.

    The message names the value as it came, a long number in short form (`shown_value`): a
    seed of 1e300 was said back as the 301 digits of the int it was turned into."""
    given = value  # 1e300, not int(1e300)
    # Digits past 4,300 are refused by int() itself ("Exceeds the limit"): so is the value.
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,4000}\s*", value):
        value = given = int(value)
    whole = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and value.is_integer():
        whole, value = True, int(value)
    if not whole or value < low or (high is not None and value > high):
        span = f"{low}..{shown_value(high)}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be a whole number {span}, got {shown_value(given)}")
    return int(value)


def generate_digits(models: Models, digit, count, seed) -> tuple[np.ndarray | None, str]:
    """`count` (`GENERATE_COUNT`: 1..64) generated images of `digit` (0..9, or its text),
    uint8 (count, 28, 28), and ""; or None and why (a bad digit, count or seed, such as a
    negative or fractional one, is a message, never an exception)."""
    if models.generator is None:
        return None, "No generator is loaded (start the app with --model DIR)."
    try:
        count = ui_whole("count", count, *GENERATE_COUNT)
        digit, seed = ui_whole("digit", digit, 0, 9), ui_whole("seed", seed, 0)
        with models.lock:  # generate() checks the seed's range (check_seed)
            return generate(models.generator, digit, count, seed=seed), ""
    except (ConfigError, TypeError, ValueError) as exc:
        return None, str(exc)


def morph(models: Models, start, end, steps, out_dir: Path) -> tuple[Path | None, str]:
    """The interpolation from digit `start` to `end` (0..9, or their text) in `steps`
    (`MORPH_STEPS`: 2..60) frames, as a GIF file in `out_dir`: its path and "", or None and
    why."""
    if models.generator is None:
        return None, "No generator is loaded (start the app with --model DIR)."
    try:
        steps = ui_whole("steps", steps, *MORPH_STEPS)
        start, end = ui_whole("start", start, 0, 9), ui_whole("end", end, 0, 9)
        path = Path(out_dir) / f"morph-{start}-{end}-{steps}.gif"
        with models.lock:
            write_morph(models.generator, start, end, steps, path, size=168, fps=8)
        return path, ""
    # DigitlabError too: an `out_dir` that cannot be written (a file, read-only) raised
    # OutputError out of the handler instead of a message.
    except (DigitlabError, TypeError, ValueError) as exc:
        return None, str(exc)
    except OSError as exc:
        return None, describe_os_error(exc)


def browse(
    models: Models, digit, count: int = 24, seed: int = 0, page: int = 0
) -> tuple[np.ndarray | None, str]:
    """Page `page` of one digit's training images in a seeded random order.

    Pages walk through every image of the digit without repeats (then start over); a new
    `seed` is a new shuffle. Returns uint8 (count, 28, 28) and "" or None and a message.
    """
    if models.dataset is None:
        return None, "No dataset is loaded (start the app with --data-dir DIR)."
    try:
        digit, count = ui_whole("digit", digit, 0, 9), ui_whole("count", count, 1, 256)
        # The seed's range as Generate's (check_seed): a seed of 1e300 shuffled, and the
        # page then said "shuffle" and its 301 digits.
        page, seed = ui_whole("page", page, 0), check_seed(ui_whole("seed", seed, 0))
    except (TypeError, ValueError) as exc:
        return None, str(exc)
    members = np.random.default_rng(seed).permutation(
        np.flatnonzero(models.dataset.y_train == digit)
    )
    if len(members) == 0:
        return None, f"There are no training images of digit {digit}."
    pages = max(1, -(-len(members) // count))
    start = (page % pages) * count
    pick = members[start : start + count]
    return models.dataset.x_train[pick], (
        f"Digit {digit}: images {start + 1}–{start + len(pick)} of {len(members):,d} "
        f"(page {page % pages + 1} of {pages}, shuffle {seed})."
    )


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
