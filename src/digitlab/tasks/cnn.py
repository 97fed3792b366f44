"""The CNN steps: train and save with its figures, evaluate a saved model, read an image."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from digitlab import figures, plots
from digitlab.cnn import CourseCNN, predict_proba, summary
from digitlab.data import Dataset, random_subset
from digitlab.evaluation import evaluate
from digitlab.files import atomic_write_bytes, atomic_write_text, save_metrics
from digitlab.image_predict import ImageAnswer, model_classes, predict_images, recipe_for
from digitlab.loaders import cnn_folder, load_model, save_model
from digitlab.tasks.figures import names, write_evaluation
from digitlab.train import History, TrainConfig, train_cnn

# What a saved model's metadata.json keeps of the training results.
MODEL_METADATA = ("accuracy", "f1_macro", "dataset", "train_config", "history", "n_train")


def train_and_save(
    ds: Dataset,
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    quiet: bool = False,
    figures_dir: str | Path | None = None,
    on_epoch: Callable[[int, History], None] | None = None,
) -> dict:
    """Train on the seeded subset, evaluate on the test set, save everything.

    Writes the model to `out/model` (safetensors + config + metadata), `out/metrics.json`,
    and the curves and evaluation figures to `figures_dir` (default: `out`). The checkpoint in
    `out` makes an interrupted run resumable (`resume=True`). Returns the metrics written.
    """
    out = Path(out)
    figures_dir = Path(figures_dir) if figures_dir is not None else out
    x, y = random_subset(ds.x_train, ds.y_train, cfg.train_size, cfg.seed)
    model, history, info = train_cnn(
        x,
        y,
        cfg,
        checkpoint_dir=out,
        resume=resume,
        progress=not quiet,
        on_epoch=on_epoch,
        data=ds.identity(),
    )
    proba = predict_proba(model, ds.x_test)
    pred = proba.argmax(1)
    report = evaluate(ds.y_test, pred, ds.classes, proba)
    metrics = {
        **report,
        "history": history.as_dict(),
        "train_config": asdict(cfg),
        "training": info,
        "dataset": ds.name,
        "n_train": len(x),
        "summary": summary(model),
    }
    # The class names go with the model: `cnn predict` names its answers with them.
    meta = {k: metrics[k] for k in MODEL_METADATA} | {"classes": list(ds.classes)}
    save_model(model, out / "model", meta)
    files = write_evaluation(figures_dir, "cnn", report, ds.x_test, ds.y_test, pred, ds.classes)
    files["curves"] = plots.save(
        plots.training_curves(history.as_dict()), figures_dir / figures.CNN["curves"]
    )
    metrics["figures"] = names(files)
    save_metrics(out / "metrics.json", metrics)
    return metrics


def evaluate_saved(model: CourseCNN, ds: Dataset, out: str | Path | None = None) -> dict:
    """Score `model` on the test set; with `out`, also write metrics.json and the figures."""
    proba = predict_proba(model, ds.x_test)
    pred = proba.argmax(1)
    report = evaluate(ds.y_test, pred, ds.classes, proba)
    if out is not None:
        files = write_evaluation(out, "cnn", report, ds.x_test, ds.y_test, pred, ds.classes)
        save_metrics(Path(out) / "metrics.json", {**report, "figures": names(files)})
    return report


def read_images(model_dir: str | Path | None, paths: Iterable[str | Path]) -> Iterator[ImageAnswer]:
    """Read every picture file with a saved CNN: one `ImageAnswer` per path, in order.

    `model_dir`: a training folder, its `model/` subfolder, or None for the shipped CNN; it
    is loaded now (a missing or damaged model raises DataError before anything is read or
    written), the pictures as the answers are taken. The model's stored class names label the
    answers; digit models get MNIST's crop-and-centre recipe, other datasets (Fashion-MNIST,
    ...) a plain fit. A file that cannot be read gives an answer with `error` set (an
    ImageError naming the file) and the rest are still read. `save_seen` writes what the
    model saw.
    """
    folder = cnn_folder(model_dir)
    model = load_model(folder)
    classes, dataset = model_classes(folder, model.cfg.n_classes)
    return predict_images(model, paths, classes=classes, recipe=recipe_for(dataset, classes))


#: What `cnn predict --out` writes: each 28x28 the model saw as `<name>_28x28.png`, and
#: predictions.csv, one row per picture given, in order: `seen` is the 28x28 file written for
#: it ("" when it could not be read), `class`/`probability` the top answer (0..1), `notes` what
#: the reader noted ("1 more digit-sized mark left out: ...", "; "-separated), `error` the line
#: printed for a file that could not be read.
RECORD = "predictions.csv"
RECORD_COLUMNS = ("input", "seen", "class", "probability", "notes", "error")
SEEN = "_28x28.png"


def save_seen(answers: Iterable[ImageAnswer], out: str | Path) -> Iterator[tuple[ImageAnswer, str]]:
    """(answer, file name) for each answer, writing the 28x28 the model saw (uint8, light ink
    on black, as MNIST; give it back and it reads the same) to `out/<name>_28x28.png` first
    (`<name>-2_28x28.png` and so on for a name met again: pictures of one name from two
    folders once overwrote each other's); "" for an answer with an error."""
    used: set[str] = set()
    for answer in answers:
        if answer.error is not None:
            yield answer, ""
            continue
        stem = name = Path(answer.name).stem
        for n in itertools.count(2):
            if name not in used:
                break
            name = f"{stem}-{n}"
        used.add(name)
        picture = io.BytesIO()
        Image.fromarray(answer.prepared.image).save(picture, "PNG")
        atomic_write_bytes(Path(out) / f"{name}{SEEN}", picture.getvalue())
        yield answer, f"{name}{SEEN}"


def write_record(out: str | Path, seen: Iterable[tuple[ImageAnswer, str]]) -> Path:
    """predictions.csv (`RECORD_COLUMNS`) in `out` for the (answer, file name) pairs of
    `save_seen`; returns its path."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(RECORD_COLUMNS)
    for answer, name in seen:
        if answer.error is not None:
            writer.writerow((answer.name, "", "", "", "", answer.line()))
        else:
            label, p = answer.top(1)[0]
            notes = "; ".join(answer.prepared.warnings)
            writer.writerow((answer.name, name, label, f"{p:.6f}", notes, ""))
    return atomic_write_text(Path(out) / RECORD, text.getvalue())
