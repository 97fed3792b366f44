"""The kNN's "most confidently wrong" ranking: a distance margin, checked against plain loops."""

import numpy as np

from digitlab.evaluation import knn_margin_examples


def test_margin_ranking_matches_an_obvious_loop():
    rng = np.random.default_rng(3)
    f_train = rng.integers(0, 256, (400, 30)).astype(np.float32)
    y_train = rng.integers(0, 10, 400)
    f_test = rng.integers(0, 256, (60, 30)).astype(np.float32)
    y_test = rng.integers(0, 10, 60)
    y_pred = rng.integers(0, 10, 60)
    idx, margin = knn_margin_examples(f_train, y_train, f_test, y_test, y_pred, n=10, chunk=7)
    expected = []
    for i in np.flatnonzero(y_test != y_pred):
        d = np.sqrt(((f_train.astype(float) - f_test[i]) ** 2).sum(1))
        d_true, d_win = d[y_train == y_test[i]].min(), d[y_train == y_pred[i]].min()
        expected.append((-(d_true / d_win - 1), i))
    expected.sort()
    assert idx.tolist() == [i for _, i in expected[:10]]
    np.testing.assert_allclose(margin, [-m for m, _ in expected[:10]], rtol=1e-4)
    assert np.all(np.diff(margin) <= 0)  # largest margin first: a real ranking


def test_no_errors_gives_an_empty_ranking():
    x = np.zeros((5, 4), np.float32)
    idx, margin = knn_margin_examples(x, np.arange(5), x, np.arange(5), np.arange(5))
    assert len(idx) == 0 and len(margin) == 0
