"""The kNN steps: evaluate one k with its figures, and choose k on a validation split."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.neighbors import KNeighborsClassifier as SklearnKNN

from digitlab import figures, plots
from digitlab.data import Dataset, random_subset
from digitlab.files import save_metrics
from digitlab.knn_experiment import (
    KNNConfig,
    SweepConfig,
    run_knn,
    run_knn_sweep,
    run_knn_validation,
)
from digitlab.tasks.figures import names, write_evaluation


def evaluate_knn(
    ds: Dataset, cfg: KNNConfig, out_dir: str | Path, metrics_file: str | None = "metrics.json"
) -> dict:
    """Fit kNN on the seeded subset, evaluate on the test set, draw its figures in `out_dir`.

    With `cfg.compare_sklearn` (raw pixels only) scikit-learn's brute-force kNN runs on the same
    arrays, under "reference": its seconds and whether its predictions are identical. Returns
    the results of `experiments.run_knn` without the per-image arrays, plus "figures" (key ->
    file name); also written to `out_dir/metrics_file` unless that is None.
    """
    result = run_knn(ds, cfg)
    pred = result.pop("predictions")
    result.pop("proba")
    if cfg.compare_sklearn and not (cfg.deskew or cfg.pca):
        result["reference"] = sklearn_reference(ds, cfg, pred)
    files = write_evaluation(out_dir, "knn", result, ds.x_test, ds.y_test, pred, ds.classes)
    result["figures"] = names(files)
    if metrics_file is not None:
        save_metrics(Path(out_dir) / metrics_file, result)
    return result


def sklearn_reference(ds: Dataset, cfg: KNNConfig, ours: np.ndarray) -> dict:
    """scikit-learn's brute-force kNN on the same subset: its time (s) and agreement with ours."""
    x, y = random_subset(ds.x_train, ds.y_train, cfg.train_size, cfg.seed)
    start = time.perf_counter()
    model = SklearnKNN(cfg.k, weights=cfg.weights, algorithm="brute")
    pred = model.fit(x.reshape(len(x), -1), y).predict(ds.x_test.reshape(len(ds.x_test), -1))
    return {
        "library": "scikit-learn",
        "fit_predict_s": time.perf_counter() - start,
        "identical_predictions": bool(np.array_equal(pred, ours)),
    }


def sweep(
    ds: Dataset, cfg: SweepConfig, out_dir: str | Path, metrics_file: str | None = "sweep.json"
) -> dict:
    """Score every k of `cfg.ks` on a validation split, choose k there, plot accuracy vs k.

    Returns `experiments.run_knn_sweep`'s results plus "figures"; also written to
    `out_dir/metrics_file` unless that is None.
    """
    result = run_knn_sweep(ds, cfg)
    path = plots.save(
        plots.k_sweep(
            result["ks"], result["val_accuracy"], result["test_accuracy"], result["chosen_k"]
        ),
        Path(out_dir) / figures.SWEEP["sweep"],
    )
    result["figures"] = names({"sweep": path})
    if metrics_file is not None:
        save_metrics(Path(out_dir) / metrics_file, result)
    return result


def validate(ds: Dataset, cfg: KNNConfig, val_fraction: float = 0.1) -> dict:
    """kNN at `cfg.k` scored on a validation split of the training subset (no test images).

    The objective a sweep over kNN settings chooses on; see `run_knn_validation`.
    """
    return run_knn_validation(ds, cfg, val_fraction)
