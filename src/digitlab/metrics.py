"""Classification metrics: numpy in, numbers and arrays out (checked against scikit-learn).

Everything derives from the confusion matrix, so one pass over the labels gives the accuracy,
per-class precision/recall/F1/support, TP/FP/FN/TN and the macro and weighted averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm


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
    # Macro averages run over the classes that occur (as truth or as prediction), as
    # scikit-learn's do: a class absent from both once counted as an F1 of 0.
    seen = (support + cm.sum(0)) > 0
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
        "f1_macro": float(f1[seen].mean()),
        "f1_weighted": float(_safe_div(np.array([(f1 * support).sum()]), np.array([total]))[0]),
        "precision_macro": float(precision[seen].mean()),
        "recall_macro": float(recall[seen].mean()),
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


# ----- clustering ---------------------------------------------------------------------------


def contingency(y_true, clusters, n_classes: int | None = None, n_clusters: int | None = None):
    """counts[c, j] = number of samples of true class c placed in cluster j.

    Both are whole numbers >= 0 (class and cluster indices), of equal, non-zero length;
    ValueError otherwise. For labels of any kind, see `_table`.
    """
    y, c = np.asarray(y_true).ravel(), np.asarray(clusters).ravel()
    if y.shape != c.shape or len(y) == 0:
        raise ValueError("labels and clusters must be non-empty and of equal length")
    for name, v in (("labels", y), ("clusters", c)):
        if v.dtype.kind not in "iub" or v.min() < 0:
            raise ValueError(f"{name} must be whole numbers >= 0 here, got {v.min()}")
    y, c = y.astype(np.int64), c.astype(np.int64)
    nc = int(y.max()) + 1 if n_classes is None else n_classes
    nk = int(c.max()) + 1 if n_clusters is None else n_clusters
    return np.bincount(y * nk + c, minlength=nc * nk).reshape(nc, nk)


def _table(y_true, clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, label values, cluster ids): the contingency table of labels and cluster ids
    of any kind (-1 for a clusterer's noise, strings), one row per label that occurs and one
    column per cluster that occurs."""
    y, c = np.asarray(y_true).ravel(), np.asarray(clusters).ravel()
    if y.shape != c.shape or len(y) == 0:
        raise ValueError("labels and clusters must be non-empty and of equal length")
    labels, yi = np.unique(y, return_inverse=True)
    ids, ci = np.unique(c, return_inverse=True)
    return contingency(yi, ci), labels, ids


def consistency(y_true, clusters) -> float:
    """The course's score: for each true digit, the size of its largest cluster, summed / N.

    It rewards keeping each digit together but not keeping digits apart: one giant cluster
    scores 1.0. Read it beside purity and the matched accuracy.
    """
    table = _table(y_true, clusters)[0]
    return float(table.max(1).sum() / table.sum())


def purity(y_true, clusters) -> float:
    """For each cluster, its most common digit's count, summed / N."""
    table = _table(y_true, clusters)[0]
    return float(table.max(0).sum() / table.sum())


def cluster_to_label(y_true, clusters) -> dict:
    """Each cluster's most likely digit (its majority label): {cluster id: label}."""
    table, labels, ids = _table(y_true, clusters)
    return {ids[j].item(): labels[table[:, j].argmax()].item() for j in range(len(ids))}


def matched_accuracy(y_true, clusters) -> tuple[float, dict]:
    """Accuracy after the best one-to-one matching of clusters to digits (Hungarian), and the
    matching {cluster id: label}. Labels and ids of any kind (a clusterer's -1 for noise)."""
    table, labels, ids = _table(y_true, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum()), {
        ids[c].item(): labels[r].item() for r, c in zip(rows, cols, strict=True)
    }


def clustering_report(
    y_true, clusters, X=None, silhouette_sample: int = 2000, seed: int = 0
) -> dict:
    """The course's consistency next to the standard clustering scores."""
    y = np.asarray(y_true).ravel()
    c = np.asarray(clusters).ravel()
    acc, mapping = matched_accuracy(y, c)
    out = {
        "consistency": consistency(y, c),
        "purity": purity(y, c),
        "accuracy": acc,
        "ari": float(skm.adjusted_rand_score(y, c)),
        "nmi": float(skm.normalized_mutual_info_score(y, c)),
        "ami": float(skm.adjusted_mutual_info_score(y, c)),
        "homogeneity": float(skm.homogeneity_score(y, c)),
        "completeness": float(skm.completeness_score(y, c)),
        "v_measure": float(skm.v_measure_score(y, c)),
        "matching": mapping,
        "majority_label": cluster_to_label(y, c),
        "contingency": contingency(y, c).tolist(),
    }
    # The silhouette needs 2 to n - 1 clusters (each sample its own cluster has none).
    if X is not None and 1 < len(np.unique(c)) < len(c):
        X = np.asarray(X).reshape(len(c), -1)
        n = min(silhouette_sample, len(c))
        out["silhouette"] = float(skm.silhouette_score(X, c, sample_size=n, random_state=seed))
        out["silhouette_sample"] = n
    return out
