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


def knn_margin_examples(
    f_train: np.ndarray,
    y_train: np.ndarray,
    f_test: np.ndarray,
    y_test: np.ndarray,
    y_pred: np.ndarray,
    n: int = 20,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """The kNN's most confidently wrong test digits, ranked by a distance margin.

    At k=3 nearly every wrong vote is 3/3, so the vote share cannot rank errors. The margin
    separates them: for a wrong test digit, `d_true` is the euclidean distance to the nearest
    training image of its true class and `d_win` to the nearest one of the predicted class;
    the margin is `d_true / d_win - 1` (0.25: the right answer was 25% farther away than the
    wrong one). Largest margins first; ties keep test order.

    f_train: (n_train, d) features the kNN searched; y_train: (n_train,) int labels;
    f_test: (n_test, d); y_test, y_pred: (n_test,) ints. Returns (indices into the test set,
    int64 (m,), margins float64 (m,); inf where the training set holds no image of the true
    class), m = min(n, number of errors).
    """
    y_test, y_pred, y_train = np.asarray(y_test), np.asarray(y_pred), np.asarray(y_train)
    wrong = np.flatnonzero(y_test != y_pred)
    if len(wrong) == 0:
        return wrong, np.zeros(0)
    tr = np.asarray(f_train, np.float32).reshape(len(f_train), -1)
    tr_sq = np.einsum("ij,ij->i", tr, tr)
    classes = np.unique(y_train)
    margins = np.empty(len(wrong))
    for s in range(0, len(wrong), chunk):
        rows = wrong[s : s + chunk]
        q = np.asarray(f_test[rows], np.float32).reshape(len(rows), -1)
        d2 = tr_sq[None, :] - 2 * (q @ tr.T) + np.einsum("ij,ij->i", q, q)[:, None]
        # A class the training subset lacks has no nearest image: inf (its margin too), so
        # such errors rank first (a test label beyond the training labels was an IndexError).
        width = int(max(classes.max(), y_test.max(), y_pred.max())) + 1
        nearest = np.full((len(rows), width), np.inf)
        for c in classes:
            nearest[:, c] = d2[:, y_train == c].min(1)
        dist = np.sqrt(np.maximum(nearest, 0))
        r = np.arange(len(rows))
        d_true, d_win = dist[r, y_test[rows]], dist[r, y_pred[rows]]
        margins[s : s + chunk] = d_true / np.maximum(d_win, 1e-12) - 1
    order = np.argsort(-margins, kind="stable")[:n]
    return wrong[order], margins[order]
