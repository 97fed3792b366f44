"""Our kNN against scikit-learn's brute-force kNN: identical answers, ties included."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier as SKLearnKNN

from conftest import make_digits
from digitlab import neighbors
from digitlab.data import random_subset
from digitlab.errors import NotFittedError
from digitlab.neighbors import KNeighborsClassifier


def _flat(x):
    return x.reshape(len(x), -1)


@pytest.fixture(scope="module")
def small_mnist(mnist):
    xtr, ytr = random_subset(mnist.x_train, mnist.y_train, 5000, seed=1)
    return _flat(xtr), ytr, _flat(mnist.x_test[:2000]), mnist.y_test[:2000]


@pytest.mark.real_data
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_identical_to_sklearn_on_mnist_k1_to_7(small_mnist, weights):
    X, y, Q, _ = small_mnist
    ours = KNeighborsClassifier(7, weights=weights).fit(X, y)
    many = ours.predict_many_k(Q, range(1, 8))
    for k in range(1, 8):
        ref = SKLearnKNN(k, weights=weights, algorithm="brute").fit(X, y)
        ours.set_params(n_neighbors=k)
        np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
        np.testing.assert_array_equal(many[k], ref.predict(Q))
        np.testing.assert_allclose(ours.predict_proba(Q), ref.predict_proba(Q), rtol=0, atol=1e-12)
    d, i = ours.kneighbors(Q, 7)
    rd, ri = SKLearnKNN(7, algorithm="brute").fit(X, y).kneighbors(Q)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)


@pytest.mark.real_data
@pytest.mark.slow
def test_course_run_identical_to_sklearn(mnist):
    xtr, ytr = random_subset(mnist.x_train, mnist.y_train, 20000, seed=0)
    ours = KNeighborsClassifier(3).fit(_flat(xtr), ytr).predict(_flat(mnist.x_test))
    ref = SKLearnKNN(3, algorithm="brute").fit(_flat(xtr), ytr).predict(_flat(mnist.x_test))
    np.testing.assert_array_equal(ours, ref)
    assert 0.955 < np.mean(ours == mnist.y_test) < 0.965


def _tied_data():
    """Duplicated training images with different labels, and queries equal to them: ties."""
    x, y = make_digits(300, seed=5)
    X = _flat(x)
    X = np.concatenate([X, X[:100], X[:100]])
    y = np.concatenate([y, (y[:100] + 1) % 10, (y[:100] + 2) % 10])
    Q = np.concatenate([X[:60], _flat(make_digits(60, seed=6)[0])])
    return X, y, Q


@pytest.mark.parametrize("margin", [8, 0])  # margin 0: every row takes the tie-exact fallback
def test_ties_like_sklearn(monkeypatch, margin):
    monkeypatch.setattr(neighbors, "_MARGIN", margin)
    X, y, Q = _tied_data()
    for k in range(1, 8):
        for weights in ("uniform", "distance"):
            ours = KNeighborsClassifier(k, weights=weights).fit(X, y)
            ref = SKLearnKNN(k, weights=weights, algorithm="brute").fit(X, y)
            np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
            np.testing.assert_array_equal(ours.kneighbors(Q)[1], ref.kneighbors(Q)[1])
        assert _fallback_rows(ours, Q) > 0


def _fallback_rows(model, Q) -> int:
    """How many query rows the search re-ranked from full distance rows (tied distances)."""
    found = model._search(model._prepare_queries(Q), [model.n_neighbors])
    return len(found[model.n_neighbors].fallback)


_SIX = np.array(
    [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9], [0, 0, 0, 1], [3, 3, 3, 3], [3, 3, 3, 3]]
)


@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.float32])
def test_tie_choice_follows_sklearn_for_the_dtype(dtype):
    """Rows 4 and 5 are equal and at distance 0: scikit-learn keeps row 5 for uint8 (it ranks
    with argpartition) but row 4 for float arrays (its ArgKmin heaps). We follow it for each."""
    X, q = _SIX.astype(dtype), np.array([[3, 3, 3, 3]], dtype)
    ours = KNeighborsClassifier(1, kernel="float32").fit(X, np.arange(6))
    ref = SKLearnKNN(1, algorithm="brute").fit(X, np.arange(6))
    assert ours.predict(q)[0] == ref.predict(q)[0] == (5 if dtype == np.uint8 else 4)


def test_int8_kernel_on_four_features():
    """A one-row query as int8 once had strides (1, 1), which oneDNN's _int_mm read as zeros."""
    X, q = _SIX.astype(np.uint8), np.array([[3, 3, 3, 3]], np.uint8)
    try:
        found = KNeighborsClassifier(1, kernel="int8").fit(X, np.arange(6)).kneighbors(q)
    except RuntimeError as exc:  # no int8 product on this build: nothing to show
        pytest.skip(f"int8 kernel unavailable: {exc}")
    assert found[0][0, 0] == 0 and found[1][0, 0] == 5


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("n_queries", [120, 1440])  # both of scikit-learn's ArgKmin strategies
def test_ties_like_sklearn_for_every_dtype(dtype, n_queries):
    X, y, Q = _tied_data()
    X, Q = X.astype(dtype), np.resize(Q, (n_queries, Q.shape[1])).astype(dtype)
    for k in (1, 2, 4, 7):
        for weights in ("uniform", "distance"):
            ours = KNeighborsClassifier(k, weights=weights).fit(X, y)
            ref = SKLearnKNN(k, weights=weights, algorithm="brute").fit(X, y)
            np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
            np.testing.assert_array_equal(ours.kneighbors(Q)[1], ref.kneighbors(Q)[1])
            proba = ours.predict_proba(Q)
            np.testing.assert_allclose(proba, ref.predict_proba(Q), rtol=0, atol=1e-12)
    assert _fallback_rows(ours, Q) > 0
    np.testing.assert_array_equal(ours.kneighbors()[1], ref.kneighbors()[1])


def test_small_memory_bound_gives_same_answer():
    X, y, Q = _tied_data()
    a = KNeighborsClassifier(3).fit(X, y).kneighbors(Q)
    b = KNeighborsClassifier(3, max_memory_mb=0.01).fit(X, y).kneighbors(Q)  # one row per chunk
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kernel", ["float32", "int8"])
def test_kernels_agree(kernel):
    X, y, Q = _tied_data()
    try:
        ours = KNeighborsClassifier(4, kernel=kernel).fit(X, y).kneighbors(Q)
    except RuntimeError as exc:  # int8 products are not available on every CPU build
        pytest.skip(f"{kernel} kernel unavailable: {exc}")
    ref = SKLearnKNN(4, algorithm="brute").fit(X, y).kneighbors(Q)
    np.testing.assert_array_equal(ours[1], ref[1])


def test_training_set_query_excludes_self():
    X, y, _ = _tied_data()
    ours = KNeighborsClassifier(3).fit(X, y).kneighbors()
    ref = SKLearnKNN(3, algorithm="brute").fit(X, y).kneighbors()
    np.testing.assert_array_equal(ours[1], ref[1])


def test_float_features_match_sklearn():
    rng = np.random.default_rng(0)
    X, y, Q = rng.standard_normal((800, 12)), rng.integers(0, 5, 800), rng.standard_normal((90, 12))
    ours = KNeighborsClassifier(5, weights="distance").fit(X, y)
    ref = SKLearnKNN(5, weights="distance", algorithm="brute").fit(X, y)
    np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
    np.testing.assert_allclose(ours.kneighbors(Q)[0], ref.kneighbors(Q)[0], rtol=1e-12)


def test_string_labels_and_images_input():
    x, y = make_digits(100)
    names = np.array(list("abcdefghij"))[y]
    model = KNeighborsClassifier(1).fit(x, names)  # (n, 28, 28) images are flattened
    assert list(model.classes_) == list("abcdefghij")
    assert model.score(x, names) == 1.0


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros((5, 10)), "has 10 features, but KNeighborsClassifier is expecting 784"),
        (np.full((2, 784), np.nan), "Input X contains NaN"),
        (np.full((2, 784), np.inf), "Input X contains infinity"),
        (np.zeros((0, 784)), "0 sample"),
        (np.zeros(784), "Expected a 2-dimensional container|Reshape your data"),
        (np.array([["a"] * 784]), "could not convert|numeric"),
        (np.zeros((2, 784), complex), "Complex data not supported"),
    ],
)
def test_bad_queries(X, message):
    x, y = make_digits(50)
    model = KNeighborsClassifier(3).fit(x, y)
    with pytest.raises(ValueError, match=message):
        model.predict(X)


def test_bad_parameters_and_fit():
    x, y = make_digits(20)
    with pytest.raises(ValueError, match="larger than the 20 training samples"):
        KNeighborsClassifier(21).fit(x, y).predict(x)
    with pytest.raises(ValueError, match="n_neighbors must be"):
        KNeighborsClassifier(0).fit(x, y)
    with pytest.raises(ValueError, match="weights must be"):
        KNeighborsClassifier(weights="cubic").fit(x, y)
    with pytest.raises(ValueError, match="algorithm must be one of .*'brute'.*'kd_tree'"):
        KNeighborsClassifier(algorithm="kd_tree").fit(x, y)
    with pytest.raises(
        ValueError, match="metric must be 'euclidean' \\('l2'\\) or 'minkowski'.*'cosine'"
    ):
        KNeighborsClassifier(metric="cosine").fit(x, y)
    with pytest.raises(ValueError, match="p must be 2 .*got 1"):
        KNeighborsClassifier(metric="minkowski", p=1).fit(x, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        KNeighborsClassifier().fit(x, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        KNeighborsClassifier().fit(np.full((3, 4), np.nan), [0, 1, 2])
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        KNeighborsClassifier().fit(x, y + 0.5)
    with pytest.raises(ValueError, match="Input y contains infinity"):
        KNeighborsClassifier().fit(x, np.where(y == 3, np.inf, y))
    with pytest.raises(ValueError, match="(?i)invalid parameter"):
        KNeighborsClassifier().set_params(k=3)


def test_predict_before_fit():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    for method in ("predict", "predict_proba", "kneighbors", "predict_many_k"):
        args = ([1],) if method == "predict_many_k" else ()
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(KNeighborsClassifier(), method)(np.zeros((1, 784)), *args)
    assert issubclass(NotFittedError, SklearnNotFittedError)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_column_y_is_raveled_with_a_warning():
    from sklearn.exceptions import DataConversionWarning

    x, y = make_digits(60)
    with pytest.warns(DataConversionWarning):
        model = KNeighborsClassifier(3).fit(x, y[:, None])
    np.testing.assert_array_equal(model.predict(x), KNeighborsClassifier(3).fit(x, y).predict(x))


def test_sklearn_parameter_spellings_give_the_same_answer():
    """algorithm="brute" and metric="minkowski", p=2 (scikit-learn's defaults) are accepted."""
    X, y, Q = _tied_data()
    ref = SKLearnKNN(3).fit(X, y)  # scikit-learn's defaults: minkowski, p=2, auto
    for params in (
        {"algorithm": "brute"},
        {"metric": "minkowski", "p": 2},
        {"metric": "minkowski", "p": 2.0, "algorithm": "brute"},
    ):
        ours = KNeighborsClassifier(3, **params).fit(X, y)
        np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
        np.testing.assert_array_equal(ours.kneighbors(Q)[1], ref.kneighbors(Q)[1])


def test_score_with_sample_weight_matches_sklearn():
    X, y, Q = _tied_data()
    yq = np.arange(len(Q)) % 10
    w = np.linspace(0.0, 2.0, len(Q))
    ours = KNeighborsClassifier(3).fit(X, y)
    ref = SKLearnKNN(3, algorithm="brute").fit(X, y)
    assert ours.score(Q, yq, sample_weight=w) == pytest.approx(ref.score(Q, yq, sample_weight=w))
    assert ours.score(Q, yq) == pytest.approx(ref.score(Q, yq))
    assert ours.score(Q, yq, sample_weight=w) != pytest.approx(ours.score(Q, yq))
    with pytest.raises(ValueError, match="sample_weight"):
        ours.score(Q, yq, sample_weight=w[:-1])
    with pytest.raises(ValueError, match="[Nn]egative"):
        ours.score(Q, yq, sample_weight=-w)


def test_predict_leaves_the_estimator_unchanged():
    X, y, Q = _tied_data()
    model = KNeighborsClassifier(3).fit(X, y)
    before = dict(vars(model))
    model.predict(Q)
    model.predict_proba(Q[:5])
    model.kneighbors(Q)
    assert vars(model).keys() == before.keys()
    assert not [name for name in vars(model) if name.endswith("_") and name not in before]


def test_fit_keeps_uint8_pixels_in_its_own_copy():
    """uint8 pixels stay uint8 (a quarter of float32's memory), in the model's own snapshot
    (see test_a_fitted_model_is_a_snapshot_of_its_training_array)."""
    X, y, _ = _tied_data()
    model = KNeighborsClassifier(3).fit(X, y)
    assert not np.shares_memory(model._fit_X, X) and model._fit_X.dtype == np.uint8
    np.testing.assert_array_equal(model._fit_X, X)


def test_sklearn_tools_accept_it():
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    x, y = make_digits(200)
    model = KNeighborsClassifier(3)
    assert clone(model).get_params()["n_neighbors"] == 3
    scores = cross_val_score(model, _flat(x), y, cv=3)
    assert scores.mean() > 0.9


@pytest.fixture(params=["numba", "torch"])
def scan(request, monkeypatch):
    """The pruned search's two per-row paths: the compiled scan and plain torch calls."""
    from digitlab.neighbors import bounds as _bounds

    if request.param == "numba":
        pytest.importorskip("numba")
    monkeypatch.setattr(_bounds, "USE_NUMBA", request.param == "numba")
    return request.param


@pytest.mark.real_data
def test_pruned_search_is_exact_on_mnist(small_mnist, scan):
    X, y, Q, _ = small_mnist
    full = KNeighborsClassifier(7, algorithm="full").fit(X, y).kneighbors(Q)
    pruned_model = KNeighborsClassifier(7, algorithm="pruned").fit(X, y)
    pruned = pruned_model.kneighbors(Q)
    np.testing.assert_array_equal(full[1], pruned[1])
    np.testing.assert_array_equal(full[0], pruned[0])
    ref = SKLearnKNN(3, algorithm="brute").fit(X, y).predict(Q)
    np.testing.assert_array_equal(pruned_model.set_params(n_neighbors=3).predict(Q), ref)


def test_pruned_search_ties_like_sklearn(scan):
    X, y, Q = _tied_data()
    for k in (1, 4, 7):
        ours = KNeighborsClassifier(k, algorithm="pruned").fit(X, y)
        ref = SKLearnKNN(k, algorithm="brute").fit(X, y)
        np.testing.assert_array_equal(ours.kneighbors(Q)[1], ref.kneighbors(Q)[1])
        np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
    assert _fallback_rows(ours, Q) > 0


@pytest.mark.parametrize("n_train", [5, 63, 64, 65, 130, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_scan_equals_plain_sorting(n_train, threads):
    """Every training size around the scan's 64-wide blocks (tails, a lone partial block),
    ties (repeated rows, two-level pixels), any thread count: the k1 smallest exact squared
    distances, ties by index, as sorting (distance, index) pairs gives them."""
    pytest.importorskip("numba")
    import torch

    from digitlab.device import threads as torch_threads
    from digitlab.neighbors import bounds as _bounds

    rng = np.random.default_rng(n_train)
    t = (rng.random((n_train, 40)) < 0.3).astype(np.uint8) * 255  # two levels: many ties
    t[n_train // 2 :: 7] = t[0]  # exact repeats
    q = np.concatenate([(rng.random((20, 40)) < 0.3).astype(np.uint8) * 255, t[:5]])
    k1 = min(n_train, 6)
    tt = torch.from_numpy(t).float() - 128
    qq = torch.from_numpy(q).float() - 128
    index = _bounds.BoundIndex(tt, rank=8)
    with torch_threads(threads):
        d, i = _bounds.nearest(
            qq,
            tt,
            (qq * qq).sum(1).double(),
            (tt * tt).sum(1).double(),
            index,
            k1,
            torch.empty(len(q), n_train),
            (np.ascontiguousarray(q), np.ascontiguousarray(t)),
        )
    exact = ((q[:, None, :].astype(np.int64) - t[None, :, :]) ** 2).sum(2)
    for row in range(len(q)):
        order = sorted(range(n_train), key=lambda j: (exact[row, j], j))[:k1]
        np.testing.assert_array_equal(i[row], order)
        np.testing.assert_array_equal(d[row], exact[row, order])


@pytest.mark.parametrize("n_train", [5, 63, 64, 65, 130, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_top_keys_equal_plain_sorting(n_train, threads):
    """The int8 search's compiled selection around its 64-wide blocks (tails, a lone partial
    block, m = n), many ties (few distinct values) and any thread count: the m largest keys
    2 dot - norm, largest first, each with a column that holds that key, ties by column."""
    pytest.importorskip("numba")
    import torch

    from digitlab.device import threads as torch_threads
    from digitlab.neighbors import _largest_keys

    rng = np.random.default_rng(n_train)
    dots = rng.integers(-3, 4, (37, n_train)).astype(np.int32) * 1000
    dots[:, n_train // 2 :] += rng.integers(-(2**20), 2**20, (37, n_train - n_train // 2))
    norms = rng.integers(0, 3, n_train).astype(np.int32) * 500
    keys = 2 * dots.astype(np.int64) - norms
    for m in sorted({1, min(n_train, 12), n_train}):
        with torch_threads(threads):
            top_v, top_i = _largest_keys(torch.from_numpy(dots.copy()), torch.from_numpy(norms), m)
        top_v, top_i = top_v.numpy(), top_i.numpy()
        want = -np.sort(-keys, axis=1)[:, :m]
        np.testing.assert_array_equal(top_v, want)
        np.testing.assert_array_equal(np.take_along_axis(keys, top_i, 1), want)
        assert all(len(set(row)) == m for row in top_i)  # m different columns
        tied = top_v[:, 1:] == top_v[:, :-1]
        assert (top_i[:, 1:] > top_i[:, :-1])[tied].all()


@pytest.mark.real_data
def test_int8_search_same_with_and_without_numba(small_mnist, monkeypatch):
    """The int8 full search with the compiled selection and with torch's topk: sklearn's
    neighbours both ways, duplicates (distance-0 ties) included."""
    pytest.importorskip("numba")
    from digitlab.neighbors import bounds as _bounds

    X, y, Q, _ = small_mnist
    Q = np.concatenate([Q[:300], X[:40], X[:40]])
    ref = SKLearnKNN(5, algorithm="brute").fit(X, y).kneighbors(Q)
    for numba_path in (True, False):
        monkeypatch.setattr(_bounds, "USE_NUMBA", numba_path)
        try:
            ours = KNeighborsClassifier(5, algorithm="full", kernel="int8").fit(X, y)
            d, i = ours.kneighbors(Q)
        except RuntimeError as exc:  # no int8 product on this build
            pytest.skip(f"int8 kernel unavailable: {exc}")
        np.testing.assert_array_equal(i, ref[1])
        np.testing.assert_allclose(d, ref[0])


@pytest.mark.real_data
def test_compiled_scan_equals_torch_path_before_tie_handling(small_mnist, monkeypatch):
    """Same (distance, index) lists, in the same order, ties included, from both paths."""
    pytest.importorskip("numba")
    import torch

    from digitlab.neighbors import bounds as _bounds

    X, _, Q, _ = small_mnist
    Q = np.concatenate([Q[:300], X[:50], X[:50]])  # exact duplicates: distance-0 ties
    model = KNeighborsClassifier(7).fit(X, np.zeros(len(X)))
    index, keep = model._pixel_index(Q, torch.device("cpu"))
    q = index.queries(np.ascontiguousarray(Q[:, keep]))
    qn = (q * q).sum(1).double()
    buf = torch.empty(len(q), len(X))
    results = {}
    for numba_path in (True, False):
        monkeypatch.setattr(_bounds, "USE_NUMBA", numba_path)
        results[numba_path] = _bounds.nearest(
            q, index.t, qn, index.norms, index.bounds(), 8, buf, index.pixel_rows(Q[:, keep])
        )
    np.testing.assert_array_equal(results[True][0], results[False][0])
    np.testing.assert_array_equal(results[True][1], results[False][1])


@pytest.mark.real_data
@pytest.mark.parametrize("kernel", ["float32", "int8"])
@pytest.mark.parametrize("algorithm", ["auto", "full", "pruned"])
def test_one_query_row_alone_equals_the_batch(small_mnist, kernel, algorithm):
    """A lone drawing (the web app's case) gets sklearn's neighbours, as in a batch."""
    x, y, q, _ = small_mnist
    ours = KNeighborsClassifier(3, kernel=kernel, algorithm=algorithm).fit(x, y)
    ref_d, ref_i = SKLearnKNN(3, algorithm="brute").fit(x, y).kneighbors(q[:12])
    for j in range(12):
        d, i = ours.kneighbors(q[j : j + 1])
        np.testing.assert_array_equal(i[0], ref_i[j])
        np.testing.assert_allclose(d[0], ref_d[j])
    # One training image: the index itself is a single row.
    one = KNeighborsClassifier(1, kernel=kernel).fit(x[:1], y[:1])
    expected = np.linalg.norm(q[0].astype(float) - x[0].astype(float))
    np.testing.assert_allclose(one.kneighbors(q[:1])[0], [[expected]])


@pytest.mark.real_data
def test_tensor_path_rows_past_the_candidate_width_take_the_scan(small_mnist, monkeypatch):
    """With only 2 * k1 candidates per row most rows cannot be proven from the first pass;
    they go through the threshold scan and the answer stays exact."""
    from digitlab.neighbors import bounds as _bounds

    monkeypatch.setattr(_bounds, "USE_NUMBA", False)
    monkeypatch.setattr(_bounds, "WIDTH", 1)
    X, y, Q, _ = small_mnist
    X, y, Q = X[:3000], y[:3000], Q[:300]
    full = KNeighborsClassifier(5, algorithm="full", kernel="float32").fit(X, y).kneighbors(Q)
    pruned = KNeighborsClassifier(5, algorithm="pruned").fit(X, y).kneighbors(Q)
    np.testing.assert_array_equal(full[1], pruned[1])
    np.testing.assert_array_equal(full[0], pruned[0])


def test_thread_picker_keeps_the_faster_count():
    from digitlab.device import ThreadPicker

    picker = ThreadPicker(2)
    warm = picker.next()
    picker.record(warm, 50.0, 1024)  # the untimed first chunk: its cost is not compared
    first = picker.next()
    picker.record(first, 2.0, 1024)  # all threads: slow (a busy machine)
    second = picker.next()
    picker.record(second, 1.0, 1024)
    assert (warm, first, second) == (2, 2, 1)
    assert picker.chosen == 1 and picker.next() == 1
    quiet = ThreadPicker(2, warmup=0)
    quiet.record(quiet.next(), 1.0, 1024)
    quiet.record(quiet.next(), 1.9, 1024)
    assert quiet.chosen == 2
    close = ThreadPicker(2, warmup=0)  # one thread only 5% faster: within noise, keep all
    close.record(close.next(), 1.0, 1000)
    close.record(close.next(), 0.95, 1000)
    assert close.chosen == 2
    assert ThreadPicker(1).next() == 1  # nothing to choose


@pytest.mark.parametrize("kind", ["two-level pixels", "mostly identical int64", "fortran float32"])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_pruned_search_equals_sklearn_on_tie_heavy_data(kind, k):
    """The pruned search (PCA bounds + the compiled scan) on data full of exact ties, in other
    dtypes and memory orders: sklearn's neighbours, distances and votes."""
    rng = np.random.default_rng(k)
    if kind == "two-level pixels":
        X = (rng.random((4500, 784)) < 0.2).astype(np.uint8) * 255
        Q = (rng.random((120, 784)) < 0.2).astype(np.uint8) * 255
    elif kind == "mostly identical int64":
        X = np.zeros((4200, 64), np.int64)
        X[::3, 0] = 7
        Q = X[:60]
    else:
        X = np.asfortranarray(rng.integers(0, 256, (4500, 100)).astype(np.float32))
        Q = X[::7][:120]
    y = rng.integers(0, 5, len(X))
    ours = KNeighborsClassifier(k, algorithm="pruned").fit(X, y)
    ref = SKLearnKNN(k, algorithm="brute").fit(X, y)
    d1, i1 = ours.kneighbors(Q)
    d2, i2 = ref.kneighbors(Q)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2)
    np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))


@pytest.mark.parametrize("kernel", ["auto", "int8", "float32"])
@pytest.mark.parametrize("algorithm", ["auto", "full", "pruned"])
def test_one_varying_column_gives_sklearns_neighbours(kernel, algorithm):
    """One column left after the constant ones are dropped: a (n, 1) int8 matrix has strides
    (1, 1), which oneDNN's integer product misread (wrong, changing answers); the search must
    match scikit-learn's however the width comes about."""
    rng = np.random.default_rng(5)
    narrow = (
        np.array([[0], [10], [20], [30], [40]], np.uint8),
        np.array([[1], [19], [41]], np.uint8),
    )
    wide_x = np.zeros((60, 784), np.uint8)
    wide_x[:, 400] = rng.integers(0, 256, 60)
    wide_q = np.zeros((7, 784), np.uint8)
    wide_q[:, 400] = rng.integers(0, 256, 7)
    for X, Q in (narrow, (wide_x, wide_q)):
        y = np.arange(len(X)) % 4
        ours = KNeighborsClassifier(2, kernel=kernel, algorithm=algorithm).fit(X, y)
        ref = SKLearnKNN(2, algorithm="brute").fit(X, y)
        for _ in range(2):  # the misread product also changed from call to call
            dist, ind = ours.kneighbors(Q)
            ref_dist, ref_ind = ref.kneighbors(Q)
            np.testing.assert_array_equal(ind, ref_ind)
            np.testing.assert_allclose(dist, ref_dist)
        np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))


@pytest.mark.parametrize("algorithm", ["full", "pruned"])
def test_thread_count_asked_for_is_used_as_it_is(algorithm, monkeypatch):
    """DIGITLAB_THREADS (or threads=) fixes the search's thread count: no probe, no timed
    choice; torch's own setting is back afterwards."""
    import torch

    X, y = make_digits(5000, seed=2)
    Q = X[:300]
    before = torch.get_num_threads()
    monkeypatch.setenv("DIGITLAB_THREADS", "1")
    KNeighborsClassifier(3, algorithm=algorithm, kernel="float32").fit(X, y).predict(Q)
    assert neighbors.LAST_SEARCH["threads"] == 1 and torch.get_num_threads() == before
    monkeypatch.delenv("DIGITLAB_THREADS")
    model = KNeighborsClassifier(3, algorithm=algorithm, kernel="float32", threads=1)
    model.fit(X, y).predict(Q)
    assert neighbors.LAST_SEARCH["threads"] == 1 and torch.get_num_threads() == before


def _exact_neighbours(X, Q, k):
    """The k nearest by direct float64 differences, ties by index (the slow, obvious way)."""
    exact = ((Q[:, None, :] - X[None, :, :]) ** 2).sum(2)
    return np.argsort(exact, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("offset", [1e3, 1e4, 1e6])
def test_float_features_far_from_the_origin_get_their_true_neighbours(offset):
    """Values around `offset` with unit spread: a float32 shortlist of raw values lost all
    precision there (184 of 200 rows wrong at 1,000). Centred, and proven row by row."""
    from digitlab import neighbors

    rng = np.random.default_rng(0)
    X, Q = rng.normal(size=(2000, 30)) + offset, rng.normal(size=(200, 30)) + offset
    ind = KNeighborsClassifier(5).fit(X, rng.integers(0, 3, 2000)).kneighbors(Q)[1]
    np.testing.assert_array_equal(ind, _exact_neighbours(X, Q, 5))
    assert neighbors.LAST_SEARCH["fallback_rows"] == 0  # centring alone suffices here


def test_float_rows_float32_cannot_resolve_fall_back_to_float64():
    """Two clusters 1e9 apart: within either, float32 keys cannot tell points apart, so the
    shortlist cannot be proven and those rows are ranked from full float64 distances."""
    from digitlab import neighbors

    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(600, 8)), rng.normal(size=(600, 8)) + 1e9])
    Q = np.concatenate([rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) + 1e9])
    ind = KNeighborsClassifier(3).fit(X, rng.integers(0, 3, 1200)).kneighbors(Q)[1]
    assert neighbors.LAST_SEARCH["fallback_rows"] > 0
    np.testing.assert_array_equal(ind, _exact_neighbours(X, Q, 3))


@pytest.mark.parametrize("scale", [1e-23, 1e-100, 1e-160, 1e-300, 1e150, 1e300])
def test_float_features_at_any_scale_get_their_true_neighbours(scale):
    """Values of 1e-23 once underflowed in the float32 shortlist (products of 0) while its
    proof passed: wrong neighbours. The data is scaled by a power of two first. Below about
    1e-154 (or above 1e154) even float64 squares of the differences underflow (overflow):
    1e-160 raised OverflowError; the candidates' distances are now ranked in the scaled units.
    The truth is the neighbours of the unscaled data."""
    rng = np.random.default_rng(2)
    X, Q = rng.normal(size=(2000, 10)), rng.normal(size=(200, 10))
    y = rng.integers(0, 5, 2000)
    model = KNeighborsClassifier(3).fit(X * scale, y)
    np.testing.assert_array_equal(model.kneighbors(Q * scale)[1], _exact_neighbours(X, Q, 3))
    expected = KNeighborsClassifier(3).fit(X, y).predict(Q)
    np.testing.assert_array_equal(model.predict(Q * scale), expected)


def test_float_path_ties_as_scikit_learn_and_shift_invariant():
    """Exact ties on the float path (whole numbers below zero, duplicated float rows) are
    ranked as scikit-learn ranks them: the same predictions as scikit-learn, and shifting
    whole-number data (pixel path -> float path) changes nothing."""
    rng = np.random.default_rng(1)
    Xi, Qi, y = (
        rng.integers(0, 11, (2000, 4)),
        rng.integers(0, 11, (200, 4)),
        rng.integers(0, 5, 2000),
    )
    shifted = KNeighborsClassifier(3).fit(Xi - 5, y)
    np.testing.assert_array_equal(
        shifted.predict(Qi - 5), KNeighborsClassifier(3).fit(Xi, y).predict(Qi)
    )
    ref = SKLearnKNN(3, algorithm="brute").fit(Xi - 5, y)
    np.testing.assert_array_equal(shifted.kneighbors(Qi - 5)[1], ref.kneighbors(Qi - 5)[1])
    Z = np.repeat(rng.normal(size=(500, 5)), 2, 0) + 0.5
    yz, Qz = rng.integers(0, 3, 1000), rng.normal(size=(100, 5))
    np.testing.assert_array_equal(
        KNeighborsClassifier(3).fit(Z, yz).predict(Qz),
        SKLearnKNN(3, algorithm="brute").fit(Z, yz).predict(Qz),
    )


def test_float_path_memory_blocks_give_the_same_answer():
    """max_memory_mb bounds the (rows, k + 8, features) candidate differences too (k = 1000
    once took 2 GB); a tiny bound, one row per block, gives the same neighbours."""
    rng = np.random.default_rng(3)
    X, Q, y = rng.normal(size=(1200, 20)), rng.normal(size=(50, 20)), rng.integers(0, 3, 1200)
    big = KNeighborsClassifier(1000).fit(X, y).kneighbors(Q)
    small = KNeighborsClassifier(1000, max_memory_mb=0.01).fit(X, y).kneighbors(Q)
    np.testing.assert_array_equal(big[1], small[1])
    np.testing.assert_array_equal(big[0], small[0])


def test_wide_pixels_distances_stay_exact():
    """More than 1,024 columns: float32 pixel products are no longer exact (|dot| > 2**24),
    so such data takes the proven float path: distances exact, neighbours as sorting gives."""
    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, (300, 2048), dtype=np.uint8)
    Q = rng.integers(0, 256, (20, 2048), dtype=np.uint8)
    d, ind = KNeighborsClassifier(3).fit(X, np.arange(300) % 3).kneighbors(Q)
    exact = ((Q[:, None, :].astype(np.int64) - X[None].astype(np.int64)) ** 2).sum(2)
    want = np.argsort(exact, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(ind, want)
    np.testing.assert_array_equal(d, np.sqrt(np.take_along_axis(exact, want, 1).astype(float)))


def test_negative_strides_and_reversed_views_as_sklearn():
    """A reversed view (negative strides) reached torch.from_numpy uncopied: ValueError."""
    rng = np.random.default_rng(3)
    X, y, Q = rng.normal(size=(300, 6)), rng.integers(0, 3, 300), rng.normal(size=(40, 6))
    for Xv, Qv in ((X[::-1], Q[::-1]), (X[:, ::-1], Q[:, ::-1])):
        ours = KNeighborsClassifier(3).fit(Xv, y).kneighbors(Qv)[1]
        ref = SKLearnKNN(3, algorithm="brute").fit(Xv, y).kneighbors(Qv)[1]
        np.testing.assert_array_equal(ours, ref)


def test_pickle_holds_only_what_fit_stored():
    """predict builds prepared copies of the training data (`_cache`); a pickle made after it
    held them too (50x3 floats: 2,161 -> 7,735 bytes; 2,000 MNIST rows: 1.6 -> 9.3 MB)."""
    import pickle

    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(500, 8)), rng.integers(0, 2, 500)
    model = KNeighborsClassifier(3).fit(X, y)
    before = len(pickle.dumps(model))
    expected = model.predict(X[:20])
    after = pickle.dumps(model)
    assert len(after) <= before + 64
    np.testing.assert_array_equal(pickle.loads(after).predict(X[:20]), expected)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"device": "bogus"}, "unknown device"),
        ({"threads": 0}, "threads must be"),
        ({"threads": 2.5}, "threads must be"),
        ({"max_memory_mb": float("inf")}, "finite"),
    ],
)
def test_bad_search_settings_fail_in_fit(params, message):
    """These were accepted by fit and raised only at the first predict."""
    with pytest.raises(ValueError, match=message):
        KNeighborsClassifier(3, **params).fit(np.eye(4), [0, 1, 0, 1])


def test_parameters_set_after_fit_are_checked_at_predict():
    """set_params(n_neighbors=0) after fit made predict return all zeros, without an error."""
    model = KNeighborsClassifier(3).fit(np.eye(4), [0, 1, 0, 1]).set_params(n_neighbors=0)
    for method in (model.predict, model.predict_proba, model.kneighbors):
        with pytest.raises(ValueError, match="n_neighbors must be"):
            method(np.eye(4))


def test_images_of_another_shape_than_fitted_are_refused():
    """(n, 14, 56) after fitting (n, 28, 28) has 784 values per row too and was silently
    compared pixel by pixel with the wrong places; rows of 784 are still taken."""
    from digitlab.kmeans import KMeans

    X = np.random.default_rng(5).integers(0, 256, (60, 28, 28)).astype(np.uint8)
    y = np.arange(60) % 3
    for model in (KNeighborsClassifier(3).fit(X, y), KMeans(3, n_init=2).fit(X)):
        np.testing.assert_array_equal(model.predict(X[:5]), model.predict(X[:5].reshape(5, -1)))
        with pytest.raises(ValueError, match="images of 14x56 pixels.*fitted on images of 28x28"):
            model.predict(X[:5].reshape(5, 14, 56))


def test_scikit_learns_own_parameters_are_taken():
    """KNeighborsClassifier(n_jobs=-1) or (leaf_size=...) — scikit-learn code as written —
    raised TypeError: every parameter of scikit-learn's constructor is one of ours."""
    ours_params = set(KNeighborsClassifier().get_params())
    assert set(SKLearnKNN().get_params()) <= ours_params
    X, y = make_digits(300, seed=1)
    Q, _ = make_digits(40, seed=2)
    X, Q = X.reshape(len(X), -1), Q.reshape(len(Q), -1)
    kwargs = {"n_neighbors": 3, "leaf_size": 10, "metric_params": None, "n_jobs": -1}
    ours = KNeighborsClassifier(**kwargs, algorithm="brute").fit(X, y)
    ref = SKLearnKNN(**kwargs, algorithm="brute").fit(X, y)
    np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
    assert KNeighborsClassifier(n_jobs=1)._threads() == 1
    assert KNeighborsClassifier(n_jobs=-1, threads=1)._threads() == 1  # ours wins
    for bad in ({"leaf_size": 0}, {"n_jobs": 0}, {"metric_params": {"p": 3}}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            KNeighborsClassifier(**bad).fit(X, y)


@pytest.mark.parametrize("mode", ["connectivity", "distance"])
@pytest.mark.parametrize("query", [False, True])
def test_kneighbors_graph_equals_sklearn(mode, query):
    x, y = make_digits(300, seed=3)
    X = x.reshape(len(x), -1)
    q = X[:40] if query else None
    ours = KNeighborsClassifier(n_neighbors=4).fit(X, y).kneighbors_graph(q, mode=mode)
    ref = SKLearnKNN(n_neighbors=4).fit(X.astype(np.float64), y)
    theirs = ref.kneighbors_graph(None if q is None else q.astype(np.float64), mode=mode)
    assert ours.shape == theirs.shape and ours.format == "csr" and ours.dtype == np.float64
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-12, atol=1e-9)


def test_kneighbors_graph_refuses_another_mode():
    x, y = make_digits(50, seed=1)
    est = KNeighborsClassifier(n_neighbors=2).fit(x.reshape(len(x), -1), y)
    with pytest.raises(ValueError, match="mode must be"):
        est.kneighbors_graph(mode="weights")


def test_weights_callable_all_zero_or_nan_is_refused():
    x, y = make_digits(80, seed=4)
    X = x.reshape(len(x), -1)
    zero = KNeighborsClassifier(n_neighbors=3, weights=lambda d: np.zeros_like(d)).fit(X, y)
    ref = SKLearnKNN(n_neighbors=3, weights=lambda d: np.zeros_like(d)).fit(X, y)
    with pytest.raises(ValueError, match="getting zero weights") as theirs:
        ref.predict(X[:3])
    for method in (zero.predict, zero.predict_proba):
        with pytest.raises(ValueError, match="getting zero weights") as ours:
            method(X[:3])
        assert str(ours.value) == str(theirs.value)
    nan = KNeighborsClassifier(n_neighbors=3, weights=lambda d: d * np.nan).fit(X, y)
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        nan.predict(X[:3])


@pytest.mark.parametrize("value", ["100", None, True, float("nan")])
def test_max_memory_mb_of_another_type_is_a_value_error(value):
    x, y = make_digits(20, seed=1)
    with pytest.raises(ValueError, match="max_memory_mb must be a positive, finite number"):
        KNeighborsClassifier(max_memory_mb=value).fit(x.reshape(len(x), -1), y)


@pytest.mark.real_data
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_a_fitted_model_is_a_snapshot_of_its_training_array(mnist, dtype):
    """Changing the training array in place after a predict once left answers from the old
    index beside the new pixels (distances matching neither; 0.5% agreement with either).
    The model keeps the data it was fitted on: the same answers as before the change, and as
    scikit-learn's brute search fitted on those data."""
    X = mnist.x_train[:2000].reshape(2000, -1).astype(dtype)
    y, Q = mnist.y_train[:2000], mnist.x_test[:200].reshape(200, -1)
    old = X.copy()
    model = KNeighborsClassifier(3).fit(X, y)
    before = model.predict(Q)
    X[:] = 255 - X  # the caller reuses their array
    ref = SKLearnKNN(3, algorithm="brute").fit(old, y)
    for part in (Q[:3], Q[50:60], Q):  # other queries: other pixels matter, a new index
        dist, ind = model.kneighbors(part)
        ref_dist, ref_ind = ref.kneighbors(part)
        np.testing.assert_array_equal(ind, ref_ind)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-12)
    np.testing.assert_array_equal(model.predict(Q), before)
    np.testing.assert_array_equal(before, ref.predict(Q))
