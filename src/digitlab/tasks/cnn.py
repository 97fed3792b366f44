"""The CNN steps: train and save with its figures, evaluate a saved model, read an image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from digitlab import figures, plots
from digitlab.cnn import CourseCNN, predict_proba, summary
from digitlab.data import Dataset, random_subset
from digitlab.evaluation import evaluate
from digitlab.files import save_metrics
from digitlab.loaders import save_model
from digitlab.preprocess import to_mnist
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
        x, y, cfg, checkpoint_dir=out, resume=resume, progress=not quiet, on_epoch=on_epoch
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
    save_model(model, out / "model", {k: metrics[k] for k in MODEL_METADATA})
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


def read_image(
    model: CourseCNN, path: str | Path, top: int = 3, out: str | Path | None = None
) -> list[tuple[int, float]]:
    """The `top` classes (index, probability) the CNN reads in one image file, best first.

    The image is made MNIST-like first (`preprocess.to_mnist`); with `out`, the 28x28 the model
    saw is drawn to `out/<name>_28x28.png`. Raises DataError for an unreadable file.
    """
    image = to_mnist(path)
    p = predict_proba(model, image)[0]
    best = [(int(c), float(p[c])) for c in np.argsort(-p)[:top]]
    if out is not None:
        c, q = best[0]
        plots.save(
            plots.digit(image, f"as the model saw it: {c} ({q:.0%})"),
            Path(out) / f"{Path(path).stem}_28x28.png",
        )
    return best
