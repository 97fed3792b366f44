"""Evaluation shared by every classifier: metrics and the digits it got wrong.

Numbers in, numbers out: the figures are drawn by `plots` and written by the tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from digitlab.metrics import classification_report


def wrong_examples(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, n: int = 20
) -> dict:
    """Indices of the first `n` errors and of the `n` most confidently wrong predictions."""
    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))
    out = {"first": wrong[:n]}
    if proba is not None and len(wrong):
        conf = proba[wrong, np.asarray(y_pred)[wrong]]
        order = np.argsort(-conf, kind="stable")[:n]
        out["confident"] = wrong[order]
        out["confident_p"] = conf[order]
    return out


def evaluate(y_true, y_pred, class_names: Sequence[str], proba=None, n_examples: int = 20) -> dict:
    """Classification report plus the misclassified examples (indices into the test set)."""
    report = classification_report(y_true, y_pred, len(class_names), class_names)
    ex = wrong_examples(y_true, y_pred, proba, n_examples)
    report["misclassified_first"] = ex["first"].tolist()
    if "confident" in ex:
        report["misclassified_confident"] = ex["confident"].tolist()
        report["misclassified_confident_p"] = [float(p) for p in ex["confident_p"]]
    return report
