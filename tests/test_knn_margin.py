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


def test_a_true_class_missing_from_training_ranks_first():
    """Test labels the training subset lacks (7 when it holds 0-2) were an IndexError."""
    rng = np.random.default_rng(0)
    f_train, y_train = rng.random((30, 4)), np.repeat([0, 1, 2], 10)
    f_test = rng.random((5, 4))
    y_test, y_pred = np.array([0, 7, 1, 2, 9]), np.array([1, 0, 1, 0, 2])
    idx, margin = knn_margin_examples(f_train, y_train, f_test, y_test, y_pred)
    assert set(idx[:2].tolist()) == {1, 4} and np.isinf(margin[:2]).all()
    assert np.isfinite(margin[2:]).all() and sorted(idx.tolist()) == [0, 1, 3, 4]


def test_knn_command_on_training_data_without_some_classes(tmp_path, capsys):
    from conftest import make_digits
    from digitlab.cli import main
    from digitlab.idx import write_idx

    x, y = make_digits(400, seed=2)
    keep = y < 3
    folder = tmp_path / "three"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", x[keep])
    write_idx(folder / "train-labels-idx1-ubyte", y[keep])
    write_idx(folder / "t10k-images-idx3-ubyte", x[:80])
    write_idx(folder / "t10k-labels-idx1-ubyte", y[:80])
    out = tmp_path / "k"
    code = main(
        ["knn", "--data-dir", str(folder), "--train-size", "all", "--out", str(out), "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    assert (out / "metrics.json").is_file()
