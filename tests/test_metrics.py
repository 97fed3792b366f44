import numpy as np
import pytest
from sklearn import metrics as skm

from digitlab.metrics import classification_report, confusion_matrix, format_report


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, 500)
    p = np.where(rng.random(500) < 0.7, y, rng.integers(0, 10, 500))
    if seed == 2:
        p[p == 3] = 4  # a class never predicted: precision 0/0
    if seed == 3:  # class 9 neither in the truth nor predicted (data without 9s)
        y[y == 9], p[p == 9] = 8, 8
    rep = classification_report(y, p, n_classes=10)
    for name in ("precision", "recall"):
        assert rep[f"{name}_macro"] == pytest.approx(
            getattr(skm, f"{name}_score")(y, p, average="macro", zero_division=0)
        )
    np.testing.assert_array_equal(
        rep["confusion_matrix"], skm.confusion_matrix(y, p, labels=range(10))
    )
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert rep["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    assert rep["f1_weighted"] == pytest.approx(
        skm.f1_score(y, p, average="weighted", zero_division=0)
    )
    prec, rec, f1, sup = skm.precision_recall_fscore_support(
        y, p, labels=range(10), zero_division=0
    )
    for i, row in enumerate(rep["per_class"]):
        assert row["precision"] == pytest.approx(prec[i])
        assert row["recall"] == pytest.approx(rec[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == sup[i]
    mcm = skm.multilabel_confusion_matrix(y, p, labels=range(10))  # [[tn, fp], [fn, tp]]
    for i, row in enumerate(rep["per_class"]):
        assert [row["tn"], row["fp"], row["fn"], row["tp"]] == mcm[i].ravel().tolist()
    assert "macro F1" in format_report(rep)


def test_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="no labels"):
        confusion_matrix([], [])
    with pytest.raises(ValueError, match="below n_classes"):
        confusion_matrix([0, 12], [0, 1], n_classes=10)
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix([0.5], [1.0])


def test_cluster_scores_take_any_cluster_ids():
    """A clusterer's -1 (noise) made np.bincount raise "must have no negative elements"."""
    from digitlab.metrics import cluster_to_label, consistency, matched_accuracy, purity

    y = np.array([0, 0, 1, 1, 2, 2])
    c = np.array([-1, -1, 7, 7, 7, -1])
    acc, mapping = matched_accuracy(y, c)
    assert acc == pytest.approx(4 / 6) and mapping == {-1: 0, 7: 1}
    assert cluster_to_label(y, c) == {-1: 0, 7: 1}
    assert purity(y, c) == pytest.approx(4 / 6) and consistency(y, c) == pytest.approx(5 / 6)
    # The same scores for the same partition under other ids.
    assert matched_accuracy(y, c + 1)[0] == acc and purity(y, np.where(c < 0, 3, 0)) == purity(y, c)
