"""Figures more than one task draws: a classifier's evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from digitlab import figures, plots


def write_evaluation(
    out_dir: str | Path,
    name: str,
    report: dict,
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Path]:
    """The confusion matrix, per-class bars and misclassified galleries of `report` as PNGs.

    name: "knn" or "cnn" (the figures' prefix, see `figures.evaluation`); images: the test
    images, uint8 (n, 28, 28); y_true/y_pred: int labels (n,). Returns figure key -> path.
    """
    out_dir = Path(out_dir)
    names = figures.evaluation(name)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    files = {
        "confusion_matrix": plots.save(
            plots.confusion_matrix(
                np.array(report["confusion_matrix"]),
                class_names,
                f"{name}: confusion matrix (accuracy {report['accuracy']:.2%})",
            ),
            out_dir / names["confusion_matrix"],
        ),
        "per_class": plots.save(
            plots.per_class_bars(report, f"{name}: per-class precision, recall, F1"),
            out_dir / names["per_class"],
        ),
        "misclassified": plots.save(
            plots.misclassified(
                images,
                y_true,
                y_pred,
                class_names,
                np.array(report["misclassified_first"], dtype=int),
                f"{name}: first misclassified test digits (true → predicted)",
            ),
            out_dir / names["misclassified"],
        ),
    }
    if "misclassified_confident" in report:
        # The kNN ranks its errors by a distance margin (a 3/3 vote cannot rank them).
        margin = "misclassified_confident_margin" in report
        files["misclassified_confident"] = plots.save(
            plots.misclassified(
                images,
                y_true,
                y_pred,
                class_names,
                np.array(report["misclassified_confident"], dtype=int),
                (
                    f"{name}: most confidently wrong (true → predicted; how much farther "
                    "the nearest true-digit image was)"
                    if margin
                    else f"{name}: most confidently wrong (true → predicted, confidence)"
                ),
                confidence=np.array(
                    report[
                        "misclassified_confident_margin" if margin else "misclassified_confident_p"
                    ]
                ),
                score_format="{:+.0%}" if margin else "{:.0%}",
            ),
            out_dir / names["misclassified_confident"],
        )
    return files


def names(files: dict[str, Path]) -> dict[str, str]:
    """Figure key -> file name, as results record them."""
    return {key: path.name for key, path in files.items()}
