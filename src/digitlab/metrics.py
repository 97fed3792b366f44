"""Classification metrics: numpy in, numbers and arrays out (checked against scikit-learn).

Everything derives from the confusion matrix, so one pass over the labels gives the accuracy,
per-class precision/recall/F1/support, TP/FP/FN/TN and the macro and weighted averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _labels(y_true, y_pred, n_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("no labels to score")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError(f"{name} must hold class indices 0..n_classes-1")
    n = int(max(y_true.max(), y_pred.max()) + 1) if n_classes is None else n_classes
    if max(y_true.max(), y_pred.max()) >= n:
        raise ValueError(f"labels must be below n_classes={n}")
    return y_true.astype(np.int64), y_pred.astype(np.int64), n


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """counts[i, j] = number of samples of true class i predicted as class j."""
    t, p, n = _labels(y_true, y_pred, n_classes)
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # 0/0 -> 0, as scikit-learn's zero_division default (with a warning there, silent here).
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def classification_report(
    y_true, y_pred, n_classes: int | None = None, class_names: Sequence[str] | None = None
) -> dict:
    """Accuracy, macro/weighted F1, and per-class precision, recall, F1, support, TP/FP/FN/TN.

    Returns a JSON-friendly dict; `confusion_matrix` is a nested list.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    n = cm.shape[0]
    total = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = total - tp - fp - fn
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    support = cm.sum(1)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    per_class = [
        {
            "class": names[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "tp": int(tp[i]),
            "fp": int(fp[i]),
            "fn": int(fn[i]),
            "tn": int(tn[i]),
        }
        for i in range(n)
    ]
    return {
        "accuracy": float(tp.sum() / total),
        "f1_macro": float(f1.mean()),
        "f1_weighted": float(_safe_div(np.array([(f1 * support).sum()]), np.array([total]))[0]),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "n_samples": total,
        "n_errors": int(total - tp.sum()),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
    }


def format_report(report: dict) -> str:
    """A plain-text table of a `classification_report`, for the terminal."""
    lines = [f"{'class':>12s} {'precision':>9s} {'recall':>7s} {'f1':>7s} {'support':>8s}"]
    for row in report["per_class"]:
        lines.append(
            f"{row['class'][:12]:>12s} {row['precision']:9.4f} {row['recall']:7.4f} "
            f"{row['f1']:7.4f} {row['support']:8d}"
        )
    lines.append(
        f"{'accuracy':>12s} {report['accuracy']:9.4f}   macro F1 {report['f1_macro']:.4f}   "
        f"weighted F1 {report['f1_weighted']:.4f}   errors {report['n_errors']}/"
        f"{report['n_samples']}"
    )
    return "\n".join(lines)
